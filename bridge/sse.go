package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/bridged/bridged/cache"
)

// sse handles GET /v1/sse: a text/event-stream of the subscriber's stream, resumed after the
// Last-Event-ID header (what a browser sends on reconnect) or else the cursor query parameter.
//
// The wire, in order: "retry:" and an "event: hello" at once (no id:, so a client can tell a
// buffering proxy from a quiet stream); an "event: reset" carrying the new position whenever
// messages after the client's cursor are gone; then one frame per message with its cursor as
// "id:"; an "event: ping" every heartbeat while idle; and an "event: close" with a reason before
// bridged ends the stream (shutdown, token expiry, store failure).
//
// With plain=1, message frames carry no "event:" line, so EventSource dispatches every one of
// them as "message" and a client needs no list of the app's event names (each message object in
// data still names its event). Control frames keep their names.
//
// The read loop is serveStream, shared with the WebSocket endpoint.
func (s *Server) sse(w http.ResponseWriter, r *http.Request, who subscriber) error {
	setTransport(w, "sse")
	ctx := r.Context()
	q := r.URL.Query()
	from := r.Header.Get("Last-Event-ID")
	if from == "" {
		from = q.Get("cursor")
	}
	c, err := cache.ParseCursor(from)
	if err != nil {
		return badRequest("bad_cursor", "Last-Event-ID or cursor is malformed; send back an id bridged gave you, or none")
	}
	plain := false
	switch q.Get("plain") {
	case "", "0":
	case "1":
		plain = true
	default:
		return badRequest("bad_request", "plain must be 1 or 0")
	}
	if s.isDraining() {
		return errDraining
	}
	release, err := s.acquire(who.user, transportSSE)
	if err != nil {
		return err
	}
	sub, err := s.store.Subscribe(ctx, who.user)
	if err != nil {
		release()
		return fmt.Errorf("subscribe: %w", err)
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer this response
	out := &sseWriter{timeout: s.opts.WriteTimeout, retry: s.opts.Retry, plain: plain}
	if !s.faults.holdSSE() {
		if p, _ := s.park(w, r); p != nil {
			// An SSE client sends nothing after its request; bytes it pipelined are ignored.
			s.parkSSE(p, s.detach(w, r), who, c, sub, release, h, out)
			return nil
		}
	}
	defer release()
	defer sub.Close()
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive") // HTTP/2 forbids the header (RFC 9113 section 8.2.2)
	}
	w.WriteHeader(http.StatusOK)

	ctx, stop := s.faults.watch(ctx, faultSSE, faultLongPoll)
	defer stop()
	out.w, out.rc = w, http.NewResponseController(w)
	defer out.release()
	if s.faults.holdSSE() {
		// Demo fault: behave like a proxy that buffers the stream, so the page never sees a frame.
		out.rc.Flush()
		select {
		case <-ctx.Done():
		case <-s.drain:
		}
		return nil
	}
	s.serveStream(ctx, "sse", who, &streamPos{c: c}, out, newChanWaiter(ctx, sub, s.drain))
	return nil
}

// parkSSE serves an SSE stream on a parked connection (park.go): the response head goes out with
// hello, and the connection closes when the stream ends. With an in-memory store, publishers
// write the stream's frames (parkedStream, stream.go).
func (s *Server) parkSSE(p *parked, logLine func(int, int64), who subscriber, c cache.Cursor, sub cache.Subscription, release func(), h http.Header, out *sseWriter) {
	out.p = p
	out.grab()
	out.buf = appendHead(out.buf, http.StatusOK, h, -1, true)
	ctx := context.Background() // the stream outlives the request; the waiter sees the client leave
	pos := &streamPos{c: c}
	var w waiter = parkedWaiter{p}
	stopCut := func() {}
	if ps := s.writtenByPublishers(p, who, pos, out); ps != nil {
		sub.Notify(s.answers.notifier(ps))
		w = ps
	} else {
		if s.faults != nil {
			p.cut, stopCut = s.faults.watch(ctx, faultSSE, faultLongPoll)
			context.AfterFunc(p.cut, p.poke)
		}
		sub.Notify(p.poke)
	}
	s.runParked(p, func() bool {
		defer release()
		defer sub.Close()
		defer stopCut()
		defer out.release()
		s.serveStream(ctx, "sse", who, pos, out, w)
		logLine(http.StatusOK, out.written)
		return true
	})
}

// sseWriter batches frames for one connection and writes them with a deadline. Its buffer comes
// from a pool and goes back after each flush, so an idle stream holds no buffer.
type sseWriter struct {
	w       http.ResponseWriter // the response, or nil on a parked connection
	rc      *http.ResponseController
	p       *parked // the parked connection, if any
	written int64   // bytes written on p
	timeout time.Duration
	retry   time.Duration // the reconnect hint sent before hello
	plain   bool          // message frames without "event:" (the plain query parameter)
	buf     []byte
}

var _ frameWriter = (*sseWriter)(nil)

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
	if !o.plain {
		o.buf = appendSSEField(o.buf, "event", m.Event)
	}
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

// hello writes the reconnect hint and the first frame, with the cursor resumed from and the
// heartbeat interval, so a client can tell a silent stream (a buffering proxy) from a quiet one.
func (o *sseWriter) hello(c cache.Cursor, heartbeat time.Duration) {
	o.grab()
	o.buf = appendSSEField(o.buf, "retry", strconv.AppendInt(nil, o.retry.Milliseconds(), 10))
	o.buf = appendSSEField(o.buf, "event", "hello")
	o.buf = append(o.buf, `data: {"cursor":"`...)
	o.buf = c.AppendText(o.buf)
	o.buf = append(o.buf, `","heartbeat":`...)
	o.buf = strconv.AppendInt(o.buf, heartbeat.Milliseconds(), 10)
	o.buf = append(o.buf, "}\n\n"...)
}

func (o *sseWriter) heartbeat(context.Context) error {
	o.grab()
	o.buf = append(o.buf, "event: ping\ndata: {}\n\n"...)
	return o.flush()
}

// end writes a final frame saying why the stream ends, best effort.
func (o *sseWriter) end(reason closeReason) {
	o.grab()
	o.buf = append(o.buf, "event: close\ndata: {\"reason\":\""...)
	o.buf = append(o.buf, reason...)
	o.buf = append(o.buf, "\"}\n\n"...)
	o.flush()
}

// flush writes the buffered frames under a fresh deadline and flushes them to the client.
func (o *sseWriter) flush() error {
	defer o.release()
	if o.p != nil {
		o.written += int64(len(o.buf))
		return o.p.write(o.buf, o.timeout)
	}
	if err := o.rc.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := o.w.Write(o.buf); err != nil {
		return err
	}
	return o.rc.Flush()
}
