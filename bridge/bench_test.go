package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/memory"
)

func benchServer(b *testing.B) (*Server, *memory.Store) {
	store := memory.New(cache.Options{MaxMemory: 1 << 30})
	b.Cleanup(func() { store.Close() })
	srv, err := New(Options{Store: store, Log: zap.NewNop(), JWTSecret: []byte(testSecret), PublishKey: testPublishKey, AdminKey: testAdminKey})
	if err != nil {
		b.Fatal(err)
	}
	return srv, store
}

// BenchmarkSSEFrame measures encoding one message as an SSE frame into a warm buffer: the
// per-message work of every open stream.
func BenchmarkSSEFrame(b *testing.B) {
	m := cache.Message{ID: cache.Cursor{Epoch: 1 << 50, Seq: 12345}, Event: "message", Data: []byte(`{"text":"hello there","n":42}`), Time: time.Now()}
	o := &sseWriter{buf: make([]byte, 0, 4096)}
	b.ReportAllocs()
	for b.Loop() {
		o.buf = o.buf[:0]
		o.message(&m)
	}
	b.SetBytes(int64(len(o.buf)))
}

// BenchmarkPublishHandler measures POST /v1/publish of one ~100-byte message through the whole
// handler chain (auth, decode, validate, append, answer), without the network.
func BenchmarkPublishHandler(b *testing.B) {
	srv, _ := benchServer(b)
	body := `{"user":"u%d","event":"message","data":{"text":"a message of about one hundred bytes, typical of a chat line"}}`
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/publish", strings.NewReader(fmt.Sprintf(body, i%1000)))
		req.Header.Set("Authorization", "Bearer "+testPublishKey)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body)
		}
		i++
	}
}

// BenchmarkSSEIdleConnection reports the Go heap and stack one idle SSE connection costs
// (B/conn), with 2,000 connections held open on a real loopback server in this process. The
// clients are bare TCP connections that read the hello frame and then nothing, so what is
// counted is the server's side plus a few hundred bytes of client socket. Kernel socket buffers
// are not Go memory and not counted; docs/benchmarks.md has process RSS figures as well.
func BenchmarkSSEIdleConnection(b *testing.B) {
	const n = 2000
	for b.Loop() {
		srv, _ := benchServer(b)
		ts := httptest.NewServer(srv)
		toks := make([]string, n) // one user per connection, as BRIDGE_MAX_CONNECTIONS_PER_USER wants
		for i := range toks {
			toks[i] = token(b, fmt.Sprint("u", i), time.Hour)
		}
		before := goMemory()
		conns := make([]net.Conn, 0, n)
		buf := make([]byte, 4096)
		for i := range n {
			c, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(c, "GET /v1/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", toks[i])
			// Read until the hello frame has arrived: the stream is then parked.
			var got []byte
			for !bytes.Contains(got, []byte("event: hello")) {
				k, err := c.Read(buf)
				if err != nil {
					b.Fatalf("conn %d: %v", i, err)
				}
				got = append(got, buf[:k]...)
				if len(got) >= 12 && !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
					b.Fatalf("conn %d: %s", i, got)
				}
			}
			conns = append(conns, c)
		}
		after := goMemory()
		b.ReportMetric(float64(after-before)/n, "B/conn")
		b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/conn")
		for _, c := range conns {
			c.Close()
		}
		ts.Close()
		srv.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := srv.Wait(ctx); err != nil {
			b.Fatalf("streams still open: %v", err)
		}
		cancel()
	}
}

func goMemory() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// batchBody is a publish body of n messages of about 100 bytes of data each, to n users.
func batchBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"messages":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"user":"u%d","event":"chat.msg","data":{"text":"a message of about one hundred bytes, typical of a chat line","n":%d}}`, i, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// BenchmarkPublishBatchHandler measures POST /v1/publish of a batch of 100 messages through the
// whole handler chain, without the network; ns/op is per request, not per message.
func BenchmarkPublishBatchHandler(b *testing.B) {
	srv, _ := benchServer(b)
	body := batchBody(100)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testPublishKey)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body)
		}
	}
}

// BenchmarkPublishDecode measures reading, decoding and validating a publish body alone (no
// store, no middleware): the part of a publish the body's format decides.
func BenchmarkPublishDecode(b *testing.B) {
	srv, _ := benchServer(b)
	for _, tt := range []struct {
		name, body string
	}{
		{"messages=1", `{"user":"u1","event":"message","data":{"text":"a message of about one hundred bytes, typical of a chat line"}}`},
		{"messages=100", batchBody(100)},
	} {
		b.Run(tt.name, func(b *testing.B) {
			rd := strings.NewReader(tt.body)
			req := httptest.NewRequest("POST", "/v1/publish", rd)
			w := httptest.NewRecorder()
			b.SetBytes(int64(len(tt.body)))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(tt.body)
				req.Body = io.NopCloser(rd)
				if _, err := srv.decodePublish(w, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyToken measures checking one HS256 subscriber token, the work every poll,
// long-poll and stream does before it reads: cold is the parser's whole check (what a token seen
// for the first time costs, cache insertion aside), cached a token the keys have accepted before.
func BenchmarkVerifyToken(b *testing.B) {
	srv, _ := benchServer(b)
	tok := token(b, "u", time.Hour)
	b.Run("cold", func(b *testing.B) {
		ring := srv.keys.ring.Load()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := srv.parseToken(ring, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := srv.verifyToken(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCountDelivered measures counting one delivered message (counter and latency
// histogram by transport), which every poll answer and stream write does.
func BenchmarkCountDelivered(b *testing.B) {
	srv, _ := benchServer(b)
	now := time.Now()
	batch := cache.Batch{Messages: []cache.Message{{Time: now.Add(-time.Millisecond)}}}
	b.ReportAllocs()
	for b.Loop() {
		srv.countDelivered("longpoll", &batch, now)
	}
}

// BenchmarkLabeledCounter measures finding and incrementing one series of a one-label counter
// vector, as poll.go counts long-poll outcomes: through the vector's WithLabelValues (hash and
// lock per call) or a resolvedCounterVec's.
func BenchmarkLabeledCounter(b *testing.B) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"outcome"})
	r := resolveCounters(vec, longPollOutcomes)
	b.Run("vector", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			vec.WithLabelValues("timeout").Inc()
		}
	})
	b.Run("resolved", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.WithLabelValues("timeout").Inc()
		}
	})
}

// BenchmarkKeptHead: a poll's head parsed by the kept connections' parser, and by net/http's
// http.ReadRequest (what the fast path used before), in the same run.
func BenchmarkKeptHead(b *testing.B) {
	head := []byte("GET /v1/poll?cursor=2c5begfhe7rmz-41&wait=25s&token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyIsImV4cCI6MTc5NTAwMDAwMH0.c2lnbmF0dXJlLXNpZ25hdHVyZQ HTTP/1.1\r\n" +
		"Host: 127.0.0.1:8080\r\nUser-Agent: bridgebench\r\nAccept: application/json\r\n\r\n")
	b.Run("parseKept", func(b *testing.B) {
		b.ReportAllocs()
		var req http.Request
		for b.Loop() {
			if !parseKept(head, &req) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("http.ReadRequest", func(b *testing.B) {
		b.ReportAllocs()
		var src bytes.Reader
		br := bufio.NewReader(&src)
		for b.Loop() {
			src.Reset(head)
			br.Reset(&src)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPublishOverConnection: single-message publishes, one after another, over one keep-alive
// connection to a real loopback server: through Listener (bridged reads the requests) and without
// it (net/http reads them), in the same run. ns/op includes the client's side and the loopback.
func BenchmarkPublishOverConnection(b *testing.B) {
	for _, adopted := range []bool{true, false} {
		name := "net/http"
		if adopted {
			name = "Listener"
		}
		b.Run(name, func(b *testing.B) {
			srv, _ := benchServer(b)
			conn, rd := servedConn(b, srv, adopted)
			req := benchPublishRequest
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.WriteString(conn, req); err != nil {
					b.Fatal(err)
				}
				readOK(b, rd)
			}
		})
	}
}

// benchPublishRequest is a keep-alive publish of one ~100-byte message for user "u", on the wire.
var benchPublishRequest = func() string {
	body := `{"user":"u","event":"message","data":{"text":"a message of about one hundred bytes, typical of a chat line"}}`
	return fmt.Sprintf("POST /v1/publish HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testPublishKey, len(body), body)
}()

// servedConn serves srv on a loopback listener, through Listener when adopted, and dials it; the
// server and the connection end with b.
func servedConn(b *testing.B, srv *Server, adopted bool) (net.Conn, *bufio.Reader) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	var serve net.Listener = ln
	if adopted {
		serve = srv.Listener(ln, hs)
	}
	go hs.Serve(serve)
	b.Cleanup(func() { hs.Close() })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// readOK reads one answer from rd and fails b unless it is a 200.
func readOK(b *testing.B, rd *bufio.Reader) {
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatal(res.Status)
	}
}

// BenchmarkRepollOverConnection: a long-poll client's loop on one keep-alive connection to a real
// loopback server through Listener: each iteration re-polls from its cursor, the poll parks, one
// message is appended to the store (no publish request), and the answer is read. ns/op includes
// the client's side and the loopback.
func BenchmarkRepollOverConnection(b *testing.B) {
	srv, store := benchServer(b)
	conn, rd := servedConn(b, srv, true)
	tok := token(b, "u", time.Hour)
	ctx := context.Background()
	data := []byte(`{"text":"a message of about one hundred bytes, typical of a chat line"}`)
	ids, err := store.Append(ctx, []cache.Draft{{Stream: "u", Event: "message", Data: data}})
	if err != nil {
		b.Fatal(err)
	}
	cursor := ids[0].String()
	b.ReportAllocs()
	for b.Loop() {
		benchPark(b, srv, conn, cursor, tok)
		ids, err := store.Append(ctx, []cache.Draft{{Stream: "u", Event: "message", Data: data}})
		if err != nil {
			b.Fatal(err)
		}
		readOK(b, rd)
		cursor = ids[0].String()
		benchReleased(srv)
	}
}

// benchPark sends a long-poll from cursor on conn, a kept connection to srv, and waits until it
// is parked (holds its connection slot).
func benchPark(b *testing.B, srv *Server, conn net.Conn, cursor, tok string) {
	if _, err := io.WriteString(conn, "GET /v1/poll?wait=10s&cursor="+cursor+"&token="+tok+" HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		b.Fatal(err)
	}
	for srv.conns.total.Load() == 0 {
		runtime.Gosched()
	}
}

// benchReleased waits until the answered long-poll has let go of its connection slot.
func benchReleased(srv *Server) {
	for srv.conns.total.Load() != 0 {
		runtime.Gosched()
	}
}

// BenchmarkDeliveryCycle: the long-poll loop as bridgebench runs it, in one process: a client
// re-polls on one kept connection, the poll parks, an app publishes one message for it over
// another, and both answers are read. "publisher" has the publishing goroutine answer the
// long-poll (answer.go); "owner" wakes the parked connection's goroutine to answer it. ns/op
// includes both clients and the loopback.
func BenchmarkDeliveryCycle(b *testing.B) {
	benchAnswerModes(b, func(b *testing.B, srv *Server, store *memory.Store, _ bool) {
		conn, rd := servedConn(b, srv, true)
		pub, prd := servedConn(b, srv, true)
		tok := token(b, "u", time.Hour)
		ids, err := store.Append(context.Background(), []cache.Draft{{Stream: "u", Event: "message", Data: []byte(`"first"`)}})
		if err != nil {
			b.Fatal(err)
		}
		cursor := ids[0].String()
		b.ReportAllocs()
		for b.Loop() {
			benchPark(b, srv, conn, cursor, tok)
			if _, err := io.WriteString(pub, benchPublishRequest); err != nil {
				b.Fatal(err)
			}
			readOK(b, rd)
			res, err := http.ReadResponse(prd, nil)
			if err != nil {
				b.Fatal(err)
			}
			var answer struct{ IDs []string }
			err = json.NewDecoder(res.Body).Decode(&answer)
			res.Body.Close()
			if err != nil || len(answer.IDs) != 1 {
				b.Fatalf("publish answer: %v %v", answer, err)
			}
			cursor = answer.IDs[0]
			benchReleased(srv)
		}
	})
}

// BenchmarkStreamDelivery: one message to an SSE stream parked on a kept-alive server through
// Listener: an app publishes it over one connection, and both the stream's frame and the
// publish's answer are read. "publisher" has the publishing goroutine write the frame
// (parkedStream); "owner" wakes the stream's goroutine to write it. ns/op includes both clients
// and the loopback.
func BenchmarkStreamDelivery(b *testing.B) {
	benchAnswerModes(b, func(b *testing.B, srv *Server, _ *memory.Store, byPublisher bool) {
		conn, rd := servedConn(b, srv, true)
		pub, prd := servedConn(b, srv, true)
		if _, err := io.WriteString(conn, "GET /v1/sse?token="+token(b, "u", time.Hour)+" HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
			b.Fatal(err)
		}
		for { // the head, then hello
			line, err := rd.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if line == "\r\n" {
				break
			}
		}
		if f := readSSEFrame(b, rd); !strings.Contains(f, "event: hello") {
			b.Fatalf("first frame %q", f)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := io.WriteString(pub, benchPublishRequest); err != nil {
				b.Fatal(err)
			}
			if f := readSSEFrame(b, rd); !strings.HasPrefix(f, "id: ") {
				b.Fatalf("frame %q", f)
			}
			readOK(b, prd)
		}
		if byPublisher && srv.parked.streamWritesByPublisher.Load() == 0 {
			b.Fatal("no frame was written by the publisher")
		}
	})
}

// benchAnswerModes runs f as two sub-benchmarks on a fresh server each: "publisher", with
// long-polls answered and streams written by the publishing goroutine (answer.go, stream.go),
// and "owner", with that turned off.
func benchAnswerModes(b *testing.B, f func(b *testing.B, srv *Server, store *memory.Store, byPublisher bool)) {
	for _, byPublisher := range []bool{true, false} {
		name := "owner"
		if byPublisher {
			name = "publisher"
		}
		b.Run(name, func(b *testing.B) {
			srv, store := benchServer(b)
			if !byPublisher {
				srv.answers = nil
			}
			f(b, srv, store, byPublisher)
		})
	}
}

// readSSEFrame reads one SSE frame (up to its blank line) from rd.
func readSSEFrame(b *testing.B, rd *bufio.Reader) string {
	var f strings.Builder
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if line == "\n" {
			return f.String()
		}
		f.WriteString(line)
	}
}
