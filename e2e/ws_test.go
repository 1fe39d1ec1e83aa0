package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketResumeAndShutdown reads /v1/ws on the real binary: hello, replay after a cursor,
// a live message, then SIGTERM: a close frame with reason shutdown, close code 1001, and the
// daemon exits 0 (it waits for hijacked connections, which http.Server.Shutdown does not).
func TestWebSocketResumeAndShutdown(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_DRAIN_DELAY": "0s", "BRIDGE_DRAIN_WINDOW": "0s"})
	ids := d.publishSeq(t, "wsuser", 3, 3)

	// A ticket keeps the token out of the URL.
	r := d.do(t, "POST", "/v1/ticket", userToken(t, "wsuser"), "", nil)
	var tk struct{ Ticket string }
	if err := json.Unmarshal(r.body, &tk); err != nil || r.status != http.StatusOK {
		t.Fatalf("ticket: %s", r)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	q := url.Values{"ticket": {tk.Ticket}, "cursor": {ids[0]}}
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(d.base, "http")+"/v1/ws?"+q.Encode(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	read := func() map[string]any {
		t.Helper()
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		return f
	}
	if f := read(); f["type"] != "hello" || f["cursor"] != ids[0] {
		t.Fatalf("first frame %v", f)
	}
	live := d.publishOne(t, "wsuser", "notice", map[string]int{"n": 4})
	for _, want := range []string{ids[1], ids[2], live} {
		if f := read(); f["type"] != "message" || f["id"] != want {
			t.Fatalf("frame %v, want message %s", f, want)
		}
	}

	d.sigterm()
	for {
		f := read()
		if f["type"] == "ping" {
			continue
		}
		if f["type"] != "close" || f["reason"] != "shutdown" {
			t.Fatalf("on shutdown got %v, want close/shutdown", f)
		}
		break
	}
	_, _, err = conn.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d (%v), want 1001", code, err)
	}
	if code, killed := d.stop(); killed || code != 0 {
		t.Fatalf("daemon exit %d (killed %v), want 0", code, killed)
	}
}
