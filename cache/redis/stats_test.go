package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/cachetest"
	"github.com/bridged/bridged/cache/redis"
	"github.com/bridged/bridged/internal/redistest"
)

// Stats: the removal counters come from the scripts' replies (the contract suite's
// StatsCountRemovals covers the append script); the sizes from refreshers that run every
// Config.Stats*Every.

// openWith returns a store on srv with cfg (its URL filled in), closed at the end of the test.
func openWith(tb testing.TB, srv *redistest.Server, o cache.Options, cfg redis.Config) *redis.Store {
	tb.Helper()
	cfg.URL = srv.URL()
	s, err := redis.New(o, cfg)
	if err != nil {
		tb.Fatalf("redis.New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	waitReady(tb, s)
	return s
}

// noStats turns the refreshers off, so that only the test's own calls reach Redis.
var noStats = redis.Config{StatsMemoryEvery: -1, StatsCountEvery: -1}

// waitStats waits until s's Stats satisfy ok, for up to readyWait (a bound that only catches a
// refresher that never delivers), and fails with the last figures otherwise.
func waitStats(tb testing.TB, s *redis.Store, what string, ok func(cache.Stats) bool) cache.Stats {
	tb.Helper()
	deadline := time.Now().Add(readyWait)
	for {
		st := s.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("Stats never showed %s; last %+v", what, st)
		}
		time.Sleep(pollEvery)
	}
}

func TestAppendCountsRemovalsInOneRoundTrip(t *testing.T) {
	// The counts ride on the append script's reply: a publish is still one round trip, for one
	// stream and for a batch over several.
	srv := redistest.Start(t)
	clk := cachetest.NewClock()
	o := cache.Options{Prefix: redistest.UniquePrefix(t), Now: clk.Now, StreamMaxMessages: 2}
	s := openWith(t, srv, o, noStats)
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
	s := openWith(t, srv, cache.Options{Prefix: redistest.UniquePrefix(t), Now: clk.Now}, noStats)
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

func TestStatsRefresh(t *testing.T) {
	const maxmemory = 100 << 20
	srv := redistest.Start(t, redistest.WithArgs("--maxmemory", fmt.Sprint(maxmemory), "--maxmemory-policy", "noeviction"))
	c := client(t, srv)
	cfg := redis.Config{StatsMemoryEvery: 10 * time.Millisecond, StatsCountEvery: 10 * time.Millisecond}
	s := openWith(t, srv, cache.Options{Prefix: redistest.UniquePrefix(t)}, cfg)

	// Another deployment on the same Redis, whose streams are not ours to count.
	other := openWith(t, srv, cache.Options{Prefix: redistest.UniquePrefix(t)}, noStats)
	for i := range 10 {
		mustAppend(t, other, drafts(fmt.Sprint("s", i), 2, "o"))
	}
	// More streams than one SCAN call looks at and one XLEN pipeline holds: 2,500 of one message,
	// one of 3 (a), one created by a reader and still empty (c), and a claim, which is no stream.
	const many = 2500
	for i := 0; i < many; i += 500 {
		var batch []cache.Draft
		for j := i; j < i+500; j++ {
			batch = append(batch, drafts(fmt.Sprint("s", j), 1, "m")...)
		}
		mustAppend(t, s, batch)
	}
	mustAppend(t, s, drafts("a", 3, "m"))
	mustSubscribe(t, s, "c")
	if _, err := s.Claim(t.Context(), "ticket", time.Minute); err != nil {
		t.Fatal(err)
	}

	got := waitStats(t, s, fmt.Sprintf("%d streams and %d messages", many+2, many+3), func(st cache.Stats) bool {
		return st.Streams == many+2 && st.Messages == many+3
	})
	got = waitStats(t, s, "Redis's maxmemory and used_memory", func(st cache.Stats) bool {
		return st.MaxBytes == maxmemory && st.Bytes > 0
	})
	info, err := c.Info(t.Context(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	// used_memory moves by kilobytes as connections work; the figure must be Redis's, not 0 or
	// some other count.
	if used := infoInt(t, info, "used_memory"); got.Bytes < used/2 || got.Bytes > 2*used {
		t.Fatalf("Stats.Bytes %d, but Redis reports used_memory %d", got.Bytes, used)
	}
	if got.Expired != 0 || got.Evicted != 0 {
		t.Fatalf("nothing was removed, Stats %+v", got)
	}

	// The figures follow the data and the settings.
	mustAppend(t, s, drafts("d", 4, "m"))
	waitStats(t, s, "a new stream of 4 messages", func(st cache.Stats) bool {
		return st.Streams == many+3 && st.Messages == many+7
	})
	if err := c.ConfigSet(t.Context(), "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	waitStats(t, s, "MaxBytes 0 for a Redis without maxmemory", func(st cache.Stats) bool { return st.MaxBytes == 0 })
}

func TestStatsWhileRedisHangs(t *testing.T) {
	// Stats never waits for Redis, keeps the last figures while Redis does not answer, and Close
	// stops the refreshers even while their calls hang (each ends within Config.Timeout).
	srv := redistest.Start(t, redistest.WithArgs("--maxmemory", "50mb"))
	cfg := redis.Config{Timeout: 200 * time.Millisecond, StatsMemoryEvery: time.Millisecond, StatsCountEvery: time.Millisecond}
	s := openWith(t, srv, cache.Options{Prefix: redistest.UniquePrefix(t)}, cfg)
	mustAppend(t, s, drafts("u", 2, "m"))
	want := func(st cache.Stats) bool { return st.Streams == 1 && st.Messages == 2 && st.MaxBytes == 50<<20 }
	waitStats(t, s, "1 stream, 2 messages, maxmemory 50mb", want)

	srv.Pause(t)
	defer srv.Resume(t)
	for range 20 { // across several refresh attempts, each of which hangs
		var st cache.Stats
		done := make(chan struct{})
		go func() { st = s.Stats(); close(done) }()
		select {
		case <-done:
		case <-after(readyWait):
			t.Fatal("Stats waited for a hung Redis")
		}
		if !want(st) {
			t.Fatalf("Stats while Redis hangs: %+v, want the last figures", st)
		}
		time.Sleep(pollEvery)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-after(readyWait):
		t.Fatal("Close did not return while Redis hangs")
	}
}
