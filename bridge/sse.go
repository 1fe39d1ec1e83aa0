package bridge

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// sseBatch is how many messages one read takes before they are written and flushed together.
const sseBatch = 256

// sse handles GET /v1/sse: a text/event-stream of the subscriber's stream, resumed after the
// Last-Event-ID header (what a browser sends on reconnect) or else the cursor query parameter.
//
// The wire, in order: "retry:" and an "event: hello" at once (no id:, so a client can tell a
// buffering proxy from a quiet stream); an "event: reset" carrying the new position whenever
// messages after the client's cursor are gone; then one frame per message with its cursor as
// "id:"; an "event: ping" every heartbeat while idle; and an "event: close" with a reason before
// bridged ends the stream (shutdown, token expiry, store failure).
//
// This goroutine is the connection's only writer and owns every timer; a slow client falls
// behind its own cursor and is cut by the write deadline, never holding up a publisher.
func (s *Server) sse(w http.ResponseWriter, r *http.Request) error {
	setTransport(r, "sse")
	ctx := r.Context()
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = r.URL.Query().Get("cursor")
	}
	c, err := cache.ParseCursor(from)
	if err != nil {
		return badRequest("bad_cursor", "Last-Event-ID or cursor is malformed; send back an id bridged gave you, or none")
	}
	if s.isDraining() {
		return errDraining
	}
	who := subscriberFrom(ctx)
	release, err := s.acquire(who.user, transportSSE)
	if err != nil {
		return err
	}
	defer release()
	sub, err := s.store.Subscribe(ctx, who.user)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer this response
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive") // HTTP/2 forbids the header (RFC 9113 section 8.2.2)
	}
	w.WriteHeader(http.StatusOK)

	out := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: s.opts.WriteTimeout}
	defer out.release()
	out.grab()
	out.buf = appendSSEField(out.buf, "retry", strconv.AppendInt(nil, s.opts.Retry.Milliseconds(), 10))
	out.buf = appendSSEField(out.buf, "event", "hello")
	hello := append([]byte(`{"cursor":"`), c.AppendText(nil)...)
	hello = append(hello, `","heartbeat":`...)
	hello = strconv.AppendInt(hello, s.opts.Heartbeat.Milliseconds(), 10)
	out.buf = appendSSEData(out.buf, append(hello, '}'))
	out.buf = append(out.buf, '\n')
	if err := out.flush(); err != nil {
		return nil // the client is gone before the first byte; nothing to tell
	}

	heartbeat := time.NewTimer(s.opts.Heartbeat)
	defer heartbeat.Stop()
	drain := s.drain           // until the node drains; then nil, and leave fires
	var leave <-chan time.Time // this stream's moment within the drain window
	expiry := time.NewTimer(time.Until(who.expires))
	defer expiry.Stop()
	log := s.log.With(zap.String("route", "sse"))

	for {
		changed := sub.Changed()
		b, err := s.store.ReadAfter(ctx, who.user, c, sseBatch)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("sse read failed", zap.Error(err))
				out.close("unavailable")
			}
			return nil
		}
		if b.Reset {
			out.reset(b.Start)
		}
		for i := range b.Messages {
			out.message(&b.Messages[i])
		}
		c = b.Cursor
		if len(out.buf) > 0 {
			if err := out.flush(); err != nil {
				log.Debug("sse client write failed", zap.Error(err))
				return nil // a slow or vanished client resumes by cursor
			}
			heartbeat.Reset(s.opts.Heartbeat)
		}
		if len(b.Messages) == sseBatch {
			continue // more are waiting; do not block before sending them
		}
		select {
		case <-changed:
		case <-heartbeat.C:
			out.ping()
			if err := out.flush(); err != nil {
				return nil
			}
			heartbeat.Reset(s.opts.Heartbeat)
		case <-expiry.C:
			out.close("token_expired")
			return nil
		case <-drain:
			drain = nil // keep delivering until this stream's turn to leave
			t := time.NewTimer(s.drainDelay())
			defer t.Stop()
			leave = t.C
		case <-leave:
			out.close("shutdown")
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// sseWriter batches frames for one connection and writes them with a deadline. Its buffer comes
// from a pool and goes back after each flush, so an idle stream holds no buffer.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

var ssePool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (o *sseWriter) grab() {
	if o.buf == nil {
		o.buf = (*ssePool.Get().(*[]byte))[:0]
	}
}

func (o *sseWriter) release() {
	if o.buf != nil && cap(o.buf) <= 64<<10 {
		b := o.buf[:0]
		ssePool.Put(&b)
	}
	o.buf = nil
}

func (o *sseWriter) message(m *cache.Message) {
	o.grab()
	var id [cache.MaxCursorLen]byte
	o.buf = appendSSEField(o.buf, "id", m.ID.AppendText(id[:0]))
	o.buf = appendSSEField(o.buf, "event", m.Event)
	o.buf = append(o.buf, "data: "...)
	o.buf = appendMessage(o.buf, m)
	o.buf = append(o.buf, '\n', '\n')
}

// reset tells the client messages were lost and moves its Last-Event-ID to start, so the browser
// resumes from there on reconnect instead of reporting the same loss again.
func (o *sseWriter) reset(start cache.Cursor) {
	o.grab()
	var id [cache.MaxCursorLen]byte
	cur := start.AppendText(id[:0])
	o.buf = appendSSEField(o.buf, "id", cur)
	o.buf = appendSSEField(o.buf, "event", "reset")
	o.buf = append(o.buf, `data: {"cursor":"`...)
	o.buf = append(o.buf, cur...)
	o.buf = append(o.buf, "\"}\n\n"...)
}

func (o *sseWriter) ping() {
	o.grab()
	o.buf = append(o.buf, "event: ping\ndata: {}\n\n"...)
}

// close writes a final frame saying why the stream ends, best effort.
func (o *sseWriter) close(reason string) {
	o.grab()
	o.buf = append(o.buf, "event: close\ndata: {\"reason\":\""...)
	o.buf = append(o.buf, reason...)
	o.buf = append(o.buf, "\"}\n\n"...)
	o.flush()
}

// flush writes the buffered frames under a fresh deadline and flushes them to the client.
func (o *sseWriter) flush() error {
	defer o.release()
	if err := o.rc.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := o.w.Write(o.buf); err != nil {
		return err
	}
	return o.rc.Flush()
}
