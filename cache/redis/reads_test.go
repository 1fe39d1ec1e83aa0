package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
)

// TestReadsNeverShareAnEarlierRead: callers that arrive while a read is in flight must get a read
// sent after they arrived (else a reader could miss an append it was woken for), and they share
// that one.
func TestReadsNeverShareAnEarlierRead(t *testing.T) {
	var r reads
	key := readKey{stream: "u", limit: 10}
	var sent atomic.Int64 // reads sent so far; each read returns its number as the cursor's seq
	release := make(chan struct{})
	read := func(context.Context) (cache.Batch, error) {
		n := sent.Add(1)
		if n == 1 {
			<-release // the first read stays in flight while the others arrive
		}
		return cache.Batch{Cursor: cache.Cursor{Epoch: 1, Seq: uint64(n)}}, nil
	}

	first := make(chan cache.Batch, 1)
	go func() {
		b, _ := r.do(context.Background(), key, read)
		first <- b
	}()
	for sent.Load() == 0 {
		time.Sleep(time.Millisecond) // until the first read is on its way
	}
	const late = 20
	var wg sync.WaitGroup
	got := make(chan cache.Batch, late)
	for range late {
		wg.Go(func() {
			b, err := r.do(context.Background(), key, read)
			if err != nil {
				t.Error(err)
			}
			got <- b
		})
	}
	// Wait until all of them have queued behind the first read, then let it finish.
	for {
		r.mu.Lock()
		queued := r.calls[key] != nil && r.calls[key].next != nil
		r.mu.Unlock()
		if queued {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // let the rest queue too; sharing less is still correct
	close(release)
	wg.Wait()
	close(got)
	if b := <-first; b.Cursor.Seq != 1 {
		t.Fatalf("first caller got read %d", b.Cursor.Seq)
	}
	for b := range got {
		if b.Cursor.Seq < 2 {
			t.Fatal("a caller that arrived during the first read got its result")
		}
	}
	if n := sent.Load(); n > 1+late {
		t.Fatalf("%d reads sent for %d callers", n, 1+late)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) != 0 {
		t.Fatalf("%d reads left in the table after all finished", len(r.calls))
	}
}

func TestReadsCallerGivesUp(t *testing.T) {
	var r reads
	key := readKey{stream: "u"}
	release := make(chan struct{})
	inFlight := make(chan struct{})
	var once sync.Once
	read := func(context.Context) (cache.Batch, error) {
		once.Do(func() { close(inFlight) })
		<-release
		return cache.Batch{}, nil
	}
	go r.do(context.Background(), key, read)
	<-inFlight
	// The queued leader and a follower; the follower gives up and gets its context's error.
	leaderDone := make(chan error, 1)
	go func() { _, err := r.do(context.Background(), key, read); leaderDone <- err }()
	for {
		r.mu.Lock()
		queued := r.calls[key].next != nil
		r.mu.Unlock()
		if queued {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.do(ctx, key, read); !errors.Is(err, context.Canceled) {
		t.Fatalf("a follower whose context ended: %v", err)
	}
	close(release)
	if err := <-leaderDone; err != nil {
		t.Fatalf("the queued leader: %v", err)
	}
}
