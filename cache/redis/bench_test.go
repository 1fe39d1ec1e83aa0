package redis_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/redis"
	"github.com/bridged/bridged/internal/redistest"
)

// The same shapes as cache/memory's benchmarks, against a real redis-server on loopback, so the
// figures sit side by side in docs/benchmarks.md. Each also reports Redis round trips per
// operation, counted by a go-redis hook on the store's command connections.

var payload = []byte(`{"text":"a message of about one hundred bytes, typical of a chat line or a notice","n":1}`)

// benchStores opens n stores on one new redis-server, as nodes sharing a prefix, with the Stats
// refreshers off so that the round trips counted are the benchmark's own.
func benchStores(b *testing.B, n int, o cache.Options) ([]*redis.Store, *redistest.Server) {
	b.Helper()
	srv := redistest.Start(b)
	o.Prefix = redistest.UniquePrefix(b)
	out := make([]*redis.Store, n)
	for i := range out {
		out[i] = openWith(b, srv, o, noStats)
	}
	return out, srv
}

func reportRoundTrips(b *testing.B, rt int64, per int, unit string) {
	b.ReportMetric(float64(rt)/float64(b.N*per), unit)
}

// BenchmarkAppend measures one publish of one message: to one hot stream, and spread over 10,000
// streams from 16 goroutines (a node serving many publishers at once).
func BenchmarkAppend(b *testing.B) {
	b.Run("stream=1", func(b *testing.B) {
		s := benchStoresOne(b, cache.Options{})
		rt := s.CountRoundTrips()
		d := []cache.Draft{{Stream: "u", Event: "message", Data: payload}}
		ctx := context.Background()
		b.ReportAllocs()
		rt.Store(0)
		for b.Loop() {
			if _, err := s.Append(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		reportRoundTrips(b, rt.Load(), 1, "roundtrips/publish")
	})
	b.Run("streams=10000/parallel", func(b *testing.B) {
		s := benchStoresOne(b, cache.Options{StreamMaxMessages: 100})
		names := make([]string, 10000)
		for i := range names {
			names[i] = fmt.Sprint("user-", i)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(8) // × GOMAXPROCS goroutines: Redis, not the client, is the limit
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				d := []cache.Draft{{Stream: names[i%len(names)], Event: "message", Data: payload}}
				if _, err := s.Append(ctx, d); err != nil {
					b.Fatal(err)
				}
				i += 7
			}
		})
	})
}

func benchStoresOne(b *testing.B, o cache.Options) *redis.Store {
	s, _ := benchStores(b, 1, o)
	return s[0]
}

// BenchmarkAppendBatch measures a batch publish of 100 messages over 100 streams; the figure per
// message is ns/op / 100 (reported as ns/msg).
func BenchmarkAppendBatch(b *testing.B) {
	s := benchStoresOne(b, cache.Options{})
	rt := s.CountRoundTrips()
	batch := make([]cache.Draft, 100)
	for i := range batch {
		batch[i] = cache.Draft{Stream: fmt.Sprint("user-", i), Event: "message", Data: payload}
	}
	ctx := context.Background()
	if _, err := s.Append(ctx, batch); err != nil { // load the script outside the timing
		b.Fatal(err)
	}
	rt.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/msg")
	reportRoundTrips(b, rt.Load(), 1, "roundtrips/batch")
}

// BenchmarkReadAfter measures a read of the last k messages of a 1,000-message stream: the
// resume path of every poll and reconnect.
func BenchmarkReadAfter(b *testing.B) {
	for _, k := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			s := benchStoresOne(b, cache.Options{})
			ctx := context.Background()
			var ids []cache.Cursor
			for range 1000 {
				id, err := s.Append(ctx, []cache.Draft{{Stream: "u", Event: "message", Data: payload}})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id[0])
			}
			after := ids[len(ids)-1-k]
			rt := s.CountRoundTrips()
			b.ReportAllocs()
			for b.Loop() {
				batch, err := s.ReadAfter(ctx, "u", after, 0)
				if err != nil || len(batch.Messages) != k {
					b.Fatal(err, len(batch.Messages))
				}
			}
			reportRoundTrips(b, rt.Load(), 1, "roundtrips/read")
		})
	}
}

// BenchmarkFanout measures delivery across nodes: one publish through node 1 to a stream that
// readers on nodes 2 and 3 wait on (half on each), each following the one read path (Changed,
// ReadAfter, wait). ns/op is from the publish until the last reader has the message; p50 and p99
// are the latencies of single deliveries (publish to one reader having read it). Round trips
// per delivered message count the readers' nodes' commands (their reads); pub/sub notifications
// per node and publish are reported too.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("readers=%d", n), func(b *testing.B) {
			ns, _ := benchStores(b, 3, cache.Options{StreamMaxMessages: 100})
			pub, readers := ns[0], ns[1:]
			var rts [2]interface{ Load() int64 }
			for i, s := range readers {
				rts[i] = s.CountRoundTrips()
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			var mu sync.Mutex
			var lat []time.Duration
			var ready, got sync.WaitGroup
			var done sync.WaitGroup
			ready.Add(n)
			for r := range n {
				s := readers[r%2]
				done.Go(func() {
					sub, err := s.Subscribe(ctx, "u")
					if err != nil {
						b.Error(err)
						ready.Done()
						return
					}
					defer sub.Close()
					c, _ := s.ReadAfter(ctx, "u", cache.Cursor{}, 0)
					cur := c.Cursor
					first := true
					for {
						ch := sub.Changed()
						batch, err := s.ReadAfter(ctx, "u", cur, 0)
						if err != nil {
							return
						}
						for _, m := range batch.Messages {
							sent, _ := strconv.ParseInt(string(m.Data), 10, 64)
							d := time.Since(time.Unix(0, sent))
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
							got.Done()
						}
						cur = batch.Cursor
						if first {
							ready.Done()
							first = false
						}
						select {
						case <-ch:
						case <-ctx.Done():
							return
						}
					}
				})
			}
			ready.Wait()
			base := [2]int64{rts[0].Load(), rts[1].Load()}
			notes := readers[0].Notifications() + readers[1].Notifications()
			b.ReportAllocs()
			for b.Loop() {
				got.Add(n)
				d := []cache.Draft{{Stream: "u", Event: "message", Data: strconv.AppendInt(nil, time.Now().UnixNano(), 10)}}
				if _, err := pub.Append(ctx, d); err != nil {
					b.Fatal(err)
				}
				got.Wait()
			}
			cancel()
			done.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			reads := rts[0].Load() - base[0] + rts[1].Load() - base[1]
			reportRoundTrips(b, reads, n, "roundtrips/delivery")
			b.ReportMetric(float64(readers[0].Notifications()+readers[1].Notifications()-notes)/float64(b.N*min(n, 2)), "notes/node/publish")
		})
	}
}

// BenchmarkPing measures one PING round trip to the local redis-server: the floor under every
// other figure here, and a gauge of how loaded the machine was when they were taken.
func BenchmarkPing(b *testing.B) {
	s := benchStoresOne(b, cache.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatsCount measures one pass of the count behind Stats.Streams and Stats.Messages
// over a prefix of 100,000 streams of 3 messages each (200,000 keys: a meta hash and a log each),
// which every node runs every Config.StatsCountEvery: SCAN calls of COUNT 250 and pipelines of 500
// XLENs. Allocations are the node's; redis-µs/pass is the time Redis itself spent on those SCANs
// and XLENs, from INFO commandstats.
func BenchmarkStatsCount(b *testing.B) {
	const streams = 100_000
	ss, srv := benchStores(b, 1, cache.Options{})
	s := ss[0]
	c := client(b, srv)
	ctx := context.Background()
	for i := 0; i < streams; i += 1000 {
		batch := make([]cache.Draft, 0, 3000)
		for j := i; j < i+1000; j++ {
			for range 3 {
				batch = append(batch, cache.Draft{Stream: fmt.Sprint("user-", j), Event: "message", Data: payload})
			}
		}
		if _, err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	rt := s.CountRoundTrips()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.CountStreams(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.Streams != streams || st.Messages != 3*streams {
		b.Fatalf("counted %d streams and %d messages, want %d and %d", st.Streams, st.Messages, streams, 3*streams)
	}
	reportRoundTrips(b, rt.Load(), 1, "roundtrips/pass")
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(commandUsec(b, info, "scan")+commandUsec(b, info, "xlen"))/float64(b.N), "redis-µs/pass")
}

// commandUsec returns the microseconds Redis spent on cmd, from INFO commandstats.
func commandUsec(tb testing.TB, info, cmd string) int64 {
	tb.Helper()
	for line := range strings.SplitSeq(info, "\r\n") {
		fields, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					tb.Fatalf("commandstats %s: %q", cmd, line)
				}
				return n
			}
		}
	}
	tb.Fatalf("commandstats has no %s", cmd)
	return 0
}
