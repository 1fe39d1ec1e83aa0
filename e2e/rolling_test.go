package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/bridged/bridged/internal/redistest"
)

// TestRollingRestart: on SIGTERM a node first stops being ready while it keeps serving (so a load
// balancer moves new clients away), then ends its SSE streams with "event: close" / shutdown, and
// exits 0. A client that moves to another node with its last id is never silently short: with
// the memory engine the other node never had its stream, so it gets a reset.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	a := startDaemon(t, map[string]string{"BRIDGE_DRAIN_DELAY": "2s", "BRIDGE_DRAIN_WINDOW": "1s", "BRIDGE_SHUTDOWN_TIMEOUT": "10s"})
	b := startDaemon(t, nil)
	tok := userToken(t, "alice")

	first := a.publish(t, `{"user":"alice","data":"before"}`)[0]
	s := a.openSSE(t, sseRequest{token: tok})
	s.hello(t)
	if got := s.messages(t, 1); got[0].ID != first {
		t.Fatalf("got %+v", got)
	}

	a.sigterm()
	// Not ready, yet still serving: /readyz fails while the stream and publishing work.
	deadline := time.Now().Add(10 * time.Second)
	for a.do(t, "GET", "/readyz", "", "", nil).status != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("readyz never failed after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	during := a.publish(t, `{"user":"alice","data":"during the drain delay"}`)[0]
	if got := s.messages(t, 1); got[0].ID != during {
		t.Fatalf("the stream stopped delivering while the node was only unready: %+v", got)
	}

	// Then the stream is told to go.
	last := during
	for {
		f := s.mustNext(t)
		if f.Event == "ping" {
			continue
		}
		if f.Event != "close" {
			t.Fatalf("got %+v, want close", f)
		}
		var why struct{ Reason string }
		json.Unmarshal([]byte(f.Data), &why)
		if why.Reason != "shutdown" {
			t.Fatalf("close reason %q", why.Reason)
		}
		break
	}

	// The client resumes on node b from its last id: b never had alice's stream, so the client
	// is told (reset) rather than left thinking nothing happened.
	moved := b.openSSE(t, sseRequest{token: tok, lastEventID: last})
	moved.hello(t)
	f := moved.mustNext(t)
	if f.Event != "reset" {
		t.Fatalf("first frame on the new node %+v, want reset", f)
	}
	next := b.publish(t, `{"user":"alice","data":"after the move"}`)[0]
	if got := moved.messages(t, 1); got[0].ID != next {
		t.Fatalf("after the move got %+v", got)
	}

	if code, killed := a.stop(); code != 0 || killed {
		t.Fatalf("draining node exited with %d (killed %v)", code, killed)
	}
}

// TestRollingRestartOnRedis: the same restart with the nodes sharing a Redis. The client moves
// from the draining node to the other with its last id and gets exactly what followed: no reset,
// nothing lost, nothing repeated, including what was published while it moved.
func TestRollingRestartOnRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	nodes := startNodes(t, srv, 2, map[string]string{"BRIDGE_DRAIN_DELAY": "1s", "BRIDGE_DRAIN_WINDOW": "1s"})
	a, b := nodes[0], nodes[1]
	tok := userToken(t, "alice")

	first := a.publish(t, `{"user":"alice","data":"before"}`)[0]
	s := a.openSSE(t, sseRequest{token: tok})
	s.hello(t)
	if got := s.messages(t, 1); got[0].ID != first {
		t.Fatalf("got %+v", got)
	}
	a.sigterm()
	for {
		f := s.mustNext(t)
		if f.Event == "close" {
			break
		}
		if f.Event != "ping" {
			t.Fatalf("got %+v before close", f)
		}
	}
	// Published through the surviving node while the client is between nodes.
	missed := b.publish(t, `{"messages":[{"user":"alice","data":"m1"},{"user":"alice","data":"m2"}]}`)

	moved := b.openSSE(t, sseRequest{token: tok, lastEventID: first})
	moved.hello(t)
	got := moved.messages(t, 2)
	if got[0].ID != missed[0] || got[1].ID != missed[1] {
		t.Fatalf("after the move got %+v, want %v with no reset", got, missed)
	}
	if code, killed := a.stop(); code != 0 || killed {
		t.Fatalf("draining node exited with %d (killed %v)", code, killed)
	}
}
