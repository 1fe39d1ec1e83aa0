package redis

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// Stats. bridged reads Stats at every Prometheus scrape, so it must be cheap and must never wait
// for Redis: it only loads figures that are kept up to date elsewhere.
//
//   - Expired and Evicted count the messages this node's scripts removed (the append script, and
//     reclaim when Redis is full), which report it in their replies: no extra round trip. They
//     are this node's share; the cluster's figure is the sum over nodes. Messages that Redis
//     frees with an idle stream's keys are not seen by any script, so they are not counted.
//   - Bytes and MaxBytes are Redis's used_memory and maxmemory (0: no cap), read with INFO
//     memory by a refresher every Config.StatsMemoryEvery: one small command.
//   - Streams and Messages come from a count of this prefix's streams every
//     Config.StatsCountEvery: SCAN for the meta hashes, then XLEN of each stream's log,
//     pipelined. Messages therefore includes expired messages no script has trimmed yet.
//
// Every node reads the same Bytes, MaxBytes, Streams and Messages (they describe the shared
// Redis), so they must not be summed across nodes.

const (
	defaultMemoryEvery = 5 * time.Second
	defaultCountEvery  = 30 * time.Second
	countScan          = 250 // SCAN's COUNT: about the keys Redis looks at per call
	countChunk         = 500 // XLENs per pipeline
)

// stats holds the figures Stats returns.
type stats struct {
	expired, evicted  atomic.Int64 // since New, from the scripts' replies
	bytes, maxBytes   atomic.Int64 // from the last INFO memory
	streams, messages atomic.Int64 // from the last complete count
}

// Stats implements cache.Statser. It never calls Redis: it returns the counters of what this
// node's scripts removed and the last figures the refreshers read (zero until their first
// success; unchanged while Redis cannot be reached). See docs/redis.md for what each means.
func (s *Store) Stats() cache.Stats {
	return cache.Stats{
		Streams:  s.stats.streams.Load(),
		Messages: s.stats.messages.Load(),
		Bytes:    s.stats.bytes.Load(),
		Expired:  s.stats.expired.Load(),
		Evicted:  s.stats.evicted.Load(),
		MaxBytes: s.stats.maxBytes.Load(),
	}
}

// startStats starts the refreshers, in bgWork; Close stops them and waits.
func (s *Store) startStats(memoryEvery, countEvery time.Duration) {
	if memoryEvery == 0 {
		memoryEvery = defaultMemoryEvery
	}
	if countEvery == 0 {
		countEvery = defaultCountEvery
	}
	if memoryEvery > 0 {
		s.bgWork.Go(func() { s.every(memoryEvery, "memory", s.readMemory) })
	}
	if countEvery > 0 {
		s.bgWork.Go(func() { s.every(countEvery, "count", s.countStreams) })
	}
}

// every runs refresh at once and then again d (give or take a tenth, so that the nodes of a
// deployment drift apart) after each run ends, until Close. A run never overlaps the next. The
// first failure in a row is logged as a warning, the ones after it at debug level.
func (s *Store) every(d time.Duration, what string, refresh func(context.Context) error) {
	failing := false
	for {
		err := refresh(s.bg)
		if s.bg.Err() != nil {
			return
		}
		switch {
		case err == nil:
			failing = false
		case !failing:
			failing = true
			s.log.Warn("redis stats not refreshed", zap.String("stats", what), zap.Error(err))
		default:
			s.log.Debug("redis stats not refreshed", zap.String("stats", what), zap.Error(err))
		}
		t := time.NewTimer(d - d/10 + rand.N(d/5+1))
		select {
		case <-s.bg.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// readMemory sets Bytes and MaxBytes from INFO memory: one command.
func (s *Store) readMemory(ctx context.Context) error {
	cctx, cancel := s.call(ctx)
	defer cancel()
	info, err := s.rdb.Info(cctx, "memory").Result()
	if err != nil {
		return s.fail(ctx, "info memory", err)
	}
	used, err := infoInt(info, "used_memory")
	if err != nil {
		return err
	}
	capacity, err := infoInt(info, "maxmemory")
	if err != nil {
		return err
	}
	s.stats.bytes.Store(used)
	s.stats.maxBytes.Store(capacity)
	return nil
}

// infoInt returns the integer field name of an INFO reply ("name:value" lines).
func infoInt(info, name string) (int64, error) {
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("redis info memory: %w: %s is %q", cache.ErrUnavailable, name, v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("redis info memory: %w: no %s field", cache.ErrUnavailable, name)
}

// countStreams sets Streams and Messages from a count of this prefix's streams: SCAN over the
// keyspace for the meta hashes, then XLEN of each stream's log, pipelined. SCAN looks at about
// countScan keys per call and a pipeline holds countChunk XLENs, so no call holds Redis for long
// (Redis runs one command at a time); MATCH alone picks the meta keys (a TYPE filter would cost
// Redis a lookup per key). Each call has the engine's timeout. The figures change only when the
// whole pass succeeded, so a failed pass never shows a partial count. The node keeps a set of
// 64-bit hashes of the keys seen (SCAN may return a key twice): about 2 MB per 100,000 streams.
func (s *Store) countStreams(ctx context.Context) error {
	match := globEscape(s.prefix) + "{*}" + suffixMeta
	seed := maphash.MakeSeed()
	seen := make(map[uint64]struct{})
	logs := make([]string, 0, countChunk)
	var messages int64
	flush := func() error {
		if len(logs) == 0 {
			return nil
		}
		cctx, cancel := s.call(ctx)
		defer cancel()
		cmds, err := s.rdb.Pipelined(cctx, func(p goredis.Pipeliner) error {
			for _, k := range logs {
				p.XLen(cctx, k)
			}
			return nil
		})
		if err != nil {
			return s.fail(ctx, "count messages", err)
		}
		for _, c := range cmds {
			messages += c.(*goredis.IntCmd).Val()
		}
		logs = logs[:0]
		return nil
	}
	var cursor uint64
	for {
		cctx, cancel := s.call(ctx)
		keys, next, err := s.rdb.Scan(cctx, cursor, match, countScan).Result()
		cancel()
		if err != nil {
			return s.fail(ctx, "count streams", err)
		}
		for _, key := range keys {
			if _, ok := s.streamOfMeta(key); !ok {
				continue
			}
			h := maphash.String(seed, key)
			if _, dup := seen[h]; dup {
				continue
			}
			seen[h] = struct{}{}
			logs = append(logs, strings.TrimSuffix(key, suffixMeta)+suffixLog)
			if len(logs) == countChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if err := flush(); err != nil {
		return err
	}
	s.stats.streams.Store(int64(len(seen)))
	s.stats.messages.Store(messages)
	return nil
}
