package bridge

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// streamBatch is how many messages one read takes before they are written and flushed together.
const streamBatch = 256

// closeReason says why bridged ends a stream. SSE sends it in an "event: close" frame; the
// WebSocket endpoint sends it in a {"type":"close"} frame and maps it to a close code (ws.go).
type closeReason string

const (
	closeShutdown     closeReason = "shutdown"      // the node drains; reconnect (elsewhere) and resume
	closeTokenExpired closeReason = "token_expired" // fetch a fresh token, reconnect and resume
	closeUnavailable  closeReason = "unavailable"   // the store failed; back off, then resume
)

// frameWriter is how one streaming transport (SSE, WebSocket) puts the shared read loop's frames
// on its wire. Frames are buffered until flush, which writes them under a write deadline. It is
// used by the connection's handler goroutine only.
type frameWriter interface {
	hello(c cache.Cursor, heartbeat time.Duration) // the first frame: the cursor resumed from
	reset(start cache.Cursor)                      // messages after the cursor are gone; go on from start
	message(m *cache.Message)
	flush() error
	// heartbeat writes and flushes a ping the page can see, and for WebSocket also checks that
	// the peer answers a protocol ping.
	heartbeat(ctx context.Context) error
	// end writes a final frame saying why and ends the stream, best effort.
	end(reason closeReason)
}

// waiter is how serveStream waits between reads: on a channel in the handler's goroutine
// (chanWaiter: HTTP/2 SSE, WebSocket) or in the network poller on a parked connection (park.go).
type waiter interface {
	// arm is called before each read; a change after it makes the next wait return poked.
	arm()
	// wait blocks until until, a change or the node draining (poked), or the client leaving or
	// the demo cutting the stream (err).
	wait(until time.Time) (poked bool, err error)
}

// serveStream is the one read path for streaming transports (package doc): with sub taken for
// the subscriber's stream, it writes hello, then loops arm → ReadAfter → write → wait for the
// change, the heartbeat, the token's expiry, this stream's moment in the drain window (spread
// so that a draining node's clients do not all reconnect at once) or the client leaving.
//
// The calling goroutine is the connection's only writer and sets every deadline; a slow client
// falls behind its own cursor and is cut by the write deadline, never holding up a publisher.
//
// transport ("sse" or "ws") labels the metrics: messages delivered, resets, and why it ended,
// which serveStream also returns.
func (s *Server) serveStream(ctx context.Context, transport string, who subscriber, c cache.Cursor, out frameWriter, w waiter) (ended string) {
	ended = "client_gone"
	defer func() { s.metrics.streamEnds.WithLabelValues(transport, ended).Inc() }()
	out.hello(c, s.opts.Heartbeat)
	if err := out.flush(); err != nil {
		return ended // the client is gone before the first frame; nothing to tell
	}
	beat := time.Now().Add(s.opts.Heartbeat)
	var leave time.Time // this stream's moment within the drain window, once the node drains
	for {
		w.arm()
		b, err := s.store.ReadAfter(ctx, who.user, c, streamBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("stream read failed", zap.String("transport", transport), zap.Error(err))
				ended = string(closeUnavailable)
				out.end(closeUnavailable)
			}
			return ended
		}
		if b.Reset {
			out.reset(b.Start)
		}
		for i := range b.Messages {
			out.message(&b.Messages[i])
		}
		c = b.Cursor
		if b.Reset || len(b.Messages) > 0 {
			if err := out.flush(); err != nil {
				return "write_failed" // a slow or vanished client resumes by cursor
			}
			now := time.Now()
			s.countDelivered(transport, &b, now)
			beat = now.Add(s.opts.Heartbeat)
		}
		if len(b.Messages) == streamBatch {
			continue // more are waiting; do not block before sending them
		}
		for {
			until := earliest(beat, who.expires)
			if !leave.IsZero() {
				until = earliest(until, leave)
			}
			poked, err := w.wait(until)
			if err != nil {
				return ended
			}
			now := time.Now()
			if leave.IsZero() && s.isDraining() {
				leave = now.Add(s.drainDelay()) // keep delivering until this stream's turn to leave
			}
			switch {
			case !leave.IsZero() && !now.Before(leave):
				out.end(closeShutdown)
				return string(closeShutdown)
			case !now.Before(who.expires):
				out.end(closeTokenExpired)
				return string(closeTokenExpired)
			case !now.Before(beat):
				if err := out.heartbeat(ctx); err != nil {
					return "write_failed"
				}
				beat = now.Add(s.opts.Heartbeat)
			}
			if poked {
				break
			}
		}
	}
}

// chanWaiter waits in the calling goroutine on the subscription's channel, a timer, the node's
// drain channel and ctx (the client leaving, or the demo's faults cutting it).
type chanWaiter struct {
	ctx     context.Context
	sub     cache.Subscription
	changed <-chan struct{}
	drain   <-chan struct{} // nil once seen closed
	timer   *time.Timer
}

func newChanWaiter(ctx context.Context, sub cache.Subscription, drain <-chan struct{}) *chanWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &chanWaiter{ctx: ctx, sub: sub, drain: drain, timer: t}
}

func (w *chanWaiter) arm() { w.changed = w.sub.Changed() }

func (w *chanWaiter) wait(until time.Time) (bool, error) {
	w.timer.Reset(time.Until(until))
	defer w.timer.Stop()
	select {
	case <-w.changed:
		w.changed = nil // until the next arm
		return true, nil
	case <-w.drain:
		w.drain = nil
		return true, nil
	case <-w.timer.C:
		return false, nil
	case <-w.ctx.Done():
		return false, w.ctx.Err()
	}
}

// parkedWaiter waits on a parked connection (park.go); Notify and Drain poke it.
type parkedWaiter struct{ p *parked }

func (parkedWaiter) arm() {}

func (w parkedWaiter) wait(until time.Time) (bool, error) {
	poked, err := w.p.wait(until)
	if err == nil && w.p.cutByFault() {
		err = errDemoCut
	}
	return poked, err
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
