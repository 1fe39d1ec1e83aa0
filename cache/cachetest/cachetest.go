// Package cachetest is the contract suite every cache.Store engine runs. Each subtest is named
// after the promise of the cache package it checks. Time is never slept through: the suite gives
// each store a Clock in Options.Now and moves it.
package cachetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
)

// Factory returns a new, empty store configured by o for one subtest and arranges for it to be
// closed when t ends. Engines with a shared backend give each call its own namespace. An engine
// whose memory cap is enforced by its backend rather than by Options.MaxMemory (Redis's
// maxmemory) gives a subtest that sets MaxMemory a backend of its own with that cap.
type Factory func(t *testing.T, o cache.Options) cache.Store

// Clock is a settable clock for Options.Now. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading a fixed, recent time.
func NewClock() *Clock { return &Clock{now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const ttl = time.Minute

// Run runs the whole contract suite against the engine that newStore builds.
func Run(t *testing.T, newStore Factory) {
	open := func(t *testing.T, tweak func(*cache.Options)) (cache.Store, *Clock) {
		t.Helper()
		clk := NewClock()
		o := cache.Options{TTL: ttl, Now: clk.Now}
		if tweak != nil {
			tweak(&o)
		}
		return newStore(t, o), clk
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T, func(*cache.Options)) (cache.Store, *Clock))
	}{
		{"AppendReadOrder", testAppendReadOrder},
		{"ReadLimitAndResume", testReadLimitAndResume},
		{"StreamsAreIsolated", testStreamsAreIsolated},
		{"MissingStream", testMissingStream},
		{"ResetPositionCatchesLaterLoss", testResetPositionCatchesLaterLoss},
		{"ResetAfterExpiry", testResetAfterExpiry},
		{"ResetAfterCountEviction", testResetAfterCountEviction},
		{"ResetAfterByteEviction", testResetAfterByteEviction},
		{"ForeignEpochResets", testForeignEpochResets},
		{"CursorBeyondEndResets", testCursorBeyondEndResets},
		{"IdempotentKey", testIdempotentKey},
		{"IdempotentKeyExpires", testIdempotentKeyExpires},
		{"NotifyWakesAllWaiters", testNotifyWakesAllWaiters},
		{"NotifyLosesNoWakeup", testNotifyLosesNoWakeup},
		{"NotifyFuncs", testNotifyFuncs},
		{"NotifyFuncAfterClose", testNotifyFuncAfterClose},
		{"CapRefusesNeverDrops", testCapRefusesNeverDrops},
		{"CapCountsEvictions", testCapCountsEvictions},
		{"StatsCountRemovals", testStatsCountRemovals},
		{"TooLargeStoresNothing", testTooLargeStoresNothing},
		{"InvalidStoresNothing", testInvalidStoresNothing},
		{"BatchAcrossStreams", testBatchAcrossStreams},
		{"ConcurrentAppendsIncrease", testConcurrentAppendsIncrease},
		{"ResumeAcrossIdleGap", testResumeAcrossIdleGap},
		{"Scan", testScan},
		{"CanceledContext", testCanceledContext},
		{"CloseWakesSubscribers", testCloseWakesSubscribers},
		{"ClaimOnce", testClaimOnce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

type opener = func(*testing.T, func(*cache.Options)) (cache.Store, *Clock)

func drafts(stream string, n int, prefix string) []cache.Draft {
	out := make([]cache.Draft, n)
	for i := range out {
		out[i] = cache.Draft{Stream: stream, Event: "message", Data: fmt.Appendf(nil, `"%s%d"`, prefix, i+1)}
	}
	return out
}

func mustAppend(t *testing.T, s cache.Store, d []cache.Draft) []cache.Cursor {
	t.Helper()
	ids, err := s.Append(t.Context(), d)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(ids) != len(d) {
		t.Fatalf("Append returned %d ids for %d drafts", len(ids), len(d))
	}
	return ids
}

func mustRead(t *testing.T, s cache.Store, stream string, c cache.Cursor, limit int) cache.Batch {
	t.Helper()
	b, err := s.ReadAfter(t.Context(), stream, c, limit)
	if err != nil {
		t.Fatalf("ReadAfter(%q, %v): %v", stream, c, err)
	}
	return b
}

func datas(b cache.Batch) []string {
	out := make([]string, len(b.Messages))
	for i, m := range b.Messages {
		out[i] = string(m.Data)
	}
	return out
}

func wantData(t *testing.T, b cache.Batch, want ...string) {
	t.Helper()
	if got := datas(b); !slices.Equal(got, want) {
		t.Fatalf("messages = %v, want %v", got, want)
	}
}

func testAppendReadOrder(t *testing.T, open opener) {
	s, clk := open(t, nil)
	ids := mustAppend(t, s, drafts("u", 3, "a"))
	clk.Advance(time.Second)
	ids = append(ids, mustAppend(t, s, drafts("u", 2, "b"))...)
	for i := 1; i < len(ids); i++ {
		if ids[i].Epoch != ids[0].Epoch || ids[i].Seq <= ids[i-1].Seq {
			t.Fatalf("ids not strictly increasing in one epoch: %v", ids)
		}
	}
	b := mustRead(t, s, "u", cache.Cursor{}, 0)
	wantData(t, b, `"a1"`, `"a2"`, `"a3"`, `"b1"`, `"b2"`)
	if b.Reset {
		t.Fatal("zero cursor read reported a reset")
	}
	for i, m := range b.Messages {
		if m.ID != ids[i] || m.Event != "message" {
			t.Fatalf("message %d = %v %q, want id %v event message", i, m.ID, m.Event, ids[i])
		}
	}
	if got, want := b.Messages[3].Time.Sub(b.Messages[0].Time), time.Second; got != want {
		t.Fatalf("time between appends = %v, want %v (store clock)", got, want)
	}
	if b.Cursor != ids[4] {
		t.Fatalf("Cursor = %v, want last id %v", b.Cursor, ids[4])
	}
	// Reading never deletes: the same read again returns the same messages.
	wantData(t, mustRead(t, s, "u", cache.Cursor{}, 0), datas(b)...)
	// After the last id: nothing, no reset, cursor unchanged.
	end := mustRead(t, s, "u", ids[4], 0)
	if len(end.Messages) != 0 || end.Reset || end.Cursor != ids[4] {
		t.Fatalf("read after end = %+v, want empty batch at %v", end, ids[4])
	}
}

func testReadLimitAndResume(t *testing.T, open opener) {
	s, _ := open(t, nil)
	ids := mustAppend(t, s, drafts("u", 10, "m"))
	var got []string
	c := cache.Cursor{}
	for range 4 {
		b := mustRead(t, s, "u", c, 3)
		if len(b.Messages) > 3 {
			t.Fatalf("limit 3 returned %d", len(b.Messages))
		}
		got = append(got, datas(b)...)
		c = b.Cursor
	}
	if len(got) != 10 || got[0] != `"m1"` || got[9] != `"m10"` {
		t.Fatalf("paged read = %v", got)
	}
	if c != ids[9] {
		t.Fatalf("final cursor %v, want %v", c, ids[9])
	}
	wantData(t, mustRead(t, s, "u", ids[6], 0), `"m8"`, `"m9"`, `"m10"`)
}

func testStreamsAreIsolated(t *testing.T, open opener) {
	s, _ := open(t, nil)
	a := mustAppend(t, s, drafts("alice", 2, "a"))
	mustAppend(t, s, drafts("bob", 3, "b"))
	wantData(t, mustRead(t, s, "alice", cache.Cursor{}, 0), `"a1"`, `"a2"`)
	wantData(t, mustRead(t, s, "bob", cache.Cursor{}, 0), `"b1"`, `"b2"`, `"b3"`)
	// Alice's cursor used on Bob's stream is foreign (each stream has its own epoch): a reset and
	// all of Bob's messages, never some of them quietly skipped.
	b := mustRead(t, s, "bob", a[1], 0)
	if !b.Reset {
		t.Fatalf("foreign cursor on another stream: %+v", b)
	}
	wantData(t, b, `"b1"`, `"b2"`, `"b3"`)
}

func testMissingStream(t *testing.T, open opener) {
	s, _ := open(t, nil)
	b := mustRead(t, s, "nobody", cache.Cursor{}, 0)
	if len(b.Messages) != 0 || b.Reset || b.Cursor.IsZero() || b.Cursor.Seq != 0 {
		t.Fatalf("zero-cursor read of a missing stream = %+v, want empty, no reset, a real <epoch>-0 cursor", b)
	}
	// The first message lands right after that position: no reset for a reader that saw nothing.
	id := mustAppend(t, s, drafts("nobody", 1, "m"))[0]
	if after := mustRead(t, s, "nobody", b.Cursor, 0); after.Reset || len(after.Messages) != 1 || after.Messages[0].ID != id {
		t.Fatalf("read after the start position = %+v", after)
	}
	b = mustRead(t, s, "other", cache.Cursor{Epoch: 7, Seq: 3}, 0)
	if !b.Reset || b.Cursor.IsZero() {
		t.Fatalf("read of a missing stream with a cursor = %+v, want Reset and a real position", b)
	}
	if _, err := s.ReadAfter(t.Context(), "", cache.Cursor{}, 0); !errors.Is(err, cache.ErrInvalid) {
		t.Fatalf("read of an empty stream name: %v, want ErrInvalid", err)
	}
}

// testResetPositionCatchesLaterLoss: a reader resuming from the positions reads give it is told
// of every later loss, also after a reset on a stream that had gone idle. (A zero cursor handed
// out after a reset would read "from the oldest" and miss the next expiry silently.)
func testResetPositionCatchesLaterLoss(t *testing.T, open opener) {
	s, clk := open(t, nil)
	first := mustAppend(t, s, drafts("u", 1, "old"))[0]
	clk.Advance(10 * ttl)                                                             // expired, and idle long enough for any engine to free the stream
	a := mustRead(t, s, "u", cache.Cursor{Epoch: first.Epoch, Seq: first.Seq - 1}, 0) // never saw it
	if !a.Reset || a.Cursor.IsZero() {
		t.Fatalf("read after an expired message = %+v, want a reset with a real position", a)
	}
	m2 := mustAppend(t, s, drafts("u", 1, "m2-"))[0]
	clk.Advance(ttl / 2)
	mustAppend(t, s, drafts("u", 1, "m3-"))
	clk.Advance(ttl/2 + time.Second) // m2 expires before the reader's next read
	b := mustRead(t, s, "u", a.Cursor, 0)
	if !b.Reset && (len(b.Messages) == 0 || b.Messages[0].ID != m2) {
		t.Fatalf("resuming from %v after m2 (%v) expired: %+v without a reset", a.Cursor, m2, b)
	}
}

func testResetAfterExpiry(t *testing.T, open opener) {
	s, clk := open(t, nil)
	first := mustAppend(t, s, drafts("u", 2, "old"))
	clk.Advance(ttl / 2)
	second := mustAppend(t, s, drafts("u", 2, "new"))
	clk.Advance(ttl/2 + time.Millisecond) // the first two are now older than the TTL

	wantData(t, mustRead(t, s, "u", cache.Cursor{}, 0), `"new1"`, `"new2"`)

	b := mustRead(t, s, "u", first[0], 0)
	if !b.Reset {
		t.Fatal("read after a cursor whose successor expired: no reset")
	}
	wantData(t, b, `"new1"`, `"new2"`)
	if want := (cache.Cursor{Epoch: first[1].Epoch, Seq: first[1].Seq}); b.Start != want {
		t.Fatalf("reset Start = %v, want %v (just before the oldest retained)", b.Start, want)
	}
	// Resuming from Start is not a reset again.
	if again := mustRead(t, s, "u", b.Start, 0); again.Reset || len(again.Messages) != 2 {
		t.Fatalf("read after reset Start = %+v", again)
	}
	// A reader that had seen everything that expired loses nothing.
	if b := mustRead(t, s, "u", first[1], 0); b.Reset {
		t.Fatal("read after the last expired message reported a reset")
	}
	// Everything expired: a caught-up reader keeps its cursor; a behind one gets a reset.
	clk.Advance(ttl)
	if b := mustRead(t, s, "u", second[1], 0); b.Reset || len(b.Messages) != 0 {
		t.Fatalf("caught-up read after full expiry = %+v", b)
	}
	b = mustRead(t, s, "u", second[0], 0)
	if !b.Reset || len(b.Messages) != 0 {
		t.Fatalf("behind read after full expiry = %+v, want reset and no messages", b)
	}
	if b.Cursor.IsZero() || b.Cursor != b.Start {
		t.Fatalf("reset with no messages: Cursor %v Start %v, want both at the stream's end", b.Cursor, b.Start)
	}
}

func testResetAfterCountEviction(t *testing.T, open opener) {
	s, _ := open(t, func(o *cache.Options) { o.StreamMaxMessages = 3 })
	ids := mustAppend(t, s, drafts("u", 5, "m"))
	wantData(t, mustRead(t, s, "u", cache.Cursor{}, 0), `"m3"`, `"m4"`, `"m5"`)
	b := mustRead(t, s, "u", ids[0], 0)
	if !b.Reset {
		t.Fatal("read after an evicted successor: no reset")
	}
	wantData(t, b, `"m3"`, `"m4"`, `"m5"`)
	if b := mustRead(t, s, "u", ids[1], 0); b.Reset {
		t.Fatal("read right before the oldest retained reported a reset")
	}
}

func testResetAfterByteEviction(t *testing.T, open opener) {
	big := bytes.Repeat([]byte("x"), 3000)
	s, _ := open(t, func(o *cache.Options) { o.StreamMaxBytes = 10_000 })
	var ids []cache.Cursor
	for range 6 {
		ids = append(ids, mustAppend(t, s, []cache.Draft{{Stream: "u", Event: "e", Data: big}})...)
	}
	b := mustRead(t, s, "u", cache.Cursor{}, 0)
	if n := len(b.Messages); n == 0 || n > 3 {
		t.Fatalf("byte cap 10000 with 3000-byte messages kept %d", n)
	}
	if b.Messages[len(b.Messages)-1].ID != ids[5] {
		t.Fatal("byte cap evicted the newest message instead of the oldest")
	}
	if b := mustRead(t, s, "u", ids[0], 0); !b.Reset {
		t.Fatal("read after a byte-evicted successor: no reset")
	}
}

func testForeignEpochResets(t *testing.T, open opener) {
	s, _ := open(t, nil)
	ids := mustAppend(t, s, drafts("u", 3, "m"))
	foreign := cache.Cursor{Epoch: ids[0].Epoch ^ 0x5a5a, Seq: 1}
	b := mustRead(t, s, "u", foreign, 0)
	if !b.Reset {
		t.Fatal("cursor from another epoch: no reset")
	}
	wantData(t, b, `"m1"`, `"m2"`, `"m3"`)
	if b.Start != (cache.Cursor{Epoch: ids[0].Epoch, Seq: 0}) {
		t.Fatalf("Start = %v, want the epoch's beginning", b.Start)
	}
}

func testCursorBeyondEndResets(t *testing.T, open opener) {
	s, _ := open(t, nil)
	ids := mustAppend(t, s, drafts("u", 2, "m"))
	b := mustRead(t, s, "u", cache.Cursor{Epoch: ids[0].Epoch, Seq: ids[1].Seq + 5}, 0)
	if !b.Reset {
		t.Fatal("a cursor beyond the end would make the reader skip what comes next; want a reset")
	}
	wantData(t, b, `"m1"`, `"m2"`)
}

func testIdempotentKey(t *testing.T, open opener) {
	s, _ := open(t, nil)
	d := cache.Draft{Stream: "u", Event: "e", Data: []byte(`1`), Key: "k1"}
	a := mustAppend(t, s, []cache.Draft{d})
	d.Data = []byte(`2`) // a retry may even differ; the first message wins
	b := mustAppend(t, s, []cache.Draft{d, {Stream: "u", Data: []byte(`3`), Key: "k2"}, {Stream: "u", Data: []byte(`4`), Key: "k2"}})
	if b[0] != a[0] {
		t.Fatalf("same key returned %v then %v", a[0], b[0])
	}
	if b[1] != b[2] {
		t.Fatalf("same key twice in one call returned %v and %v", b[1], b[2])
	}
	wantData(t, mustRead(t, s, "u", cache.Cursor{}, 0), `1`, `3`)
	// Keys are per stream.
	if c := mustAppend(t, s, []cache.Draft{{Stream: "v", Data: []byte(`5`), Key: "k1"}}); c[0] == a[0] {
		t.Fatal("a key on another stream was treated as a duplicate")
	}
}

func testIdempotentKeyExpires(t *testing.T, open opener) {
	s, clk := open(t, nil)
	a := mustAppend(t, s, []cache.Draft{{Stream: "u", Data: []byte(`1`), Key: "k"}})
	clk.Advance(ttl + time.Millisecond)
	b := mustAppend(t, s, []cache.Draft{{Stream: "u", Data: []byte(`2`), Key: "k"}})
	if a[0] == b[0] {
		t.Fatal("key still deduplicated after the TTL")
	}
	wantData(t, mustRead(t, s, "u", cache.Cursor{}, 0), `2`)
}

func subscribe(t *testing.T, s cache.Store, stream string) cache.Subscription {
	t.Helper()
	sub, err := s.Subscribe(t.Context(), stream)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(sub.Close)
	return sub
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitClosed waits for an engine whose notifications travel through a backend; the memory engine
// closes the channel before Append returns.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not woken", what)
	}
}

func testNotifyWakesAllWaiters(t *testing.T, open opener) {
	s, _ := open(t, nil)
	const n = 200
	subs := make([]cache.Subscription, n)
	chans := make([]<-chan struct{}, n)
	for i := range subs {
		subs[i] = subscribe(t, s, "u")
		chans[i] = subs[i].Changed()
	}
	other := subscribe(t, s, "other").Changed()
	mustAppend(t, s, drafts("u", 1, "m"))
	for i, ch := range chans {
		waitClosed(t, ch, fmt.Sprintf("waiter %d", i))
	}
	if closed(other) {
		t.Fatal("an append to u woke a waiter of another stream")
	}
	// A fresh channel waits for the next append.
	if next := subs[0].Changed(); closed(next) {
		t.Fatal("channel taken after the wake is already closed")
	}
}

func testNotifyLosesNoWakeup(t *testing.T, open opener) {
	s, _ := open(t, nil)
	sub := subscribe(t, s, "u")
	// The documented order: Changed, then ReadAfter, then wait. An append between the read and
	// the wait must still wake the waiter.
	c := cache.Cursor{}
	for round := range 20 {
		ch := sub.Changed()
		b := mustRead(t, s, "u", c, 0)
		if len(b.Messages) > 0 {
			c = b.Cursor
			continue
		}
		mustAppend(t, s, drafts("u", 1, fmt.Sprint("r", round, "-")))
		waitClosed(t, ch, fmt.Sprintf("round %d", round))
		if b := mustRead(t, s, "u", c, 0); len(b.Messages) != 1 {
			t.Fatalf("round %d: woken but read %d messages", round, len(b.Messages))
		}
	}
}

// counter is a Notify function that counts its calls and signals each on a channel.
type counter struct {
	n    atomic.Int64
	each chan struct{}
}

func newCounter() *counter { return &counter{each: make(chan struct{}, 1024)} }

func (c *counter) fn() {
	c.n.Add(1)
	select {
	case c.each <- struct{}{}:
	default:
	}
}

func (c *counter) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-c.each:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: function not called", what)
	}
}

// testNotifyFuncs checks Subscription.Notify: every subscriber's function runs after an append
// to its stream and not to another's, and not after Close.
func testNotifyFuncs(t *testing.T, open opener) {
	s, _ := open(t, nil)
	const n = 50
	subs := make([]cache.Subscription, n)
	counts := make([]*counter, n)
	for i := range subs {
		subs[i] = subscribe(t, s, "u")
		counts[i] = newCounter()
		subs[i].Notify(counts[i].fn)
	}
	other := newCounter()
	subscribe(t, s, "other").Notify(other.fn)
	mustAppend(t, s, drafts("u", 1, "m"))
	for i, c := range counts {
		c.wait(t, fmt.Sprintf("subscriber %d", i))
	}
	// A function is called again for the next append, unlike a channel.
	mustAppend(t, s, drafts("u", 1, "n"))
	counts[0].wait(t, "second append")
	if other.n.Load() != 0 {
		t.Fatal("an append to u called a function of another stream's subscriber")
	}
	subs[1].Close()
	before := counts[1].n.Load()
	mustAppend(t, s, drafts("u", 1, "o"))
	counts[0].wait(t, "third append")
	if got := counts[1].n.Load(); got != before {
		t.Fatalf("function called %d more times after Close", got-before)
	}
}

// testNotifyFuncAfterClose checks that closing the Store calls every function, and that Notify
// on a closed Subscription calls it at once, so a parked reader always learns it must stop.
func testNotifyFuncAfterClose(t *testing.T, open opener) {
	s, _ := open(t, nil)
	live := newCounter()
	subscribe(t, s, "u").Notify(live.fn)
	gone := subscribe(t, s, "u")
	gone.Close()
	late := newCounter()
	gone.Notify(late.fn)
	late.wait(t, "Notify on a closed Subscription")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	live.wait(t, "subscriber after Store.Close")
}

func testCapRefusesNeverDrops(t *testing.T, open opener) {
	payload := bytes.Repeat([]byte("p"), 1000)
	s, clk := open(t, func(o *cache.Options) { o.MaxMemory = 64 << 10 })
	var acked []cache.Cursor
	var full bool
	for i := range 1000 {
		ids, err := s.Append(t.Context(), []cache.Draft{{Stream: fmt.Sprint("s", i%7), Event: "e", Data: payload}})
		if errors.Is(err, cache.ErrFull) {
			full = true
			break
		}
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		acked = append(acked, ids[0])
	}
	if !full {
		t.Fatal("64 KiB cap never refused 1000 messages of 1000 bytes")
	}
	// Every acknowledged message is still readable: refusing is the only way to stay under the cap.
	count := 0
	for i := range 7 {
		b := mustRead(t, s, fmt.Sprint("s", i), cache.Cursor{}, 0)
		if b.Reset {
			t.Fatalf("stream s%d reset while full", i)
		}
		count += len(b.Messages)
	}
	if count != len(acked) {
		t.Fatalf("%d acknowledged, %d retained: the cap dropped messages", len(acked), count)
	}
	// Once the old data expires, publishing works again.
	clk.Advance(ttl + time.Millisecond)
	if _, err := s.Append(t.Context(), []cache.Draft{{Stream: "s0", Event: "e", Data: payload}}); err != nil {
		t.Fatalf("Append after expiry freed the cap: %v", err)
	}
}

func testCapCountsEvictions(t *testing.T, open opener) {
	// A stream at its own cap makes room by evicting its oldest message, so a publish to it does
	// not grow the store and must not be refused for the global cap.
	payload := bytes.Repeat([]byte("p"), 1000)
	s, _ := open(t, func(o *cache.Options) { o.MaxMemory = 64 << 10; o.StreamMaxMessages = 4 })
	for i := range 1000 {
		if _, err := s.Append(t.Context(), []cache.Draft{{Stream: "u", Event: "e", Data: payload}}); err != nil {
			t.Fatalf("append %d to a capped stream: %v", i, err)
		}
	}
}

func testStatsCountRemovals(t *testing.T, open opener) {
	// cache.Stats: Expired counts messages removed for the TTL and Evicted those removed by a
	// per-stream cap, each message once, whoever removes it.
	s, clk := open(t, func(o *cache.Options) { o.StreamMaxMessages = 3; o.StreamMaxBytes = 10_000 })
	st, ok := s.(cache.Statser)
	if !ok {
		t.Skip("the engine does not implement cache.Statser")
	}
	base := st.Stats()
	want := func(expired, evicted int64, after string) {
		t.Helper()
		got := st.Stats()
		if got.Expired-base.Expired != expired || got.Evicted-base.Evicted != evicted {
			t.Fatalf("after %s: %d expired, %d evicted; want %d and %d",
				after, got.Expired-base.Expired, got.Evicted-base.Evicted, expired, evicted)
		}
	}
	mustAppend(t, s, drafts("u", 5, "m")) // the count cap keeps 3
	want(0, 2, "5 messages on a stream capped at 3")
	big := bytes.Repeat([]byte("x"), 3000)
	for range 6 { // the byte cap keeps 3 of these
		mustAppend(t, s, []cache.Draft{{Stream: "v", Event: "e", Data: big}})
	}
	want(0, 5, "6 messages of 3000 bytes on a stream capped at 10000 bytes")
	key := []cache.Draft{{Stream: "v", Event: "e", Data: big, Key: "k"}}
	mustAppend(t, s, key)
	mustAppend(t, s, key) // a repeat stores nothing, so it evicts nothing
	want(0, 6, "a keyed message and its repeat")

	// Everything retained outlives the TTL; appending to both streams removes it (if the
	// engine's own janitor has not already), and evicts nothing.
	clk.Advance(ttl + time.Millisecond)
	mustAppend(t, s, append(drafts("u", 1, "n"), drafts("v", 1, "n")...))
	want(6, 6, "the TTL passed and both streams got a message")
}

func testTooLargeStoresNothing(t *testing.T, open opener) {
	s, _ := open(t, func(o *cache.Options) { o.MaxMessageBytes = 100 })
	ok := cache.Draft{Stream: "u", Data: []byte(`1`)}
	huge := cache.Draft{Stream: "u", Data: bytes.Repeat([]byte("x"), 101)}
	if _, err := s.Append(t.Context(), []cache.Draft{ok, huge}); !errors.Is(err, cache.ErrTooLarge) {
		t.Fatalf("Append of a too-large draft: %v, want ErrTooLarge", err)
	}
	if b := mustRead(t, s, "u", cache.Cursor{}, 0); len(b.Messages) != 0 {
		t.Fatalf("a refused batch stored %d messages", len(b.Messages))
	}
}

func testInvalidStoresNothing(t *testing.T, open opener) {
	s, _ := open(t, nil)
	tests := []struct {
		name string
		d    cache.Draft
	}{
		{"empty stream", cache.Draft{Data: []byte(`1`)}},
		{"long stream", cache.Draft{Stream: string(bytes.Repeat([]byte("s"), cache.MaxStreamLen+1)), Data: []byte(`1`)}},
		{"long key", cache.Draft{Stream: "u", Key: string(bytes.Repeat([]byte("k"), cache.MaxKeyLen+1)), Data: []byte(`1`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), []cache.Draft{{Stream: "u", Data: []byte(`0`)}, tt.d})
			if !errors.Is(err, cache.ErrInvalid) {
				t.Fatalf("Append: %v, want ErrInvalid", err)
			}
			if b := mustRead(t, s, "u", cache.Cursor{}, 0); len(b.Messages) != 0 {
				t.Fatal("an invalid batch stored its valid part")
			}
		})
	}
}

func testBatchAcrossStreams(t *testing.T, open opener) {
	s, _ := open(t, nil)
	in := []cache.Draft{
		{Stream: "b", Data: []byte(`"b1"`)},
		{Stream: "a", Data: []byte(`"a1"`)},
		{Stream: "b", Data: []byte(`"b2"`)},
		{Stream: "c", Data: []byte(`"c1"`)},
		{Stream: "a", Data: []byte(`"a2"`)},
	}
	ids := mustAppend(t, s, in)
	for _, stream := range []string{"a", "b", "c"} {
		b := mustRead(t, s, stream, cache.Cursor{}, 0)
		for _, m := range b.Messages {
			// ids are returned in input order: find the draft each id belongs to.
			i := slices.Index(ids, m.ID)
			if i < 0 || in[i].Stream != stream || string(in[i].Data) != string(m.Data) {
				t.Fatalf("stream %s: message %v %s does not match its draft", stream, m.ID, m.Data)
			}
		}
	}
	wantData(t, mustRead(t, s, "a", cache.Cursor{}, 0), `"a1"`, `"a2"`)
	wantData(t, mustRead(t, s, "b", cache.Cursor{}, 0), `"b1"`, `"b2"`)
}

func testConcurrentAppendsIncrease(t *testing.T, open opener) {
	s, _ := open(t, nil)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				d := []cache.Draft{{Stream: "u", Data: fmt.Appendf(nil, `"w%d-%d"`, w, i)}}
				if _, err := s.Append(context.Background(), d); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b := mustRead(t, s, "u", cache.Cursor{}, 0)
	if len(b.Messages) != writers*each {
		t.Fatalf("read %d messages, want %d", len(b.Messages), writers*each)
	}
	last := map[string]int{}
	for i, m := range b.Messages {
		if i > 0 && m.ID.Seq <= b.Messages[i-1].ID.Seq {
			t.Fatalf("seq not increasing at %d", i)
		}
		var w, n int
		fmt.Sscanf(string(m.Data), `"w%d-%d"`, &w, &n)
		if k := fmt.Sprint(w); n < last[k] {
			t.Fatalf("writer %d's messages out of order", w)
		} else {
			last[k] = n
		}
	}
}

func testResumeAcrossIdleGap(t *testing.T, open opener) {
	// However an engine frees idle streams, a reader coming back after a long gap is never moved
	// past a message it has not seen: either it gets the new messages right after its cursor, or
	// it gets a reset.
	s, clk := open(t, nil)
	old := mustAppend(t, s, drafts("u", 2, "old"))
	clk.Advance(5 * ttl)
	mustAppend(t, s, drafts("u", 2, "new"))
	b := mustRead(t, s, "u", old[1], 0)
	wantData(t, b, `"new1"`, `"new2"`)
	if !b.Reset && b.Messages[0].ID.Seq != old[1].Seq+1 {
		t.Fatalf("no reset, yet the first message after %v is %v", old[1], b.Messages[0].ID)
	}
	if b := mustRead(t, s, "u", old[0], 0); !b.Reset {
		t.Fatal("a reader that missed old2 was not told")
	}
}

func testScan(t *testing.T, open opener) {
	s, _ := open(t, nil)
	mustAppend(t, s, drafts("a", 2, "a"))
	mustAppend(t, s, drafts("b", 3, "b"))
	got := map[string][]string{}
	err := s.Scan(t.Context(), "", func(stream string, m cache.Message) error {
		got[stream] = append(got[stream], string(m.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got["a"], []string{`"a1"`, `"a2"`}) || !slices.Equal(got["b"], []string{`"b1"`, `"b2"`, `"b3"`}) {
		t.Fatalf("Scan(all) = %v", got)
	}
	got = map[string][]string{}
	_ = s.Scan(t.Context(), "b", func(stream string, m cache.Message) error {
		got[stream] = append(got[stream], string(m.Data))
		return nil
	})
	if len(got) != 1 || len(got["b"]) != 3 {
		t.Fatalf("Scan(b) = %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Scan(t.Context(), "", func(string, cache.Message) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan did not stop at fn's error: err=%v calls=%d", err, n)
	}
}

func testCanceledContext(t *testing.T, open opener) {
	s, _ := open(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, drafts("u", 1, "m")); err == nil {
		t.Fatal("Append with a canceled context succeeded")
	}
	if _, err := s.ReadAfter(ctx, "u", cache.Cursor{}, 0); err == nil {
		t.Fatal("ReadAfter with a canceled context succeeded")
	}
}

func testCloseWakesSubscribers(t *testing.T, open opener) {
	s, _ := open(t, nil)
	ch := subscribe(t, s, "u").Changed()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "subscriber after Close")
	if _, err := s.Append(t.Context(), drafts("u", 1, "m")); !errors.Is(err, cache.ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
}

// testClaimOnce checks cache.Claimer, for engines that offer it: a key is claimed once within its
// TTL, and again after it.
func testClaimOnce(t *testing.T, open opener) {
	s, clk := open(t, nil)
	c, ok := s.(cache.Claimer)
	if !ok {
		t.Skip("engine does not implement cache.Claimer")
	}
	claim := func(key string) bool {
		t.Helper()
		got, err := c.Claim(t.Context(), key, 30*time.Second)
		if err != nil {
			t.Fatalf("Claim(%q): %v", key, err)
		}
		return got
	}
	if !claim("ticket-1") {
		t.Fatal("first claim refused")
	}
	if claim("ticket-1") {
		t.Fatal("second claim of the same key granted")
	}
	if !claim("ticket-2") {
		t.Fatal("another key refused")
	}
	// Concurrent claims of one key: exactly one wins.
	var wins sync.WaitGroup
	granted := make(chan bool, 16)
	for range 16 {
		wins.Go(func() { ok, _ := c.Claim(context.Background(), "race", time.Minute); granted <- ok })
	}
	wins.Wait()
	close(granted)
	n := 0
	for ok := range granted {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of 16 concurrent claims granted, want 1", n)
	}
	clk.Advance(31 * time.Second)
	if !claim("ticket-1") {
		t.Fatal("claim refused after its TTL")
	}
	if _, err := c.Claim(t.Context(), "", time.Second); !errors.Is(err, cache.ErrInvalid) {
		t.Fatalf("empty key: %v", err)
	}
}
