package faultproxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// backend is a small server with the shapes of traffic the proxy must break.
func backend(t *testing.T, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: hello\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/v1/poll", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Query().Get("wait") != "" {
			<-r.Context().Done()
			return
		}
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Write(r.Context(), websocket.MessageText, []byte("hi"))
		c.CloseRead(r.Context())
		<-r.Context().Done()
	})
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func start(t *testing.T) (*Proxy, *httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	be := backend(t, &hits)
	u, _ := url.Parse(be.URL)
	p := New(u, map[string]*url.URL{"/app/": u})
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	return p, ts, &hits
}

func get(t *testing.T, ctx context.Context, u string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	return http.DefaultClient.Do(req)
}

func TestHealthyProxyCarriesEverything(t *testing.T) {
	_, ts, _ := start(t)
	resp, err := get(t, t.Context(), ts.URL+"/v1/poll")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `{"ok":true}` {
		t.Fatalf("poll through the proxy: %s", b)
	}
	c, _, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/app/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket through the proxy (prefix route): %v", err)
	}
	defer c.CloseNow()
	if _, m, err := c.Read(t.Context()); err != nil || string(m) != "hi" {
		t.Fatalf("read: %q %v", m, err)
	}
}

func TestRefuseUpgradeDropsAndRefuses(t *testing.T) {
	p, ts, _ := start(t)
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/app/ws"
	c, _, err := websocket.Dial(t.Context(), wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Read(t.Context())
	p.Set(Faults{RefuseUpgrade: true})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("open WebSocket survived RefuseUpgrade: %v", err)
	}
	if _, resp, err := websocket.Dial(t.Context(), wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upgrade through a refusing proxy: %v %v", resp, err)
	}
	if s := p.Stats(); s.Refused != 1 || s.Cut != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The dropped tunnel's handler returns after the client has seen the drop.
	for deadline := time.Now().Add(10 * time.Second); p.Stats().Open["ws"] != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("a dropped WebSocket is still counted open: %+v", p.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBufferEventStreamHoldsFrames(t *testing.T) {
	p, ts, _ := start(t)
	p.Set(Faults{BufferEventStream: true})
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := get(t, ctx, ts.URL+"/v1/sse")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() { l, _ := bufio.NewReader(resp.Body).ReadString('\n'); got <- l }()
	// The backend wrote its hello at once; a buffering proxy keeps it. Ending the request is
	// the only way the reader returns, and it must return with nothing.
	time.Sleep(200 * time.Millisecond)
	cancel()
	if l := <-got; l != "" {
		t.Fatalf("a frame passed the buffering proxy: %q", l)
	}
	resp.Body.Close()
}

func TestCutAfterDropsLongRequests(t *testing.T) {
	p, ts, _ := start(t)
	p.Set(Faults{CutAfterMs: 100})
	resp, err := get(t, t.Context(), ts.URL+"/v1/poll?wait=25s")
	if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("long-poll through a cutting proxy: %v %v, want 504", resp, err)
	}
	resp.Body.Close()
	if s := p.Stats(); s.Cut < 1 {
		t.Fatalf("stats %+v: no cut", s)
	}
}

func TestFailAndDropRules(t *testing.T) {
	p, ts, hits := start(t)
	p.Set(Faults{
		Fail: []FailRule{{Path: "/v1/poll", Status: 503, RetryAfter: 2, Count: 1}},
		Drop: []DropRule{{Path: "/v1/poll", Count: 1}},
	})
	resp, err := get(t, t.Context(), ts.URL+"/v1/poll")
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("fail rule: %v %v", resp, err)
	}
	resp.Body.Close()
	if hits.Load() != 0 {
		t.Fatal("a failed request reached the backend")
	}
	if resp, err := get(t, t.Context(), ts.URL+"/v1/poll"); err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil {
			t.Fatalf("drop rule answered: %s", b)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("dropped request reached the backend %d times, want 1", hits.Load())
	}
	if resp, err := get(t, t.Context(), ts.URL+"/v1/poll"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the rules ran out: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestControlOverHTTP(t *testing.T) {
	p, ts, _ := start(t)
	req, _ := http.NewRequest("PUT", ts.URL+"/__faultproxy/faults", strings.NewReader(`{"refuseUpgrade":true,"cutAfterMs":5000}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT faults: %v %v", resp, err)
	}
	resp.Body.Close()
	if f := p.Faults(); !f.RefuseUpgrade || f.CutAfterMs != 5000 {
		t.Fatalf("faults %+v", f)
	}
	req, _ = http.NewRequest("PUT", ts.URL+"/__faultproxy/faults", strings.NewReader(`{"nonsense":1}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("bad faults: %v %v", resp, err)
	}
}
