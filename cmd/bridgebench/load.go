package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// progress is the one status line the tool keeps up to date while it runs: on a terminal it is
// rewritten in place every second, otherwise a line is printed every 5 s. Counters are atomics
// bumped by the connection goroutines.
type progress struct {
	out   io.Writer
	tty   bool
	label atomic.Pointer[string]
	start atomic.Int64 // unix ns of the current phase's start
	until atomic.Int64 // unix ns the current phase is expected to end, or 0
	conns atomic.Int64
	sent  atomic.Int64
	recv  atomic.Int64
	errs  atomic.Int64

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newProgress(out *os.File) *progress {
	fi, err := out.Stat()
	p := &progress{out: out, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0,
		stop: make(chan struct{}), done: make(chan struct{})}
	p.phase("starting", 0)
	go p.loop() // joined by close
	return p
}

// phase names what runs now, expected to last d (0: unknown), and clears the counters.
func (p *progress) phase(label string, d time.Duration) {
	p.label.Store(&label)
	now := time.Now()
	p.start.Store(now.UnixNano())
	if d > 0 {
		p.until.Store(now.Add(d).UnixNano())
	} else {
		p.until.Store(0)
	}
	p.conns.Store(0)
	p.sent.Store(0)
	p.recv.Store(0)
	p.errs.Store(0)
}

func (p *progress) line() string {
	el := time.Since(time.Unix(0, p.start.Load())).Truncate(100 * time.Millisecond)
	s := fmt.Sprintf("%s  %s", *p.label.Load(), el)
	if u := p.until.Load(); u > 0 {
		s += "/" + time.Duration(u-p.start.Load()).Truncate(100*time.Millisecond).String()
	}
	return s + fmt.Sprintf("  conns %d  sent %d  recv %d  errors %d", p.conns.Load(), p.sent.Load(), p.recv.Load(), p.errs.Load())
}

func (p *progress) loop() {
	defer close(p.done)
	every := 5 * time.Second
	if p.tty {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			if p.tty {
				fmt.Fprint(p.out, "\r\033[K")
			}
			return
		case <-t.C:
			if p.tty {
				fmt.Fprintf(p.out, "\r\033[K%s", p.line())
			} else {
				fmt.Fprintln(p.out, p.line())
			}
		}
	}
}

// logf prints a message on its own line without garbling the status line.
func (p *progress) logf(format string, a ...any) {
	if p.tty {
		fmt.Fprint(p.out, "\r\033[K")
	}
	fmt.Fprintf(p.out, format+"\n", a...)
}

// close stops the status line; it may be called more than once.
func (p *progress) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

// pubStats counts what a publisher did.
type pubStats struct {
	ok, failed atomic.Int64
	maxLag     atomic.Int64 // ns the sends fell behind their schedule, at worst
	statuses   sync.Map     // status code -> *atomic.Int64, for failures
	lastErr    atomic.Pointer[string]
}

func (s *pubStats) fail(status int, err error) {
	s.failed.Add(1)
	if err != nil {
		e := err.Error()
		s.lastErr.Store(&e)
		status = 0
	}
	v, _ := s.statuses.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *pubStats) summary() string {
	var parts []string
	s.statuses.Range(func(k, v any) bool {
		name := fmt.Sprintf("status %d", k.(int))
		if k.(int) == 0 {
			name = "transport error"
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", name, v.(*atomic.Int64).Load()))
		return true
	})
	sort.Strings(parts)
	if e := s.lastErr.Load(); e != nil {
		parts = append(parts, "last error: "+*e)
	}
	return strings.Join(parts, ", ")
}

// pubPlan is a run of publishes: count messages, message i to user pick(i), at a fixed total rate
// (0: as fast as the publishers go), from conns keep-alive connections.
type pubPlan struct {
	count int64
	rate  float64
	conns int
	pick  func(i int64) int
	acked func(user int, at int64) // if set, told when each message's publish was answered (Unix ns)
}

// publish runs plan against the target and records every message in the ledger (Next before
// sending, Ack on a 2xx). Sending is open-loop: message i is due at start + i/rate whatever
// happened to earlier ones, and the worst lag behind that schedule is reported, so a slow
// server shows up as lag rather than as a quietly lower rate. Every goroutine it starts has
// returned when it returns.
func publish(ctx context.Context, addr string, proto protocol, l *Ledger, plan pubPlan, st *pubStats, pr *progress) {
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range plan.conns {
		wg.Go(func() {
			var c *conn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			var req, body []byte
			timer := time.NewTimer(0)
			defer timer.Stop()
			<-timer.C
			for {
				i := next.Add(1) - 1
				if i >= plan.count || ctx.Err() != nil {
					return
				}
				if plan.rate > 0 {
					due := start.Add(time.Duration(float64(i) / plan.rate * 1e9))
					if d := time.Until(due); d > 0 {
						timer.Reset(d)
						select {
						case <-timer.C:
						case <-ctx.Done():
							return
						}
					} else if lag := int64(-d); lag > st.maxLag.Load() {
						st.maxLag.Store(lag) // racy max; good enough for a report figure
					}
				}
				u := plan.pick(i)
				seq := l.Next(u)
				req = proto.publishRequest(req[:0], u, payload{TS: time.Now().UnixNano(), Seq: seq, User: u})
				if c == nil {
					var err error
					if c, err = dial(ctx, addr, 4096); err != nil {
						st.fail(0, err)
						pr.errs.Add(1)
						continue
					}
				}
				h, b, _, err := c.roundTrip(req, body)
				body = b
				switch {
				case err != nil:
					st.fail(0, err)
					pr.errs.Add(1)
					c.close()
					c = nil
					continue
				case proto.publishOK(h.status):
					if plan.acked != nil {
						plan.acked(u, time.Now().UnixNano())
					}
					l.Ack(u, seq)
					st.ok.Add(1)
					pr.sent.Add(1)
				default:
					st.fail(h.status, nil)
					pr.errs.Add(1)
				}
				if h.close {
					c.close()
					c = nil
				}
			}
		})
	}
	wg.Wait()
}

// waitFor polls cond every 100 ms until it holds, ctx ends, or within passes; it returns
// whether cond held.
func waitFor(ctx context.Context, within time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// gate limits how many connections are being set up at once, so a burst of thousands of
// handshakes does not overflow the server's listen backlog (SYN retries would then add whole
// seconds to some connections).
type gate chan struct{}

func (g gate) enter(ctx context.Context) bool {
	select {
	case g <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g gate) leave() { <-g }
