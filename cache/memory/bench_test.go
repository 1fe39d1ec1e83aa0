package memory_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/memory"
)

var payload = []byte(`{"text":"a message of about one hundred bytes, typical of a chat line or a notice","n":1}`)

// BenchmarkAppend measures one publish of one message, to one hot stream and spread over 10k
// streams from all cores.
func BenchmarkAppend(b *testing.B) {
	b.Run("stream=1", func(b *testing.B) {
		s := memory.New(cache.Options{})
		defer s.Close()
		d := []cache.Draft{{Stream: "u", Event: "message", Data: payload}}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Append(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("streams=10000/parallel", func(b *testing.B) {
		s := memory.New(cache.Options{StreamMaxMessages: 100, MaxMemory: 1 << 30})
		defer s.Close()
		names := make([]string, 10000)
		for i := range names {
			names[i] = fmt.Sprint("user-", i)
		}
		ctx := context.Background()
		b.ReportAllocs()
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

// BenchmarkAppendBatch measures a batch publish of 100 messages over 100 streams; the figure per
// message is ns/op / 100.
func BenchmarkAppendBatch(b *testing.B) {
	s := memory.New(cache.Options{})
	defer s.Close()
	batch := make([]cache.Draft, 100)
	for i := range batch {
		batch[i] = cache.Draft{Stream: fmt.Sprint("user-", i), Event: "message", Data: payload}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/msg")
}

// BenchmarkReadAfter measures a read of the last k messages of a 1000-message stream: the
// resume path of every poll and reconnect.
func BenchmarkReadAfter(b *testing.B) {
	for _, k := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("k=%d", k), func(b *testing.B) {
			s := memory.New(cache.Options{})
			defer s.Close()
			ctx := context.Background()
			var ids []cache.Cursor
			for range 1000 {
				id, _ := s.Append(ctx, []cache.Draft{{Stream: "u", Event: "message", Data: payload}})
				ids = append(ids, id[0])
			}
			after := ids[len(ids)-1-k]
			b.ReportAllocs()
			for b.Loop() {
				batch, err := s.ReadAfter(ctx, "u", after, 0)
				if err != nil || len(batch.Messages) != k {
					b.Fatal(err, len(batch.Messages))
				}
			}
		})
	}
}

// BenchmarkWake measures one publish waking every waiter of a stream and each waiter reading the
// new message, the way long-polls and SSE streams do. ns/op is the time from Append until the
// last waiter has its message.
func BenchmarkWake(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			s := memory.New(cache.Options{})
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ready, woken, done sync.WaitGroup
			ready.Add(n)
			for range n {
				done.Go(func() {
					sub, _ := s.Subscribe(ctx, "u")
					defer sub.Close()
					c := cache.Cursor{}
					for {
						ch := sub.Changed()
						ready.Done()
						select {
						case <-ch:
						case <-ctx.Done():
							return
						}
						batch, _ := s.ReadAfter(ctx, "u", c, 0)
						if len(batch.Messages) > 0 {
							c = batch.Cursor
						}
						woken.Done()
					}
				})
			}
			d := []cache.Draft{{Stream: "u", Event: "message", Data: payload}}
			b.ReportAllocs()
			for b.Loop() {
				ready.Wait()
				woken.Add(n)
				ready.Add(n)
				s.Append(ctx, d)
				woken.Wait()
			}
			cancel()
			done.Wait()
		})
	}
}

// BenchmarkNotify measures one publish until every Notify function of the stream's subscribers
// has run: the wake-up parked connections get (bridge/park.go), with no goroutine per waiter.
// The functions run in the publisher's goroutine, so this is the publisher's cost alone.
func BenchmarkNotify(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			s := memory.New(cache.Options{})
			defer s.Close()
			ctx := context.Background()
			var calls atomic.Int64
			for range n {
				sub, _ := s.Subscribe(ctx, "u")
				defer sub.Close()
				sub.Notify(func() { calls.Add(1) })
			}
			d := []cache.Draft{{Stream: "u", Event: "message", Data: payload}}
			b.ReportAllocs()
			for b.Loop() {
				s.Append(ctx, d)
			}
			if got, want := calls.Load(), int64(b.N)*int64(n); got != want {
				b.Fatalf("%d calls, want %d", got, want)
			}
		})
	}
}

// BenchmarkMemoryPerMessage reports the heap a retained message costs beyond its payload, with
// 100,000 messages of 100 bytes over 1,000 streams (B/msg-overhead), and what the store accounts
// for it against BRIDGE_MAX_MEMORY (accounted-B/msg), which must not be less.
func BenchmarkMemoryPerMessage(b *testing.B) {
	const streams, perStream = 1000, 100
	data := make([]byte, 100)
	event := []byte("message")
	for b.Loop() {
		s := memory.New(cache.Options{TTL: time.Hour})
		ctx := context.Background()
		before := heapInUse()
		for i := range streams * perStream {
			// Fresh event and data allocations per message, as JSON decoding makes them.
			d := []cache.Draft{{Stream: fmt.Sprint("user-", i%streams), Event: string(event), Data: append([]byte(nil), data...)}}
			if _, err := s.Append(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		n := float64(streams * perStream)
		b.ReportMetric((float64(after-before)/n)-float64(len(data)), "B/msg-overhead")
		b.ReportMetric(float64(s.Stats().Bytes)/n-float64(len(data)), "accounted-B/msg-overhead")
		runtime.KeepAlive(s)
		s.Close()
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkManyStreams holds 100,000 streams of one message each and reports the heap per stream
// (B/stream, including its message) and the cost of a publish and a read among them (ns/op is
// one Append plus one ReadAfter on a random stream).
func BenchmarkManyStreams(b *testing.B) {
	const streams = 100_000
	s := memory.New(cache.Options{TTL: time.Hour})
	defer s.Close()
	ctx := context.Background()
	names := make([]string, streams)
	before := heapInUse()
	for i := range names {
		names[i] = fmt.Sprint("user-", i)
		if _, err := s.Append(ctx, []cache.Draft{{Stream: names[i], Event: "message", Data: payload}}); err != nil {
			b.Fatal(err)
		}
	}
	perStream := float64(heapInUse()-before) / streams
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		name := names[(i*7919)%streams]
		ids, err := s.Append(ctx, []cache.Draft{{Stream: name, Event: "message", Data: payload}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.ReadAfter(ctx, name, cache.Cursor{Epoch: ids[0].Epoch, Seq: ids[0].Seq - 1}, 0); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(perStream, "B/stream")
}
