package bridge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoutingErrorsAreJSON(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"DELETE", "/v1/poll", 405, "GET"},
		{"GET", "/v1/publish", 405, "POST"},
		{"PUT", "/v1/sse", 405, "GET"},
		{"POST", "/v1/admin/messages", 405, "GET"},
		{"GET", "/nope", 404, ""},
		{"GET", "/", 404, ""}, // the demo page exists only in demo mode
		{"GET", "/demo/token?user=u", 404, ""},
	}
	for _, tt := range tests {
		rec := h.do(tt.method, tt.path, "", "")
		if rec.Code != tt.status || rec.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d Allow=%q", tt.method, tt.path, rec.Code, rec.Header().Get("Allow"))
			continue
		}
		errorCode(t, rec)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	h := newHarness(t, nil)
	if rec := h.do("GET", "/healthz", "", ""); rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
	if rec := h.do("GET", "/readyz", "", ""); rec.Code != 200 {
		t.Fatalf("readyz %d", rec.Code)
	}
	h.store.Close()
	if rec := h.do("GET", "/readyz", "", ""); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with a closed store: %d", rec.Code)
	}
	if rec := h.do("GET", "/healthz", "", ""); rec.Code != 200 {
		t.Fatalf("healthz must only say the process runs: %d", rec.Code)
	}
}

func TestSecurityHeadersAndCORS(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.CORSOrigins = []string{"https://app.example"} })
	req := func(method, origin string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/v1/poll", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, r)
		return rec
	}
	plain := req("GET", "", nil)
	if plain.Header().Get("X-Content-Type-Options") != "nosniff" || plain.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("headers without Origin: %v", plain.Header())
	}
	pre := req("OPTIONS", "https://app.example", map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
	if pre.Code != http.StatusNoContent || pre.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(pre.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(pre.Header().Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight from an allowed origin: %d %v", pre.Code, pre.Header())
	}
	simple := req("GET", "https://app.example", nil).Header()
	if simple.Get("Access-Control-Allow-Origin") != "https://app.example" || simple.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("simple request from an allowed origin: %v", simple)
	}
	evil := req("OPTIONS", "https://evil.example", map[string]string{"Access-Control-Request-Method": "GET"})
	if evil.Header().Get("Access-Control-Allow-Origin") != "" || evil.Code == http.StatusNoContent {
		t.Fatalf("preflight from another origin was allowed: %d %v", evil.Code, evil.Header())
	}
	if v := req("GET", "https://evil.example", nil).Header().Values("Vary"); len(v) == 0 {
		t.Fatal("no Vary: Origin, so a cache could serve one origin's answer to another")
	}
}

func TestDemoEndpoints(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Demo = &Demo{Users: []string{"alice"}, PublishKey: testPublishKey} })
	page := h.do("GET", "/", "", "")
	if page.Code != 200 || !strings.Contains(page.Header().Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("demo page: %d CSP %q", page.Code, page.Header().Get("Content-Security-Policy"))
	}
	var tok struct{ User, Token string }
	decode(t, h.do("GET", "/demo/token?user=alice", "", "").Body.Bytes(), &tok)
	if _, err := h.srv.verifyToken(tok.Token); err != nil || tok.User != "alice" {
		t.Fatalf("demo token %+v does not verify: %v", tok, err)
	}
	if rec := h.do("GET", "/demo/token?user=", "", ""); rec.Code != 400 {
		t.Fatalf("demo token without a user: %d", rec.Code)
	}
	var info struct {
		Users      []string
		PublishKey string
	}
	decode(t, h.do("GET", "/demo/info", "", "").Body.Bytes(), &info)
	if len(info.Users) != 1 || info.PublishKey != testPublishKey {
		t.Fatalf("demo info %+v", info)
	}
}
