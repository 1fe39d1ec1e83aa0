package main

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// The plot, written by hand: two latency-by-percentile panels (SSE delivery and long-poll wake,
// each target's runs merged) and a bar per table row showing bridged/Nchan on a log scale, bars
// to the right of 1 where bridged is better.

var targetColor = map[string]string{targetBridged: "#1f77b4", targetNchan: "#9467bd", targetHello: "#7f7f7f"}

const (
	svgW      = 1000
	panelH    = 300
	barRowH   = 22
	fontStyle = `font-family="DejaVu Sans, Helvetica, Arial, sans-serif"`
)

func (r *report) svg() []byte {
	var b strings.Builder
	bars := r.ratioRows()
	h := 40 + panelH + 60 + 40 + len(bars)*barRowH + 40
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s font-size="12">`+"\n", svgW, h, svgW, h, fontStyle)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="20" y="24" font-size="16" font-weight="bold">%s</text>`+"\n",
		html.EscapeString(fmt.Sprintf("bridgebench: %s — %s", strings.Join(r.cfg.targets, " vs "), r.started.Format("2006-01-02"))))

	r.latencyPanel(&b, 20, 40, 470, panelH, "sse", fmt.Sprintf("SSE delivery latency, %d conns, %.0f msg/s", r.cfg.conns, r.cfg.rate))
	r.latencyPanel(&b, 510, 40, 470, panelH, "lp.wake", fmt.Sprintf("long-poll wake latency, %d waiters", r.cfg.lpConns))

	y := 40 + panelH + 70
	fmt.Fprintf(&b, `<text x="20" y="%d" font-size="14" font-weight="bold">bridged vs Nchan per row: bar = bridged's advantage (medians, log scale; right and green: bridged better)</text>`+"\n", y)
	y += 20
	r.ratioBars(&b, 20, y, svgW-40, bars)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// mergedHist merges every run's histogram of key for target.
func (r *report) mergedHist(target, key string) *Histogram {
	var h Histogram
	for _, res := range r.results {
		if res.Target == target {
			if x, ok := res.hists[key]; ok {
				h.Merge(x)
			}
		}
	}
	return &h
}

// percentileX maps a cumulative fraction to the x axis: 0 at 0 %, 1 at 90 %, 2 at 99 %, 3 at
// 99.9 %, capped at 4 (99.99 %) and the maximum.
func percentileX(f float64) float64 {
	if f >= 1 {
		return 4
	}
	return math.Min(4, -math.Log10(1-f))
}

func (r *report) latencyPanel(b *strings.Builder, x0, y0, w, h int, key, title string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", x0, y0+14, html.EscapeString(title))
	px0, py0, pw, ph := x0+55, y0+25, w-70, h-60
	hists := map[string]*Histogram{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, t := range r.cfg.targets {
		hh := r.mergedHist(t, key)
		if hh.Count() == 0 {
			continue
		}
		hists[t] = hh
		lo = math.Min(lo, float64(max(hh.Min(), time.Microsecond)))
		hi = math.Max(hi, float64(hh.Max()))
	}
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", px0, py0, pw, ph)
	if len(hists) == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="#999">not measured</text>`+"\n", px0+10, py0+20)
		return
	}
	// y: latency, log scale, whole decades around the data.
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	yOf := func(ns float64) float64 {
		return float64(py0+ph) - (math.Log10(math.Max(ns, math.Pow(10, dlo)))-dlo)/(dhi-dlo)*float64(ph)
	}
	xOf := func(f float64) float64 { return float64(px0) + percentileX(f)/4*float64(pw) }
	for d := dlo; d <= dhi; d++ {
		y := yOf(math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", px0, y, px0+pw, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`+"\n", px0-4, y+4, fmtDur(math.Pow(10, d)))
	}
	for i, lbl := range []string{"0%", "90%", "99%", "99.9%", "99.99%+"} {
		x := float64(px0) + float64(i)/4*float64(pw)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x, py0, x, py0+ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`+"\n", x, py0+ph+14, lbl)
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-size="11" fill="#555">percentile (latency at or below)</text>`+"\n", px0+pw/2, py0+ph+30)
	ly := py0 + 14
	for _, t := range r.cfg.targets {
		hh, ok := hists[t]
		if !ok {
			continue
		}
		var pts []string
		prevF := 0.0
		for _, p := range hh.CDF() {
			// A step: the latency holds from the previous fraction up to this one.
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(prevF), yOf(float64(p.V))), fmt.Sprintf("%.1f,%.1f", xOf(p.F), yOf(float64(p.V))))
			prevF = p.F
			if percentileX(p.F) >= 4 {
				break
			}
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", targetColor[t], strings.Join(pts, " "))
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="3" fill="%s"/>`+"\n", px0+8, ly-4, targetColor[t])
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11">%s: p50 %s, p99 %s, max %s (%d samples)</text>`+"\n", px0+24, ly, displayName(t),
			fmtDur(float64(hh.Quantile(0.5))), fmtDur(float64(hh.Quantile(0.99))), fmtDur(float64(hh.Max())), hh.Count())
		ly += 15
	}
}

// ratioRow is a bar of the ratio chart.
type ratioRow struct {
	label  string
	ratio  float64 // bridged / Nchan
	adv    float64 // bridged's advantage: the ratio, inverted on rows where lower is better
	better bool    // bridged is better on this row
	text   string
}

func (r *report) ratioRows() []ratioRow {
	var out []ratioRow
	for _, rw := range r.rows() {
		bc, nc := r.cell(targetBridged, rw), r.cell(targetNchan, rw)
		q := ratio(bc, nc)
		if math.IsNaN(q) || q <= 0 {
			continue
		}
		adv := q
		if rw.lower {
			adv = 1 / q
		}
		out = append(out, ratioRow{label: strings.TrimSpace(rw.label), ratio: q, adv: adv, better: adv >= 1,
			text: fmt.Sprintf("%.2f× (%s vs %s %s)", q, trimNum(bc.med, rw.prec), trimNum(nc.med, rw.prec), rw.unit)})
	}
	return out
}

func (r *report) ratioBars(b *strings.Builder, x0, y0, w int, rows []ratioRow) {
	if len(rows) == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="#999">no row measured on both targets</text>`+"\n", x0, y0+14)
		return
	}
	labelW := 330
	bx, bw := x0+labelW, w-labelW-200
	mid := float64(bx) + float64(bw)/2
	const span = 3.0 // log2: 1/8 .. 8
	xOf := func(q float64) float64 {
		l := math.Max(-span, math.Min(span, math.Log2(q)))
		return mid + l/span*float64(bw)/2
	}
	for _, q := range []float64{0.125, 0.25, 0.5, 1, 2, 4, 8} {
		x := xOf(q)
		stroke := "#eee"
		if q == 1 {
			stroke = "#555"
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, y0, x, y0+len(rows)*barRowH, stroke)
		lbl := trimNum(q, 0) + "× better"
		switch {
		case q == 1:
			lbl = "even"
		case q < 1:
			lbl = trimNum(1/q, 0) + "× worse"
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`+"\n", x, y0+len(rows)*barRowH+14, lbl)
	}
	for i, rw := range rows {
		y := y0 + i*barRowH
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11">%s</text>`+"\n", x0, y+15, html.EscapeString(rw.label))
		pos := xOf(rw.adv)
		x1, x2 := math.Min(mid, pos), math.Max(mid, pos)
		color := "#2ca02c"
		switch {
		case rw.adv == 1:
			color = "#999"
		case !rw.better:
			color = "#ff7f0e"
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x1, y+4, math.Max(1, x2-x1), barRowH-8, color)
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11">%s</text>`+"\n", bx+bw+8, y+15, html.EscapeString(rw.text))
	}
}

// fmtDur formats nanoseconds compactly: 850µs, 1.2ms, 3s.
func fmtDur(ns float64) string {
	switch {
	case ns < 1e3:
		return trimNum(ns, 0) + "ns"
	case ns < 1e6:
		return trimNum(ns/1e3, 1) + "µs"
	case ns < 1e9:
		return trimNum(ns/1e6, 2) + "ms"
	}
	return trimNum(ns/1e9, 2) + "s"
}

// trimNum formats v with at most prec decimals and no trailing zeros.
func trimNum(v float64, prec int) string {
	s := fmt.Sprintf("%.*f", prec, v)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
