package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// Defaults of the RSS bound, peak RSS <= BRIDGE_MAX_MEMORY + clients × -per-conn + -rss-base.
// Measured on this project's 2-core CI kind of machine (docs/benchmarks.md, "Soak (issue 3)"):
// bridged's RSS grew by about 16 KB per client connection held (an SSE stream, or a long-poll with
// its keep-alive connection) in the long soak with traffic and churn, before the flood, once
// connections were parked (49–63 KiB before); 32 KiB per connection leaves room for twice that. The base covers the runtime and
// binary (10–16 MiB idle) and the Go collector's headroom. bridged sets its own soft memory limit,
// 1.5 × BRIDGE_MAX_MEMORY + 32 KiB per open connection + 32 MiB (cmd/bridged/memlimit.go), which
// with the soak's 64 MiB store is 32 MiB under this bound: a margin for the limit's softness and
// for what RSS holds beyond the runtime's accounting. (Past -max-memory 128MiB the limit is above
// the bound.) Before bridged set a limit, the heap grew to about twice what was live with
// GOGC=100, and the long soak peaked at 448–466 MiB against this bound's 410 MiB.
const (
	defaultPerConn = 32 << 10
	defaultRSSBase = 96 << 20
)

// summary is what the verdict judges; report fills it from a finished run.
type summary struct {
	clients                                       int
	delivered                                     int
	lost, dups, ooo, mismatched, premature, backw int
	protocol, behind, stalls                      int
	baseGoroutines, afterGoroutines, slack        int
	afterConns                                    int
	peakRSS, bound                                int64
	raceBuild                                     bool
	storeFull                                     int64
	flooded                                       bool // a flood was planned
	exitCode                                      int
	killed, raceReport, panics                    bool
	interrupted                                   bool
	pubErr                                        error
}

// verdict returns why the soak failed, one reason a line, or nothing when it passed.
func verdict(s summary) []string {
	var why []string
	fail := func(cond bool, format string, a ...any) {
		if cond {
			why = append(why, fmt.Sprintf(format, a...))
		}
	}
	fail(s.interrupted, "the soak was interrupted")
	fail(s.pubErr != nil, "the steady publisher failed: %v", s.pubErr)
	fail(s.delivered == 0, "no message was delivered at all")
	fail(s.lost > 0, "%d messages lost (acknowledged, never delivered, no reset covering them)", s.lost)
	fail(s.dups > 0, "%d messages duplicated", s.dups)
	fail(s.ooo > 0, "%d messages out of order", s.ooo)
	fail(s.mismatched > 0, "%d deliveries whose id is not the one publish returned", s.mismatched)
	fail(s.premature > 0, "%d messages excused by a reset before they could have expired or been evicted", s.premature)
	fail(s.backw > 0, "%d resets moved a client backwards", s.backw)
	fail(s.protocol > 0, "%d frames or answers broke the API contract", s.protocol)
	fail(s.behind > 0, "%d clients had not caught up when the drain ran out", s.behind)
	fail(s.stalls > 0, "%d times a stream or long-poll went silent far past its heartbeat or wait (a hang?)", s.stalls)
	fail(s.afterConns > 0, "bridged still counts %d open connections after every client left", s.afterConns)
	fail(s.afterGoroutines > s.baseGoroutines+s.slack, "bridged's goroutines did not return to the baseline: %d after, %d before (slack %d)",
		s.afterGoroutines, s.baseGoroutines, s.slack)
	fail(!s.raceBuild && s.peakRSS > s.bound, "peak RSS %s is above the bound %s", formatBytes(s.peakRSS), formatBytes(s.bound))
	fail(s.flooded && s.storeFull == 0, "the flood never drove the store to BRIDGE_MAX_MEMORY (no 503 store_full): the soak did not test the cap")
	fail(s.killed, "bridged did not exit within 15 s of SIGTERM")
	fail(!s.killed && s.exitCode != 0, "bridged exited with code %d", s.exitCode)
	fail(s.raceReport, "the race detector reported a data race in bridged")
	fail(s.panics, "bridged panicked")
	return why
}

// totals adds up clients.
type totals struct {
	clients, connects, drops, sleeps, refused, stalls, ended, protocol, netErrs, behind int
	delivered, lost, dups, ooo, resets, unresolved, recovered, excused, unacked         int
	mismatched, premature, backwards                                                    int
	closes                                                                              map[string]int
}

func (t *totals) add(c *client) {
	t.clients++
	t.connects += c.connects
	t.drops += c.drops
	t.sleeps += c.sleeps
	t.refused += c.refused[refused429] + c.refused[refused503]
	t.stalls += c.stalls
	t.ended += c.ended
	t.protocol += c.protocol
	t.netErrs += c.netErrs
	if !c.caughtUp {
		t.behind++
	}
	tl := c.tally
	t.delivered += tl.Delivered
	t.lost += tl.Lost
	t.dups += tl.Dups
	t.ooo += tl.OutOfOrder
	t.resets += tl.Resets
	t.unresolved += tl.Unresolved
	t.recovered += tl.Recovered
	t.excused += tl.Excused
	t.unacked += tl.Unacked
	t.mismatched += tl.Mismatched
	t.premature += tl.Premature
	t.backwards += tl.Backwards
	for k, v := range c.closes {
		if t.closes == nil {
			t.closes = map[string]int{}
		}
		t.closes[k] += v
	}
}

func (s *soak) totals() (all totals, by [numTransports]totals) {
	for _, c := range s.clients {
		all.add(c)
		by[c.kind].add(c)
	}
	return all, by
}

func (s *soak) bound() int64 {
	return int64(s.cfg.maxMemory) + int64(s.cfg.clients())*int64(s.cfg.perConn) + int64(s.cfg.rssBase)
}

func peak(series []sample, f func(sample) int64) (v int64, at time.Duration) {
	for _, sm := range series {
		if x := f(sm); x > v {
			v, at = x, sm.t
		}
	}
	return v, at
}

func (s *soak) summarize(res result) summary {
	all, _ := s.totals()
	series := s.series()
	peakRSS, _ := peak(series, func(sm sample) int64 { return sm.rss })
	return summary{
		clients:         all.clients,
		delivered:       all.delivered,
		lost:            all.lost,
		dups:            all.dups,
		ooo:             all.ooo,
		mismatched:      all.mismatched,
		premature:       all.premature,
		backw:           all.backwards,
		protocol:        all.protocol,
		behind:          all.behind,
		stalls:          all.stalls,
		baseGoroutines:  res.baseline.Goroutines,
		afterGoroutines: res.settled.Goroutines,
		slack:           s.cfg.goroutineSlack,
		afterConns:      res.settled.Connections.Total,
		peakRSS:         max(peakRSS, res.settledRSS),
		bound:           s.bound(),
		raceBuild:       s.cfg.race,
		storeFull:       s.pub.storeFull.Load() + s.pub.floodFull.Load(),
		flooded:         s.cfg.floodEnd > s.cfg.floodStart,
		exitCode:        res.exitCode,
		killed:          res.killed,
		raceReport:      res.race,
		panics:          res.panics,
		interrupted:     res.interrupted,
		pubErr:          res.pubErr,
	}
}

// connectedRSS is the RSS once every client had connected and before the flood: the last sample
// at or after the ramp and before the flood starts, if there is one.
func (s *soak) connectedRSS(series []sample) (sample, bool) {
	floodAt, _ := s.floodSpan()
	var best sample
	found := false
	for _, sm := range series {
		if sm.t >= s.cfg.ramp+time.Second && sm.t < floodAt && sm.ok {
			best, found = sm, true
		}
	}
	return best, found
}

// report writes the tables, the series and the verdict.
func (s *soak) report(res result, why []string) {
	out := s.out
	cfg := &s.cfg
	all, by := s.totals()
	series := s.series()
	floodRate := "unpaced"
	if cfg.floodRate > 0 {
		floodRate = formatBytes(int64(cfg.floodRate)) + "/s"
	}
	fmt.Fprintf(out, "\n== bridgesoak: %d SSE + %d long-poll clients over %d users, %s, drops every %s on average (%.0f%% past the TTL), %.0f msg/s steady, flood (%s) %.0f%%–%.0f%% of the run\n",
		cfg.sse, cfg.longpoll, cfg.users, cfg.duration, cfg.dropMean, 100*cfg.sleepy, cfg.rate, floodRate, 100*cfg.floodStart, 100*cfg.floodEnd)
	fmt.Fprintf(out, "   bridged: BRIDGE_MAX_MEMORY=%s BRIDGE_MESSAGE_TTL=%s BRIDGE_STREAM_MAX_MESSAGES=%d BRIDGE_HEARTBEAT=%s; seed %d\n\n",
		formatBytes(int64(cfg.maxMemory)), cfg.ttl, cfg.streamMax, cfg.heartbeat, cfg.seed)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tclients\tconnects\tdrops\tpast TTL\tdelivered\tlost\tdup\tout of order\tresets\texcused\trefused\tstalls\tother errors\tbehind\t")
	row := func(name string, t totals) {
		other := t.mismatched + t.premature + t.backwards + t.protocol
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, t.clients, t.connects, t.drops, t.sleeps,
			t.delivered, t.lost, t.dups, t.ooo, t.resets, t.excused, t.refused, t.stalls, other, t.behind)
	}
	row("sse", by[sseT])
	row("long-poll", by[longPollT])
	row("all", all)
	tw.Flush()
	fmt.Fprintf(out, "(SSE connects are streams opened, long-poll connects are requests sent. delivered counts distinct messages; excused: covered by a reset; behind: not caught up at the end)\n")
	fmt.Fprintf(out, "resets: %d, %d of them with a guessed target (%d guessed messages delivered after all); %d deliveries of messages never acknowledged; SSE streams ended by bridged: %d, close frames %v; network errors %d\n",
		all.resets, all.unresolved, all.recovered, all.unacked, all.ended, all.closes, all.netErrs)
	errKinds := map[string]int{}
	for _, c := range s.clients {
		if c.lastError != "" {
			errKinds[shorten(c.lastError, 120)]++
		}
	}
	if len(errKinds) > 0 {
		fmt.Fprintf(out, "clients' last errors (one per client, first 5 kinds):\n")
		for i, k := range slices.Sorted(maps.Keys(errKinds)) {
			if i == 5 {
				break
			}
			fmt.Fprintf(out, "  %d× %s\n", errKinds[k], k)
		}
	}
	if all.mismatched+all.premature+all.backwards+all.protocol > 0 {
		fmt.Fprintf(out, "other errors: %d mismatched ids, %d premature resets, %d backward resets, %d contract breaks\n", all.mismatched, all.premature, all.backwards, all.protocol)
	}

	fmt.Fprintf(out, "\nworst clients:\n")
	worst := slices.Clone(s.clients)
	score := func(c *client) int {
		behind := 0
		if !c.caughtUp {
			behind = 1
		}
		return c.tally.bad() + c.protocol + c.stalls + behind
	}
	slices.SortStableFunc(worst, func(a, b *client) int {
		return cmp.Or(cmp.Compare(score(b), score(a)), cmp.Compare(b.tally.Resets, a.tally.Resets), cmp.Compare(b.drops, a.drops))
	})
	if len(worst) > 0 && score(worst[0]) == 0 {
		fmt.Fprintf(out, "  none: every client got every acknowledged message of its user once and in order, or was told by a reset; those reset and dropped most:\n")
	}
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, c := range worst[:min(5, len(worst))] {
		t := c.tally
		fmt.Fprintf(tw, "  #%d\t%s\t%s\tconnects %d\tdrops %d\tdelivered %d\tlost %d\tdup %d\tooo %d\tresets %d (excused %d)\tbehind %v\t%s\n",
			c.n, c.kind, c.user.name, c.connects, c.drops, t.Delivered, t.Lost, t.Dups, t.OutOfOrder, t.Resets, t.Excused, !c.caughtUp, c.lastError)
	}
	tw.Flush()

	p := &s.pub
	acked, issued := p.acked.Load(), p.issued.Load()
	fmt.Fprintf(out, "\npublishers:\n  steady: %d messages acknowledged of %d sent (%d abandoned at the stop), plus %d genesis; %d requests; refused %d store_full, %d other 503, %d 429; %d retried after no answer\n",
		acked, issued, issued-acked, len(s.users), p.attempts.Load(), p.storeFull.Load(), p.other503.Load(), p.tooMany.Load(), p.netErrs.Load())
	first := "never"
	if ff := p.firstFull.Load(); ff != 0 {
		first = fmt.Sprintf("%.1fs", time.Unix(0, ff).Sub(s.start).Seconds())
	}
	from, until := s.floodSpan()
	fmt.Fprintf(out, "  flood: from %.1fs to %.1fs: %d messages (%s) stored, %d refused store_full (first store_full at %s), %d other failures\n",
		from.Seconds(), until.Seconds(), p.floodStored.Load(), formatBytes(p.floodBytes.Load()), p.floodFull.Load(), first, p.floodOther.Load())

	peakG, peakGAt := peak(series, func(sm sample) int64 { return int64(sm.goroutines) })
	peakRSS, peakRSSAt := peak(series, func(sm sample) int64 { return sm.rss })
	peakStore, _ := peak(series, func(sm sample) int64 { return sm.storeBytes })
	peakConns, _ := peak(series, func(sm sample) int64 { return int64(sm.conns) })
	fmt.Fprintf(out, "\nbridged:\n  goroutines: baseline %d, peak %d at %.0fs, %d after the clients left (%s to settle; slack %d)\n",
		res.baseline.Goroutines, peakG, peakGAt.Seconds(), res.settled.Goroutines, res.settleTook.Round(10*time.Millisecond), cfg.goroutineSlack)
	fmt.Fprintf(out, "  connections: peak %d; %d after the clients left\n", peakConns, res.settled.Connections.Total)
	if c, ok := s.connectedRSS(series); ok {
		fmt.Fprintf(out, "  RSS: baseline %s; %s at %.0fs with %d connections, before the flood: %s per connection\n",
			formatBytes(res.baselineRSS), formatBytes(c.rss), c.t.Seconds(), c.conns, formatBytes((c.rss-res.baselineRSS)/int64(max(c.conns, 1))))
	}
	judged := ""
	if cfg.race {
		judged = " (not judged: -race build)"
	}
	fmt.Fprintf(out, "  RSS: peak %s at %.0fs, %s after the clients left; bound %s = BRIDGE_MAX_MEMORY %s + %d clients × %s + %s%s\n",
		formatBytes(peakRSS), peakRSSAt.Seconds(), formatBytes(res.settledRSS), formatBytes(s.bound()), formatBytes(int64(cfg.maxMemory)),
		cfg.clients(), formatBytes(int64(cfg.perConn)), formatBytes(int64(cfg.rssBase)), judged)
	fmt.Fprintf(out, "  store: peak %s accounted of BRIDGE_MAX_MEMORY %s\n", formatBytes(peakStore), formatBytes(int64(cfg.maxMemory)))
	how := "SIGTERM"
	if res.leakDumped {
		how = "SIGQUIT (goroutine dump in its log)"
	}
	fmt.Fprintf(out, "  exit: code %d after %s%s; drain took %s; log %d lines", res.exitCode, how, map[bool]string{true: ", killed", false: ""}[res.killed], res.drainTook.Round(100*time.Millisecond), res.logLines)
	if len(res.warns) > 0 {
		fmt.Fprintf(out, "; warnings and errors:")
		for _, k := range slices.Sorted(maps.Keys(res.warns)) {
			fmt.Fprintf(out, " %q×%d", k, res.warns[k])
		}
	}
	fmt.Fprintln(out)

	fmt.Fprintf(out, "\nseries (every %ds):\n", seriesStride(series))
	writeSeries(out, series, seriesStride(series))

	if len(why) == 0 {
		fmt.Fprintf(out, "\nVERDICT: PASS: %d clients, %d messages delivered, none lost, duplicated or out of order; goroutines back to %d (baseline %d); peak RSS %s within %s\n",
			all.clients, all.delivered, res.settled.Goroutines, res.baseline.Goroutines, formatBytes(peakRSS), formatBytes(s.bound()))
		return
	}
	fmt.Fprintf(out, "\nVERDICT: FAIL\n")
	for _, w := range why {
		fmt.Fprintf(out, "  - %s\n", w)
	}
	for _, l := range res.lastWarns {
		fmt.Fprintf(out, "  bridged: %s\n", l)
	}
}

// seriesStride picks a stride that prints at most about 40 rows.
func seriesStride(series []sample) int { return max(1, (len(series)+39)/40) }

func writeSeries(out io.Writer, series []sample, stride int) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "t\tphase\tRSS\tgoroutines\tconnections\tsse\tlong-poll\tstore\tmessages\tdelivered/s\tstore_full\t")
	var prev sample
	for i, sm := range series {
		if i%stride != 0 && i != len(series)-1 {
			continue
		}
		rate := 0.0
		if dt := (sm.t - prev.t).Seconds(); i > 0 && dt > 0 {
			rate = float64(sm.delivered-prev.delivered) / dt
		}
		fmt.Fprintf(tw, "%.0fs\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%.0f\t%d\t\n", sm.t.Seconds(), sm.phase, formatBytes(sm.rss), sm.goroutines,
			sm.conns, sm.sse, sm.lp, formatBytes(sm.storeBytes), sm.storeMsgs, rate, sm.full)
		prev = sm
	}
	tw.Flush()
}

// csv returns every sample as CSV.
func (s *soak) csv() []byte {
	var b bytes.Buffer
	b.WriteString("t_s,phase,rss_bytes,goroutines,connections,sse,longpoll,store_bytes,store_messages,client_open,delivered,store_full,refused,resets\n")
	for _, sm := range s.series() {
		fmt.Fprintf(&b, "%.3f,%s,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d\n", sm.t.Seconds(), sm.phase, sm.rss, sm.goroutines, sm.conns,
			sm.sse, sm.lp, sm.storeBytes, sm.storeMsgs, sm.open, sm.delivered, sm.full, sm.refused, sm.resets)
	}
	return b.Bytes()
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// floodSpan returns when the flood ran, since the start: as it happened when it did run (it may
// outlast -flood-end until the store first refuses), else as planned.
func (s *soak) floodSpan() (from, until time.Duration) {
	from = time.Duration(s.cfg.floodStart * float64(s.cfg.duration))
	until = time.Duration(s.cfg.floodEnd * float64(s.cfg.duration))
	if b := s.floodBegan.Load(); b != 0 {
		from = time.Duration(b)
		if e := s.floodEnded.Load(); e != 0 {
			until = time.Duration(e)
		}
	}
	return from, until
}
