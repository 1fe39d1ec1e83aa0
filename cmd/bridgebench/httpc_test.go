package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type event struct{ name, data string }

func readEvents(t *testing.T, sr *sseReader, n int) []event {
	t.Helper()
	var out []event
	for len(out) < n {
		ev, data, err := sr.next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		out = append(out, event{string(ev), string(data)})
	}
	return out
}

// sseFrames is a stream in the shapes both targets send: bridged's retry/hello/id/event/data,
// Nchan's ": hi" comment and id/data without an event, a multi-line data, CR LF endings.
const sseFrames = "retry: 2000\nevent: hello\ndata: {\"cursor\":\"\"}\n\n" +
	": hi\n\n" +
	"id: 1795536711:0\ndata: {\"bt\":1,\"bs\":0,\"bu\":7}\n\n" +
	"id: k-1\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n" +
	"event: ping\ndata: {}\n\n"

var sseWant = []event{{"hello", `{"cursor":""}`}, {"", `{"bt":1,"bs":0,"bu":7}`}, {"message", "a\nb"}, {"ping", "{}"}}

func TestConnReadsChunkedEventStream(t *testing.T) {
	// net/http chunks a flushed stream (as bridged's is); flush byte by byte to split every
	// line across chunks.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range len(sseFrames) {
			io.WriteString(w, sseFrames[i:i+1])
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c, err := dial(t.Context(), srv.Listener.Addr().String(), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.write([]byte("GET /v1/sse HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	h, err := c.readHead()
	if err != nil {
		t.Fatal(err)
	}
	if h.status != 200 || !h.chunked {
		t.Fatalf("head %+v, want 200 chunked", h)
	}
	sr := newSSEReader(c.body(h), 16) // smaller than a line: exercises the scratch path
	got := readEvents(t, sr, len(sseWant))
	if fmt.Sprint(got) != fmt.Sprint(sseWant) {
		t.Errorf("events %v, want %v", got, sseWant)
	}
	if _, _, err := sr.next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last event: %v, want EOF", err)
	}
}

// rawServer answers one connection with the given bytes, whatever it is asked, then closes.
func rawServer(t *testing.T, answer string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for { // the request head
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, answer)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestConnReadsIdentityEventStream(t *testing.T) {
	// Nchan's event stream has neither Content-Length nor chunks: it runs until the close.
	addr := rawServer(t, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n"+sseFrames)
	c, err := dial(t.Context(), addr, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.write([]byte("GET /sse/u1 HTTP/1.1\r\nHost: x\r\n\r\n"))
	h, err := c.readHead()
	if err != nil || h.status != 200 || h.chunked || h.contentLength != -1 {
		t.Fatalf("head %+v, %v", h, err)
	}
	got := readEvents(t, newSSEReader(c.body(h), 1024), len(sseWant))
	if fmt.Sprint(got) != fmt.Sprint(sseWant) {
		t.Errorf("events %v, want %v", got, sseWant)
	}
}

func TestConnRoundTrips(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		want   respHead
		body   string
	}{
		{"content-length with Nchan's cursor headers",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: Tue, 24 Nov 2026 16:11:51 GMT\r\nEtag: 3\r\n\r\nhello",
			respHead{status: 200, contentLength: 5, lastModified: "Tue, 24 Nov 2026 16:11:51 GMT", etag: "3"}, "hello"},
		{"chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
			respHead{status: 200, contentLength: -1, chunked: true}, "abcde"},
		{"304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
			respHead{status: 304, contentLength: 0}, ""},
		{"connection close", "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
			respHead{status: 408, contentLength: 2, close: true}, "no"},
		{"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\n\r\nuntil the end",
			respHead{status: 200, contentLength: -1, close: true}, "until the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dial(t.Context(), rawServer(t, tt.answer), 64)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			h, body, took, err := c.roundTrip([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), make([]byte, 0, 2))
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want || string(body) != tt.body {
				t.Errorf("got %+v %q, want %+v %q", h, body, tt.want, tt.body)
			}
			if took <= 0 || took > time.Minute {
				t.Errorf("round trip took %v", took)
			}
		})
	}
}

func TestConnRejectsGarbage(t *testing.T) {
	for _, answer := range []string{"SSH-2.0-OpenSSH\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: -x\r\n\r\n"} {
		c, err := dial(t.Context(), rawServer(t, answer), 64)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.roundTrip([]byte("GET / HTTP/1.1\r\n\r\n"), nil); err == nil {
			t.Errorf("%q: no error", answer)
		}
		c.close()
	}
}

func TestHeadTooLong(t *testing.T) {
	c, err := dial(t.Context(), rawServer(t, "HTTP/1.1 200 OK\r\nX: "+strings.Repeat("a", 200)+"\r\n\r\n"), 64)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := c.readHead(); !errors.Is(err, errHeadTooLong) {
		t.Errorf("a header line longer than the buffer: %v, want errHeadTooLong", err)
	}
}
