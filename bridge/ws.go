package bridge

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/bridged/bridged/cache"
)

// WebSocket close codes bridged ends /v1/ws with. They tell the client what to do next; the
// {"type":"close","reason"} frame sent just before says the same in words.
const (
	// WSCloseShutdown (1001, "going away"): the node drains. Reconnect, to another node if
	// there is one, and resume from the last id.
	WSCloseShutdown websocket.StatusCode = websocket.StatusGoingAway
	// WSCloseUnavailable (1011, "internal error"): the store failed. Back off, then resume.
	WSCloseUnavailable websocket.StatusCode = websocket.StatusInternalError
	// WSCloseTokenExpired (4001): the subscriber token expired. Fetch a fresh one, reconnect and
	// resume from the last id; nothing is lost.
	WSCloseTokenExpired websocket.StatusCode = 4001
	// WSClosePolicy (4008): a limit or policy ended the connection (too many connections, a
	// client too slow to keep up). Back off before reconnecting.
	WSClosePolicy websocket.StatusCode = 4008
)

// wsCloseCodes maps why a stream ends to the close code that says it.
var wsCloseCodes = map[closeReason]websocket.StatusCode{
	closeShutdown:     WSCloseShutdown,
	closeTokenExpired: WSCloseTokenExpired,
	closeUnavailable:  WSCloseUnavailable,
}

// ws handles GET /v1/ws: the subscriber's stream over a WebSocket, for deployments without a
// socket of their own. Token, cursor (the cursor query parameter), resume and reset behave as on
// /v1/sse, and the frames are JSON text messages:
//
//	{"type":"hello","cursor":"…","heartbeat":15000}      first, at once
//	{"type":"reset","cursor":"…"}                        messages after the cursor are gone; resume from here
//	{"type":"message","id":"…","event":"…","data":…,"time":"…"}   the message object SSE carries in data
//	{"type":"ping"}                                      every heartbeat while idle (with a protocol ping)
//	{"type":"close","reason":"shutdown"|"token_expired"|"unavailable"}   then the close code (WSClose*)
//
// The client sends nothing; a data message from it ends the connection with 1008. Refusals
// before the upgrade (bad cursor, bad token, draining) are the usual JSON error answers.
func (s *Server) ws(w http.ResponseWriter, r *http.Request, who subscriber) error {
	setTransport(w, "ws")
	if !isWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		return errorf(http.StatusUpgradeRequired, "upgrade_required", "this endpoint speaks WebSocket only")
	}
	c, err := cache.ParseCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return badRequest("bad_cursor", "cursor is malformed; send back an id bridged gave you, or none")
	}
	if s.isDraining() {
		return errDraining
	}
	if s.faults.active(faultWS) {
		return errDemoFault
	}
	release, err := s.acquire(who.user, transportWS)
	if err != nil {
		return err
	}
	defer release()
	sub, err := s.store.Subscribe(r.Context(), who.user)
	if err != nil {
		return err
	}
	defer sub.Close()

	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns:     s.wsOrigins,
		InsecureSkipVerify: s.wsAnyOrigin,
		CompressionMode:    websocket.CompressionDisabled, // small JSON frames; not worth a flate state per connection
	})
	if err != nil {
		return nil // Accept has answered (403 for a foreign origin)
	}
	// net/http does not track hijacked connections; Wait does, so a drain lets close frames out.
	s.wsConns.Add(1)
	defer s.wsConns.Done()
	defer conn.CloseNow()

	// The reader goroutine reads control frames (the library answers pings and sees our pongs)
	// and cancels ctx when the peer goes away or breaks the protocol; CloseNow above ends it.
	// It replaces the library's CloseRead, whose goroutine, on a data message, waits for itself
	// for 15 s in Close (coder/websocket 1.8.15).
	readCtx, cancelRead := context.WithCancel(r.Context())
	readDone := make(chan struct{})
	defer func() { conn.CloseNow(); <-readDone }() // CloseNow ends the reader
	go func() {
		defer close(readDone)
		defer cancelRead()
		if _, _, err := conn.Reader(readCtx); err == nil {
			conn.Close(websocket.StatusPolicyViolation, "unexpected data message")
		}
	}()
	ctx, stop := s.faults.watch(readCtx, faultWS, faultLongPoll)
	defer stop()
	out := &wsWriter{conn: conn, ctx: ctx, timeout: s.opts.WriteTimeout}
	s.serveStream(ctx, "ws", who, &streamPos{c: c}, out, newChanWaiter(ctx, sub, s.drain))
	return nil
}

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 section 4.2.1).
func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wsOriginPatterns turns BRIDGE_CORS_ORIGINS into the host patterns websocket.Accept checks the
// Origin header against (same-origin requests always pass); "*" allows any origin.
func wsOriginPatterns(origins []string) (patterns []string, any bool) {
	if slices.Contains(origins, "*") {
		return nil, true
	}
	for _, o := range origins {
		if u, err := url.Parse(o); err == nil && u.Host != "" {
			patterns = append(patterns, u.Host)
		}
	}
	return patterns, false
}

// wsWriter writes the shared read loop's frames as WebSocket text messages, each under its own
// write deadline. A write that misses it closes the connection (the library's rule), and the
// client resumes by cursor.
type wsWriter struct {
	conn    *websocket.Conn
	ctx     context.Context
	timeout time.Duration
	buf     []byte // pending frames, back to back
	ends    []int  // where each pending frame ends in buf
}

var _ frameWriter = (*wsWriter)(nil)

func (o *wsWriter) frameDone() { o.ends = append(o.ends, len(o.buf)) }

func (o *wsWriter) hello(c cache.Cursor, heartbeat time.Duration) {
	o.buf = append(o.buf, `{"type":"hello","cursor":"`...)
	o.buf = c.AppendText(o.buf)
	o.buf = append(o.buf, `","heartbeat":`...)
	o.buf = strconv.AppendInt(o.buf, heartbeat.Milliseconds(), 10)
	o.buf = append(o.buf, '}')
	o.frameDone()
}

func (o *wsWriter) reset(start cache.Cursor) {
	o.buf = append(o.buf, `{"type":"reset","cursor":"`...)
	o.buf = start.AppendText(o.buf)
	o.buf = append(o.buf, `"}`...)
	o.frameDone()
}

func (o *wsWriter) message(m *cache.Message) {
	o.buf = append(o.buf, `{"type":"message",`...)
	o.buf = appendMessageFields(o.buf, m)
	o.frameDone()
}

func (o *wsWriter) flush() error {
	start := 0
	defer func() {
		o.ends = o.ends[:0]
		if cap(o.buf) > 64<<10 {
			o.buf = nil // a big batch went out; do not keep its buffer for an idle connection
		} else {
			o.buf = o.buf[:0]
		}
	}()
	for _, end := range o.ends {
		if err := o.write(o.buf[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (o *wsWriter) write(frame []byte) error {
	ctx, cancel := context.WithTimeout(o.ctx, o.timeout)
	defer cancel()
	return o.conn.Write(ctx, websocket.MessageText, frame)
}

// heartbeat sends a ping the page can see (browsers do not show protocol pings to scripts) and
// a protocol ping whose pong proves the peer is still there.
func (o *wsWriter) heartbeat(ctx context.Context) error {
	if err := o.write([]byte(`{"type":"ping"}`)); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return o.conn.Ping(pctx)
}

// end sends the close frame with its reason and closes with the matching code.
func (o *wsWriter) end(reason closeReason) {
	o.ends, o.buf = o.ends[:0], o.buf[:0]
	o.buf = append(o.buf, `{"type":"close","reason":"`...)
	o.buf = append(o.buf, reason...)
	o.buf = append(o.buf, `"}`...)
	o.frameDone()
	if o.flush() != nil {
		return
	}
	code, ok := wsCloseCodes[reason]
	if !ok {
		code = websocket.StatusInternalError
	}
	o.conn.Close(code, string(reason)) // waits for the peer's close frame, up to 5 s; CloseNow follows
}
