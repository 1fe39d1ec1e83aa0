package bridge

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bridged/bridged/cache"
)

// Daemon defects found while building the soak tool (cmd/bridgesoak, issue 3), each kept as a
// minimal test that fails on the code as it is. They are skipped unless BRIDGE_FINDINGS=1, so
// scripts/test stays green until the daemon is fixed; then drop the skip.
//
//	BRIDGE_FINDINGS=1 go test -run 'TestFinding' -v ./bridge/
func findings(t *testing.T) {
	t.Helper()
	if os.Getenv("BRIDGE_FINDINGS") != "1" {
		t.Skip("a known daemon defect; BRIDGE_FINDINGS=1 runs it")
	}
}

// A long-poll whose client has gone (or goes while it waits) is a normal event, yet bridged
// logs it at error level as an internal error: ReadAfter fails with the request's context error
// and poll returns it wrapped ("read stream: context canceled"), which the error adapter cannot
// tell from a store failure. The soak saw a few of these per run (7 in the 5-minute run).
func TestFindingGoneLongPollIsNotAnInternalError(t *testing.T) {
	findings(t)
	core, logs := observer.New(zapcore.ErrorLevel)
	h := newHarness(t, func(o *Options) { o.Log = zap.New(core) })
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the client is gone before its long-poll is read
	req := httptest.NewRequest("GET", "/v1/poll?wait=5s", nil).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+token(t, "u", time.Hour))
	h.srv.ServeHTTP(httptest.NewRecorder(), req)
	for _, e := range logs.All() {
		t.Errorf("a long-poll whose client left was logged at %s: %q %v", e.Level, e.Message, e.ContextMap())
	}
}

// After a reset on a stream that was freed (all its messages expired and nobody watched it for
// a TTL), poll and long-poll answer "cursor":"" — no position at all. A client resuming from it,
// as the protocol says, reads "from the oldest retained message", which never resets, so a
// message that expires before its next read is skipped silently: the loss the reset contract
// exists to prevent. (SSE does not have it: it subscribes before reading, which recreates the
// stream, so its reset carries a real "<epoch>-0" position.)
func TestFindingResetOnFreedStreamKeepsAPosition(t *testing.T) {
	findings(t)
	const ttl = time.Minute
	h := newHarnessWith(t, cache.Options{TTL: ttl}, nil)
	first := h.publish(`{"user":"u","data":"m1"}`)[0]

	// m1 expires, and the idle stream is freed one TTL later (by the janitor, on real time).
	h.clock.Advance(5 * ttl)
	for h.store.Stats().Streams != 0 {
		select {
		case <-t.Context().Done():
			t.Fatal("the idle stream was never freed")
		case <-time.After(10 * time.Millisecond):
		}
	}
	a := h.poll("u", "?cursor="+url.QueryEscape(first))
	if !a.Reset {
		t.Fatalf("poll after an expired message: reset=false, cursor %q", a.Cursor)
	}

	// The client resumes from the cursor it was given. m2 expires before it reads again; m3 is
	// still there.
	m2 := h.publish(`{"user":"u","data":"m2"}`)[0]
	h.clock.Advance(ttl / 2)
	h.publish(`{"user":"u","data":"m3"}`)
	h.clock.Advance(ttl/2 + time.Second)
	b := h.poll("u", "?cursor="+url.QueryEscape(a.Cursor))
	if !b.Reset && (len(b.Messages) == 0 || b.Messages[0].ID != m2) {
		var got []string
		for _, m := range b.Messages {
			got = append(got, m.ID)
		}
		t.Errorf("the reset's cursor was %q; resuming from it, m2 (%s) expired unreported: got %v, reset=false", a.Cursor, m2, got)
	}
}
