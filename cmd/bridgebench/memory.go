package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// settle waits for the target's memory to stop moving: at least cfg.settle, then until two
// samples 500 ms apart differ by less than 0.5 % (or 10 s more have passed). It returns the last
// sample.
func settle(ctx context.Context, cfg *config, p *proc) memory {
	sleepCtx(ctx, cfg.settle)
	prev := memoryOf(p.pids())
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, 500*time.Millisecond)
		cur := memoryOf(p.pids())
		if math.Abs(float64(cur.RSS-prev.RSS)) < 0.005*float64(prev.RSS) {
			return cur
		}
		prev = cur
	}
	return prev
}

// goroutines asks bridged how many goroutines it runs (other targets: -1).
func goroutines(ctx context.Context, p *proc) int {
	if p.kind != targetBridged {
		return -1
	}
	st, body, err := httpGet(ctx, "http://"+p.addr+"/v1/admin/stats", benchAdminKey)
	if err != nil || st != 200 {
		return -1
	}
	var s struct {
		Goroutines int `json:"goroutines"`
	}
	if json.Unmarshal(body, &s) != nil {
		return -1
	}
	return s.Goroutines
}

// runMemorySSE: the fresh server's resident memory after it settles, then again with n idle SSE
// streams open (one per user, each past its first bytes); bytes per connection = delta / n.
func runMemorySSE(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	return runMemory(ctx, cfg, p, pr, "mem.sse", cfg.conns, func() (func(), error) {
		f := startSSE(ctx, cfg, p, cfg.conns, nil, nil, pr)
		if err := connectAll(ctx, p, cfg.conns, &f.connected, &f.failed, cfg.connectWithin); err != nil {
			f.stop()
			return nil, fmt.Errorf("memory-sse: %w (%s)", err, f.describe())
		}
		return f.stop, nil
	})
}

// runMemoryLongPoll: the same with n long-polls parked (wait=30s; Nchan's subscriber timeout is
// 30 s too), measured well within that.
func runMemoryLongPoll(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	return runMemory(ctx, cfg, p, pr, "mem.lp", cfg.lpConns, func() (func(), error) {
		f := startLongPoll(ctx, cfg, p, cfg.lpConns, nil, pr)
		if err := connectAll(ctx, p, cfg.lpConns, &f.connected, &f.failed, cfg.connectWithin); err != nil {
			f.stop()
			return nil, fmt.Errorf("memory-longpoll: %w (%s)", err, f.describe())
		}
		return f.stop, nil
	})
}

func runMemory(ctx context.Context, cfg *config, p *proc, pr *progress, prefix string, n int, open func() (func(), error)) (*result, error) {
	res := newResult()
	pr.phase(fmt.Sprintf("%s %s: settling", prefix, p.kind), cfg.settle)
	before := settle(ctx, cfg, p)
	g0 := goroutines(ctx, p)
	pr.phase(fmt.Sprintf("%s %s: opening %d", prefix, p.kind, n), 0)
	t0 := time.Now()
	closeAll, err := open()
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			closeAll()
		}
	}()
	opened := time.Since(t0)
	pr.phase(fmt.Sprintf("%s %s: %d open, settling", prefix, p.kind, n), cfg.settle)
	after := settle(ctx, cfg, p)
	g1 := goroutines(ctx, p)
	p.prof.snapshot(ctx, "open") // after the measurement: ?gc=1 collects
	res.Metrics[prefix+".rss_before_mb"] = float64(before.RSS) / (1 << 20)
	res.Metrics[prefix+".rss_after_mb"] = float64(after.RSS) / (1 << 20)
	res.Metrics[prefix+".kb_per_conn"] = float64(after.RSS-before.RSS) / float64(n) / 1000
	res.Metrics[prefix+".pss_kb_per_conn"] = float64(after.PSS-before.PSS) / float64(n) / 1000
	if g0 >= 0 && g1 >= 0 {
		res.Metrics[prefix+".goroutines_per_conn"] = float64(g1-g0) / float64(n)
	}
	res.note("%s: %d connections opened in %s; RSS %.1f → %.1f MiB, PSS %.1f → %.1f MiB over %d processes",
		prefix, n, opened.Truncate(time.Millisecond), float64(before.RSS)/(1<<20), float64(after.RSS)/(1<<20),
		float64(before.PSS)/(1<<20), float64(after.PSS)/(1<<20), len(p.pids()))

	// Leaks: once the clients are gone (reset, as a vanished browser), the server must count no
	// subscriber and, for bridged, run no more goroutines than before.
	pr.phase(fmt.Sprintf("%s %s: closing %d", prefix, p.kind, n), 0)
	closeAll()
	closed = true
	var subs, g2 int
	gone := waitFor(ctx, 15*time.Second, func() bool {
		var err error
		subs, err = p.proto.waiting(ctx)
		g2 = goroutines(ctx, p)
		return err == nil && subs == 0 && g2 <= g0
	})
	res.Metrics[prefix+".subscribers_left"] = float64(subs)
	if g0 >= 0 {
		res.Metrics[prefix+".goroutines_left"] = float64(max(0, g2-g0))
	}
	if !gone {
		res.note("%s: LEAK? 15 s after every client left, the server counts %d subscribers and %d goroutines (%d before)", prefix, subs, g2, g0)
	}
	return res, nil
}
