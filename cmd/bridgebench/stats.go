package main

import (
	"math"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram records durations in log-linear buckets (HdrHistogram's layout): values below
// histSub nanoseconds are exact, and above that each power of two is split into histSub/2
// buckets, so any recorded value is known to within 1/64 (1.6 %) of itself. Record is one
// atomic add, so thousands of connection goroutines share one Histogram without a lock, and its
// size does not grow with the number of samples. The zero value is ready to use; it is safe for
// concurrent use.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
	min    atomic.Int64 // stored as min+1 so that the zero value means "none yet"
	sum    atomic.Int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact below this; 64 buckets per power of two above
	histMaxExp  = 42               // values up to 2^42 ns (73 minutes); larger ones are clamped
	histBuckets = histSub + (histMaxExp-histSubBits)*histSub/2
)

// bucketOf returns the bucket index of v (ns, clamped to [0, 2^histMaxExp)).
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < histSub {
		return int(v)
	}
	if v >= 1<<histMaxExp {
		v = 1<<histMaxExp - 1
	}
	exp := bits.Len64(uint64(v)) - 1 // v in [2^exp, 2^(exp+1)), exp >= histSubBits
	shift := exp - (histSubBits - 1) // keep the top histSubBits bits: [64, 128)
	mant := int(v >> shift)          // in [histSub/2, histSub)
	return histSub + (exp-histSubBits)*histSub/2 + mant - histSub/2
}

// bucketRange returns the smallest and largest value that fall in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	j := i - histSub
	exp := histSubBits + j/(histSub/2)
	mant := int64(j%(histSub/2) + histSub/2)
	shift := exp - (histSubBits - 1)
	lo = mant << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0 // a clock step; counted as zero rather than dropped, so counts add up
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if m != 0 && v+1 >= m || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count returns how many samples were recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest sample exactly, or 0 when there is none.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Min returns the smallest sample exactly, or 0 when there is none.
func (h *Histogram) Min() time.Duration { return time.Duration(max(h.min.Load()-1, 0)) }

// Mean returns the arithmetic mean, or 0 when there is no sample.
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / int64(n))
}

// Quantile returns the nearest-rank q-quantile (0 < q <= 1): the smallest recorded value v such
// that at least q of all samples are <= v, to within the bucket's precision. It reports the
// bucket's upper bound (never below the true value), clamped to the exact maximum. With no
// samples it returns 0.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketRange(i)
			return time.Duration(min(hi, h.max.Load()))
		}
	}
	return h.Max()
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || m < h.min.Load()) {
		h.min.Store(m)
	}
}

// CDF returns the cumulative distribution as points (value, fraction of samples <= value), one
// per non-empty bucket, for plotting.
func (h *Histogram) CDF() []cdfPoint {
	n := h.n.Load()
	if n == 0 {
		return nil
	}
	var out []cdfPoint
	var seen uint64
	for i := range h.counts {
		c := h.counts[i].Load()
		if c == 0 {
			continue
		}
		seen += c
		_, hi := bucketRange(i)
		out = append(out, cdfPoint{V: time.Duration(min(hi, h.max.Load())), F: float64(seen) / float64(n)})
	}
	return out
}

type cdfPoint struct {
	V time.Duration
	F float64
}

// bitset is a growable set of small non-negative integers.
type bitset []uint64

func (b *bitset) set(i uint32) (was bool) {
	w := int(i / 64)
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b))...)
	}
	m := uint64(1) << (i % 64)
	was = (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// andNotCount returns how many members of b are not in o.
func (b bitset) andNotCount(o bitset) int {
	n := 0
	for i, w := range b {
		if i < len(o) {
			w &^= o[i]
		}
		n += bits.OnesCount64(w)
	}
	return n
}

// Ledger accounts for every message of a workload, per user: which sequence numbers were
// published and acknowledged (2xx), and which were received and how often. From it come
// delivered/expected, lost (acknowledged, never received), duplicated (received again) and
// unexpected (received, never acknowledged: a publish that failed on the wire but was stored, or
// a message for another user). Messages to one user carry consecutive sequence numbers from 0.
// It is safe for concurrent use: one mutex per user, because the publisher and the reader of a
// user are different goroutines.
type Ledger struct {
	users []ledgerUser
}

type ledgerUser struct {
	mu        sync.Mutex
	next      uint32 // the next sequence number to publish
	acked     bitset
	got       bitset
	dups      int
	misrouted int // messages for another user that arrived on this user's connection
}

// NewLedger returns a Ledger for users 0..n-1.
func NewLedger(n int) *Ledger { return &Ledger{users: make([]ledgerUser, n)} }

// Next reserves the next sequence number of user u.
func (l *Ledger) Next(u int) uint32 {
	lu := &l.users[u]
	lu.mu.Lock()
	defer lu.mu.Unlock()
	s := lu.next
	lu.next++
	return s
}

// Ack records that the publish of (u, seq) was acknowledged.
func (l *Ledger) Ack(u int, seq uint32) {
	lu := &l.users[u]
	lu.mu.Lock()
	lu.acked.set(seq)
	lu.mu.Unlock()
}

// Got records that the connection of user conn received the message (u, seq). It returns false
// when that message had been received before (a duplicate) or belongs to another user.
func (l *Ledger) Got(conn, u int, seq uint32) bool {
	lu := &l.users[conn]
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if u != conn {
		lu.misrouted++
		return false
	}
	if lu.got.set(seq) {
		lu.dups++
		return false
	}
	return true
}

// Complete reports whether user u has received every acknowledged message.
func (l *Ledger) Complete(u int) bool {
	lu := &l.users[u]
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.acked.andNotCount(lu.got) == 0
}

// Tally is a Ledger's totals.
type Tally struct {
	Expected   int `json:"expected"`   // acknowledged publishes
	Delivered  int `json:"delivered"`  // distinct acknowledged messages received
	Lost       int `json:"lost"`       // acknowledged, never received
	Duplicated int `json:"duplicated"` // receptions beyond the first
	Unexpected int `json:"unexpected"` // received but never acknowledged, or for another user
}

// Tally sums the ledger over all users.
func (l *Ledger) Tally() Tally {
	var t Tally
	for i := range l.users {
		lu := &l.users[i]
		lu.mu.Lock()
		acked := lu.acked.count()
		lost := lu.acked.andNotCount(lu.got)
		t.Expected += acked
		t.Lost += lost
		t.Delivered += acked - lost
		t.Duplicated += lu.dups
		t.Unexpected += lu.got.andNotCount(lu.acked) + lu.misrouted
		lu.mu.Unlock()
	}
	return t
}

// payload is what every published message carries: the wall-clock time of its publish in
// nanoseconds (load tool and server share the machine's clock), its sequence number within its
// user's stream, and the user. Both targets deliver it verbatim inside their own framing.
type payload struct {
	TS   int64
	Seq  uint32
	User int
}

// appendPayload appends p as {"bt":<ns>,"bs":<seq>,"bu":<user>}.
func appendPayload(b []byte, p payload) []byte {
	b = append(b, `{"bt":`...)
	b = strconv.AppendInt(b, p.TS, 10)
	b = append(b, `,"bs":`...)
	b = strconv.AppendUint(b, uint64(p.Seq), 10)
	b = append(b, `,"bu":`...)
	b = strconv.AppendInt(b, int64(p.User), 10)
	return append(b, '}')
}

var payloadPrefix = []byte(`{"bt":`)

// scanPayloads calls fn for every payload in b, in order: b may be a bare payload (Nchan), an
// SSE frame's message object or a poll answer's messages array (bridged). It does not allocate.
func scanPayloads(b []byte, fn func(payload)) int {
	n := 0
	for {
		i := indexOf(b, payloadPrefix)
		if i < 0 {
			return n
		}
		b = b[i+len(payloadPrefix):]
		var p payload
		var ok bool
		var v uint64
		if p.TS, b, ok = scanInt(b); !ok {
			continue
		}
		if b, ok = skip(b, `,"bs":`); !ok {
			continue
		}
		if v, b, ok = scanUint(b); !ok || v > math.MaxUint32 {
			continue
		}
		p.Seq = uint32(v)
		if b, ok = skip(b, `,"bu":`); !ok {
			continue
		}
		if v, b, ok = scanUint(b); !ok {
			continue
		}
		p.User = int(v)
		n++
		fn(p)
	}
}

func indexOf(b, sep []byte) int {
	for i := 0; i+len(sep) <= len(b); i++ {
		if b[i] == sep[0] && string(b[i:i+len(sep)]) == string(sep) {
			return i
		}
	}
	return -1
}

func skip(b []byte, s string) ([]byte, bool) {
	if len(b) < len(s) || string(b[:len(s)]) != s {
		return b, false
	}
	return b[len(s):], true
}

func scanUint(b []byte) (uint64, []byte, bool) {
	var v uint64
	i := 0
	for ; i < len(b) && i < 20 && '0' <= b[i] && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
	}
	return v, b[i:], i > 0
}

func scanInt(b []byte) (int64, []byte, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	v, rest, ok := scanUint(b)
	if neg {
		return -int64(v), rest, ok
	}
	return int64(v), rest, ok
}

// median returns the median of xs (the mean of the middle two for an even count), or NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	for i := 1; i < len(s); i++ { // insertion sort: a handful of runs
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
