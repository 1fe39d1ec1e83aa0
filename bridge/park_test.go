package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// serveParking starts a real HTTP/1.1 server on h's Server through its Listener, as cmd/bridged
// does, so long-polls hand their connections back.
func (h *harness) serveParking() string {
	h.t.Helper()
	return h.serveParkingWith(nil)
}

// serveParkingWith is serveParking with tweak applied to the http.Server first.
func (h *harness) serveParkingWith(tweak func(*http.Server)) string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	return h.serveParkingOn(ln, tweak)
}

// serveParkingOn is serveParkingWith on ln.
func (h *harness) serveParkingOn(ln net.Listener, tweak func(*http.Server)) string {
	h.t.Helper()
	srv := &http.Server{Handler: h.srv, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	if tweak != nil {
		tweak(srv)
	}
	go srv.Serve(h.srv.Listener(ln, srv))
	h.t.Cleanup(func() {
		h.srv.Drain()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.srv.Wait(ctx); err != nil {
			h.t.Errorf("parked connections still open after the test: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// servePlain serves h's Server on a plain net/http server, settings as serveParking's but without
// Listener: net/http's own answers, to compare bridged's fast paths with.
func (h *harness) servePlain() string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	srv := &http.Server{Handler: h.srv, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	go srv.Serve(ln)
	h.t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// rawRequests dials base and writes the requests ("METHOD target" each) back to back in one
// write, so net/http reads past the first; the connection is closed when the test ends.
func rawRequests(t *testing.T, base string, requests ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	for _, r := range requests {
		b.WriteString(r + " HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// getReused runs a GET and reports whether it went over a connection used before.
func getReused(t *testing.T, c *http.Client, url string) (*http.Response, []byte, bool) {
	t.Helper()
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", url, nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body, reused
}

// waitUntil polls cond for up to five seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
	}
}

func TestParkedLongPollKeepsItsConnection(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()

	// First long-poll: parks, then a publish wakes it.
	go func() {
		waitUntil(t, "the long-poll parks", func() bool { return h.srv.conns.total.Load() == 1 })
		h.publish(`{"user":"u","data":"woke"}`)
	}()
	res, body, _ := getReused(t, c, base+"/v1/poll?wait=10s&token="+tok)
	var a pollAnswer
	decode(t, body, &a)
	if res.StatusCode != http.StatusOK || len(a.Messages) != 1 || string(a.Messages[0].Data) != `"woke"` {
		t.Fatalf("woken long-poll: %d %s", res.StatusCode, body)
	}
	if res.Close || res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("answer closes the connection or lost the middleware's headers: %v", res.Header)
	}

	// The next ones ride the same connection, handed back to the listener: one times out, one
	// is answered at once.
	res, body, reused := getReused(t, c, base+"/v1/poll?wait=50ms&token="+tok+"&cursor="+a.Cursor)
	decode(t, body, &a)
	if !reused || res.StatusCode != http.StatusOK || len(a.Messages) != 0 {
		t.Fatalf("second long-poll: reused %v, %d %s", reused, res.StatusCode, body)
	}
	if _, _, reused = getReused(t, c, base+"/healthz"); !reused {
		t.Fatal("a request after two long-polls opened a new connection")
	}
	if n := h.srv.conns.total.Load(); n != 0 {
		t.Fatalf("%d connection slots still held", n)
	}
}

func TestParkedLongPollReplaysPipelinedRequest(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	// Both requests in one write: net/http reads the second into its buffer with the first.
	conn := rawRequests(t, base, "GET /v1/poll?wait=100ms&token="+token(t, "u", time.Hour), "GET /healthz")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(conn)
	for i, want := range []string{`"messages":[]`, `"status":"ok"`} {
		res, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("answer %d: %d %s, want %s", i, res.StatusCode, body, want)
		}
	}
}

func TestParkedConnectionsFreeTheirSlotWhenTheClientLeaves(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	var conns []net.Conn
	for _, req := range []string{"/v1/sse?token=" + tok, "/v1/poll?wait=30s&token=" + tok} {
		conns = append(conns, rawRequests(t, base, "GET "+req))
	}
	waitUntil(t, "both clients hold a slot", func() bool { return h.srv.conns.total.Load() == 2 })
	for _, c := range conns {
		c.Close()
	}
	// Nothing is published and no heartbeat is due: only the parked goroutine's Read sees them go.
	waitUntil(t, "the slots are freed", func() bool { return h.srv.conns.total.Load() == 0 })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := h.srv.Wait(ctx); err != nil {
		t.Fatalf("parked goroutines still running after their clients left: %v", err)
	}
}

func TestParkedLongPollAnswersOnDrain(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	done := make(chan []byte)
	go func() {
		res, err := http.Get(base + "/v1/poll?wait=30s&token=" + token(t, "u", time.Hour))
		if err != nil {
			t.Error(err)
			close(done)
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		done <- b
	}()
	waitUntil(t, "the long-poll parks", func() bool { return h.srv.conns.total.Load() == 1 })
	h.srv.Drain()
	select {
	case b := <-done:
		var a pollAnswer
		if err := json.Unmarshal(b, &a); err != nil || a.Cursor == "" {
			t.Fatalf("answer on drain: %s", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a parked long-poll was not answered on Drain")
	}
}

func TestParkedLongPollWithoutListenerClosesAfterAnswer(t *testing.T) {
	h := newHarness(t, nil)
	ts := httptest.NewServer(h.srv) // a plain listener: nowhere to hand the connection back
	defer ts.Close()
	res, err := http.Get(ts.URL + "/v1/poll?wait=50ms&token=" + token(t, "u", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if b, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusOK || !res.Close {
		t.Fatalf("want 200 with Connection: close, got %d close=%v %s", res.StatusCode, res.Close, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Wait(ctx); err != nil { // the parked goroutine logs its line after the answer
		t.Fatal(err)
	}
}

func TestHeadIsNotParked(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	// A HEAD answer must carry no body: a parked answer would put one on the wire, and the
	// next answer on the connection would not parse.
	conn := rawRequests(t, base, "HEAD /v1/poll?wait=50ms&token="+token(t, "u", time.Hour), "GET /healthz")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(conn)
	head, err := http.ReadResponse(rd, &http.Request{Method: "HEAD"})
	if err != nil || head.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: %v %v", head, err)
	}
	next, err := http.ReadResponse(rd, nil)
	if err != nil || next.StatusCode != http.StatusOK {
		t.Fatalf("the answer after HEAD: %v %v", next, err)
	}
	if b, _ := io.ReadAll(next.Body); !strings.Contains(string(b), `"status":"ok"`) {
		t.Fatalf("the answer after HEAD: %s", b)
	}
}

func TestAppendDate(t *testing.T) {
	for _, now := range []time.Time{
		time.Date(2026, 11, 24, 21, 30, 5, 0, time.UTC),
		time.Date(2026, 11, 24, 21, 30, 5, 999_999_999, time.UTC), // the same second: the cached text
		time.Date(2026, 11, 24, 22, 30, 6, 0, time.FixedZone("CET", 3600)),
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got, want := string(appendDate([]byte("x"), now)), "x"+now.UTC().Format(http.TimeFormat); got != want {
			t.Errorf("appendDate(%v) = %q, want %q", now, got, want)
		}
	}
}

// A connection handed to net/http with bytes already read serves them first, then lets them go:
// an SSE stream lives for hours on it.
func TestOwnedConnReadsPendingThenDropsIt(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := &ownedConn{Conn: server, pending: []byte("GET / HTTP/1.1\r\n")}
	go client.Write([]byte("Host: x\r\n\r\n"))
	got := make([]byte, 0, 64)
	buf := make([]byte, 5)
	for len(got) < len("GET / HTTP/1.1\r\nHost: x\r\n\r\n") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "GET / HTTP/1.1\r\nHost: x\r\n\r\n" {
		t.Fatalf("read %q", got)
	}
	if c.pending != nil {
		t.Fatalf("pending still holds its array (cap %d)", cap(c.pending))
	}
}
