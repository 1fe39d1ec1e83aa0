package bridge

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// answerModes runs f with long-polls answered and streams written by the publisher (answer.go,
// stream.go) and, with that turned off, by their connection's goroutine; tweak configures the
// harness.
func answerModes(t *testing.T, tweak func(*Options), f func(t *testing.T, h *harness, byPublisher bool)) {
	for _, byPublisher := range []bool{true, false} {
		name := "owner"
		if byPublisher {
			name = "publisher"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tweak)
			if h.srv.answers == nil {
				t.Fatal("a memory store, and no answers by the publisher")
			}
			if !byPublisher {
				h.srv.answers = nil
			}
			f(t, h, byPublisher)
		})
	}
}

// repoll writes a long-poll from cursor on conn and waits until it holds a connection slot.
func repoll(t *testing.T, h *harness, conn net.Conn, tok, cursor, wait string, parked int64) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET /v1/poll?wait="+wait+"&cursor="+cursor+"&token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the long-poll parks", func() bool { return h.srv.conns.total.Load() == parked })
}

func TestPublisherAnswersParkedLongPoll(t *testing.T) {
	answerModes(t, nil, func(t *testing.T, h *harness, byPublisher bool) {
		base := h.serveParking()
		tok := token(t, "u", time.Hour)
		conn, rd := keptConn(t, base, tok)
		cursor := ""
		for i := range 5 {
			repoll(t, h, conn, tok, cursor, "10s", 1)
			data := `"m` + strconv.Itoa(i) + `"`
			h.publish(`{"user":"u","data":` + data + `}`)
			res, body := readAnswer(t, rd, "GET")
			var a pollAnswer
			decode(t, []byte(body), &a)
			if res.StatusCode != 200 || res.Close || len(a.Messages) != 1 || string(a.Messages[0].Data) != data {
				t.Fatalf("re-poll %d: %d close=%v %s", i, res.StatusCode, res.Close, body)
			}
			if res.Header.Get("Content-Type") != "application/json" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("re-poll %d lost its headers: %v", i, res.Header)
			}
			cursor = a.Cursor
			// The slot is free by the time the answer is out: the next poll may take it.
			if n := h.srv.conns.total.Load(); n != 0 {
				t.Fatalf("re-poll %d: %d slots held after the answer", i, n)
			}
		}
		want := uint64(0)
		if byPublisher {
			want = 5
		}
		if got := h.scrape()["bridged_publisher_writes_total{result=whole,transport=longpoll}"]; got != float64(want) {
			t.Fatalf("%v answers written by the publisher in /metrics, want %d", got, want)
		}
		// A long-poll with nothing published still times out on its own, on the kept connection.
		repoll(t, h, conn, tok, cursor, "30ms", 1)
		res, body := readAnswer(t, rd, "GET")
		if res.StatusCode != 200 || !strings.Contains(body, `"messages":[]`) {
			t.Fatalf("timed-out long-poll: %d %s", res.StatusCode, body)
		}
		// The client leaving after an answer frees everything (the harness's cleanup checks the
		// goroutines end).
		repoll(t, h, conn, tok, cursor, "10s", 1)
		h.publish(`{"user":"u","data":"last"}`)
		readAnswer(t, rd, "GET")
		conn.Close()
		waitUntil(t, "the parked connection ends", func() bool { return parkedCount(h.srv) == 0 })
	})
}

// parkedCount is the number of connections in the parked set.
func parkedCount(s *Server) int {
	n := 0
	for i := range s.parked.shards {
		sh := &s.parked.shards[i]
		sh.Lock()
		n += len(sh.m)
		sh.Unlock()
	}
	return n
}

// smallWrites sets a small send buffer on every connection it accepts, so an answer larger than
// it cannot be written at once.
type smallWrites struct{ net.Listener }

func (l smallWrites) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}

// An answer the socket cannot take at once is begun by the publisher, which does not wait for a
// client that is not reading, and finished by the connection's goroutine.
func TestPublisherLeavesTheRestOfALargeAnswerToTheOwner(t *testing.T) {
	h := newHarness(t, nil)
	base := h.serveSmallWrites()
	tok := token(t, "u", time.Hour)
	conn, rd := keptConn(t, base, tok)
	repoll(t, h, conn, tok, "", "10s", 1)

	chunk := publishLarge(t, h, "message")
	if h.scrape()["bridged_publisher_writes_total{result=partial,transport=longpoll}"] != 1 {
		t.Fatalf("answers begun by the publisher: %d, want 1 (by the publisher, whole: %d)",
			h.srv.parked.answeredInPart.Load(), h.srv.parked.answeredByPublisher.Load())
	}
	res, body := readAnswer(t, rd, "GET")
	var a pollAnswer
	decode(t, []byte(body), &a)
	if res.StatusCode != 200 || len(a.Messages) != 15 {
		t.Fatalf("large answer: %d, %d messages", res.StatusCode, len(a.Messages))
	}
	for i, m := range a.Messages {
		if want := fmt.Sprintf(`"%02d%s"`, i, chunk); string(m.Data) != want {
			t.Fatalf("message %d is %d bytes, starting %.10s", i, len(m.Data), m.Data)
		}
	}
	// The connection goes on.
	repoll(t, h, conn, tok, a.Cursor, "10s", 1)
	h.publish(`{"user":"u","data":"after"}`)
	if _, body := readAnswer(t, rd, "GET"); !strings.Contains(body, `"data":"after"`) {
		t.Fatalf("re-poll after the large answer: %s", body)
	}
}

// publishLarge publishes 15 messages of event to "u" whose data is their number and chunk, about
// 600 KB in one publish, and returns chunk. It fails t unless the publish returns while the
// client reads nothing: a publisher never waits for a client.
func publishLarge(t *testing.T, h *harness, event string) (chunk string) {
	t.Helper()
	chunk = strings.Repeat("x", 40<<10)
	var b strings.Builder
	b.WriteString(`{"messages":[`)
	for i := range 15 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"user":"u","event":%q,"data":"%02d%s"}`, event, i, chunk)
	}
	b.WriteString(`]}`)
	done := make(chan int)
	go func() { done <- h.do("POST", "/v1/publish", testPublishKey, b.String()).Code }()
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("publish: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publish waited for a client that does not read")
	}
	return chunk
}

// serveSmallWrites is serveParking with a 4 KiB send buffer on every connection (smallWrites).
func (h *harness) serveSmallWrites() string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	return h.serveParkingOn(smallWrites{ln}, nil)
}

// Many clients in long-poll loops with short waits, so time-outs race with publishes, and
// publishers racing each other: every client gets each of its messages once, in order, and the
// slots and goroutines are all given back.
func TestLongPollLoopsUnderRacingPublishers(t *testing.T) {
	answerModes(t, nil, func(t *testing.T, h *harness, byPublisher bool) {
		base := h.serveParking()
		const users, perUser, publishers = 8, 60, 4
		var wg sync.WaitGroup
		errs := make(chan error, users+publishers)
		for u := range users {
			user := "u" + strconv.Itoa(u)
			tok := token(t, user, time.Hour)
			conn, rd := keptConn(t, base, tok)
			wg.Go(func() { errs <- pollLoop(conn, rd, tok, perUser) })
		}
		for p := range publishers {
			wg.Go(func() {
				for i := range perUser {
					for u := p; u < users; u += publishers {
						rec := h.do("POST", "/v1/publish", testPublishKey,
							fmt.Sprintf(`{"user":"u%d","data":%d}`, u, i))
						if rec.Code != 200 {
							errs <- fmt.Errorf("publish: %d %s", rec.Code, rec.Body)
							return
						}
					}
					if i%8 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := h.srv.conns.total.Load(); n != 0 {
			t.Fatalf("%d slots held after every loop ended", n)
		}
		if byPublisher && h.srv.parked.answeredByPublisher.Load() == 0 {
			t.Fatal("no answer was written by a publisher")
		}
		t.Logf("answers by publishers: %d whole, %d in part", h.srv.parked.answeredByPublisher.Load(), h.srv.parked.answeredInPart.Load())
	})
}

// pollLoop long-polls on conn with 5ms waits until it has read want messages, whose data must
// be 0, 1, 2… in order.
func pollLoop(conn net.Conn, rd *bufio.Reader, tok string, want int) error {
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	cursor, next := "", 0
	for next < want {
		if _, err := io.WriteString(conn, "GET /v1/poll?wait=5ms&cursor="+cursor+"&token="+tok+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		res, err := readResponse(rd)
		if err != nil {
			return err
		}
		var a pollAnswer
		if err := json.Unmarshal([]byte(res), &a); err != nil {
			return fmt.Errorf("%w: %s", err, res)
		}
		if a.Reset {
			return fmt.Errorf("reset after %d messages", next)
		}
		for _, m := range a.Messages {
			if string(m.Data) != strconv.Itoa(next) {
				return fmt.Errorf("got message %s, want %d", m.Data, next)
			}
			next++
		}
		cursor = a.Cursor
	}
	return nil
}

// readResponse reads one 200 answer's body from rd.
func readResponse(rd *bufio.Reader) (string, error) {
	res, err := http.ReadResponse(rd, &http.Request{Method: "GET"})
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("answer %d: %s", res.StatusCode, b)
	}
	return string(b), nil
}

// A publisher that panics while answering (a bug) leaves the long-poll broken and its owner
// poked, so the owner closes the connection instead of waiting for the answer for ever.
func TestPublisherPanicLeavesTheLongPollBroken(t *testing.T) {
	h := newHarness(t, nil)
	conn, rr, _ := rawConnPair(t)
	sub, err := h.store.Subscribe(t.Context(), "u")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(`{"user":"u","data":1}`)
	lp := &parkedPoll{s: h.srv, offer: offer{p: &parked{conn: conn}, rr: rr}, user: "u", sub: sub,
		release: func() {}, header: nil /* writeJSON's Header().Set panics on it */, logLine: func(int, int64) {}}
	answerPanics(t, lp, "a nil header map")
	if !lp.wait() {
		t.Fatal("the owner would keep a broken connection")
	}
}

// answerPanics runs a publisher's answer of o, which must panic on fault, and checks that the
// panic left o broken and its owner poked.
func answerPanics(t *testing.T, o offerable, fault string) {
	t.Helper()
	b := o.base()
	b.state.Store(offerQueued)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatalf("answer did not panic on %s; the test needs another fault", fault)
			}
		}()
		answerOne(o)
	}()
	if st := b.state.Load(); st != offerBroken {
		t.Fatalf("state %d after the panic, want offerBroken (%d)", st, offerBroken)
	}
	if !b.p.woken.Load() {
		t.Fatal("the owner was not poked")
	}
}
