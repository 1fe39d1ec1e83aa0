package e2e

import (
	"strconv"
	"testing"
	"time"
)

// TestHeartbeat checks the start of every stream and its heartbeat: the first frame is retry:
// plus "event: hello" without an id line, and an idle stream then receives "event: ping"
// frames, without an id line either, so they never move a client's Last-Event-ID.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_HEARTBEAT": "300ms"})
	tests := []struct {
		name     string
		messages int // published before the stream opens
	}{
		{name: "empty stream", messages: 0},
		{name: "idle after a replay", messages: 3},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := "hb-" + strconv.Itoa(i)
			var ids []string
			if tt.messages > 0 {
				ids = d.publishSeq(t, user, tt.messages, tt.messages)
			}
			s := d.openSSE(t, sseRequest{token: userToken(t, user)})
			if cc := s.resp.Header.Get("Cache-Control"); cc != "no-cache, no-store" {
				t.Errorf("SSE Cache-Control %q", cc)
			}
			if xa := s.resp.Header.Get("X-Accel-Buffering"); xa != "no" {
				t.Errorf("SSE X-Accel-Buffering %q", xa)
			}

			first := s.mustNext(t)
			if first.Event != "hello" || first.HasID {
				t.Fatalf("first frame %q, want event: hello without an id: line", first.Raw)
			}
			if ms, err := strconv.Atoi(first.Retry); err != nil || ms <= 0 {
				t.Errorf("first frame retry: %q, want a positive number of milliseconds", first.Retry)
			}
			var hello struct {
				Cursor    string `json:"cursor"`
				Heartbeat int    `json:"heartbeat"`
			}
			if err := strictUnmarshal([]byte(first.Data), &hello); err != nil {
				t.Errorf("hello data %q: %v", first.Data, err)
			}
			if hello.Heartbeat != 300 {
				t.Errorf("hello heartbeat %d, want 300 (ms)", hello.Heartbeat)
			}

			if diff := diffIDs(messageIDs(s.messages(t, len(ids))), ids); diff != "" {
				t.Fatalf("replay: %s", diff)
			}
			for n := range 3 {
				f := s.mustNext(t)
				if f.Event != "ping" || f.HasID || f.Data != "{}" || f.Retry != "" {
					t.Fatalf("idle frame %d %q, want event: ping, data: {} and no id: line", n, f.Raw)
				}
			}
		})
	}
}

// TestTokenExpiryClosesStream checks that an SSE stream whose token expires gets "event: close"
// with reason token_expired and ends, so the client fetches a new token and resumes.
func TestTokenExpiryClosesStream(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	id := d.publishOne(t, "alice", "", "before expiry")
	// exp has whole-second resolution: the token lives between one and two seconds.
	tok := mintToken(t, "alice", time.Now().Add(2*time.Second))
	s := d.openSSE(t, sseRequest{token: tok})
	s.hello(t)
	if got := s.messages(t, 1); got[0].ID != id {
		t.Fatalf("got %s, want %s", got[0].ID, id)
	}
	f := s.mustNext(t) // real time passes here until the token expires
	if f.Event != "close" || f.Data != `{"reason":"token_expired"}` || f.HasID {
		t.Fatalf("frame at token expiry %q, want event: close with {\"reason\":\"token_expired\"}", f.Raw)
	}
	if f, ok := s.next(t); ok {
		t.Fatalf("frame after the close frame: %q; the stream must end", f.Raw)
	}
}
