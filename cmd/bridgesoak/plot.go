package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// plot draws the run as an SVG, by hand: three panels over a shared time axis (memory: RSS,
// accounted store bytes, the cap and the bound; bridged's goroutines with the baseline; open
// connections), with the flood and the drain shaded.
func (s *soak) plot() []byte {
	series := s.series()
	const (
		width, left, right = 1000, 70, 190
		top, panelH, gap   = 50, 190, 40
		plotW              = width - left - right
	)
	height := top + 3*panelH + 2*gap + 50
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	cfg := &s.cfg
	title := fmt.Sprintf("bridgesoak: %d SSE + %d long-poll clients, %d users, %s, %.0f msg/s, BRIDGE_MAX_MEMORY %s",
		cfg.sse, cfg.longpoll, cfg.users, cfg.duration, cfg.rate, formatBytes(int64(cfg.maxMemory)))
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))

	tmax := 1.0
	if len(series) > 0 {
		tmax = max(tmax, series[len(series)-1].t.Seconds())
	}
	x := func(t float64) float64 { return left + t/tmax*plotW }
	from, until := s.floodSpan()
	floodFrom, floodUntil := from.Seconds(), until.Seconds()
	drainAt := cfg.duration.Seconds()

	type line struct {
		name  string
		color string
		dash  bool
		v     func(sample) float64
		level float64 // for a horizontal line: v is nil
	}
	panels := []struct {
		title string
		unit  string
		lines []line
	}{
		{"memory", "MiB", []line{
			{name: "RSS", color: "#d62728", v: func(sm sample) float64 { return float64(sm.rss) / (1 << 20) }},
			{name: "store (accounted)", color: "#1f77b4", v: func(sm sample) float64 { return float64(sm.storeBytes) / (1 << 20) }},
			{name: "RSS bound", color: "#d62728", dash: true, level: float64(s.bound()) / (1 << 20)},
			{name: "BRIDGE_MAX_MEMORY", color: "#1f77b4", dash: true, level: float64(cfg.maxMemory) / (1 << 20)},
		}},
		{"goroutines (bridged)", "", []line{
			{name: "goroutines", color: "#9467bd", v: func(sm sample) float64 { return float64(sm.goroutines) }},
		}},
		{"connections (bridged)", "", []line{
			{name: "total", color: "#333333", v: func(sm sample) float64 { return float64(sm.conns) }},
			{name: "SSE", color: "#2ca02c", v: func(sm sample) float64 { return float64(sm.sse) }},
			{name: "long-poll", color: "#ff7f0e", v: func(sm sample) float64 { return float64(sm.lp) }},
		}},
	}
	for i, p := range panels {
		y0 := float64(top + i*(panelH+gap))
		ymax := 1.0
		for _, l := range p.lines {
			ymax = max(ymax, l.level)
			if l.v != nil {
				for _, sm := range series {
					if sm.ok {
						ymax = max(ymax, l.v(sm))
					}
				}
			}
		}
		step := niceStep(ymax / 4)
		ymax = math.Ceil(ymax/step) * step
		y := func(v float64) float64 { return y0 + panelH - v/ymax*panelH }

		// Phases, then the frame and the grid.
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="#fff3c4"/>`+"\n", x(floodFrom), y0, x(floodUntil)-x(floodFrom), panelH)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="#eeeeee"/>`+"\n", x(drainAt), y0, max(0, x(tmax)-x(drainAt)), panelH)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-weight="bold">%s</text>`+"\n", left, y0-6, html.EscapeString(p.title))
		for v := 0.0; v <= ymax+step/2; v += step {
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", left, left+plotW, y(v), y(v))
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s%s</text>`+"\n", left-6, y(v)+4, fmtTick(v), p.unit)
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="%d" height="%d" fill="none" stroke="#888888"/>`+"\n", left, y0, plotW, panelH)

		for j, l := range p.lines {
			dash := ""
			if l.dash {
				dash = ` stroke-dasharray="6 4"`
			}
			if l.v == nil {
				fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"%s/>`+"\n", left, left+plotW, y(l.level), y(l.level), l.color, dash)
			} else {
				var pts strings.Builder
				for _, sm := range series {
					if sm.ok {
						fmt.Fprintf(&pts, "%.1f,%.1f ", x(sm.t.Seconds()), y(l.v(sm)))
					}
				}
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", l.color, dash, strings.TrimSpace(pts.String()))
			}
			ly := y0 + 14 + float64(j)*18
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", left+plotW+10, left+plotW+30, ly-4, ly-4, l.color, dash)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f">%s</text>`+"\n", left+plotW+35, ly, html.EscapeString(l.name))
		}
	}

	// Time axis under the last panel.
	yAxis := float64(top + 3*panelH + 2*gap)
	step := niceStep(tmax / 8)
	for t := 0.0; t <= tmax+step/100; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#888888"/>`+"\n", x(t), x(t), yAxis, yAxis+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x(t), yAxis+18, fmtTick(t)+"s")
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="14" height="10" fill="#fff3c4" stroke="#cccccc"/><text x="%d" y="%.1f">flood</text>`+"\n", left, yAxis+28, left+18, yAxis+37)
	fmt.Fprintf(&b, `<rect x="%d" y="%.1f" width="14" height="10" fill="#eeeeee" stroke="#cccccc"/><text x="%d" y="%.1f">publishing stopped: clients catch up and leave, bridged settles</text>`+"\n", left+70, yAxis+28, left+88, yAxis+37)
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">time since the first client (%s)</text>`+"\n", left+plotW, yAxis+37, time.Duration(tmax*float64(time.Second)).Round(time.Second))
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", math.Round(v*100)/100)
}
