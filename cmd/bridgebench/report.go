package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// report gathers every run's result and renders the table, the JSON and the plot.
type report struct {
	cfg      *config
	started  time.Time
	finished time.Time
	nofile   uint64
	machine  string
	// The machine's load averages when the run started and ended.
	loadStart, loadEnd string
	results            []*result
	settings           map[string][]string // per target: what was set
	failures           []string
}

// violations lists what -strict refuses: a message lost, duplicated or not expected, a delivery
// short of what was published, or a subscriber or goroutine outliving its client.
func (r *report) violations() []string {
	var out []string
	for _, res := range r.results {
		keys := make([]string, 0, len(res.Metrics))
		for k := range res.Metrics {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := res.Metrics[k]
			bad := false
			switch {
			case strings.HasSuffix(k, ".lost"), strings.HasSuffix(k, ".duplicated"), strings.HasSuffix(k, ".unexpected"),
				strings.HasSuffix(k, ".subscribers_left"), strings.HasSuffix(k, ".goroutines_left"):
				bad = v > 0
			case strings.HasSuffix(k, ".delivered_pct"):
				bad = v < 100
			}
			if bad {
				out = append(out, fmt.Sprintf("%s on %s, round %d: %s = %g", res.Workload, res.Target, res.Round, k, v))
			}
		}
	}
	return out
}

func (r *report) add(res *result, notes []string) {
	if r.settings == nil {
		r.settings = map[string][]string{}
	}
	if _, ok := r.settings[res.Target]; !ok {
		r.settings[res.Target] = notes
	}
	r.results = append(r.results, res)
}

// values returns the metric key of every run of target, in run order.
func (r *report) values(target, key string) []float64 {
	var out []float64
	for _, res := range r.results {
		if res.Target != target {
			continue
		}
		if v, ok := res.Metrics[key]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			out = append(out, v)
		}
	}
	return out
}

// row is one line of the table: a metric, what it means, and which way is better.
type row struct {
	key   string
	label string
	unit  string
	lower bool // lower is better
	prec  int  // decimals
}

func (r *report) rows() []row {
	c := r.cfg
	sse := fmt.Sprintf("%d conns, %.0f msg/s", c.conns, c.rate)
	lp := fmt.Sprintf("%d waiters", c.lpConns)
	return []row{
		{"mem.sse.kb_per_conn", fmt.Sprintf("RSS per idle SSE connection (%d conns)", c.conns), "KB", true, 1},
		{"mem.sse.pss_kb_per_conn", "  PSS per idle SSE connection", "KB", true, 1},
		{"mem.lp.kb_per_conn", fmt.Sprintf("RSS per parked long-poll (%s)", lp), "KB", true, 1},
		{"mem.lp.pss_kb_per_conn", "  PSS per parked long-poll", "KB", true, 1},
		{"mem.sse.subscribers_left", "subscribers left once every SSE client reset (waits ≤ 15 s)", "", true, 0},
		{"mem.lp.subscribers_left", "subscribers left once every long-poll client reset", "", true, 0},
		{"mem.sse.goroutines_left", "goroutines left beyond the start, likewise", "", true, 0},
		{"sse.p50_ms", "SSE delivery p50 (" + sse + ")", "ms", true, 2},
		{"sse.p90_ms", "SSE delivery p90", "ms", true, 2},
		{"sse.p99_ms", "SSE delivery p99", "ms", true, 2},
		{"sse.max_ms", "SSE delivery max", "ms", true, 1},
		{"sse.delivered_pct", "SSE delivered / expected", "%", false, 3},
		{"sse.lost", "SSE lost", "msgs", true, 0},
		{"sse.duplicated", "SSE duplicated", "msgs", true, 0},
		{"lp.wake.p50_ms", "long-poll wake p50 (" + lp + ")", "ms", true, 2},
		{"lp.wake.p99_ms", "long-poll wake p99", "ms", true, 2},
		{"lp.wake_cpu_us", "  server CPU per wake-up (its re-poll included)", "µs", true, 0},
		{"lp.loop.p50_ms", fmt.Sprintf("re-poll loop delivery p50 (%.0f msg/s)", c.rate), "ms", true, 2},
		{"lp.loop.p99_ms", "re-poll loop delivery p99", "ms", true, 2},
		{"lp.lost", "long-poll lost (wake + loop)", "msgs", true, 0},
		{"lp.duplicated", "long-poll duplicated", "msgs", true, 0},
		{"lp.cpu_us_per_delivery", "server CPU per long-poll delivery (re-poll loop)", "µs", true, 1},
		{"poll.p50_ms", fmt.Sprintf("plain poll answer p50 (%d clients, %.0f/s)", c.pollClients, c.pollRate), "ms", true, 2},
		{"poll.p99_ms", "plain poll answer p99", "ms", true, 2},
		{"pub.single.rps", fmt.Sprintf("single-message publish, c=%d", c.pubConns), "req/s", false, 0},
		{"pub.single.p50_ms", "  publish latency p50", "ms", true, 2},
		{"pub.single.p99_ms", "  publish latency p99", "ms", true, 2},
		{"pub.single.pct_hello", "single publish / hello-world handler", "%", false, 0},
		{"pub.single.cpu_us_per_req", "  server CPU per single publish", "µs", true, 1},
		{"pub.batch.msgs_per_s", fmt.Sprintf("batch publish, %d per request, c=%d", c.batch, c.pubConns), "msg/s", false, 0},
	}
}

// cell is a target's median for a row, with the range of the runs behind it.
type cell struct {
	med, lo, hi float64
	n           int
}

func (r *report) cell(target string, rw row) cell {
	var vs []float64
	if rw.key == "pub.single.pct_hello" {
		// A ratio of medians: target and hello are separate runs.
		t, h := median(r.values(target, "pub.single.rps")), median(r.values(targetHello, "pub.single.rps"))
		if math.IsNaN(t) || math.IsNaN(h) || h == 0 {
			return cell{med: math.NaN()}
		}
		return cell{med: 100 * t / h, lo: math.NaN(), n: 1}
	}
	vs = r.values(target, rw.key)
	if len(vs) == 0 {
		return cell{med: math.NaN()}
	}
	return cell{med: median(vs), lo: slices.Min(vs), hi: slices.Max(vs), n: len(vs)}
}

func (c cell) String(prec int) string {
	if math.IsNaN(c.med) {
		return "—"
	}
	s := fmt.Sprintf("%.*f", prec, c.med)
	if c.n > 1 && !math.IsNaN(c.lo) && (c.lo != c.hi) {
		s += fmt.Sprintf(" (%.*f–%.*f)", prec, c.lo, prec, c.hi)
	}
	return s
}

// ratio is bridged's median over Nchan's, or NaN when either is missing or Nchan's is zero.
func ratio(b, n cell) float64 {
	if math.IsNaN(b.med) || math.IsNaN(n.med) || n.med == 0 {
		return math.NaN()
	}
	return b.med / n.med
}

func (r *report) markdown() string {
	var b strings.Builder
	c := r.cfg
	fmt.Fprintf(&b, "## bridgebench: %s\n\n", strings.Join(c.targets, " vs "))
	fmt.Fprintf(&b, "- machine: %s; load average %s at the start, %s at the end (other work shares the cores)\n", r.machine, r.loadStart, r.loadEnd)
	fmt.Fprintf(&b, "- command: `bridgebench %s`\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "- run: %s to %s (%s); %d round(s), interleaved per workload (%s, one fresh process per run); RLIMIT_NOFILE %d\n",
		r.started.Format(time.DateTime), r.finished.Format(time.TimeOnly), r.finished.Sub(r.started).Truncate(time.Second),
		c.rounds, strings.Join(c.targets, ", "), r.nofile)
	for _, t := range append([]string{targetHello}, c.targets...) {
		if s, ok := r.settings[t]; ok && len(s) > 0 {
			fmt.Fprintf(&b, "- %s: %s\n", t, strings.Join(s, ", "))
		}
	}
	pubGen := "the tool's Go clients (no wrk on PATH)"
	if c.wrk != "" {
		pubGen = fmt.Sprintf("wrk -t%d -c%d -d%s (publish rows); every other row from the tool's own clients", c.wrkThreads, c.pubConns, c.pubDuration)
	}
	fmt.Fprintf(&b, "- load: %s\n\n", pubGen)

	hasN := slices.Contains(c.targets, targetNchan) && slices.Contains(c.targets, targetBridged)
	head := "| workload | unit | better |"
	sep := "|---|---|---|"
	for _, t := range c.targets {
		head += " " + displayName(t) + " |"
		sep += "---|"
	}
	if hasN {
		head += " bridged/Nchan |"
		sep += "---|"
	}
	b.WriteString(head + "\n" + sep + "\n")
	for _, rw := range r.rows() {
		cells := make([]cell, len(c.targets))
		any := false
		for i, t := range c.targets {
			cells[i] = r.cell(t, rw)
			any = any || !math.IsNaN(cells[i].med)
		}
		if !any {
			continue
		}
		better := "higher"
		if rw.lower {
			better = "lower"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", rw.label, rw.unit, better)
		for _, cl := range cells {
			fmt.Fprintf(&b, " %s |", cl.String(rw.prec))
		}
		if hasN {
			q := ratio(r.cell(targetBridged, rw), r.cell(targetNchan, rw))
			if math.IsNaN(q) {
				b.WriteString(" — |")
			} else {
				fmt.Fprintf(&b, " %.2f |", q)
			}
		}
		b.WriteString("\n")
	}
	if h := r.values(targetHello, "pub.single.rps"); len(h) > 0 {
		fmt.Fprintf(&b, "\nhello-world Go handler under the same publish load: %.0f req/s (p50 %.2f ms, p99 %.2f ms, server CPU %.1f µs per request)",
			median(h), median(r.values(targetHello, "pub.single.p50_ms")), median(r.values(targetHello, "pub.single.p99_ms")),
			median(r.values(targetHello, "pub.single.cpu_us_per_req")))
		if bm := r.values(targetHello, "pub.batch.msgs_per_s"); len(bm) > 0 {
			fmt.Fprintf(&b, "; with %d-message bodies %.0f msg/s", c.batch, median(bm))
		}
		b.WriteString(".\n")
	}
	b.WriteString("\nMedians of the runs, with their range in parentheses. Latency is publish-to-arrival: the publisher's wall clock in the payload against the reader's, same machine.\n")
	if len(r.failures) > 0 {
		b.WriteString("\n### Failed runs\n\n")
		for _, f := range r.failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", "\n  "))
		}
	}
	b.WriteString("\n### Runs\n\n")
	for _, res := range r.results {
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %s r%d %s: %s\n", res.Target, res.Round, res.Workload, n)
		}
	}
	return b.String()
}

func displayName(t string) string {
	if t == targetNchan {
		return "Nchan"
	}
	return t
}

// headline is a one-line summary of a result for the log.
func (res *result) headline() string {
	m := res.Metrics
	switch res.Workload {
	case "memory-sse":
		return fmt.Sprintf("%.1f KB/conn (PSS %.1f), %.2f goroutines/conn", m["mem.sse.kb_per_conn"], m["mem.sse.pss_kb_per_conn"], m["mem.sse.goroutines_per_conn"])
	case "memory-longpoll":
		return fmt.Sprintf("%.1f KB/conn (PSS %.1f), %.2f goroutines/conn", m["mem.lp.kb_per_conn"], m["mem.lp.pss_kb_per_conn"], m["mem.lp.goroutines_per_conn"])
	case "sse":
		return fmt.Sprintf("p50 %.2f ms p99 %.2f ms max %.1f ms; delivered %.0f/%.0f, lost %.0f, dup %.0f",
			m["sse.p50_ms"], m["sse.p99_ms"], m["sse.max_ms"], m["sse.delivered"], m["sse.expected"], m["sse.lost"], m["sse.duplicated"])
	case "longpoll":
		return fmt.Sprintf("wake p50 %.2f ms p99 %.2f ms; loop p99 %.2f ms; lost %.0f, dup %.0f; %.1f µs CPU/delivery",
			m["lp.wake.p50_ms"], m["lp.wake.p99_ms"], m["lp.loop.p99_ms"], m["lp.lost"], m["lp.duplicated"], m["lp.cpu_us_per_delivery"])
	case "poll":
		return fmt.Sprintf("p50 %.2f ms p99 %.2f ms; %.0f answers/s; lost %.0f", m["poll.p50_ms"], m["poll.p99_ms"], m["poll.answers_per_s"], m["poll.lost"])
	case "publish":
		s := fmt.Sprintf("single %.0f req/s (p50 %.2f ms, p99 %.2f ms)", m["pub.single.rps"], m["pub.single.p50_ms"], m["pub.single.p99_ms"])
		if v, ok := m["pub.batch.msgs_per_s"]; ok {
			s += fmt.Sprintf("; batch %.0f msg/s", v)
		}
		return s
	}
	return ""
}

func (r *report) writeJSON(path string) error {
	out := struct {
		Machine  string              `json:"machine"`
		Command  []string            `json:"command"`
		Started  time.Time           `json:"started"`
		Finished time.Time           `json:"finished"`
		Settings map[string][]string `json:"settings"`
		Results  []*result           `json:"results"`
		Failures []string            `json:"failures,omitempty"`
	}{r.machine, os.Args, r.started, r.finished, r.settings, r.results, r.failures}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
