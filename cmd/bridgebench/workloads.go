package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// result is what one workload measured on one target in one round.
type result struct {
	Workload string             `json:"workload"`
	Target   string             `json:"target"`
	Round    int                `json:"round"`
	Metrics  map[string]float64 `json:"metrics"`
	Notes    []string           `json:"notes,omitempty"`
	hists    map[string]*Histogram
}

func newResult() *result {
	return &result{Metrics: map[string]float64{}, hists: map[string]*Histogram{}}
}

func (r *result) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// latency puts a histogram's summary in the metrics under prefix, in milliseconds.
func (r *result) latency(prefix string, h *Histogram) {
	r.hists[prefix] = h
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	r.Metrics[prefix+".p50_ms"] = ms(h.Quantile(0.50))
	r.Metrics[prefix+".p90_ms"] = ms(h.Quantile(0.90))
	r.Metrics[prefix+".p99_ms"] = ms(h.Quantile(0.99))
	r.Metrics[prefix+".max_ms"] = ms(h.Max())
	r.Metrics[prefix+".samples"] = float64(h.Count())
}

func (r *result) tally(prefix string, t Tally) {
	r.Metrics[prefix+".expected"] = float64(t.Expected)
	r.Metrics[prefix+".delivered"] = float64(t.Delivered)
	r.Metrics[prefix+".lost"] = float64(t.Lost)
	r.Metrics[prefix+".duplicated"] = float64(t.Duplicated)
	r.Metrics[prefix+".unexpected"] = float64(t.Unexpected)
	if t.Expected > 0 {
		r.Metrics[prefix+".delivered_pct"] = 100 * float64(t.Delivered) / float64(t.Expected)
	}
}

// ---------------------------------------------------------------------------------------------
// SSE

// sseFleet is n event-stream connections, one per user, each read by one goroutine with a 1 KiB
// buffer (two for a chunked stream). With a ledger, every message is accounted and its latency
// (arrival minus the publish timestamp in its payload) recorded.
type sseFleet struct {
	connected, failed, disconnects, resets, closes atomic.Int64
	lastErr                                        atomic.Pointer[string]
	cancel                                         context.CancelFunc
	wg                                             sync.WaitGroup
}

func startSSE(ctx context.Context, cfg *config, p *proc, n int, l *Ledger, hist *Histogram, pr *progress) *sseFleet {
	f := &sseFleet{}
	ctx, f.cancel = context.WithCancel(ctx)
	g := make(gate, cfg.dialConcurrency)
	for u := range n {
		f.wg.Go(func() { f.client(ctx, g, p, u, l, hist, pr) })
	}
	return f
}

func (f *sseFleet) fail(err error) {
	f.failed.Add(1)
	e := err.Error()
	f.lastErr.Store(&e)
}

func (f *sseFleet) client(ctx context.Context, g gate, p *proc, u int, l *Ledger, hist *Histogram, pr *progress) {
	if !g.enter(ctx) {
		return
	}
	c, err := dial(ctx, p.addr, 1024)
	if err != nil {
		g.leave()
		f.fail(err)
		return
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.close) // unblocks the read below at the end
	defer stop()
	if err := c.write(p.proto.sseRequest(nil, u)); err != nil {
		g.leave()
		f.fail(err)
		return
	}
	h, err := c.readHead()
	g.leave()
	if err != nil || h.status != 200 {
		if err == nil {
			b, _ := c.readBody(h, nil)
			err = fmt.Errorf("sse: status %d: %.200s", h.status, b)
		}
		f.fail(err)
		return
	}
	f.connected.Add(1)
	pr.conns.Add(1)
	sr := newSSEReader(c.body(h), 1024)
	for {
		ev, data, err := sr.next()
		if err != nil {
			if ctx.Err() == nil {
				f.disconnects.Add(1)
				if !errors.Is(err, io.EOF) {
					f.fail(err)
				}
			}
			return
		}
		switch string(ev) {
		case "hello", "ping":
			continue
		case "reset":
			f.resets.Add(1)
			continue
		case "close":
			f.closes.Add(1)
			continue
		}
		if l == nil {
			continue
		}
		now := time.Now().UnixNano()
		scanPayloads(data, func(m payload) {
			hist.Record(time.Duration(now - m.TS))
			if m.User < 0 || m.User >= len(l.users) {
				return
			}
			if l.Got(u, m.User, m.Seq) {
				pr.recv.Add(1)
			}
		})
	}
}

func (f *sseFleet) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *sseFleet) describe() string {
	s := fmt.Sprintf("%d connected, %d failed, %d dropped by the server, %d resets, %d close events",
		f.connected.Load(), f.failed.Load(), f.disconnects.Load(), f.resets.Load(), f.closes.Load())
	if e := f.lastErr.Load(); e != nil {
		s += "; last error: " + *e
	}
	return s
}

// connectAll waits until every connection is up and the server counts them all, within limit.
func connectAll(ctx context.Context, p *proc, n int, connected *atomic.Int64, failed *atomic.Int64, limit time.Duration) error {
	if !waitFor(ctx, limit, func() bool { return connected.Load()+failed.Load() >= int64(n) }) {
		return fmt.Errorf("only %d of %d connections up after %s", connected.Load(), n, limit)
	}
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d connections failed", failed.Load(), n)
	}
	var last int
	var lastErr error
	if !waitFor(ctx, limit, func() bool { last, lastErr = p.proto.waiting(ctx); return lastErr == nil && last >= n }) {
		return fmt.Errorf("the server reports %d of %d subscribers after %s (%v)", last, n, limit, lastErr)
	}
	return nil
}

// runSSE: n streams, one per user; messages published round-robin over the users at a fixed
// total rate for the duration; every delivery's latency and every message accounted.
func runSSE(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	n := cfg.conns
	res := newResult()
	l := NewLedger(n)
	hist := &Histogram{}
	pr.phase(fmt.Sprintf("sse %s: connecting %d", p.kind, n), 0)
	f := startSSE(ctx, cfg, p, n, l, hist, pr)
	defer f.stop()
	if err := connectAll(ctx, p, n, &f.connected, &f.failed, cfg.connectWithin); err != nil {
		return nil, fmt.Errorf("sse: %w (%s)", err, f.describe())
	}
	pr.phase(fmt.Sprintf("sse %s: %d streams, %.0f msg/s", p.kind, n, cfg.rate), cfg.duration)
	pr.conns.Store(f.connected.Load())
	var st pubStats
	count := int64(cfg.rate * cfg.duration.Seconds())
	start := time.Now()
	p.prof.cpu(ctx, "publishing", cfg.duration)
	publish(ctx, p.addr, p.proto, l, pubPlan{count: count, rate: cfg.rate, conns: cfg.publishers,
		pick: func(i int64) int { return int(i % int64(n)) }}, &st, pr)
	elapsed := time.Since(start)
	// Let the last deliveries arrive: every user complete, or the grace period is over.
	waitFor(ctx, cfg.grace, func() bool {
		for u := range n {
			if !l.Complete(u) {
				return false
			}
		}
		return true
	})
	res.latency("sse", hist)
	res.tally("sse", l.Tally())
	res.Metrics["sse.publish_rate"] = float64(st.ok.Load()) / elapsed.Seconds()
	res.Metrics["sse.publish_failed"] = float64(st.failed.Load())
	res.Metrics["sse.publish_max_lag_ms"] = float64(st.maxLag.Load()) / 1e6
	res.Metrics["sse.disconnects"] = float64(f.disconnects.Load())
	res.Metrics["sse.resets"] = float64(f.resets.Load())
	res.note("sse: %d streams, %d messages at %.0f/s over %s (achieved %.0f/s, worst publish lag %.1f ms); %s",
		n, count, cfg.rate, cfg.duration, res.Metrics["sse.publish_rate"], res.Metrics["sse.publish_max_lag_ms"], f.describe())
	if st.failed.Load() > 0 {
		res.note("sse: %d publishes failed: %s", st.failed.Load(), st.summary())
	}
	return res, nil
}

// ---------------------------------------------------------------------------------------------
// Long-poll

// wakeWindow is the width of publish time the wake-up's latencies are grouped by, to tell a
// stall (a few windows slow) from a slow spread (every window slow).
const wakeWindow = 20 * time.Millisecond

// wakeSeries keeps each wake-up's publish time and latency, and when the publish that sent it
// was answered: a wake-up whose publish was answered quickly and which still arrived late was
// held up on its way to the client, not in the server's queue. It is safe for concurrent use.
type wakeSeries struct {
	mu    sync.Mutex
	at    []int64 // publish time, Unix ns (the payload's timestamp)
	lat   []time.Duration
	user  []int
	acked []atomic.Int64 // by user: when the wake-up's publish was answered, Unix ns
}

func (w *wakeSeries) add(at int64, d time.Duration, user int) {
	w.mu.Lock()
	w.at = append(w.at, at)
	w.lat = append(w.lat, d)
	w.user = append(w.user, user)
	w.mu.Unlock()
}

// published records that user's wake-up publish was answered at (Unix ns).
func (w *wakeSeries) published(user int, at int64) {
	if user >= 0 && user < len(w.acked) {
		w.acked[user].Store(at)
	}
}

// publishAnswered returns how long after its publish time wake-up i's publish was answered, or
// -1 when that is not known.
func (w *wakeSeries) publishAnswered(i int) time.Duration {
	u := w.user[i]
	if u < 0 || u >= len(w.acked) {
		return -1
	}
	a := w.acked[u].Load()
	if a == 0 {
		return -1
	}
	return time.Duration(a - w.at[i])
}

// lateSplit counts the wake-ups later than limit, and those of them whose publish was answered
// later than limit too (held in the server, or before it reached the server).
func (w *wakeSeries) lateSplit(limit time.Duration) (late, publishLate int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, d := range w.lat {
		if d <= limit {
			continue
		}
		late++
		if w.publishAnswered(i) > limit {
			publishLate++
		}
	}
	return late, publishLate
}

// worstWindow groups the wake-ups by width of publish time from the first and returns the
// window with the highest median latency: its offset, its count and its median; typical is the
// median of every window's median. ok is false when there are none.
func (w *wakeSeries) worstWindow(width time.Duration) (offset time.Duration, n int, worst, typical time.Duration, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.at) == 0 || width <= 0 {
		return 0, 0, 0, 0, false
	}
	first := slices.Min(w.at)
	windows := map[int64][]time.Duration{}
	for i, at := range w.at {
		k := (at - first) / int64(width)
		windows[k] = append(windows[k], w.lat[i])
	}
	median := func(v []time.Duration) time.Duration {
		slices.Sort(v)
		return v[len(v)/2]
	}
	var medians []time.Duration
	for _, k := range slices.Sorted(maps.Keys(windows)) {
		m := median(windows[k])
		medians = append(medians, m)
		if m > worst || n == 0 {
			offset, n, worst = time.Duration(k)*width, len(windows[k]), m
		}
	}
	return offset, n, worst, median(medians), true
}

// writeCSV writes one line per wake-up, in publish order: publish time (Unix ns), latency (ns)
// and how long after the publish time the publish itself was answered (ns; -1 unknown).
func (w *wakeSeries) writeCSV(path string) error {
	w.mu.Lock()
	order := make([]int, len(w.at))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(w.at[a], w.at[b]) })
	var b []byte
	b = append(b, "publish_unix_ns,latency_ns,publish_answered_ns\n"...)
	for _, i := range order {
		b = strconv.AppendInt(b, w.at[i], 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(w.lat[i]), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(w.publishAnswered(i)), 10)
		b = append(b, '\n')
	}
	w.mu.Unlock()
	return os.WriteFile(path, b, 0o644)
}

// lpFleet is n long-polling clients, one per user, each on one keep-alive connection that
// re-polls as soon as an answer arrives, from the position the answer gave (bridged's cursor,
// Nchan's Last-Modified/Etag). Message 0 of each user is the wake-up message; the others are the
// re-poll loop's.
type lpFleet struct {
	connected, failed, answers, errors, reconnects, resets atomic.Int64
	loopDelivered                                          atomic.Int64
	lastErr                                                atomic.Pointer[string]
	wake, loop                                             Histogram
	wakeSeries                                             wakeSeries
	cancel                                                 context.CancelFunc
	wg                                                     sync.WaitGroup
}

func startLongPoll(ctx context.Context, cfg *config, p *proc, n int, l *Ledger, pr *progress) *lpFleet {
	f := &lpFleet{}
	f.wakeSeries.acked = make([]atomic.Int64, n)
	ctx, f.cancel = context.WithCancel(ctx)
	g := make(gate, cfg.dialConcurrency)
	for u := range n {
		f.wg.Go(func() { f.client(ctx, g, p, u, l, pr) })
	}
	return f
}

func (f *lpFleet) note(err error) {
	e := err.Error()
	f.lastErr.Store(&e)
}

func (f *lpFleet) client(ctx context.Context, g gate, p *proc, u int, l *Ledger, pr *progress) {
	var st pollState
	var req, body []byte
	first := true
	for ctx.Err() == nil {
		if !g.enter(ctx) {
			return
		}
		c, err := dial(ctx, p.addr, 1024)
		g.leave()
		if err != nil {
			if first {
				f.failed.Add(1)
			}
			f.note(err)
			sleepCtx(ctx, 100*time.Millisecond) // bounded by ctx; a refused dial must not spin
			continue
		}
		if first {
			f.connected.Add(1)
			pr.conns.Add(1)
			first = false
		} else {
			f.reconnects.Add(1)
		}
		stop := context.AfterFunc(ctx, c.close)
		for ctx.Err() == nil {
			req = p.proto.pollRequest(req[:0], u, &st, true)
			h, b, _, err := c.roundTrip(req, body)
			body = b
			if err != nil {
				if ctx.Err() == nil {
					f.errors.Add(1)
					f.note(err)
				}
				break
			}
			now := time.Now().UnixNano()
			f.answers.Add(1)
			if err := p.proto.pollAnswer(h, body, &st); err != nil {
				f.errors.Add(1)
				pr.errs.Add(1)
				f.note(err)
				sleepCtx(ctx, 100*time.Millisecond)
			}
			if l != nil {
				scanPayloads(body, func(m payload) {
					d := time.Duration(now - m.TS)
					if m.Seq == 0 {
						f.wake.Record(d)
						f.wakeSeries.add(m.TS, d, m.User)
					} else {
						f.loop.Record(d)
					}
					if m.User < 0 || m.User >= len(l.users) {
						return
					}
					if l.Got(u, m.User, m.Seq) {
						pr.recv.Add(1)
						if m.Seq > 0 {
							f.loopDelivered.Add(1)
						}
					}
				})
			}
			if h.close {
				break
			}
		}
		stop()
		c.close()
	}
	f.resets.Add(int64(st.resets))
}

func (f *lpFleet) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *lpFleet) describe() string {
	s := fmt.Sprintf("%d connected, %d failed, %d answers, %d errors, %d reconnects, %d resets",
		f.connected.Load(), f.failed.Load(), f.answers.Load(), f.errors.Load(), f.reconnects.Load(), f.resets.Load())
	if e := f.lastErr.Load(); e != nil {
		s += "; last error: " + *e
	}
	return s
}

func allComplete(l *Ledger, n int) func() bool {
	return func() bool {
		for u := range n {
			if !l.Complete(u) {
				return false
			}
		}
		return true
	}
}

// runLongPoll: n waiters parked; one message per user published at once (as fast as the
// publishers go) and the wake-up latency of each recorded; then, with every client re-polling
// from its position, messages at a fixed rate for the duration: every message accounted, and the
// server's CPU time over the loop divided by the deliveries.
func runLongPoll(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	n := cfg.lpConns
	res := newResult()
	l := NewLedger(n)
	pr.phase(fmt.Sprintf("longpoll %s: parking %d", p.kind, n), 0)
	f := startLongPoll(ctx, cfg, p, n, l, pr)
	defer f.stop()
	if err := connectAll(ctx, p, n, &f.connected, &f.failed, cfg.connectWithin); err != nil {
		return nil, fmt.Errorf("longpoll: %w (%s)", err, f.describe())
	}

	pr.phase(fmt.Sprintf("longpoll %s: waking %d", p.kind, n), 0)
	var wst pubStats
	// The server's CPU over the wake-up, the re-polls it sets off included, and the tool's own:
	// both share the machine's cores while it lasts. Under -profile, a one-second CPU profile
	// covers it (and the loop's starts when that one ends).
	pids := p.pids()
	wcpu0, self0 := cpuSeconds(pids), selfCPU()
	p.prof.cpu(ctx, "wake", time.Second)
	wake0 := time.Now()
	publish(ctx, p.addr, p.proto, l, pubPlan{count: int64(n), conns: cfg.publishers,
		pick: func(i int64) int { return int(i) }, acked: f.wakeSeries.published}, &wst, pr)
	wakePublished := time.Since(wake0)
	if !waitFor(ctx, cfg.connectWithin, allComplete(l, n)) {
		t := l.Tally()
		res.note("longpoll: wake-up incomplete: %d of %d delivered", t.Delivered, t.Expected)
	}
	wcpu, self := cpuSeconds(pids)-wcpu0, selfCPU()-self0
	res.Metrics["lp.wake_cpu_us"] = wcpu / float64(n) * 1e6
	res.note("longpoll: wake-up: %d publishes from %d connections took %.0f ms; server CPU %.2f s (%.0f µs per wake-up), bridgebench's %.2f s, until every wake-up arrived",
		n, cfg.publishers, wakePublished.Seconds()*1e3, wcpu, wcpu/float64(n)*1e6, self)
	res.latency("lp.wake", &f.wake)
	if off, n, worst, typical, ok := f.wakeSeries.worstWindow(wakeWindow); ok {
		res.note("longpoll: wake-up by %s of publish time: the windows' median latency is %.1f ms; the worst window, at +%.0f ms, had %d wake-ups and a median of %.1f ms",
			wakeWindow, typical.Seconds()*1e3, off.Seconds()*1e3, n, worst.Seconds()*1e3)
	}
	if late, publishLate := f.wakeSeries.lateSplit(5 * time.Millisecond); late > 0 {
		res.note("longpoll: %d wake-ups took longer than 5 ms; the publish of %d of them was answered later than 5 ms too", late, publishLate)
	}
	if p.wakeLog != "" {
		if err := f.wakeSeries.writeCSV(p.wakeLog); err != nil {
			return nil, fmt.Errorf("longpoll: -wake-log: %w", err)
		}
		res.note("longpoll: wake-up latencies in %s", p.wakeLog)
	}

	pr.phase(fmt.Sprintf("longpoll %s: re-poll loop, %.0f msg/s", p.kind, cfg.rate), cfg.duration)
	cpu0, d0, t0 := cpuSeconds(pids), f.loopDelivered.Load(), time.Now()
	p.prof.cpu(ctx, "loop", cfg.duration)
	var st pubStats
	count := int64(cfg.rate * cfg.duration.Seconds())
	publish(ctx, p.addr, p.proto, l, pubPlan{count: count, rate: cfg.rate, conns: cfg.publishers,
		pick: func(i int64) int { return int(i % int64(n)) }}, &st, pr)
	pubElapsed := time.Since(t0)
	waitFor(ctx, cfg.grace, allComplete(l, n))
	cpu1, d1, wall := cpuSeconds(pids), f.loopDelivered.Load(), time.Since(t0)

	res.latency("lp.loop", &f.loop)
	res.tally("lp", l.Tally())
	if d := d1 - d0; d > 0 {
		res.Metrics["lp.cpu_us_per_delivery"] = (cpu1 - cpu0) / float64(d) * 1e6
	}
	res.Metrics["lp.server_cpu_pct"] = 100 * (cpu1 - cpu0) / wall.Seconds()
	res.Metrics["lp.publish_rate"] = float64(st.ok.Load()) / pubElapsed.Seconds()
	res.Metrics["lp.publish_failed"] = float64(st.failed.Load() + wst.failed.Load())
	res.Metrics["lp.errors"] = float64(f.errors.Load())
	res.note("longpoll: %d waiters; wake-up of %d; loop of %d messages at %.0f/s over %s (achieved %.0f/s, worst lag %.1f ms); server CPU %.2f s for %d deliveries; %s",
		n, n, count, cfg.rate, cfg.duration, res.Metrics["lp.publish_rate"], float64(st.maxLag.Load())/1e6, cpu1-cpu0, d1-d0, f.describe())
	if st.failed.Load()+wst.failed.Load() > 0 {
		res.note("longpoll: publishes failed: %s %s", wst.summary(), st.summary())
	}
	return res, nil
}

// ---------------------------------------------------------------------------------------------
// Plain poll

// runPoll: m clients poll their stream (bridged: /v1/poll?cursor=, Nchan: an interval-poll
// location with its cache headers) at a fixed total rate, each on its own keep-alive connection,
// while messages are published at a lower rate; the time of every answer is recorded and every
// message accounted.
func runPoll(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	m := cfg.pollClients
	res := newResult()
	l := NewLedger(m)
	var hist Histogram
	var answers, errs, withData atomic.Int64
	var lastErr atomic.Pointer[string]
	pr.phase(fmt.Sprintf("poll %s: %d clients, %.0f polls/s", p.kind, m, cfg.pollRate), cfg.pollDuration)
	pctx, cancel := context.WithTimeout(ctx, cfg.pollDuration+cfg.grace)
	defer cancel()
	interval := time.Duration(float64(m) / cfg.pollRate * 1e9)
	start := time.Now()
	var wg sync.WaitGroup
	g := make(gate, cfg.dialConcurrency)
	for u := range m {
		wg.Go(func() {
			var st pollState
			var req, body []byte
			var c *conn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			timer := time.NewTimer(0)
			defer timer.Stop()
			<-timer.C
			offset := interval * time.Duration(u) / time.Duration(m) // spread the clients' phases
			for k := int64(0); ; k++ {
				due := start.Add(offset + time.Duration(k)*interval)
				if d := time.Until(due); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-pctx.Done():
						return
					}
				}
				if pctx.Err() != nil {
					return
				}
				if c == nil {
					if !g.enter(pctx) {
						return
					}
					var err error
					c, err = dial(pctx, p.addr, 1024)
					g.leave()
					if err != nil {
						errs.Add(1)
						continue
					}
					if k == 0 {
						pr.conns.Add(1)
					}
				}
				req = p.proto.pollRequest(req[:0], u, &st, false)
				h, b, took, err := c.roundTrip(req, body)
				body = b
				if err != nil {
					if pctx.Err() == nil {
						errs.Add(1)
						e := err.Error()
						lastErr.Store(&e)
					}
					c.close()
					c = nil
					continue
				}
				hist.Record(took)
				answers.Add(1)
				if err := p.proto.pollAnswer(h, body, &st); err != nil {
					errs.Add(1)
					pr.errs.Add(1)
					e := err.Error()
					lastErr.Store(&e)
				}
				if scanPayloads(body, func(msg payload) {
					if msg.User >= 0 && msg.User < m && l.Got(u, msg.User, msg.Seq) {
						pr.recv.Add(1)
					}
				}) > 0 {
					withData.Add(1)
				}
				if h.close {
					c.close()
					c = nil
				}
			}
		})
	}
	var st pubStats
	publish(pctx, p.addr, p.proto, l, pubPlan{count: int64(cfg.pollMsgRate * cfg.pollDuration.Seconds()), rate: cfg.pollMsgRate,
		conns: max(1, cfg.publishers/4), pick: func(i int64) int { return int(i % int64(m)) }}, &st, pr)
	sleepCtx(pctx, time.Until(start.Add(cfg.pollDuration)))
	elapsed := time.Since(start)
	waitFor(pctx, cfg.grace, allComplete(l, m)) // the pollers keep going meanwhile
	cancel()
	wg.Wait()
	res.latency("poll", &hist)
	res.tally("poll", l.Tally())
	res.Metrics["poll.answers_per_s"] = float64(answers.Load()) / time.Since(start).Seconds()
	res.Metrics["poll.errors"] = float64(errs.Load())
	res.note("poll: %d clients, %.0f polls/s for %s (%.0f answers/s, %d with messages, %d errors), %.0f msg/s published",
		m, cfg.pollRate, elapsed.Truncate(time.Millisecond), res.Metrics["poll.answers_per_s"], withData.Load(), errs.Load(), cfg.pollMsgRate)
	if e := lastErr.Load(); e != nil {
		res.note("poll: last error: %s", *e)
	}
	return res, nil
}
