package redis

import (
	"context"
	"slices"
	"sync"

	"github.com/bridged/bridged/cache"
)

// reads lets a node's readers of one stream share their reads. When a notification wakes a
// hundred local readers of a stream, all at the same cursor, they would send Redis a hundred
// identical reads; through reads they send one or two.
//
// A reader may only share a read that Redis runs after the reader asked. One already on its way
// could have been answered before an append whose notification the reader is now waiting on,
// and that reader would then sleep through the message (the package comment of cache describes
// the order that loses no wake-up). So for each stream, cursor and limit there is at most one
// read in flight; readers arriving meanwhile queue for the next one, which the first of them
// sends as soon as the current one is answered. A reader waits at most one extra round trip,
// and a burst of readers costs two reads.
type reads struct {
	mu    sync.Mutex
	calls map[readKey]*readCall // the read in flight for each key
}

type readKey struct {
	stream string
	c      cache.Cursor
	limit  int
}

type readCall struct {
	done chan struct{} // closed when b and err are set
	b    cache.Batch
	err  error
	next *readCall // the read for those who arrived while this one was in flight
}

// do returns the result of a read of key that was sent after do was called, running read itself
// or sharing one another caller runs. read gets a context that the callers' cancelling does not
// end (others may be waiting for the result); it must bound itself. Each caller gets its own
// copy of the Batch's message slice; message data is shared, as cache.Message allows.
func (r *reads) do(ctx context.Context, key readKey, read func(context.Context) (cache.Batch, error)) (cache.Batch, error) {
	r.mu.Lock()
	if r.calls == nil {
		r.calls = make(map[readKey]*readCall)
	}
	cur := r.calls[key]
	if cur == nil {
		c := &readCall{done: make(chan struct{})}
		r.calls[key] = c
		r.mu.Unlock()
		r.run(ctx, key, c, read)
		return c.result()
	}
	n := cur.next
	leader := n == nil
	if leader {
		n = &readCall{done: make(chan struct{})}
		cur.next = n
	}
	r.mu.Unlock()

	if leader {
		// The others queued behind this caller: it sends their read even if it stops caring.
		<-cur.done
		r.mu.Lock()
		r.calls[key] = n
		r.mu.Unlock()
		r.run(ctx, key, n, read)
		return n.result()
	}
	select {
	case <-n.done:
		return n.result()
	case <-ctx.Done():
		return cache.Batch{}, ctx.Err()
	}
}

func (r *reads) run(ctx context.Context, key readKey, c *readCall, read func(context.Context) (cache.Batch, error)) {
	b, err := read(context.WithoutCancel(ctx))
	r.mu.Lock()
	c.b, c.err = b, err
	if c.next == nil {
		delete(r.calls, key)
	}
	close(c.done)
	r.mu.Unlock()
}

func (c *readCall) result() (cache.Batch, error) {
	if c.err != nil {
		return cache.Batch{}, c.err
	}
	b := c.b
	b.Messages = slices.Clone(b.Messages)
	return b, nil
}
