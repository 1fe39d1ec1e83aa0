package redis

import (
	"context"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
)

// Test hooks: the names a stream uses, the keep-alive, reclaim, sweep and stream count on demand,
// and counts for the benchmarks.

// KeysOf returns the stream's meta, log and idempotency keys.
func (s *Store) KeysOf(stream string) []string {
	k := s.keysOf(stream)
	return []string{k.meta, k.log, k.idem}
}

// ChannelOf returns the stream's pub/sub channel.
func (s *Store) ChannelOf(stream string) string { return s.keysOf(stream).channel }

// Touch runs the keep-alive of watched streams now.
func (s *Store) Touch(ctx context.Context) error {
	s.hub.mu.RLock()
	var streams []string
	for _, t := range s.hub.topics {
		if t.refs > 0 {
			streams = append(streams, t.stream)
		}
	}
	s.hub.mu.RUnlock()
	return s.touch(ctx, streams)
}

// Reclaim trims what has expired from streams now, as an append refused for memory does.
func (s *Store) Reclaim(ctx context.Context, streams []string) error { return s.reclaim(ctx, streams) }

// Sweep reclaims every stream of the store now, as a full Redis makes an append do; it reports
// whether it ran (at most once per TTL/8 of the store's clock).
func (s *Store) Sweep(ctx context.Context) bool { return s.sweep(ctx) }

// CountStreams runs the count behind Stats.Streams and Stats.Messages now.
func (s *Store) CountStreams(ctx context.Context) error { return s.countStreams(ctx) }

// Notifications returns how many pub/sub notifications this store has received.
func (s *Store) Notifications() int64 { return s.hub.notes.Load() }

// CountRoundTrips installs a hook on the store's command connections that counts round trips to
// Redis (a command, or a whole pipeline or MULTI/EXEC), and returns the counter. Pub/sub traffic
// is not included: see Notifications.
func (s *Store) CountRoundTrips() *atomic.Int64 {
	n := new(atomic.Int64)
	s.rdb.AddHook(roundTrips{n})
	return n
}

type roundTrips struct{ n *atomic.Int64 }

func (roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}
