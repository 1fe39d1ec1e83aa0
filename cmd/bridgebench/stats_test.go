package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	// Each bucket's range starts right after the previous one's, and bucketOf maps both ends of
	// every range back to that bucket: no value falls in a gap or in two buckets.
	var next int64
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		// Precision: a bucket is at most 1/64 of its lower bound wide (above the exact range).
		if lo >= histSub && float64(hi-lo+1) > float64(lo)/64 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/64 of %d", i, lo, hi, lo)
		}
		next = hi + 1
	}
	if next != 1<<histMaxExp {
		t.Fatalf("buckets end at %d, want %d", next, int64(1)<<histMaxExp)
	}
	if got := bucketOf(math.MaxInt64); got != histBuckets-1 {
		t.Errorf("a huge value goes to bucket %d, want the last (%d)", got, histBuckets-1)
	}
	if got := bucketOf(-5); got != 0 {
		t.Errorf("a negative value goes to bucket %d, want 0", got)
	}
}

// exactQuantile is the nearest-rank quantile of sorted samples: the smallest value with at
// least q of the samples at or below it.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestQuantileMatchesNearestRank(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) int64
		n    int
	}{
		{"exact small values", func(r *rand.Rand) int64 { return r.Int64N(histSub) }, 1000},
		{"uniform 0-10ms", func(r *rand.Rand) int64 { return r.Int64N(int64(10 * time.Millisecond)) }, 10000},
		{"exponential, mean 300µs", func(r *rand.Rand) int64 { return int64(r.ExpFloat64() * 300e3) }, 20000},
		{"two modes with a tail", func(r *rand.Rand) int64 {
			switch x := r.Float64(); {
			case x < 0.9:
				return 200e3 + r.Int64N(50e3)
			case x < 0.999:
				return 2e6 + r.Int64N(1e6)
			default:
				return 40e6 + r.Int64N(10e6)
			}
		}, 20000},
		{"one sample", func(*rand.Rand) int64 { return 123456 }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			var h Histogram
			xs := make([]int64, tt.n)
			for i := range xs {
				xs[i] = tt.gen(r)
				h.Record(time.Duration(xs[i]))
			}
			slices.Sort(xs)
			if h.Count() != uint64(tt.n) {
				t.Fatalf("Count %d, want %d", h.Count(), tt.n)
			}
			if h.Max() != time.Duration(xs[len(xs)-1]) || h.Min() != time.Duration(xs[0]) {
				t.Errorf("Min/Max %d/%d, want %d/%d", h.Min(), h.Max(), xs[0], xs[len(xs)-1])
			}
			for _, q := range []float64{0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exactQuantile(xs, q)
				got := int64(h.Quantile(q))
				// The histogram reports the upper bound of the exact value's bucket: never
				// below it, and above it by less than 1/64.
				if got < want || float64(got-want) > float64(want)/64+1 {
					t.Errorf("Quantile(%v) = %d, exact %d", q, got, want)
				}
			}
		})
	}
}

func TestHistogramEmptyAndMerge(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Max() != 0 || empty.Min() != 0 || empty.Mean() != 0 || empty.CDF() != nil {
		t.Fatal("an empty histogram must report zeros and no CDF")
	}
	var a, b, all Histogram
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&empty)
	if m.Count() != all.Count() || m.Min() != all.Min() || m.Max() != all.Max() || m.Mean() != all.Mean() {
		t.Fatalf("merged: n=%d min=%v max=%v mean=%v; want %d %v %v %v", m.Count(), m.Min(), m.Max(), m.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Errorf("merged Quantile(%v) = %v, want %v", q, m.Quantile(q), all.Quantile(q))
		}
	}
	cdf := m.CDF()
	if last := cdf[len(cdf)-1]; last.F != 1 || last.V != m.Max() {
		t.Errorf("CDF ends at %+v, want F=1 at the max %v", last, m.Max())
	}
	for i := 1; i < len(cdf); i++ {
		if cdf[i].F <= cdf[i-1].F || cdf[i].V <= cdf[i-1].V {
			t.Fatalf("CDF not increasing at %d: %+v then %+v", i, cdf[i-1], cdf[i])
		}
	}
}

func TestHistogramNegativeCountsAsZero(t *testing.T) {
	var h Histogram
	h.Record(-time.Millisecond) // a clock step between publisher and reader
	h.Record(time.Millisecond)
	if h.Count() != 2 || h.Min() != 0 || h.Quantile(0.5) != 0 {
		t.Errorf("count %d min %v p50 %v; a negative sample must count as 0", h.Count(), h.Min(), h.Quantile(0.5))
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(g*1000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if h.Count() != 8000 || h.Max() != 7999*time.Microsecond || h.Min() != 0 {
		t.Errorf("count %d max %v min %v", h.Count(), h.Max(), h.Min())
	}
}

func TestLedger(t *testing.T) {
	tests := []struct {
		name   string
		script func(l *Ledger)
		want   Tally
	}{
		{"all delivered once", func(l *Ledger) {
			for u := range 3 {
				for range 4 {
					s := l.Next(u)
					l.Ack(u, s)
					l.Got(u, u, s)
				}
			}
		}, Tally{Expected: 12, Delivered: 12}},
		{"one lost, one duplicated", func(l *Ledger) {
			for s := range uint32(5) {
				l.Next(0)
				l.Ack(0, s)
			}
			for _, s := range []uint32{0, 1, 1, 3, 4} { // 2 never arrives, 1 twice
				l.Got(0, 0, s)
			}
		}, Tally{Expected: 5, Delivered: 4, Lost: 1, Duplicated: 1}},
		{"published without an ack arrives anyway", func(l *Ledger) {
			a, b := l.Next(1), l.Next(1)
			l.Ack(1, a) // b's publish failed on the wire, but the server stored it
			l.Got(1, 1, a)
			l.Got(1, 1, b)
		}, Tally{Expected: 1, Delivered: 1, Unexpected: 1}},
		{"a message for another user", func(l *Ledger) {
			s := l.Next(2)
			l.Ack(2, s)
			l.Got(0, 2, s) // arrived on user 0's connection: misrouted, and lost for user 2
		}, Tally{Expected: 1, Lost: 1, Unexpected: 1}},
		{"nothing published", func(*Ledger) {}, Tally{}},
		{"sequence numbers beyond one word", func(l *Ledger) {
			for range 200 {
				s := l.Next(0)
				l.Ack(0, s)
				if s != 130 {
					l.Got(0, 0, s)
				}
			}
			l.Got(0, 0, 199)
		}, Tally{Expected: 200, Delivered: 199, Lost: 1, Duplicated: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLedger(3)
			tt.script(l)
			if got := l.Tally(); got != tt.want {
				t.Errorf("Tally() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLedgerGotReportsFirstArrival(t *testing.T) {
	l := NewLedger(2)
	s := l.Next(0)
	l.Ack(0, s)
	if l.Complete(0) {
		t.Fatal("Complete before the message arrived")
	}
	if !l.Got(0, 0, s) {
		t.Error("first arrival reported as not new")
	}
	if l.Got(0, 0, s) {
		t.Error("second arrival reported as new")
	}
	if l.Got(1, 0, s) {
		t.Error("arrival on another user's connection reported as new")
	}
	if !l.Complete(0) || !l.Complete(1) {
		t.Error("users not complete after every acked message arrived")
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	ps := []payload{{TS: 1795536711123456789, Seq: 0, User: 0}, {TS: 5, Seq: 4294967295, User: 9999}, {TS: -3, Seq: 7, User: 1}}
	tests := []struct {
		name string
		wrap func(p []byte) []byte
	}{
		{"bare (Nchan)", func(p []byte) []byte { return p }},
		{"bridged message object", func(p []byte) []byte {
			return append(append([]byte(`{"id":"k3x9-17","event":"message","data":`), p...), `,"time":"2026-11-24T16:11:51.123Z"}`...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A poll answer holds several: scan them all, in order.
			var all []byte
			all = append(all, `{"messages":[`...)
			for i, p := range ps {
				if i > 0 {
					all = append(all, ',')
				}
				all = append(all, tt.wrap(appendPayload(nil, p))...)
			}
			all = append(all, `],"cursor":"k3x9-19","reset":false,"more":false}`...)
			var got []payload
			n := scanPayloads(all, func(p payload) { got = append(got, p) })
			if n != len(ps) || !slices.Equal(got, ps) {
				t.Errorf("scanned %v (n=%d), want %v", got, n, ps)
			}
		})
	}
}

func TestScanPayloadsSkipsMalformed(t *testing.T) {
	in := []byte(`{"bt":12,"bs":x} {"bt":1,"bs":2} {"bt":3,"bs":4,"bu":5} {"bt":`)
	var got []payload
	scanPayloads(in, func(p payload) { got = append(got, p) })
	if want := []payload{{TS: 3, Seq: 4, User: 5}}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if n := scanPayloads(nil, func(payload) { t.Error("called on nothing") }); n != 0 {
		t.Errorf("n = %d on nothing", n)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing must be NaN")
	}
	in := []float64{3, 1, 2}
	median(in)
	if !slices.Equal(in, []float64{3, 1, 2}) {
		t.Error("median reordered its input")
	}
}

func TestStrictViolations(t *testing.T) {
	clean := &result{Workload: "sse", Target: "bridged", Round: 1, Metrics: map[string]float64{
		"sse.lost": 0, "sse.duplicated": 0, "sse.unexpected": 0, "sse.delivered_pct": 100,
		"mem.sse.subscribers_left": 0, "mem.sse.goroutines_left": 0, "sse.p99_ms": 40,
	}}
	rep := &report{results: []*result{clean}}
	if v := rep.violations(); len(v) != 0 {
		t.Fatalf("a clean run has violations: %v", v)
	}
	for _, k := range []string{"sse.lost", "sse.duplicated", "sse.unexpected", "mem.sse.subscribers_left", "mem.sse.goroutines_left"} {
		bad := &result{Workload: "sse", Target: "bridged", Round: 2, Metrics: map[string]float64{k: 1}}
		if v := (&report{results: []*result{clean, bad}}).violations(); len(v) != 1 || !strings.Contains(v[0], k) {
			t.Errorf("%s = 1: violations %v", k, v)
		}
	}
	short := &result{Workload: "longpoll", Target: "bridged", Round: 1, Metrics: map[string]float64{"lp.delivered_pct": 99.9}}
	if v := (&report{results: []*result{short}}).violations(); len(v) != 1 {
		t.Errorf("99.9%% delivered: violations %v", v)
	}
}
