package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsFrame is any frame of /v1/ws; the fields present depend on Type.
type wsFrame struct {
	Type      string          `json:"type"`
	Cursor    string          `json:"cursor"`
	Heartbeat int64           `json:"heartbeat"`
	Reason    string          `json:"reason"`
	ID        string          `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Time      string          `json:"time"`
}

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialWS(t *testing.T, base, query string, header http.Header) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws"+query, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &wsClient{t: t, conn: conn}, resp, nil
}

func mustDialWS(t *testing.T, base, query, tok string) *wsClient {
	t.Helper()
	c, resp, err := dialWS(t, base, query, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("dial /v1/ws%s: %v (%v)", query, err, resp)
	}
	t.Cleanup(func() { c.conn.CloseNow() }) // before the server's cleanup waits for its side
	return c
}

// next reads one frame; a closed connection fails the test.
func (c *wsClient) next() wsFrame {
	c.t.Helper()
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("read ws frame: %v", err)
	}
	return f
}

func (c *wsClient) read() (wsFrame, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		return wsFrame{}, err
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("binary frame %q", b)
	}
	var f wsFrame
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return f, nil
}

func (c *wsClient) expect(typ string) wsFrame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("frame %+v, want type %q", f, typ)
	}
	return f
}

// closeStatus reads until the connection ends and returns its close code.
func (c *wsClient) closeStatus() websocket.StatusCode {
	c.t.Helper()
	for {
		if _, err := c.read(); err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 {
				c.t.Fatalf("connection ended without a close frame: %v", err)
			}
			return code
		}
	}
}

func TestWSHelloReplayThenLive(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Heartbeat = 7 * time.Second })
	ts := h.serve()
	ids := h.publish(`{"messages":[{"user":"u","event":"a","data":1},{"user":"u","event":"b","data":{"x":"y\n"}}]}`)
	h.publish(`{"user":"other","data":"not yours"}`)

	c := mustDialWS(t, ts.URL, "", token(t, "u", time.Hour))
	if hello := c.expect("hello"); hello.Cursor != "" || hello.Heartbeat != 7000 {
		t.Fatalf("hello %+v: want the empty cursor and heartbeat 7000", hello)
	}
	// The message frames carry the same object SSE carries in data, with "type" first.
	sse := h.poll("u", "")
	for i, want := range []string{"a", "b"} {
		f := c.expect("message")
		got, _ := json.Marshal(sse.Messages[i])
		if f.ID != ids[i] || f.Event != want || string(f.Data) != string(sse.Messages[i].Data) || f.Time != sse.Messages[i].Time {
			t.Fatalf("frame %d %+v, want %s", i, f, got)
		}
	}
	live := h.publish(`{"user":"u","event":"c","data":3}`)
	if f := c.expect("message"); f.ID != live[0] {
		t.Fatalf("live frame %+v, want %s", f, live[0])
	}
}

func TestWSResumeFromCursorAndReset(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	ids := h.publish(`{"messages":[{"user":"u","data":1},{"user":"u","data":2},{"user":"u","data":3}]}`)

	c := mustDialWS(t, ts.URL, "?cursor="+ids[0], token(t, "u", time.Hour))
	if hello := c.expect("hello"); hello.Cursor != ids[0] {
		t.Fatalf("hello %+v, want cursor %s", hello, ids[0])
	}
	for _, want := range ids[1:] {
		if f := c.expect("message"); f.ID != want {
			t.Fatalf("resumed frame %s, want %s", f.ID, want)
		}
	}

	h.clock.Advance(2 * time.Minute) // everything expires
	fresh := h.publish(`{"user":"u","data":4}`)
	if f := c.expect("message"); f.ID != fresh[0] {
		t.Fatalf("live frame %s, want %s", f.ID, fresh[0])
	}
	stale := mustDialWS(t, ts.URL, "?cursor="+ids[1], token(t, "u", time.Hour))
	stale.expect("hello")
	reset := stale.expect("reset")
	if reset.Cursor == "" || reset.Cursor == ids[1] {
		t.Fatalf("reset %+v: want the new position", reset)
	}
	if f := stale.expect("message"); f.ID != fresh[0] {
		t.Fatalf("after reset %s, want %s", f.ID, fresh[0])
	}
}

func TestWSHeartbeatAndDrain(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Heartbeat = 20 * time.Millisecond })
	ts := h.serve()
	c := mustDialWS(t, ts.URL, "", token(t, "u", time.Hour))
	c.expect("hello")
	c.expect("ping") // and the protocol ping was answered, or the server would have hung up
	c.expect("ping")
	h.srv.Drain()
	for {
		f := c.next()
		if f.Type == "ping" {
			continue
		}
		if f.Type != "close" || f.Reason != "shutdown" {
			t.Fatalf("on drain got %+v, want close/shutdown", f)
		}
		break
	}
	if code := c.closeStatus(); code != WSCloseShutdown {
		t.Fatalf("close code %d, want %d", code, WSCloseShutdown)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := h.srv.Wait(ctx); err != nil {
		t.Fatalf("Wait after drain: %v", err)
	}
	if _, resp, err := dialWS(t, ts.URL, "", http.Header{"Authorization": {"Bearer " + token(t, "u", time.Hour)}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial while draining: %v %v, want 503", resp, err)
	}
}

func TestWSTokenExpiryCloses4001(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	c := mustDialWS(t, ts.URL, "", token(t, "u", 1500*time.Millisecond))
	c.expect("hello")
	if f := c.expect("close"); f.Reason != "token_expired" {
		t.Fatalf("close frame %+v, want token_expired", f)
	}
	if code := c.closeStatus(); code != WSCloseTokenExpired {
		t.Fatalf("close code %d, want %d", code, WSCloseTokenExpired)
	}
}

func TestWSTokenInQuery(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	c, resp, err := dialWS(t, ts.URL, "?token="+token(t, "u", time.Hour), nil)
	if err != nil {
		t.Fatalf("dial with ?token=: %v %v", err, resp)
	}
	c.expect("hello")
}

func TestWSRefusalsAreJSONBeforeUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	tests := []struct {
		name, query string
		header      http.Header
		status      int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"expired token", "?token=" + token(t, "u", -time.Hour), nil, http.StatusUnauthorized},
		{"bad cursor", "?cursor=nope", http.Header{"Authorization": {"Bearer " + token(t, "u", time.Hour)}}, http.StatusBadRequest},
		{"foreign origin", "", http.Header{"Authorization": {"Bearer " + token(t, "u", time.Hour)}, "Origin": {"https://evil.example"}}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := dialWS(t, ts.URL, tt.query, tt.header)
			if err == nil || resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("dial: %v %v, want %d", resp, err, tt.status)
			}
		})
	}
	// A plain GET is told to upgrade, in JSON.
	rec := h.do("GET", "/v1/ws", token(t, "u", time.Hour), "")
	if rec.Code != http.StatusUpgradeRequired || errorCode(t, rec) != "upgrade_required" {
		t.Fatalf("plain GET /v1/ws: %d %s", rec.Code, rec.Body)
	}
}

func TestWSAllowsConfiguredOrigin(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.CORSOrigins = []string{"https://app.example"} })
	ts := h.serve()
	c, resp, err := dialWS(t, ts.URL, "", http.Header{"Authorization": {"Bearer " + token(t, "u", time.Hour)}, "Origin": {"https://app.example"}})
	if err != nil {
		t.Fatalf("dial from a configured origin: %v %v", err, resp)
	}
	c.expect("hello")
}

func TestWSClientDataMessageEndsConnection(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	c := mustDialWS(t, ts.URL, "", token(t, "u", time.Hour))
	c.expect("hello")
	if err := c.conn.Write(t.Context(), websocket.MessageText, []byte(`{"type":"subscribe","user":"other"}`)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := c.read(); err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation && !errors.Is(err, context.Canceled) && code != -1 {
				t.Fatalf("close code %d, want %d", code, websocket.StatusPolicyViolation)
			}
			return
		}
	}
}

func TestSSEPlainOmitsEventNames(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	ids := h.publish(`{"user":"u","event":"notice","data":1}`)
	s := openSSE(t, ts.URL, "?plain=1", token(t, "u", time.Hour), nil)
	s.expect("hello")
	f := s.next()
	if f.Event != "" || f.ID != ids[0] || !strings.Contains(f.Data, `"event":"notice"`) {
		t.Fatalf("plain frame %+v: want no event: line, the id, and the event in data", f)
	}
	if rec := h.do("GET", "/v1/sse?plain=yes", token(t, "u", time.Hour), ""); rec.Code != http.StatusBadRequest {
		t.Fatalf("plain=yes: %d", rec.Code)
	}
}

func TestWSTicketInsteadOfToken(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	rec := h.do("POST", "/v1/ticket", token(t, "u", time.Hour), "")
	var out struct{ Ticket string }
	decode(t, rec.Body.Bytes(), &out)
	if rec.Code != http.StatusOK || out.Ticket == "" {
		t.Fatalf("ticket: %d %s", rec.Code, rec.Body)
	}
	c, resp, err := dialWS(t, ts.URL, "?ticket="+out.Ticket, nil)
	if err != nil {
		t.Fatalf("dial with a ticket: %v %v", err, resp)
	}
	c.expect("hello")
	if _, resp, err := dialWS(t, ts.URL, "?ticket="+out.Ticket, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("second use of a ticket: %v %v, want 401", resp, err)
	}
}
