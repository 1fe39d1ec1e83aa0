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

// serveStream is the one read path for streaming transports (package doc): with sub taken for
// the subscriber's stream, it writes hello, then loops Changed → ReadAfter → write → wait for the
// change, the heartbeat, the token's expiry, this stream's moment in the drain window (spread
// so that a draining node's clients do not all reconnect at once) or ctx ending (the client left).
//
// The calling goroutine is the connection's only writer and owns every timer; a slow client
// falls behind its own cursor and is cut by the write deadline, never holding up a publisher.
//
// transport ("sse" or "ws") labels the metrics: messages delivered, resets, and why it ended.
func (s *Server) serveStream(ctx context.Context, transport string, who subscriber, c cache.Cursor, sub cache.Subscription, out frameWriter, log *zap.Logger) {
	ended := "client_gone"
	defer func() { s.metrics.streamEnds.WithLabelValues(transport, ended).Inc() }()
	out.hello(c, s.opts.Heartbeat)
	if err := out.flush(); err != nil {
		return // the client is gone before the first frame; nothing to tell
	}
	heartbeat := time.NewTimer(s.opts.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(time.Until(who.expires))
	defer expiry.Stop()
	drain := s.drain           // until the node drains; then nil, and leave fires
	var leave <-chan time.Time // this stream's moment within the drain window

	for {
		changed := sub.Changed()
		b, err := s.store.ReadAfter(ctx, who.user, c, streamBatch)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("stream read failed", zap.Error(err))
				ended = string(closeUnavailable)
				out.end(closeUnavailable)
			}
			return
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
				log.Debug("stream client write failed", zap.Error(err))
				ended = "write_failed"
				return // a slow or vanished client resumes by cursor
			}
			s.countDelivered(transport, &b, time.Now())
			heartbeat.Reset(s.opts.Heartbeat)
		}
		if len(b.Messages) == streamBatch {
			continue // more are waiting; do not block before sending them
		}
		select {
		case <-changed:
		case <-heartbeat.C:
			if err := out.heartbeat(ctx); err != nil {
				log.Debug("stream heartbeat failed", zap.Error(err))
				ended = "write_failed"
				return
			}
			heartbeat.Reset(s.opts.Heartbeat)
		case <-expiry.C:
			ended = string(closeTokenExpired)
			out.end(closeTokenExpired)
			return
		case <-drain:
			drain = nil // keep delivering until this stream's turn to leave
			t := time.NewTimer(s.drainDelay())
			defer t.Stop()
			leave = t.C
		case <-leave:
			ended = string(closeShutdown)
			out.end(closeShutdown)
			return
		case <-ctx.Done():
			return
		}
	}
}
