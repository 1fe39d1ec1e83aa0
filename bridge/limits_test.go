package bridge

import (
	"net/http"
	"testing"
	"time"
)

func TestConnectionLimits(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxConnectionsPerUser = 2; o.MaxConnections = 3 })
	ts := h.serve()
	a1 := openSSE(t, ts.URL, "", token(t, "a", time.Hour), nil)
	a1.expect("hello")
	a2 := openSSE(t, ts.URL, "", token(t, "a", time.Hour), nil)
	a2.expect("hello")

	rec := h.do("GET", "/v1/sse", token(t, "a", time.Hour), "")
	if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != "too_many_connections" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("third stream of one user: %d %s", rec.Code, rec.Body)
	}
	// A waiting long-poll counts too; a plain poll holds nothing and is never refused.
	if rec := h.do("GET", "/v1/poll?wait=5s", token(t, "a", time.Hour), ""); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("long-poll over the user cap: %d", rec.Code)
	}
	if rec := h.do("GET", "/v1/poll", token(t, "a", time.Hour), ""); rec.Code != http.StatusOK {
		t.Fatalf("plain poll over the cap: %d", rec.Code)
	}

	b1 := openSSE(t, ts.URL, "", token(t, "b", time.Hour), nil)
	b1.expect("hello")
	rec = h.do("GET", "/v1/sse", token(t, "c", time.Hour), "")
	if rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != "overloaded" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("stream over the node cap: %d %s", rec.Code, rec.Body)
	}

	// Closing a stream gives its slot back.
	a1.resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.conns.total.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %d open", h.srv.conns.total.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c := openSSE(t, ts.URL, "", token(t, "c", time.Hour), nil)
	c.expect("hello")
}

func TestScopes(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "u", time.Hour)
	tests := []struct {
		scope        Scope
		method, path string
		auth         string
		status       int
	}{
		{Public, "POST", "/v1/publish", testPublishKey, 404},
		{Public, "GET", "/v1/admin/messages", testAdminKey, 404},
		{Public, "GET", "/v1/admin/stats", testAdminKey, 404},
		{Public, "GET", "/v1/poll", tok, 200},
		{Public, "GET", "/healthz", "", 200},
		{Internal, "GET", "/v1/poll", tok, 404},
		{Internal, "GET", "/v1/sse", tok, 404},
		{Internal, "POST", "/v1/ticket", tok, 404},
		{Internal, "GET", "/v1/admin/stats", testAdminKey, 200},
		{Internal, "GET", "/readyz", "", 200},
		{All, "GET", "/v1/admin/stats", testAdminKey, 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", "Bearer "+tt.auth)
		}
		rec := newRecorder()
		h.srv.Handler(tt.scope).ServeHTTP(rec, req)
		if rec.Code != tt.status {
			t.Errorf("scope %d %s %s: %d, want %d", tt.scope, tt.method, tt.path, rec.Code, tt.status)
		}
	}
	// Publishing on the internal scope works.
	req, _ := http.NewRequest("POST", "/v1/publish", stringsReader(`{"user":"u","data":1}`))
	req.Header.Set("Authorization", "Bearer "+testPublishKey)
	rec := newRecorder()
	h.srv.Handler(Internal).ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("publish on the internal scope: %d", rec.Code)
	}
}

func TestAdminStats(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	h.publish(`{"messages":[{"user":"a","data":1},{"user":"b","data":2}]}`)
	s := openSSE(t, ts.URL, "", token(t, "a", time.Hour), nil)
	s.expect("hello")
	var st struct {
		Goroutines  int
		Connections struct{ SSE, LongPoll, WS, Total int64 }
		Store       struct{ Streams, Messages, Bytes int64 }
		Draining    bool
	}
	decode(t, h.do("GET", "/v1/admin/stats", testAdminKey, "").Body.Bytes(), &st)
	if st.Goroutines == 0 || st.Connections.SSE != 1 || st.Connections.Total != 1 || st.Store.Messages != 2 || st.Store.Streams != 2 || st.Draining {
		t.Fatalf("stats %+v", st)
	}
}
