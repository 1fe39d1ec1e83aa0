package bridge

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
)

// An SSE stream on a parked connection gets its frames from the publisher (stream.go), in order,
// and its owner still sends the heartbeat while it is idle and takes over again after it.
func TestPublisherWritesParkedStream(t *testing.T) {
	answerModes(t, func(o *Options) { o.Heartbeat = 200 * time.Millisecond }, func(t *testing.T, h *harness, byPublisher bool) {
		base := h.serveParking()
		s := openSSE(t, base, "", token(t, "u", time.Hour), nil)
		s.expect("hello")
		var last string
		for i := range 5 {
			ids := h.publish(fmt.Sprintf(`{"user":"u","event":"e","data":%d}`, i))
			f := s.expect("e")
			if f.ID != ids[0] || !strings.Contains(f.Data, fmt.Sprintf(`"data":%d`, i)) {
				t.Fatalf("frame %d: %+v, want id %s", i, f, ids[0])
			}
			last = f.ID
		}
		want := uint64(0)
		if byPublisher {
			want = 5
		}
		if got := h.scrape()["bridged_publisher_writes_total{result=whole,transport=sse}"]; got != float64(want) {
			t.Fatalf("%v writes by the publisher in /metrics, want %d", got, want)
		}
		// Idle, the owner beats; then a publisher writes again, after the last id.
		s.expect("ping")
		ids := h.publish(`{"user":"u","event":"e","data":"after the ping"}`)
		if f := s.expect("e"); f.ID != ids[0] || !strings.Contains(f.Data, "after the ping") {
			t.Fatalf("frame after the ping: %+v", f)
		}
		if a, b := cursorN(t, last), cursorN(t, ids[0]); b <= a {
			t.Fatalf("id %s after %s", ids[0], last)
		}
		// The client leaving frees the slot and the goroutine.
		s.resp.Body.Close()
		h.publish(`{"user":"u","data":"to nobody"}`) // a write to a closed socket, or the owner's read, ends it
		waitUntil(t, "the stream ends", func() bool { return parkedCount(h.srv) == 0 && h.srv.conns.total.Load() == 0 })
	})
}

// cursorN is the sequence number of a message id (one epoch throughout these tests).
func cursorN(t *testing.T, id string) uint64 {
	t.Helper()
	c, err := cache.ParseCursor(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Seq
}

// Frames the socket cannot take at once are begun by the publisher, which does not wait for a
// client that is not reading, and finished by the stream's goroutine.
func TestPublisherLeavesTheRestOfTheFramesToTheOwner(t *testing.T) {
	h := newHarness(t, nil)
	s := openSSE(t, h.serveSmallWrites(), "", token(t, "u", time.Hour), nil)
	s.expect("hello")

	chunk := publishLarge(t, h, "big")
	if h.scrape()["bridged_publisher_writes_total{result=partial,transport=sse}"] != 1 {
		t.Fatalf("writes begun by the publisher: %d, want 1 (whole: %d)",
			h.srv.parked.streamWritesInPart.Load(), h.srv.parked.streamWritesByPublisher.Load())
	}
	for i := range 15 {
		if f := s.expect("big"); !strings.HasPrefix(f.Data, `{"id":"`) || !strings.Contains(f.Data, fmt.Sprintf(`"data":"%02d%s"`, i, chunk)) {
			t.Fatalf("frame %d is %d bytes, starting %.40s", i, len(f.Data), f.Data)
		}
	}
	// The stream goes on.
	h.publish(`{"user":"u","event":"e","data":"after"}`)
	if f := s.expect("e"); !strings.Contains(f.Data, `"after"`) {
		t.Fatalf("frame after the large ones: %+v", f)
	}
}

// Publishers racing each other for the same streams: every stream gets every message once, and
// each publisher's messages in the order it sent them.
func TestStreamsUnderRacingPublishers(t *testing.T) {
	answerModes(t, nil, func(t *testing.T, h *harness, byPublisher bool) {
		base := h.serveParking()
		const users, publishers, perPublisher = 4, 4, 100
		streams := make([]*stream, users)
		for u := range users {
			streams[u] = openSSE(t, base, "", token(t, "u"+strconv.Itoa(u), time.Hour), nil)
			streams[u].expect("hello")
		}
		var wg sync.WaitGroup
		errs := make(chan error, publishers)
		for p := range publishers {
			wg.Go(func() {
				for i := range perPublisher {
					var b strings.Builder
					b.WriteString(`{"messages":[`)
					for u := range users {
						if u > 0 {
							b.WriteString(",")
						}
						fmt.Fprintf(&b, `{"user":"u%d","event":"e","data":"%d-%d"}`, u, p, i)
					}
					b.WriteString(`]}`)
					if rec := h.do("POST", "/v1/publish", testPublishKey, b.String()); rec.Code != 200 {
						errs <- fmt.Errorf("publish: %d %s", rec.Code, rec.Body)
						return
					}
				}
			})
		}
		for u, s := range streams {
			next := make([]int, publishers) // each publisher's next message
			var lastN uint64
			for range publishers * perPublisher {
				f := s.expect("e")
				var p, i int
				if _, err := fmt.Sscanf(f.Data[strings.Index(f.Data, `"data":"`)+len(`"data":"`):], "%d-%d", &p, &i); err != nil {
					t.Fatalf("stream %d: frame %+v: %v", u, f, err)
				}
				if i != next[p] {
					t.Fatalf("stream %d: publisher %d's message %d, want %d", u, p, i, next[p])
				}
				next[p]++
				if n := cursorN(t, f.ID); n <= lastN {
					t.Fatalf("stream %d: id %s after n=%d", u, f.ID, lastN)
				} else {
					lastN = n
				}
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if byPublisher && h.srv.parked.streamWritesByPublisher.Load() == 0 {
			t.Fatal("no frame was written by a publisher")
		}
		t.Logf("writes by publishers: %d whole, %d in part", h.srv.parked.streamWritesByPublisher.Load(), h.srv.parked.streamWritesInPart.Load())
	})
}

// rawStream is a parkedStream on one end of a loopback connection, for tests of its parts; the
// other end is returned for reading.
func rawStream(t *testing.T, h *harness, who subscriber) (*parkedStream, net.Conn) {
	t.Helper()
	conn, rr, client := rawConnPair(t)
	p := &parked{conn: conn}
	ps := &parkedStream{s: h.srv, offer: offer{p: p, rr: rr}, who: who, pos: &streamPos{},
		out: &sseWriter{p: p, timeout: time.Second}}
	return ps, client
}

// rawConnPair returns both ends of a loopback TCP connection, the server's with its raw reader;
// both close when the test ends.
func rawConnPair(t *testing.T) (conn net.Conn, rr *rawReader, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	conn, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return conn, newRawReader(rc), client
}

// A publisher leaves a stream to its owner, unwritten, when the token has expired or the node
// drains, so that the owner's close frame is the stream's last.
func TestPublisherLeavesTheEndToTheOwner(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expires time.Duration
		drain   bool
	}{{"token expired", -time.Second, false}, {"draining", time.Hour, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.publish(`{"user":"u","data":1}`)
			ps, client := rawStream(t, h, subscriber{user: "u", expires: time.Now().Add(tc.expires)})
			if tc.drain {
				h.srv.Drain()
			}
			ps.state.Store(offerQueued)
			answerOne(ps)
			if st := ps.state.Load(); st != offerWaiting || !ps.p.woken.Load() {
				t.Fatalf("state %d, owner poked %v; want offerWaiting (%d) and poked", st, ps.p.woken.Load(), offerWaiting)
			}
			client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := client.Read(make([]byte, 1)); n > 0 || !strings.Contains(fmt.Sprint(err), "timeout") {
				t.Fatalf("the publisher wrote to the stream: %d bytes, %v", n, err)
			}
			if ps.pos.c != (cache.Cursor{}) {
				t.Fatalf("the cursor moved to %v", ps.pos.c)
			}
		})
	}
}

// A publisher that panics while writing (a bug) leaves the stream broken and its owner poked,
// so the owner ends the stream instead of waiting for the publisher for ever.
func TestPublisherPanicLeavesTheStreamBroken(t *testing.T) {
	h := newHarness(t, nil)
	h.publish(`{"user":"u","data":1}`)
	ps, _ := rawStream(t, h, subscriber{user: "u", expires: time.Now().Add(time.Hour)})
	ps.out = nil // the frame writer's methods panic on it
	answerPanics(t, ps, "a nil writer")
	if _, err := ps.wait(time.Now().Add(time.Second)); err != errStreamWrite {
		t.Fatalf("the owner's wait: %v, want errStreamWrite", err)
	}
}
