package bridge

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/cachetest"
	"github.com/bridged/bridged/cache/memory"
)

const (
	testSecret     = "test-secret-test-secret-test-secret!"
	testPublishKey = "publish-key-0123456789"
	testAdminKey   = "admin-key-0123456789"
)

type harness struct {
	t     *testing.T
	srv   *Server
	store *memory.Store
	clock *cachetest.Clock
}

func newHarness(t *testing.T, tweak func(*Options)) *harness {
	t.Helper()
	return newHarnessWith(t, cache.Options{TTL: time.Minute}, tweak)
}

// newHarnessWith builds a harness whose memory store is configured by so, on a fake clock.
func newHarnessWith(t *testing.T, so cache.Options, tweak func(*Options)) *harness {
	t.Helper()
	clk := cachetest.NewClock()
	so.Now = clk.Now
	store := memory.New(so)
	t.Cleanup(func() { store.Close() })
	o := Options{
		Store:      store,
		Log:        zaptest.NewLogger(t),
		JWTSecret:  []byte(testSecret),
		PublishKey: testPublishKey,
		AdminKey:   testAdminKey,
		Heartbeat:  time.Hour,
	}
	if tweak != nil {
		tweak(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, store: store, clock: clk}
}

func token(t testing.TB, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
	}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do runs one request through the server and returns the recorded response.
func (h *harness) do(method, target, auth, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	return rec
}

func (h *harness) publish(body string) []string {
	h.t.Helper()
	rec := h.do("POST", "/v1/publish", testPublishKey, body)
	if rec.Code != http.StatusOK {
		h.t.Fatalf("publish %s: %d %s", body, rec.Code, rec.Body)
	}
	var out struct{ IDs []string }
	decode(h.t, rec.Body.Bytes(), &out)
	return out.IDs
}

type pollAnswer struct {
	Messages []struct {
		ID    string          `json:"id"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
		Time  string          `json:"time"`
	} `json:"messages"`
	Cursor string `json:"cursor"`
	Reset  bool   `json:"reset"`
	More   bool   `json:"more"`
}

func (h *harness) poll(user, query string) pollAnswer {
	h.t.Helper()
	rec := h.do("GET", "/v1/poll"+query, token(h.t, user, time.Hour), "")
	if rec.Code != http.StatusOK {
		h.t.Fatalf("poll %s: %d %s", query, rec.Code, rec.Body)
	}
	var a pollAnswer
	decode(h.t, rec.Body.Bytes(), &a)
	return a
}

// stored returns every retained message as "user:data", the store's whole visible state.
func (h *harness) stored() []string {
	h.t.Helper()
	var out []string
	err := h.store.Scan(h.t.Context(), "", func(stream string, m cache.Message) error {
		out = append(out, stream+":"+string(m.Data))
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func decode(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
}

// errorCode returns the code of a JSON error answer, failing if the body is not one.
func errorCode(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error answer has Content-Type %q", ct)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	decode(t, rec.Body.Bytes(), &e)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error answer without code or message: %s", rec.Body)
	}
	return e.Error.Code
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

// serve starts a real HTTP server for streaming tests. It is closed after the test's other
// cleanups (those registered later run first), so open client streams end before it waits.
func (h *harness) serve() *httptest.Server {
	ts := httptest.NewServer(h.srv)
	h.t.Cleanup(func() {
		ts.Close()
		// Parked streams are no longer net/http's: end them and wait, so none logs after the test.
		// (coder/websocket's Close waits up to 5 s for a close handshake a test's client skipped.)
		h.srv.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Wait(ctx); err != nil {
			h.t.Errorf("streams still open after the test: %v", err)
		}
	})
	return ts
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
