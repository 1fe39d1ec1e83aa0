package bridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
)

// frame is one parsed SSE event block.
type frame struct {
	ID, Event, Data string
	HasID           bool
	Retry           string
}

// stream is an open SSE response read with r3labs' EventStreamReader, an independent parser.
type stream struct {
	t    *testing.T
	resp *http.Response
	r    *sse.EventStreamReader
}

func openSSE(t *testing.T, base, query, auth string, header http.Header) *stream {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/v1/sse"+query, nil)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &stream{t: t, resp: resp, r: sse.NewEventStreamReader(resp.Body, 1<<20)}
}

func (s *stream) next() frame {
	s.t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() { b, err := s.r.ReadEvent(); ch <- result{b, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			s.t.Fatalf("read frame: %v", r.err)
		}
		return parseFrame(r.b)
	case <-time.After(10 * time.Second):
		s.t.Fatal("no frame within 10s")
	}
	return frame{}
}

// parseFrame applies the WHATWG field rules to one event block.
func parseFrame(b []byte) frame {
	var f frame
	var data []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, ":") {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			f.ID, f.HasID = value, true
		case "event":
			f.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			f.Retry = value
		}
	}
	f.Data = strings.Join(data, "\n")
	return f
}

func (s *stream) expect(event string) frame {
	s.t.Helper()
	f := s.next()
	if f.Event != event {
		s.t.Fatalf("frame %+v, want event %q", f, event)
	}
	return f
}

func TestSSEHelloThenReplayThenLive(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	ids := h.publish(`{"messages":[{"user":"u","event":"a","data":1},{"user":"u","event":"b","data":{"x":"y"}}]}`)

	s := openSSE(t, ts.URL, "", token(t, "u", time.Hour), nil)
	for k, want := range map[string]string{
		"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no",
	} {
		if got := s.resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	hello := s.expect("hello")
	if hello.HasID || hello.Retry != "2000" {
		t.Fatalf("hello frame %+v: want retry 2000 and no id", hello)
	}
	for i, want := range []string{"a", "b"} {
		f := s.expect(want)
		if f.ID != ids[i] {
			t.Fatalf("frame %d id %q, want %q", i, f.ID, ids[i])
		}
		var m struct{ ID, Event string }
		if err := json.Unmarshal([]byte(f.Data), &m); err != nil || m.ID != ids[i] || m.Event != want {
			t.Fatalf("frame %d data %q is not the message object", i, f.Data)
		}
	}
	live := h.publish(`{"user":"u","event":"c","data":3}`)
	if f := s.expect("c"); f.ID != live[0] {
		t.Fatalf("live frame id %q, want %q", f.ID, live[0])
	}
}

func TestSSEResumeLastEventIDBeatsCursor(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	ids := h.publish(`{"messages":[{"user":"u","data":1},{"user":"u","data":2},{"user":"u","data":3}]}`)
	s := openSSE(t, ts.URL, "?cursor="+ids[0], token(t, "u", time.Hour), http.Header{"Last-Event-Id": {ids[1]}})
	s.expect("hello")
	if f := s.expect("message"); f.ID != ids[2] {
		t.Fatalf("resumed at %q, want %q (after Last-Event-ID)", f.ID, ids[2])
	}
	q := openSSE(t, ts.URL, "?cursor="+ids[0]+"&token="+token(t, "u", time.Hour), "", nil)
	q.expect("hello")
	if f := q.expect("message"); f.ID != ids[1] {
		t.Fatalf("resumed at %q, want %q (after cursor)", f.ID, ids[1])
	}
}

func TestSSEResetCarriesNewPosition(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	old := h.publish(`{"messages":[{"user":"u","data":1},{"user":"u","data":2}]}`)
	h.clock.Advance(2 * time.Minute)
	fresh := h.publish(`{"user":"u","data":3}`)

	s := openSSE(t, ts.URL, "?cursor="+old[0], token(t, "u", time.Hour), nil)
	s.expect("hello")
	reset := s.expect("reset")
	if !reset.HasID || reset.ID == "" {
		t.Fatalf("reset frame %+v carries no id; the browser would resume from the stale one", reset)
	}
	if f := s.expect("message"); f.ID != fresh[0] {
		t.Fatalf("after reset got %q, want %q", f.ID, fresh[0])
	}
	// Resuming from the reset's id is not another reset.
	again := openSSE(t, ts.URL, "", token(t, "u", time.Hour), http.Header{"Last-Event-Id": {reset.ID}})
	again.expect("hello")
	if f := again.next(); f.Event != "message" || f.ID != fresh[0] {
		t.Fatalf("resume from the reset id: %+v", f)
	}
}

func TestSSEHeartbeatAndDrain(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Heartbeat = 20 * time.Millisecond })
	ts := h.serve()
	s := openSSE(t, ts.URL, "", token(t, "u", time.Hour), nil)
	s.expect("hello")
	if p := s.expect("ping"); p.HasID || p.Data == "" {
		t.Fatalf("ping %+v: want data (so EventSource dispatches it) and no id", p)
	}
	h.srv.Drain()
	for {
		f := s.next()
		if f.Event == "ping" {
			continue
		}
		if f.Event != "close" || !strings.Contains(f.Data, `"shutdown"`) {
			t.Fatalf("on drain got %+v, want close/shutdown", f)
		}
		break
	}
	if _, err := s.r.ReadEvent(); err == nil {
		t.Fatal("stream still open after the close frame")
	}
	// New streams are refused while draining.
	late := openSSE(t, ts.URL, "", token(t, "u", time.Hour), nil)
	if late.resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("SSE while draining: %d", late.resp.StatusCode)
	}
}

func TestSSETokenExpiryEndsStream(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	s := openSSE(t, ts.URL, "", token(t, "u", 1500*time.Millisecond), nil)
	s.expect("hello")
	f := s.expect("close")
	if !strings.Contains(f.Data, `"token_expired"`) {
		t.Fatalf("close frame %+v, want reason token_expired", f)
	}
}

func TestSSEDataCannotForgeFrames(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	evil := `"x\n\nid: 999\nevent: admin\r\rdata: forged\r\n"`
	ids := h.publish(`{"user":"u","event":"msg","data":` + evil + `}`)
	h.publish(`{"user":"u","event":"next","data":2}`)
	s := openSSE(t, ts.URL, "", token(t, "u", time.Hour), nil)
	s.expect("hello")
	f := s.expect("msg")
	if f.ID != ids[0] {
		t.Fatalf("id %q, want %q", f.ID, ids[0])
	}
	var m struct{ Data string }
	if err := json.Unmarshal([]byte(f.Data), &m); err != nil || m.Data != "x\n\nid: 999\nevent: admin\r\rdata: forged\r\n" {
		t.Fatalf("data did not survive intact: %q (%v)", f.Data, err)
	}
	s.expect("next")
}

func TestSSEBadCursor(t *testing.T) {
	h := newHarness(t, nil)
	rec := h.do("GET", "/v1/sse?cursor=oops", token(t, "u", time.Hour), "")
	if rec.Code != http.StatusBadRequest || errorCode(t, rec) != "bad_cursor" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// A browser's integer Last-Event-ID from some other server is malformed too, not a crash.
	req := httptest.NewRequest("GET", "/v1/sse", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "u", time.Hour))
	req.Header.Set("Last-Event-ID", "17")
	rec = httptest.NewRecorder()
	h.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("integer Last-Event-ID: %d", rec.Code)
	}
}

func TestSlowReaderIsCutAndHoldsNobodyBack(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WriteTimeout = 200 * time.Millisecond })
	ts := h.serve()
	tok := token(t, "u", time.Hour)

	// The slow client: a socket with a tiny receive buffer that reads the hello and then nothing.
	slow, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(slow, "GET /v1/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	buf := make([]byte, 4096)
	for got := ""; !strings.Contains(got, "event: hello"); {
		n, err := slow.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += string(buf[:n])
	}
	healthy := openSSE(t, ts.URL, "", tok, nil)
	healthy.expect("hello")

	// Publish big messages until the server gives up on the slow client. Every publish returns
	// (the slow reader never holds up the publisher), and the healthy reader keeps up.
	big := strings.Repeat("x", 60_000)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; h.srv.conns.total.Load() > 1; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the slow client was never disconnected")
		}
		h.publish(fmt.Sprintf(`{"user":"u","event":"big","data":"%s"}`, big))
		for {
			f := healthy.next()
			if f.Event == "big" {
				break
			}
			if f.Event != "reset" && f.Event != "ping" {
				t.Fatalf("healthy reader got %+v", f)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The healthy stream is still live.
	id := h.publish(`{"user":"u","event":"after","data":1}`)[0]
	if f := healthy.expect("after"); f.ID != id {
		t.Fatalf("after the cut: %+v", f)
	}
}
