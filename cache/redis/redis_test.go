package redis_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/cachetest"
	"github.com/bridged/bridged/cache/redis"
	"github.com/bridged/bridged/internal/redistest"
)

// TestContract runs the contract suite against real redis-servers: one shared by the subtests,
// each in its own key prefix, and a dedicated one for each subtest that sets a memory cap.
//
// The Redis engine's memory cap is Redis's maxmemory (see the package comment), so for a subtest
// that sets Options.MaxMemory the factory starts a server of its own whose maxmemory is what the
// empty server uses plus that cap, with maxmemory-policy noeviction. The suite's checks stay
// exactly as they are for the memory engine: refused with ErrFull, nothing acknowledged lost,
// room again once data expired. Redis's used_memory also counts its clients' buffers, which grow
// and shrink by tens of KiB as connections work, so the cap gets capSlack on top; none of the
// suite's checks depends on the exact figure (the 64 KiB test must be refused within 1,000
// messages of 1,000 bytes, and is, well before).
func TestContract(t *testing.T) {
	shared := redistest.Start(t)
	cachetest.Run(t, func(t *testing.T, o cache.Options) cache.Store {
		if o.MaxMemory == 0 {
			o.Prefix = redistest.UniquePrefix(t)
			return open(t, shared, o)
		}
		srv := redistest.Start(t, redistest.WithArgs("--maxmemory-policy", "noeviction"))
		warmUp(t, srv)
		o.Prefix = redistest.UniquePrefix(t)
		s := open(t, srv, o)
		capMemory(t, srv, o.MaxMemory+capSlack)
		return s
	})
}

const capSlack = 256 << 10

// open returns a Redis store on srv, closed at the end of the test.
func open(tb testing.TB, srv *redistest.Server, o cache.Options) *redis.Store {
	tb.Helper()
	s, err := redis.New(o, redis.Config{URL: srv.URL()})
	if err != nil {
		tb.Fatalf("redis.New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	if err := s.Ping(tb.Context()); err != nil {
		// The pub/sub connection comes up in the background; wait for it rather than fail.
		waitReady(tb, s)
	}
	return s
}

// client is a plain go-redis client on srv for the test's own look at the server.
func client(tb testing.TB, srv *redistest.Server) *goredis.Client {
	tb.Helper()
	o, err := goredis.ParseURL(srv.URL())
	if err != nil {
		tb.Fatal(err)
	}
	o.DisableIdentity = true
	c := goredis.NewClient(o)
	tb.Cleanup(func() { c.Close() })
	return c
}

// warmUp runs every script once on srv from a store of its own, and closes it, so that the
// memory Redis spends once (the script cache, the first keys' tables) is part of the baseline
// capMemory measures.
func warmUp(tb testing.TB, srv *redistest.Server) {
	tb.Helper()
	s, err := redis.New(cache.Options{Prefix: redistest.UniquePrefix(tb)}, redis.Config{URL: srv.URL()})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	waitReady(tb, s)
	ctx := tb.Context()
	d := []cache.Draft{{Stream: "warm", Data: []byte("1"), Key: "k"}, {Stream: "up", Data: []byte("2")}}
	if _, err := s.Append(ctx, d); err != nil {
		tb.Fatal(err)
	}
	if _, err := s.ReadAfter(ctx, "warm", cache.Cursor{}, 0); err != nil {
		tb.Fatal(err)
	}
	sub, err := s.Subscribe(ctx, "warm")
	if err != nil {
		tb.Fatal(err)
	}
	sub.Close()
	if _, err := s.Claim(ctx, "warm", time.Second); err != nil {
		tb.Fatal(err)
	}
	if err := client(tb, srv).FlushAll(ctx).Err(); err != nil {
		tb.Fatal(err)
	}
}

// capMemory sets srv's maxmemory to what it uses now plus extra bytes.
func capMemory(tb testing.TB, srv *redistest.Server, extra int64) {
	tb.Helper()
	c := client(tb, srv)
	ctx := tb.Context()
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	used := infoInt(tb, info, "used_memory")
	if err := c.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used+extra, 10)).Err(); err != nil {
		tb.Fatal(err)
	}
}

func infoInt(tb testing.TB, info, field string) int64 {
	tb.Helper()
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatalf("INFO %s: %q", field, v)
			}
			return n
		}
	}
	tb.Fatalf("INFO has no %s", field)
	return 0
}

// waitReady waits until s answers Ping, for up to 30 s (a bound that only catches hangs).
func waitReady(tb testing.TB, s *redis.Store) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), readyWait)
	defer cancel()
	for {
		err := s.Ping(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("store not ready: %v", err)
		case <-after(pollEvery):
		}
	}
}
