package main

import (
	"context"
	"fmt"
	"time"
)

// sample is one second of the run, as bridged and the tool saw it.
type sample struct {
	t          time.Duration // since the first client started
	ok         bool          // bridged answered /v1/admin/stats
	rss        int64
	goroutines int
	sse, lp    int   // bridged's open SSE streams and waiting long-polls
	conns      int   // bridged's total
	storeBytes int64 // accounted bytes, the figure compared with BRIDGE_MAX_MEMORY
	storeMsgs  int64
	open       int64 // the tool's open SSE streams plus long-polls in flight
	delivered  int64 // messages delivered to clients so far
	full       int64 // 503 store_full answers so far, both publishers
	refused    int64 // clients' 429 and 503 answers so far
	resets     int64
	phase      string
}

// sampler takes a sample every second and prints a progress line every -progress, until ctx ends.
func (s *soak) sampler(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last sample
	lastPrint := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sm := s.takeSample(ctx)
		s.mu.Lock()
		s.samples = append(s.samples, sm)
		s.mu.Unlock()
		if sm.t-lastPrint >= s.cfg.progress-500*time.Millisecond {
			s.progressLine(sm, last)
			last, lastPrint = sm, sm.t
		}
	}
}

func (s *soak) takeSample(ctx context.Context) sample {
	sm := sample{
		t:         time.Since(s.start),
		open:      s.live.sseOpen.Load() + s.live.lpOpen.Load(),
		delivered: s.live.delivered.Load(),
		full:      s.pub.storeFull.Load() + s.pub.floodFull.Load(),
		refused:   s.live.refused.Load(),
		resets:    s.live.resets.Load(),
		phase:     s.phase.Load().(string),
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if st, err := s.d.stats(sctx, s.statsClient); err == nil {
		sm.ok = true
		sm.goroutines = st.Goroutines
		sm.sse, sm.lp, sm.conns = st.Connections.SSE, st.Connections.LongPoll, st.Connections.Total
		sm.storeBytes, sm.storeMsgs = st.Store.Bytes, st.Store.Messages
	}
	sm.rss, _ = rss(s.d.pid())
	return sm
}

func (s *soak) progressLine(sm, last sample) {
	rate := 0.0
	if dt := (sm.t - last.t).Seconds(); dt > 0 {
		rate = float64(sm.delivered-last.delivered) / dt
	}
	srv := "?"
	if sm.ok {
		srv = fmt.Sprint(sm.conns)
	}
	fmt.Fprintf(s.out, "%5.0fs %-6s clients %d/%d (bridged %s)  delivered %6.0f/s  rss %8s  goroutines %5d  store %8s  store_full %d  resets %d  refused %d\n",
		sm.t.Seconds(), sm.phase, sm.open, s.cfg.clients(), srv, rate, formatBytes(sm.rss), sm.goroutines,
		formatBytes(sm.storeBytes), sm.full, sm.resets, sm.refused)
}

// series returns a copy of the samples.
func (s *soak) series() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}
