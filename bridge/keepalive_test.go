package bridge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// keptConn dials base and runs one long-poll that times out after 20ms, so the connection is
// kept by the goroutine that answered it (keepalive.go) when the test writes its next request.
func keptConn(t *testing.T, base, tok string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn := rawRequests(t, base, "GET /v1/poll?wait=20ms&token="+tok)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	res, body := readAnswer(t, rd, "GET")
	if res.StatusCode != http.StatusOK || res.Close || !strings.Contains(body, `"messages":[]`) {
		t.Fatalf("first long-poll: %d close=%v %s", res.StatusCode, res.Close, body)
	}
	return conn, rd
}

func readAnswer(t *testing.T, rd *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(rd, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading an answer's body: %v", err)
	}
	return res, string(b)
}

func TestKeptConnectionServesRepolls(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	conn, rd := keptConn(t, base, tok)
	kept := h.srv.parked.keptServed.Load()

	var a pollAnswer
	cursor := ""
	for i, data := range []string{`"one"`, `"two"`, `"three"`} {
		// A long-poll on the kept connection parks again; a publish wakes it.
		if _, err := io.WriteString(conn, "GET /v1/poll?wait=10s&cursor="+cursor+"&token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the re-poll parks", func() bool { return h.srv.conns.total.Load() == 1 })
		h.publish(`{"user":"u","data":` + data + `}`)
		res, body := readAnswer(t, rd, "GET")
		decode(t, []byte(body), &a)
		if res.StatusCode != http.StatusOK || res.Close || len(a.Messages) != 1 || string(a.Messages[0].Data) != data {
			t.Fatalf("re-poll %d: %d close=%v %s", i, res.StatusCode, res.Close, body)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("re-poll %d lost the middleware's headers: %v", i, res.Header)
		}
		cursor = a.Cursor
	}
	// A plain poll is answered on the kept connection too, and the connection stays open.
	if _, err := io.WriteString(conn, "GET /v1/poll?token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, body := readAnswer(t, rd, "GET")
	decode(t, []byte(body), &a)
	if res.StatusCode != http.StatusOK || len(a.Messages) != 3 {
		t.Fatalf("plain poll on a kept connection: %d %s", res.StatusCode, body)
	}
	if got := h.srv.parked.keptServed.Load() - kept; got != 4 {
		t.Fatalf("%d requests served on the kept connection, want 4", got)
	}
	if n := h.srv.conns.total.Load(); n != 0 {
		t.Fatalf("%d connection slots still held", n)
	}
}

// Whatever the fast path does not take, net/http answers on a connection bridged read first, new
// or kept after a long-poll, exactly as it answers the same bytes on a connection of its own; and
// what the fast path takes, it answers as net/http would.
func TestKeptConnectionHandsTheRestToNetHTTP(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	plain := h.servePlain()
	tok := token(t, "u", time.Hour)
	poll := "GET /v1/poll?token=" + tok
	pub := func(headers, body string) string {
		return "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishKey + "\r\n" + headers +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	one := `{"user":"v","data":1}`
	cases := []struct {
		name, req string
		kept      bool // served by the fast path
	}{
		{"plain poll", poll + " HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"plain poll, more headers", poll + " HTTP/1.1\r\nHost: [::1]:80\r\nUser-Agent: a/1 (b; c)\r\nAccept: */*\r\n\r\n", true},
		{"health probe", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"a longer path", "GET /v1/polls HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"HEAD", "HEAD /v1/poll?token=" + tok + " HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"POST to poll", "POST /v1/poll?token=" + tok + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", false},
		{"no Host", poll + " HTTP/1.1\r\n\r\n", false},
		{"two Hosts", poll + " HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n", false},
		{"bad Host", poll + " HTTP/1.1\r\nHost: a/b\r\n\r\n", false},
		{"bad header name", poll + " HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", false},
		{"control byte in a value", poll + " HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", false},
		{"bare CR", poll + " HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", false},
		{"folded line", poll + " HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", false},
		{"UTF-8 in a value", poll + " HTTP/1.1\r\nHost: x\r\nX-A: \u00e9\r\n\r\n", false},
		{"HTTP/1.0", poll + " HTTP/1.0\r\n\r\n", false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"bad version", poll + " HTTP/9.9\r\nHost: x\r\n\r\n", false},
		{"bare line feeds", poll + " HTTP/1.1\nHost: x\n\n", false},
		{"GET with a body", poll + " HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", false},
		{"chunked GET", poll + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"Expect", poll + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false},
		{"Upgrade", poll + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
		{"head over 4 KiB", poll + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\n\r\n", false},
		{"head over MaxHeaderBytes", poll + " HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", 80<<10) + "\r\n\r\n", false},
		{"absolute target", "GET http://x/v1/poll?token=" + tok + " HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"malformed request line", "GET /v1/poll\r\n\r\n", false},
		{"bad query", "GET /v1/poll?token=" + tok + "&cursor=%zz HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"publish", pub("", one), true},
		{"publish, body with blank lines", pub("Content-Type: application/json\r\n", "{\n\n\"user\":\"v\",\r\n\r\n\"data\":2}"), true},
		{"publish, bad JSON", pub("", `{"user":`), true},
		{"publish, no body", "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishKey + "\r\n\r\n", true},
		{"publish, wrong key", strings.Replace(pub("", one), testPublishKey, "nope", 1), true},
		{"publish with a query", strings.Replace(pub("", one), "/v1/publish", "/v1/publish?x=1", 1), true},
		{"publish to a longer path", strings.Replace(pub("", one), "/v1/publish", "/v1/publish/x", 1), false},
		{"publish, chunked", "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishKey +
			"\r\nTransfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(one)), 16) + "\r\n" + one + "\r\n0\r\n\r\n", false},
		{"publish, Expect", pub("Expect: 100-continue\r\n", one), false},
		{"publish, two lengths", pub("Content-Length: 3\r\n", one), false},
		{"publish, body over 4 KiB", pub("", `{"user":"v","data":"`+strings.Repeat("d", 5000)+`"}`), false},
		{"publish over HTTP/1.0", strings.Replace(pub("", one), "HTTP/1.1", "HTTP/1.0", 1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, _, _ := strings.Cut(tc.req, " ")
			ref := rawRequests(t, plain)
			ref.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(ref, tc.req); err != nil {
				t.Fatal(err)
			}
			wantStatus, wantBody := answerOf(t, bufio.NewReader(ref), method)
			wantBody = withoutIDs(wantBody)

			for _, kind := range []string{"new", "kept"} {
				conn := rawRequests(t, base)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				rd := bufio.NewReader(conn)
				if kind == "kept" {
					conn, rd = keptConn(t, base, tok)
				}
				served := h.srv.parked.keptServed.Load()
				if _, err := io.WriteString(conn, tc.req); err != nil {
					t.Fatal(err)
				}
				status, body := answerOf(t, rd, method)
				if body = withoutIDs(body); status != wantStatus || body != wantBody {
					t.Fatalf("on a %s connection: %d %q; from net/http: %d %q", kind, status, body, wantStatus, wantBody)
				}
				if got := h.srv.parked.keptServed.Load() > served; got != tc.kept {
					t.Fatalf("on a %s connection, served by the fast path: %v, want %v", kind, got, tc.kept)
				}
			}
		})
	}
}

var publishIDs = regexp.MustCompile(`"ids":\[[^]]*\]`)

// withoutIDs blanks a publish answer's message ids, which differ from one publish to the next.
func withoutIDs(body string) string { return publishIDs.ReplaceAllString(body, `"ids":[…]`) }

// answerOf reads one answer's status and as much of its body as arrives (net/http may reset a
// connection it refused a head on).
func answerOf(t *testing.T, rd *bufio.Reader, method string) (int, string) {
	t.Helper()
	res, err := http.ReadResponse(rd, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestKeptConnectionAnswersPipelinedRequestsInOrder(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	h.publish(`{"user":"u","data":1}`)
	// A long-poll that waits (nothing after the cursor), then a poll, a probe and another poll,
	// all in one write: the kept connection reads past each head and must answer in order.
	ids := h.publish(`{"user":"u","data":2}`)
	conn := rawRequests(t, base,
		"GET /v1/poll?wait=20ms&cursor="+ids[0]+"&token="+tok,
		"GET /v1/poll?token="+tok,
		"GET /healthz",
		"GET /v1/poll?cursor="+ids[0]+"&token="+tok)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	for i, want := range []string{`"messages":[]`, `"data":1`, `"status":"ok"`, `"messages":[]`} {
		res, body := readAnswer(t, rd, "GET")
		if res.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Fatalf("answer %d: %d %s, want %s", i, res.StatusCode, body, want)
		}
	}
}

// expectClosed fails unless the server closes conn within five seconds without answering.
func expectClosed(t *testing.T, rd *bufio.Reader, what string) {
	t.Helper()
	b, err := rd.ReadByte()
	if err == nil {
		rest, _ := rd.Peek(rd.Buffered())
		t.Fatalf("%s: got an answer %q, want the connection closed", what, string(b)+string(rest))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the connection is still open", what)
	}
}

func TestKeptConnectionIdleTimeout(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParkingWith(func(s *http.Server) { s.IdleTimeout = 100 * time.Millisecond })
	conn, rd := keptConn(t, base, token(t, "u", time.Hour))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	expectClosed(t, rd, "kept connection after IdleTimeout")
}

func TestKeptConnectionSlowHeadIsCut(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParkingWith(func(s *http.Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	conn, rd := keptConn(t, base, token(t, "u", time.Hour))
	// Half a head, then nothing: a slowloris on a kept connection.
	if _, err := io.WriteString(conn, "GET /v1/poll?wait=1s HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	expectClosed(t, rd, "kept connection with a head slower than ReadHeaderTimeout")
}

func TestKeptConnectionClosesOnDrain(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	conn, rd := keptConn(t, base, token(t, "u", time.Hour))
	h.srv.Drain()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	expectClosed(t, rd, "idle kept connection on Drain")
}

func TestKeptConnectionHonoursConnectionClose(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	conn, rd := keptConn(t, base, tok)
	if _, err := io.WriteString(conn, "GET /v1/poll?token="+tok+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, body := readAnswer(t, rd, "GET")
	if res.StatusCode != http.StatusOK || !res.Close {
		t.Fatalf("want 200 with Connection: close, got %d close=%v %s", res.StatusCode, res.Close, body)
	}
	expectClosed(t, rd, "kept connection after Connection: close")
}

// pipeListener hands net/http in-memory connections, for FuzzKeptHead.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// FuzzKeptHead checks the kept connections' fast path against net/http's server: whenever
// scanHead and parseKept take a head, net/http, given the same bytes on a new connection, runs its
// handler on a request with the same method, target, protocol, Host and headers. (What the fast
// path refuses goes to net/http itself, so only this direction needs checking.)
func FuzzKeptHead(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/poll?wait=25s&cursor=abc-0&token=t HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
		"GET /v1/poll HTTP/1.1\r\nHost: [::1]:80\r\nUser-Agent: a/1 (b; c)\r\nAccept: */*\r\nConnection: close\r\n\r\n",
		"GET /v1/poll?token=t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc.def.ghi\r\nX-A: \t v \r\n\r\n",
		"GET /v1/poll?token=t HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
		"GET /v1/poll?token=t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET /v1/poll?token=t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET /v1/poll?token=t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
		"GET /v1/poll?a=%zz HTTP/1.1\r\nHost: x\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\r\n",
		"GET /v1/poll HTTP/1.1\r\nHost: x\r\nX: y\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: 21\r\n\r\n{\"user\":\"u\",\"data\":1}",
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\n\n\r\nPOST /v1/publish HTTP/1.1\r\n\r\n",
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /v1/publish? HTTP/1.1\r\nhost:x\r\ncontent-length:  007 \r\nconnection: keep-alive , Close\r\nx-a:\r\nX-A: b\r\n\r\nabcdefg",
		"GET /v1/poll??a=%zz#f HTTP/1.1\r\nHOST: x:1\r\nPragma: no-cache\r\nCONNECTION: upgrade\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	type seen struct {
		r    *http.Request
		body []byte
		err  error
	}
	got := make(chan seen, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			got <- seen{r, body, err}
			w.WriteHeader(http.StatusNoContent)
		}),
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       log.New(io.Discard, "", 0),
	}
	go srv.Serve(ln)
	f.Cleanup(func() { srv.Close() })

	f.Fuzz(func(t *testing.T, data []byte) {
		end, verdict := scanHead(data, keptHeadMax)
		if verdict != headServe {
			return
		}
		ours := new(http.Request)
		if !parseKept(data[:end], ours) {
			return
		}
		need := end + int(ours.ContentLength) // the fast path serves the request once its body is in
		if need > len(data) || need > keptHeadMax {
			return
		}
		client, server := net.Pipe()
		defer client.Close()
		client.SetDeadline(time.Now().Add(10 * time.Second))
		ln.conns <- server
		go client.Write(data[:need]) // a pipe's write waits for the reader; Close ends it
		res, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			t.Fatalf("net/http's answer to %q: %v", data[:need], err)
		}
		if res.StatusCode != http.StatusNoContent {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("the fast path takes %q, net/http refuses it: %d %s", data[:need], res.StatusCode, b)
		}
		s := <-got
		if s.err != nil || !bytes.Equal(s.body, data[end:need]) {
			t.Fatalf("for %q\nfast path's body: %q\nnet/http's: %q (%v)", data[:need], data[end:need], s.body, s.err)
		}
		theirs := s.r
		if ours.Method != theirs.Method || ours.RequestURI != theirs.RequestURI || ours.URL.String() != theirs.URL.String() ||
			!reflect.DeepEqual(ours.URL, theirs.URL) || ours.ProtoMajor != theirs.ProtoMajor || ours.ProtoMinor != theirs.ProtoMinor ||
			ours.Proto != theirs.Proto || ours.Host != theirs.Host || ours.Close != theirs.Close ||
			ours.ContentLength != theirs.ContentLength || !reflect.DeepEqual(ours.Header, theirs.Header) {
			t.Fatalf("for %q\nfast path: %s %s %s host %q close %v length %d %v\nnet/http:  %s %s %s host %q close %v length %d %v",
				data[:end], ours.Method, ours.RequestURI, ours.Proto, ours.Host, ours.Close, ours.ContentLength, ours.Header,
				theirs.Method, theirs.RequestURI, theirs.Proto, theirs.Host, theirs.Close, theirs.ContentLength, theirs.Header)
		}
	})
}

func TestKeptConnectionAnswersPipelinedPublishes(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	served := h.srv.parked.keptServed.Load()
	conn := rawRequests(t, base)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for i := range 5 {
		body := `{"user":"u","data":` + strconv.Itoa(i) + `}`
		fmt.Fprintf(&b, "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", testPublishKey, len(body), body)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(conn)
	for i := range 5 {
		res, body := readAnswer(t, rd, "POST")
		if res.StatusCode != http.StatusOK || res.Close || !strings.Contains(body, `"ids":[`) {
			t.Fatalf("publish %d: %d close=%v %s", i, res.StatusCode, res.Close, body)
		}
	}
	if got := h.srv.parked.keptServed.Load() - served; got != 5 {
		t.Fatalf("%d publishes served by the fast path, want 5", got)
	}
	a := h.poll("u", "")
	if len(a.Messages) != 5 || string(a.Messages[0].Data) != "0" || string(a.Messages[4].Data) != "4" {
		t.Fatalf("stored: %+v", a.Messages)
	}
}

// A publish whose body arrives after ReadHeaderTimeout goes to net/http with what arrived, and
// net/http's handler reads the rest under the publish's own deadline.
func TestKeptConnectionHandsALateBodyToNetHTTP(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParkingWith(func(s *http.Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	served := h.srv.parked.keptServed.Load()
	conn := rawRequests(t, base)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	body := `{"user":"u","data":"late"}`
	fmt.Fprintf(conn, "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", testPublishKey, len(body), body[:5])
	time.Sleep(400 * time.Millisecond)
	io.WriteString(conn, body[5:])
	res, got := readAnswer(t, bufio.NewReader(conn), "POST")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("late body: %d %s", res.StatusCode, got)
	}
	if n := h.srv.parked.keptServed.Load() - served; n != 0 {
		t.Fatalf("%d requests served by the fast path, want 0 (net/http's)", n)
	}
	if a := h.poll("u", ""); len(a.Messages) != 1 || string(a.Messages[0].Data) != `"late"` {
		t.Fatalf("stored: %+v", a.Messages)
	}
}

// A new connection gets ReadHeaderTimeout from its start, as net/http gives it.
func TestNewConnectionWithoutARequestIsCut(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParkingWith(func(s *http.Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	for _, sent := range []string{"", "GET /v1/po", "POST /v1/publish HTTP/1.1\r\nHost: x\r\n"} {
		conn := rawRequests(t, base)
		io.WriteString(conn, sent)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		expectClosed(t, bufio.NewReader(conn), fmt.Sprintf("new connection that sent %q", sent))
	}
}

// While the node drains, a new connection's first request is still answered (as net/http
// answers it), and the connection then closes.
func TestNewConnectionIsAnsweredWhileDraining(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	h.srv.Drain()
	conn := rawRequests(t, base)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /v1/poll?wait=10s&token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n")
	rd := bufio.NewReader(conn)
	res, body := readAnswer(t, rd, "GET")
	if res.StatusCode != http.StatusOK || !res.Close || !strings.Contains(body, `"messages":[]`) {
		t.Fatalf("poll on a new connection while draining: %d close=%v %s", res.StatusCode, res.Close, body)
	}
	expectClosed(t, rd, "new connection after its answer while draining")
}

// A re-poll waits on the goroutine that read it (parkWait); Drain still answers it, and the
// goroutines of the connection end.
func TestKeptRepollAnswersOnDrain(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveParking()
	tok := token(t, "u", time.Hour)
	conn, rd := keptConn(t, base, tok)
	if _, err := io.WriteString(conn, "GET /v1/poll?wait=30s&token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the re-poll parks", func() bool { return h.srv.conns.total.Load() == 1 })
	h.srv.Drain()
	res, body := readAnswer(t, rd, "GET")
	if res.StatusCode != http.StatusOK || !res.Close || !strings.Contains(body, `"messages":[]`) {
		t.Fatalf("re-poll on Drain: %d close=%v %s", res.StatusCode, res.Close, body)
	}
	expectClosed(t, rd, "kept connection after its re-poll answered a drain")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
