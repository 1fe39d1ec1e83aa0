package redis_test

import (
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/cachetest"
	"github.com/bridged/bridged/internal/redistest"
)

// Stats: the removal counters come from the scripts' replies (the contract suite's
// StatsCountRemovals covers the append script).

func TestAppendCountsRemovalsInOneRoundTrip(t *testing.T) {
	// The counts ride on the append script's reply: a publish is still one round trip, for one
	// stream and for a batch over several.
	srv := redistest.Start(t)
	clk := cachetest.NewClock()
	o := cache.Options{Prefix: redistest.UniquePrefix(t), Now: clk.Now, StreamMaxMessages: 2}
	s := open(t, srv, o)
	mustAppend(t, s, drafts("a", 1, "w"))                                 // loads the script
	mustAppend(t, s, append(drafts("a", 1, "w"), drafts("b", 1, "w")...)) // and in MULTI/EXEC
	if st := s.Stats(); st.Expired != 0 || st.Evicted != 0 {
		t.Fatalf("nothing removed yet, Stats %+v", st)
	}
	rt := s.CountRoundTrips()

	clk.Advance(time.Hour) // a has 2 messages, b 1: all past the TTL
	batch := append(append(drafts("a", 3, "x"), drafts("b", 3, "x")...), drafts("c", 3, "x")...)
	mustAppend(t, s, batch) // each stream keeps 2 of its 3
	if n, st := rt.Load(), s.Stats(); n != 1 || st.Expired != 3 || st.Evicted != 3 {
		t.Fatalf("batch over 3 streams: %d round trips, %d expired, %d evicted; want 1, 3, 3", n, st.Expired, st.Evicted)
	}
	mustAppend(t, s, drafts("a", 1, "y"))
	if n, st := rt.Load(), s.Stats(); n != 2 || st.Expired != 3 || st.Evicted != 4 {
		t.Fatalf("then one message: %d round trips in all, %d expired, %d evicted; want 2, 3, 4", n, st.Expired, st.Evicted)
	}
}

func TestReclaimAndSweepCountExpired(t *testing.T) {
	srv := redistest.Start(t)
	clk := cachetest.NewClock()
	s := open(t, srv, cache.Options{Prefix: redistest.UniquePrefix(t), Now: clk.Now})
	c := client(t, srv)
	mustAppend(t, s, append(append(drafts("a", 3, "m"), drafts("b", 2, "m")...), drafts("c", 1, "m")...))
	clk.Advance(time.Hour)

	if err := s.Reclaim(t.Context(), []string{"a", "missing"}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Expired != 3 || st.Evicted != 0 {
		t.Fatalf("reclaim of a (3 expired) and a missing stream: Stats %+v, want 3 expired", st)
	}
	if !s.Sweep(t.Context()) {
		t.Fatal("the first sweep did not run")
	}
	if st := s.Stats(); st.Expired != 6 || st.Evicted != 0 {
		t.Fatalf("sweep after it (b 2 and c 1 expired): Stats %+v, want 6 expired", st)
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := c.XLen(t.Context(), s.KeysOf(name)[1]).Val(); n != 0 {
			t.Fatalf("stream %s still holds %d messages after the sweep", name, n)
		}
	}
}
