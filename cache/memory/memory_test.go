package memory_test

import (
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/cachetest"
	"github.com/bridged/bridged/cache/memory"
)

func TestContract(t *testing.T) {
	cachetest.Run(t, func(t *testing.T, o cache.Options) cache.Store {
		s := memory.New(o)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func newStore(t *testing.T, o cache.Options) (*memory.Store, *cachetest.Clock) {
	t.Helper()
	clk := cachetest.NewClock()
	o.Now = clk.Now
	s := memory.New(o)
	t.Cleanup(func() { s.Close() })
	return s, clk
}

// settle waits for the janitor to act on the clock's current time. The janitor runs on a real
// ticker but decides everything by the injected clock, so the outcome is fixed; only when it
// happens is not.
func settle(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not reach the expected state")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIdleStreamIsFreedAndGetsNewEpoch(t *testing.T) {
	s, clk := newStore(t, cache.Options{TTL: time.Minute})
	ids, err := s.Append(t.Context(), []cache.Draft{{Stream: "u", Data: []byte(`1`), Key: "k"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Streams != 1 || st.Messages != 1 || st.Bytes <= 0 {
		t.Fatalf("after one append: %+v", st)
	}
	clk.Advance(time.Minute + time.Millisecond) // message and key expire
	settle(t, func() bool { return s.Stats().Messages == 0 })
	if st := s.Stats(); st.Streams != 1 {
		t.Fatalf("an empty stream was freed before its grace period: %+v", st)
	}
	clk.Advance(time.Minute) // idle for a TTL: freed, every accounted byte returned
	settle(t, func() bool { return s.Stats().Streams == 0 })
	if st := s.Stats(); st.Bytes != 0 {
		t.Fatalf("freed store still accounts %d bytes", st.Bytes)
	}
	again, err := s.Append(t.Context(), []cache.Draft{{Stream: "u", Data: []byte(`2`)}})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Epoch == ids[0].Epoch {
		t.Fatal("a re-created stream kept its old epoch")
	}
	b, _ := s.ReadAfter(t.Context(), "u", ids[0], 0)
	if !b.Reset || len(b.Messages) != 1 {
		t.Fatalf("old cursor on re-created stream: %+v", b)
	}
}

func TestSubscriptionKeepsStream(t *testing.T) {
	s, clk := newStore(t, cache.Options{TTL: time.Minute})
	sub, err := s.Subscribe(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.ReadAfter(t.Context(), "u", cache.Cursor{}, 0)
	if first.Cursor.IsZero() {
		t.Fatal("a subscribed stream should exist and give its reader a real cursor")
	}
	clk.Advance(10 * time.Minute)
	s.Append(t.Context(), nil) // no-op; the janitor does the work
	time.Sleep(50 * time.Millisecond)
	if s.Stats().Streams != 1 {
		t.Fatal("a watched stream was freed")
	}
	sub.Close()
	sub.Close() // idempotent
	clk.Advance(time.Minute + time.Millisecond)
	settle(t, func() bool { return s.Stats().Streams == 0 })
}

func TestAccountingReturnsToZero(t *testing.T) {
	s, clk := newStore(t, cache.Options{TTL: time.Minute, StreamMaxMessages: 5})
	for i := range 300 {
		d := []cache.Draft{{Stream: string(rune('a' + i%26)), Event: "e", Data: make([]byte, i), Key: string(rune('A' + i%40))}}
		if _, err := s.Append(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Messages != 26*5 {
		t.Fatalf("Messages = %d, want 26 streams x 5 (count cap)", st.Messages)
	}
	clk.Advance(3 * time.Minute)
	settle(t, func() bool { st := s.Stats(); return st.Streams == 0 && st.Messages == 0 && st.Bytes == 0 })
	if st := s.Stats(); st.Evicted != 300-26*5 || st.Expired != 26*5 {
		t.Fatalf("counters %+v: want %d evicted by the count cap and %d expired", st, 300-26*5, 26*5)
	}
}
