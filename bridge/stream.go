package bridge

import (
	"context"
	"errors"
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

// streamPos is where a stream is: the cursor of the last message written, and when the next
// heartbeat is due. serveStream keeps it; on a parked SSE stream a publisher that writes frames
// (parkedStream) moves it too, while it holds the stream.
type streamPos struct {
	c    cache.Cursor
	beat time.Time
}

// errStreamWrite is a waiter's report that a write made while it waited (by a publisher, for a
// parkedStream) failed: the stream ends as write_failed.
var errStreamWrite = errors.New("a frame written for the stream failed")

// serveStream is the one read path for streaming transports (package doc): with sub taken for
// the subscriber's stream, it writes hello, then loops arm → ReadAfter → write → wait for the
// change, the heartbeat, the token's expiry, this stream's moment in the drain window (spread
// so that a draining node's clients do not all reconnect at once) or the client leaving. pos
// starts at the cursor resumed from.
//
// The calling goroutine is the connection's only writer and sets every deadline, except while
// it waits on a parkedStream, when a publisher may write; a slow client falls behind its own
// cursor and is cut by the write deadline, never holding up a publisher.
//
// transport ("sse" or "ws") labels the metrics: messages delivered, resets, and why it ended,
// which serveStream also returns.
func (s *Server) serveStream(ctx context.Context, transport string, who subscriber, pos *streamPos, out frameWriter, w waiter) (ended string) {
	ended = "client_gone"
	defer func() { s.metrics.streamEnds.WithLabelValues(transport, ended).Inc() }()
	out.hello(pos.c, s.opts.Heartbeat)
	if err := out.flush(); err != nil {
		return ended // the client is gone before the first frame; nothing to tell
	}
	pos.beat = time.Now().Add(s.opts.Heartbeat)
	var leave time.Time // this stream's moment within the drain window, once the node drains
	for {
		w.arm()
		b, err := s.store.ReadAfter(ctx, who.user, pos.c, streamBatch)
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
		pos.c = b.Cursor
		if b.Reset || len(b.Messages) > 0 {
			if err := out.flush(); err != nil {
				return "write_failed" // a slow or vanished client resumes by cursor
			}
			now := time.Now()
			s.countDelivered(transport, &b, now)
			pos.beat = now.Add(s.opts.Heartbeat)
		}
		if len(b.Messages) == streamBatch {
			continue // more are waiting; do not block before sending them
		}
		for {
			until := earliest(pos.beat, who.expires)
			if !leave.IsZero() {
				until = earliest(until, leave)
			}
			poked, err := w.wait(until)
			if errors.Is(err, errStreamWrite) {
				return "write_failed"
			}
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
			case !now.Before(pos.beat):
				if err := out.heartbeat(ctx); err != nil {
					return "write_failed"
				}
				pos.beat = now.Add(s.opts.Heartbeat)
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

// parkedStream is an SSE stream on a parked connection, with an in-memory store: the publish
// that appends a message writes its frame, as one answers a parked long-poll (answer.go), so
// the stream's goroutine stays asleep in its read and a delivery costs no goroutine switch.
//
// The owner, the stream's goroutine, holds the stream (offerOwned) except while it waits
// (offerWaiting); only then can a Notify offer it to the publishers. A publisher that claims it
// reads after pos, writes what the socket takes at once, moves pos, and hands the stream back:
// waiting again, or offerUnfinished with the rest of its frames in out for the owner to write,
// or offerBroken. It gives the stream back unwritten when the node drains or the token expired, so
// the owner's close frame is the last one. A Notify that finds the stream held pokes the owner,
// who reads once it has the stream back: no message is left unsent.
//
// The waiter interface is the owner's side: wait lets the stream go, waits, and takes it back.
type parkedStream struct {
	s   *Server
	who subscriber
	pos *streamPos
	out *sseWriter
	offer
}

// writtenByPublishers returns the parkedStream of an SSE stream on p whose frames publishers may
// write, or nil when they may not (publisherWriter).
func (s *Server) writtenByPublishers(p *parked, who subscriber, pos *streamPos, out *sseWriter) *parkedStream {
	rr := s.publisherWriter(p)
	if rr == nil {
		return nil
	}
	ps := &parkedStream{s: s, offer: offer{p: p, rr: rr}, who: who, pos: pos, out: out}
	ps.state.Store(offerOwned) // until its first wait
	return ps
}

// answer is a publisher's part.
func (ps *parkedStream) answer() {
	s, out := ps.s, ps.out
	if s.isDraining() || !time.Now().Before(ps.who.expires) {
		ps.giveBack(true) // the owner says goodbye
		return
	}
	b, err := s.store.ReadAfter(context.Background(), ps.who.user, ps.pos.c, streamBatch)
	if err != nil || (len(b.Messages) == 0 && !b.Reset) {
		ps.giveBack(err != nil) // on an error, the owner reads again and ends the stream if it persists
		return
	}
	if b.Reset {
		out.reset(b.Start)
	}
	for i := range b.Messages {
		out.message(&b.Messages[i])
	}
	out.written += int64(len(out.buf))
	rest, err := ps.rr.writeNow(out.buf)
	if err != nil {
		out.release()
		ps.state.Store(offerBroken)
		ps.p.poke()
		return
	}
	ps.pos.c = b.Cursor
	now := time.Now()
	s.countDelivered("sse", &b, now)
	ps.pos.beat = now.Add(s.opts.Heartbeat)
	if len(rest) > 0 {
		out.buf = out.buf[:copy(out.buf, rest)]
		s.parked.streamWritesInPart.Add(1)
		ps.state.Store(offerUnfinished)
		ps.p.poke()
		return
	}
	out.release()
	s.parked.streamWritesByPublisher.Add(1)
	ps.giveBack(len(b.Messages) == streamBatch) // a full batch: more may wait, for the owner
}

func (*parkedStream) arm() {}

// wait lets the stream go to the publishers while it waits on the connection, then takes it
// back: it waits out a publisher that holds it and writes what one left unwritten. It reports
// poked when it should read (it was poked, or wrote a publisher's rest), and errStreamWrite when
// a write failed.
func (ps *parkedStream) wait(until time.Time) (poked bool, err error) {
	if ps.state.CompareAndSwap(offerOwned, offerWaiting) { // always, but for a broken stream
		poked, err = ps.p.wait(until)
	}
	for {
		switch ps.state.Load() {
		case offerWaiting:
			if ps.state.CompareAndSwap(offerWaiting, offerOwned) {
				return poked, err
			}
		case offerUnfinished:
			ps.state.Store(offerOwned)
			if werr := ps.out.flush(); werr != nil {
				return false, errStreamWrite
			}
			return true, err
		case offerBroken:
			ps.state.Store(offerOwned)
			return false, errStreamWrite
		default:
			settle(&ps.state)
		}
	}
}
