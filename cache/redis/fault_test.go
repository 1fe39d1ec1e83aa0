package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/redis"
	"github.com/bridged/bridged/internal/redistest"
)

// Faults: the real redis-server is killed with SIGKILL and started again on the same port, with
// and without persistence, while the nodes keep working.

// TestRedisDown checks what every call does while Redis is down, and that a reader waiting
// through the outage is woken when the node reconnects, with nothing appended meanwhile.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	n := nodes(t, srv, 2, cache.Options{})
	sub := mustSubscribe(t, n[1], "u")
	changed := sub.Changed()
	mustAppend(t, n[0], drafts("u", 1, "m"))
	waitClosed(t, changed, "reader before the outage")
	changed = sub.Changed()

	srv.Kill(t)
	ctx := t.Context()
	if ids, err := n[0].Append(ctx, drafts("u", 1, "lost")); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Append while Redis is down: %v %v, want ErrUnavailable", ids, err)
	}
	if _, err := n[0].Append(ctx, append(drafts("a", 1, "x"), drafts("b", 1, "y")...)); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("batch Append while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := n[1].Ping(ctx); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Ping while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := n[1].ReadAfter(ctx, "u", cache.Cursor{}, 0); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("ReadAfter while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := n[1].Subscribe(ctx, "v"); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Subscribe while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := n[1].Claim(ctx, "k", time.Second); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Claim while Redis is down: %v, want ErrUnavailable", err)
	}

	srv.Restart(t)
	// Notifications sent while the node had no connection are lost, so it wakes its readers once
	// it has subscribed again.
	waitClosed(t, changed, "reader waiting through the outage")
	waitReady(t, n[1])
	// And notifications flow again.
	changed = sub.Changed()
	mustAppend(t, n[0], drafts("u", 1, "after"))
	waitClosed(t, changed, "reader after the outage")
}

// TestRestartWithoutPersistence: Redis comes back empty. Readers with cursors from before are
// told (reset), and the stream lives on under a new epoch.
func TestRestartWithoutPersistence(t *testing.T) {
	srv := redistest.Start(t)
	n := nodes(t, srv, 2, cache.Options{})
	old := mustAppend(t, n[0], drafts("u", 3, "old"))
	srv.Kill(t)
	srv.Restart(t)
	waitReady(t, n[0])
	waitReady(t, n[1])
	if b := mustRead(t, n[1], "u", old[2]); !b.Reset {
		t.Fatalf("read after a restart that lost everything: %+v, want a reset", b)
	}
	fresh := mustAppend(t, n[0], drafts("u", 1, "new"))
	if fresh[0].Epoch == old[0].Epoch {
		t.Fatal("the stream kept its epoch although Redis lost its history")
	}
	b := mustRead(t, n[1], "u", old[2])
	if !b.Reset || len(b.Messages) != 1 || b.Messages[0].ID != fresh[0] {
		t.Fatalf("read with a pre-restart cursor: %+v, want a reset and the new message", b)
	}
}

// TestRestartWithAOF: with appendfsync always Redis has everything it acknowledged; readers
// resume where they were, with no reset.
func TestRestartWithAOF(t *testing.T) {
	srv := redistest.Start(t, redistest.WithAOF())
	n := nodes(t, srv, 2, cache.Options{})
	old := mustAppend(t, n[0], drafts("u", 5, "m"))
	srv.Kill(t)
	srv.Restart(t)
	waitReady(t, n[0])
	waitReady(t, n[1])
	b := mustRead(t, n[1], "u", old[1])
	if b.Reset || len(b.Messages) != 3 || b.Messages[2].ID != old[4] {
		t.Fatalf("read after a durable restart: %+v, want m3..m5 and no reset", b)
	}
	next := mustAppend(t, n[0], drafts("u", 1, "next"))
	if next[0].Epoch != old[0].Epoch || next[0].Seq != 6 {
		t.Fatalf("append after a durable restart: %v, want seq 6 of the same epoch", next[0])
	}
}

// TestTrafficThroughRestart kills Redis in the middle of traffic and starts it again, with and
// without persistence. A publisher on node 1 keeps appending, retrying each message with its
// idempotency key until it is acknowledged, as an app that got a 503 does; readers on nodes 2
// and 3 follow the one read path and keep trying through the outage. With AOF every reader gets
// every acknowledged message exactly once, in order, and no reset. Without persistence the
// readers are told of the loss (reset) and get everything acknowledged after it, in order.
func TestTrafficThroughRestart(t *testing.T) {
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "aof", false: "no-persistence"}[durable], func(t *testing.T) {
			t.Parallel()
			var srv *redistest.Server
			if durable {
				srv = redistest.Start(t, redistest.WithAOF())
			} else {
				srv = redistest.Start(t)
			}
			n := nodes(t, srv, 3, cache.Options{StreamMaxMessages: 10_000})
			const total = 300
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()

			var acked []cache.Cursor // in publish order; written by the publisher only
			var failures atomic.Int64
			progress := make(chan int, total)
			pubDone := make(chan struct{})
			go func() {
				defer close(pubDone)
				for i := 1; i <= total; i++ {
					d := []cache.Draft{{Stream: "u", Event: "e", Data: fmt.Appendf(nil, "%d", i), Key: fmt.Sprint("k", i)}}
					for {
						ids, err := n[0].Append(ctx, d)
						if err == nil {
							acked = append(acked, ids[0])
							break
						}
						if ctx.Err() != nil {
							return
						}
						if !errors.Is(err, cache.ErrUnavailable) {
							t.Errorf("append %d: %v, want success or ErrUnavailable", i, err)
							return
						}
						failures.Add(1)
						time.Sleep(5 * time.Millisecond)
					}
					progress <- i
				}
			}()

			readers := make([]*follower, 2)
			var wg sync.WaitGroup
			for i := range readers {
				readers[i] = &follower{s: n[1+i], stream: "u"}
				readers[i].endSet = make(chan struct{})
				wg.Go(func() { readers[i].run(ctx) })
			}

			// Kill Redis a third of the way through, and restart it once the publisher has seen
			// it down.
			for i := range progress {
				if i == total/3 {
					break
				}
			}
			srv.Kill(t)
			for failures.Load() == 0 && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			srv.Restart(t)
			<-pubDone
			if t.Failed() || len(acked) != total {
				t.Fatalf("publisher got %d acknowledgements of %d", len(acked), total)
			}
			// The readers stop once they have the last message.
			last := acked[total-1]
			for _, r := range readers {
				r.setEnd(last)
			}
			wg.Wait()

			for i, r := range readers {
				if durable {
					if r.resets != 0 || !slices.Equal(r.got, acked) {
						t.Errorf("reader %d: %d resets, %s", i, r.resets, diff(r.got, acked))
					}
					continue
				}
				// Everything acknowledged under the new epoch arrives, in order, after a reset.
				var after []cache.Cursor
				for _, id := range acked {
					if id.Epoch == last.Epoch {
						after = append(after, id)
					}
				}
				var gotAfter []cache.Cursor
				for _, id := range r.got {
					if id.Epoch == last.Epoch {
						gotAfter = append(gotAfter, id)
					}
				}
				if r.resets == 0 {
					t.Errorf("reader %d was not told that Redis lost messages", i)
				}
				if !slices.Equal(gotAfter, after) {
					t.Errorf("reader %d after the restart: %s", i, diff(gotAfter, after))
				}
			}
			t.Logf("%d appends failed while Redis was down", failures.Load())
		})
	}
}

// follower reads a stream the way bridged's SSE handler does, retrying through outages, until it
// has the message setEnd names.
type follower struct {
	s      *redis.Store
	stream string
	endSet chan struct{} // closed by setEnd

	got    []cache.Cursor // written by run only; read after it returns
	resets int

	mu  sync.Mutex
	end cache.Cursor
}

func (f *follower) setEnd(c cache.Cursor) {
	f.mu.Lock()
	f.end = c
	f.mu.Unlock()
	close(f.endSet)
}

func (f *follower) done() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.end.IsZero() && len(f.got) > 0 && f.got[len(f.got)-1] == f.end
}

func (f *follower) run(ctx context.Context) {
	c := cache.Cursor{}
	var sub cache.Subscription
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	retry := func() bool { // while Redis is down, as a client would
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
			return true
		}
	}
	endSet := f.endSet
	for !f.done() {
		if sub == nil {
			s, err := f.s.Subscribe(ctx, f.stream)
			if err != nil {
				if !retry() {
					return
				}
				continue
			}
			sub = s
		}
		changed := sub.Changed()
		b, err := f.s.ReadAfter(ctx, f.stream, c, 100)
		if err != nil {
			if !retry() {
				return
			}
			continue
		}
		if b.Reset {
			f.resets++
		}
		f.mu.Lock()
		for _, m := range b.Messages {
			f.got = append(f.got, m.ID)
		}
		f.mu.Unlock()
		c = b.Cursor
		if len(b.Messages) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-endSet:
			endSet = nil // look once at the end; after that only a wake-up moves the reader
		}
	}
}

func diff(got, want []cache.Cursor) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("got %d ids, want %d; first difference at %d: got %v, want %v", len(got), len(want), i, got[i], want[i])
		}
	}
	return fmt.Sprintf("got %d ids, want %d", len(got), len(want))
}

// TestRedisHangs: a Redis that stops answering (SIGSTOP) costs a call at most the engine's
// timeout, then ErrUnavailable. A publish that timed out may still be stored once Redis goes on
// (it was sent), which is why publishers retry with the same idempotency key: the retry gets the
// first id and nothing is stored twice.
func TestRedisHangs(t *testing.T) {
	srv := redistest.Start(t)
	o := cache.Options{Prefix: redistest.UniquePrefix(t)}
	s, err := redis.New(o, redis.Config{URL: srv.URL(), Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitReady(t, s)
	d := []cache.Draft{{Stream: "u", Data: []byte(`"once"`), Key: "k1"}}

	srv.Pause(t)
	paused := true
	defer func() {
		if paused {
			srv.Resume(t)
		}
	}()
	if _, err := s.Append(t.Context(), d); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Append to a hung Redis: %v, want ErrUnavailable", err)
	}
	if _, err := s.ReadAfter(t.Context(), "u", cache.Cursor{}, 0); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("ReadAfter from a hung Redis: %v, want ErrUnavailable", err)
	}
	srv.Resume(t)
	paused = false

	var ids []cache.Cursor
	deadline := time.Now().Add(readyWait)
	for {
		ids, err = s.Append(t.Context(), d) // the retry, with the same key
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Append after Redis went on: %v", err)
		}
		time.Sleep(pollEvery)
	}
	b := mustRead(t, s, "u", cache.Cursor{})
	if len(b.Messages) != 1 || b.Messages[0].ID != ids[0] {
		t.Fatalf("after a timed-out publish and its retry: %d messages %+v, want exactly one with id %v", len(b.Messages), b.Messages, ids[0])
	}
}
