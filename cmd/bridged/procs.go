package main

import (
	"context"
	"math"
	"runtime"
	"runtime/metrics"
	"time"

	"go.uber.org/zap"
)

// How many processors (GOMAXPROCS) bridged lets the Go runtime use follows its load, between one
// and what the runtime chose at start (the CPUs, or the cgroup's CPU limit).
//
// A node in a long-poll loop at 2,000 deliveries a second keeps under half a core busy, in short
// bursts. With two processors, each goroutine readied by another (a publish waking a long-poll)
// or by the network poller wakes an idle thread to look for work; it spins, finds little and
// sleeps again. On the 2-vCPU machine one processor spent 160 µs of CPU per delivery where two
// spent 220 (docs/benchmarks.md, "Processors follow the load"). One processor cannot serve a
// burst, though: the wake-up of 5,000 long-polls took longer and its median latency doubled.
//
// So the node runs on one processor while that one is enough, and on all of them as soon as it is
// not:
//   - Up at once: when goroutines waited procsLate or longer to run, all the processors. The
//     runtime's own histogram of those waits (/sched/latencies:seconds), which samples one
//     goroutine switch in eight, must show procsLateMin of them over the last two ticks (50 ms):
//     a collection on one processor delays a few goroutines by a millisecond or two (up to 12
//     sampled in the long-poll loop), a burst dozens in every tick. Busy time would be the wrong
//     signal: the collector's idle-time workers fill an idle processor with marking that yields
//     at once.
//   - Down slowly: when the load averaged over about a second would fit in fewer processors,
//     each at most procsDown busy, and not within procsHold of going up, so that a burst with
//     pauses does not switch at every tick (each switch stops the world for a moment).
//
// Load is the process's CPU time (user and system) over wall time, which counts the syscalls
// goroutines make on a processor as well as Go code. GOMAXPROCS in the environment, or
// BRIDGE_ADAPTIVE_PROCS=false, fixes the number instead; so does a ceiling of one, or a platform
// without getrusage(2).
const (
	procsTick    = 25 * time.Millisecond
	procsSlow    = time.Second // time constant of the slow load average
	procsHold    = time.Second // the least time between going up and going down
	procsLate    = time.Millisecond
	procsLateMin = 16  // sampled waits of procsLate or more over two ticks
	procsDown    = 0.6 // lower to as many processors as the slow load needs at this busy
)

// procsAdapter sets GOMAXPROCS from the load. It is not safe for concurrent use: run calls follow
// in one goroutine.
type procsAdapter struct {
	max   int                  // the ceiling: GOMAXPROCS at start
	cur   int                  // the current setting
	set   func(int) int        // runtime.GOMAXPROCS; tests record instead
	cpu   func() time.Duration // the process's CPU time so far
	waits func() uint64        // how many waits to run took procsLate or longer so far
	slow  float64              // the load in cores, averaged over about procsSlow
	hold  time.Duration        // left of procsHold since going up
	log   *zap.Logger
}

// planProcs logs where GOMAXPROCS comes from and returns the adapter to run, or nil when the
// number is fixed: by GOMAXPROCS in environ (KEY=value pairs), by BRIDGE_ADAPTIVE_PROCS=false, or
// by a single processor.
func planProcs(cfg Config, environ []string, log *zap.Logger) *procsAdapter {
	n := runtime.GOMAXPROCS(0)
	switch {
	case runtimeEnv(environ, "GOMAXPROCS") != "":
		log.Info("processors", zap.String("source", "GOMAXPROCS"), zap.Int("gomaxprocs", n))
	case !cfg.AdaptiveProcs || n <= 1 || !cpuTimeKnown:
		log.Info("processors", zap.String("source", "runtime"), zap.Int("gomaxprocs", n))
	default:
		log.Info("processors", zap.String("source", "adaptive"), zap.Int("gomaxprocs_max", n),
			zap.String("rule", "1 while lightly loaded, all as soon as goroutines wait to run (BRIDGE_ADAPTIVE_PROCS)"))
		return &procsAdapter{max: n, cur: n, set: runtime.GOMAXPROCS, cpu: processCPU, waits: newLateWaits(procsLate), log: log}
	}
	return nil
}

// nextProcs is the decision: how many processors to use, given the current number, the ceiling,
// whether goroutines waited late to run in the last tick, the slow load average (in cores) and
// whether the hold after going up is still on.
func nextProcs(cur, ceiling int, late bool, slow float64, holding bool) int {
	if late {
		return ceiling
	}
	if want := max(1, int(math.Ceil(slow/procsDown))); want < cur && !holding {
		return want
	}
	return cur
}

// follow adapts GOMAXPROCS every procsTick until ctx ends, then puts the ceiling back.
func (a *procsAdapter) follow(ctx context.Context) {
	if a.max <= 1 {
		return
	}
	defer a.apply(a.max)
	t := time.NewTicker(procsTick)
	defer t.Stop()
	a.slow = float64(a.max) // start where the runtime did; the average comes down with the load
	lastCPU, lastAt := a.cpu(), time.Now()
	w0 := a.waits()
	waits := [2]uint64{w0, w0} // the counts at this tick's start and at the one before's
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c, w := a.cpu(), a.waits()
			a.step(c-lastCPU, now.Sub(lastAt), w-waits[1] >= procsLateMin)
			lastCPU, lastAt = c, now
			waits = [2]uint64{w, waits[0]}
		}
	}
}

// step takes in one tick: the CPU the process used over the wall time elapsed, and whether
// goroutines waited late to run.
func (a *procsAdapter) step(used, elapsed time.Duration, late bool) {
	if elapsed <= 0 {
		return
	}
	k := min(elapsed.Seconds()/procsSlow.Seconds(), 1)
	a.slow += k * (used.Seconds()/elapsed.Seconds() - a.slow)
	a.hold = max(a.hold-elapsed, 0)
	n := nextProcs(a.cur, a.max, late, a.slow, a.hold > 0)
	if n > a.cur {
		a.hold = procsHold
	}
	a.apply(n)
}

func (a *procsAdapter) apply(n int) {
	if n == a.cur {
		return
	}
	a.set(n)
	a.log.Debug("processors", zap.Int("gomaxprocs", n), zap.Int("was", a.cur), zap.Float64("load_cores", a.slow))
	a.cur = n
}

// newLateWaits returns a function that counts, from the runtime's histogram of how long runnable
// goroutines waited to run, the waits of at least late so far. The runtime samples one goroutine
// switch in several, so the count is a fraction of the waits, and grows with them.
func newLateWaits(late time.Duration) func() uint64 {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	return func() uint64 {
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindFloat64Histogram {
			return 0
		}
		h := s[0].Value.Float64Histogram()
		var n uint64
		for i, c := range h.Counts {
			if h.Buckets[i] >= late.Seconds() {
				n += c
			}
		}
		return n
	}
}
