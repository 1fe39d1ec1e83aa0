package main

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestNextProcs(t *testing.T) {
	for _, c := range []struct {
		name          string
		cur, ceiling  int
		late, holding bool
		slow          float64
		want          int
	}{
		{"late waits raise to the ceiling", 1, 4, true, false, 0.1, 4},
		{"late waits at the ceiling keep it", 4, 4, true, false, 0.1, 4},
		{"a light load lowers to one", 2, 2, false, false, 0.3, 1},
		{"just under procsDown lowers", 2, 2, false, false, 0.59, 1},
		{"procsDown keeps two", 2, 2, false, false, 0.61, 2},
		{"the hold keeps the ceiling", 2, 2, false, true, 0.1, 2},
		{"a middling load lowers to what it needs", 8, 8, false, false, 2.0, 4},
		{"a load that needs more never raises without late waits", 1, 8, false, false, 3.0, 1},
		{"no load still keeps one", 2, 2, false, false, 0, 1},
	} {
		if got := nextProcs(c.cur, c.ceiling, c.late, c.slow, c.holding); got != c.want {
			t.Errorf("%s: nextProcs(%d, %d, %v, %.2f, %v) = %d, want %d", c.name, c.cur, c.ceiling, c.late, c.slow, c.holding, got, c.want)
		}
	}
}

// fakeProcs is a procsAdapter whose settings are recorded instead of applied.
func fakeProcs(ceiling int) (*procsAdapter, *[]int) {
	var set []int
	a := &procsAdapter{max: ceiling, cur: ceiling, slow: float64(ceiling), log: zap.NewNop(),
		set: func(n int) int { set = append(set, n); return 0 }}
	return a, &set
}

// TestProcsAdapterSteps walks the adapter through a quiet node, a burst and the quiet after it.
func TestProcsAdapterSteps(t *testing.T) {
	a, set := fakeProcs(2)
	tick := procsTick
	load := func(cores float64) time.Duration { return time.Duration(cores * float64(tick)) }

	// Quiet at 0.3 cores: the average comes down from 2 and the node goes to one processor, once.
	for range int(3 * time.Second / tick) {
		a.step(load(0.3), tick, false)
	}
	if a.cur != 1 || !slices.Equal(*set, []int{1}) {
		t.Fatalf("after 3 s at 0.3 cores: GOMAXPROCS %d, set %v; want 1, set once", a.cur, *set)
	}
	// A burst: one tick of late waits raises at once.
	a.step(load(1), tick, true)
	if a.cur != 2 {
		t.Fatalf("late waits left GOMAXPROCS at %d", a.cur)
	}
	// Quiet again: held at two for procsHold even though the load is light at once...
	for range int(procsHold/tick) - 1 {
		a.step(load(0.1), tick, false)
	}
	if a.cur != 2 {
		t.Fatalf("lowered within procsHold of going up (GOMAXPROCS %d)", a.cur)
	}
	// ...then back to one.
	for range int(procsSlow / tick) {
		a.step(load(0.1), tick, false)
	}
	if want := []int{1, 2, 1}; !slices.Equal(*set, want) {
		t.Fatalf("settings %v, want %v", *set, want)
	}
	// A steady load above procsDown stays on two once raised: no flapping.
	a.step(load(1), tick, true)
	for range int(5 * time.Second / tick) {
		a.step(load(0.9), tick, false)
	}
	if want := []int{1, 2, 1, 2}; !slices.Equal(*set, want) {
		t.Fatalf("settings %v under a steady 0.9 cores, want %v", *set, want)
	}
	a.step(0, 0, true) // no time elapsed: nothing to learn
	if len(*set) != 4 {
		t.Fatalf("a tick of no time changed the setting: %v", *set)
	}
}

// TestProcsAdapterFollowPutsTheCeilingBack runs the loop on fake clocks: the node idles down to one
// processor, and gets its ceiling back when the loop ends.
func TestProcsAdapterFollowPutsTheCeilingBack(t *testing.T) {
	a, _ := fakeProcs(2)
	var mu sync.Mutex
	var settings []int
	a.set = func(n int) int { mu.Lock(); settings = append(settings, n); mu.Unlock(); return 0 }
	a.cpu = func() time.Duration { return 0 } // idle
	a.waits = func() uint64 { return 0 }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); a.follow(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(settings)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle node never went down to one processor")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if want := []int{1, 2}; !slices.Equal(settings, want) {
		t.Fatalf("settings %v, want %v (down while idle, the ceiling back at the end)", settings, want)
	}
}

func TestProcsAdapterLeavesOneProcessorAlone(t *testing.T) {
	a, set := fakeProcs(1)
	a.cpu = func() time.Duration { t.Fatal("a ceiling of one needs no measuring"); return 0 }
	a.follow(t.Context())
	if len(*set) != 0 {
		t.Fatalf("settings %v on a single processor", *set)
	}
}

// TestLateWaits reads the runtime's real histogram: every wait counts when late is zero, so
// goroutines made to queue behind each other add to it; none is an hour late.
func TestLateWaits(t *testing.T) {
	all, hour := newLateWaits(0), newLateWaits(time.Hour)
	before := all()
	var wg sync.WaitGroup
	for range 10 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for range 100 {
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	if after := all(); after <= before {
		t.Fatalf("waits of any length: %d before 1,000s of goroutine switches, %d after", before, after)
	}
	if n := hour(); n != 0 {
		t.Fatalf("%d waits of an hour or more", n)
	}
}

// TestProcessCPU spins until the process's CPU time has grown by 20 ms; it fails only if that never
// shows.
func TestProcessCPU(t *testing.T) {
	before := processCPU()
	if before <= 0 {
		t.Fatalf("CPU so far %v", before)
	}
	for deadline := time.Now().Add(30 * time.Second); processCPU()-before < 20*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("30 s of spinning added %v of CPU time", processCPU()-before)
		}
	}
}

func TestPlanProcs(t *testing.T) {
	n := runtime.GOMAXPROCS(0)
	for _, c := range []struct {
		name     string
		adaptive bool
		environ  []string
		source   string
	}{
		{"GOMAXPROCS fixes it", true, []string{"GOMAXPROCS=3"}, "GOMAXPROCS"},
		{"an empty GOMAXPROCS does not", true, []string{"GOMAXPROCS="}, "adaptive"},
		{"BRIDGE_ADAPTIVE_PROCS=false leaves the runtime's", false, nil, "runtime"},
		{"on by default", true, nil, "adaptive"},
	} {
		core, logs := observer.New(zapcore.InfoLevel)
		a := planProcs(Config{AdaptiveProcs: c.adaptive}, c.environ, zap.New(core))
		want := c.source
		if want == "adaptive" && n <= 1 {
			want = "runtime" // one processor: nothing to adapt
		}
		lines := logs.FilterMessage("processors").All()
		if len(lines) != 1 {
			t.Fatalf("%s: %d processors lines, want 1", c.name, len(lines))
		}
		if got := lines[0].ContextMap()["source"]; got != want {
			t.Errorf("%s: source %v, want %s", c.name, got, want)
		}
		if (a != nil) != (want == "adaptive") {
			t.Errorf("%s: adapter %v, want one only when adaptive", c.name, a)
		}
		if a != nil && a.max != n {
			t.Errorf("%s: ceiling %d, want GOMAXPROCS at start, %d", c.name, a.max, n)
		}
	}
}
