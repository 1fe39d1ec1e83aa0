package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// transport is how a client reads.
type transport int

const (
	sseT transport = iota
	longPollT
	numTransports
)

func (t transport) String() string { return [...]string{"sse", "longpoll"}[t] }

// client is one simulated subscriber. Its fields are written by its own goroutine only and read
// by the report after that goroutine has ended.
type client struct {
	n      int
	kind   transport
	user   *user
	tally  *tally
	rng    *rand.Rand
	cursor string // the id to resume after: Last-Event-ID or the cursor query

	connects  int // SSE streams opened (200), long-polls sent
	drops     int // our own random disconnects
	sleeps    int // drops that stayed away past the TTL
	refused   [2]int
	stalls    int // nothing from bridged for far longer than it promised (heartbeat, wait)
	closes    map[string]int
	ended     int // SSE streams ended by bridged without a close frame, or cut by an error
	protocol  int // frames or answers that break the API contract (wrong user, malformed, bad cursor)
	netErrs   int
	lastError string
	caughtUp  bool
}

const (
	refused429 = iota
	refused503
)

func (c *client) fail(counter *int, format string, a ...any) {
	*counter++
	c.lastError = fmt.Sprintf(format, a...)
}

// message is the object every transport carries, with the steady publisher's stamp in its data.
type message struct {
	ID    string `json:"id"`
	Event string `json:"event"`
	Data  struct {
		U string `json:"u"`
		N int    `json:"n"`
	} `json:"data"`
}

// take books one delivered message, checking it belongs to this client's user.
func (c *client) take(s *soak, m *message) {
	id, err := parseCursor(m.ID)
	if err != nil || id.isZero() {
		c.fail(&c.protocol, "message id %q: %v", m.ID, err)
		return
	}
	if m.Event != steadyEvent || m.Data.U != c.user.name {
		c.fail(&c.protocol, "message %s is not one of %s's: event %q user %q", m.ID, c.user.name, m.Event, m.Data.U)
		return
	}
	c.tally.deliver(m.Data.N, id)
	c.cursor = m.ID
	s.live.delivered.Add(1)
}

// offline waits out a disconnect: exponential with -offline-mean, or with probability -sleepy
// longer than the TTL so the messages the client misses expire and it must be told by a reset.
// Draining cuts the wait short.
func (c *client) offline(ctx context.Context, s *soak) {
	d := time.Duration(c.rng.ExpFloat64() * float64(s.cfg.offlineMean))
	if c.rng.Float64() < s.cfg.sleepy {
		c.sleeps++
		d = s.cfg.ttl + time.Second + time.Duration(c.rng.Int64N(int64(2*time.Second)))
	}
	c.pause(ctx, s, d)
}

func (c *client) pause(ctx context.Context, s *soak, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.drained:
	case <-ctx.Done():
	}
}

// retryAfter waits as a 429 or 503 asked (Retry-After, capped at 2 s, with jitter).
func (c *client) retryAfter(ctx context.Context, s *soak, h http.Header) {
	secs, _ := strconv.Atoi(h.Get("Retry-After"))
	d := time.Duration(min(max(secs, 1), 2)) * time.Second
	c.pause(ctx, s, d/2+time.Duration(c.rng.Int64N(int64(d/2))))
}

// nextDrop picks the moment of the client's next random disconnect.
func (c *client) nextDrop(s *soak) time.Time {
	return time.Now().Add(time.Duration(c.rng.ExpFloat64() * float64(s.cfg.dropMean)))
}

// done reports whether publishing is over and the client has every message of its user.
func (c *client) done(s *soak) bool {
	select {
	case <-s.drained:
		return c.tally.caughtUp(s.final[c.user.n])
	default:
		return false
	}
}

// --- SSE ---

// runSSE holds an SSE stream on a bare connection, dropping it at random moments and resuming
// with Last-Event-ID, until publishing is over and it has caught up, or ctx ends.
func (c *client) runSSE(ctx context.Context, s *soak) {
	br := bufio.NewReaderSize(nil, 2048) // the connection
	lr := bufio.NewReaderSize(nil, 4096) // the de-chunked body, line by line
	for ctx.Err() == nil && !c.done(s) {
		c.sseOnce(ctx, s, br, lr)
	}
	c.caughtUp = c.done(s)
}

// sseOnce opens one stream, reads it until the drop time, an error or the end, and waits as
// the way it ended calls for.
func (c *client) sseOnce(ctx context.Context, s *soak, br, lr *bufio.Reader) {
	conn, err := s.dialer.DialContext(ctx, "tcp", s.d.addr)
	if err != nil {
		if ctx.Err() == nil {
			c.fail(&c.netErrs, "dial: %v", err)
			c.pause(ctx, s, 100*time.Millisecond)
		}
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var drop time.Time
	if !isClosed(s.drained) {
		drop = c.nextDrop(s)
	}
	watchdog := 3*s.cfg.heartbeat + 10*time.Second
	deadline := func() time.Time {
		w := time.Now().Add(watchdog)
		if !drop.IsZero() && drop.Before(w) {
			return drop
		}
		return w
	}
	conn.SetDeadline(deadline())

	req := "GET /v1/sse HTTP/1.1\r\nHost: " + s.d.addr + "\r\nAuthorization: Bearer " + c.user.token +
		"\r\nAccept: text/event-stream\r\n"
	if c.cursor != "" {
		req += "Last-Event-ID: " + c.cursor + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		c.sseEnded(ctx, s, err, drop)
		return
	}
	br.Reset(conn)
	// The body is never closed: closing an unfinished body reads it to its end, and a stream has
	// none. Closing the connection is enough.
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.sseEnded(ctx, s, err, drop)
		return
	}
	if resp.StatusCode != http.StatusOK {
		c.refusedOrBroken(ctx, s, resp)
		return
	}
	c.connects++
	s.live.sseOpen.Add(1)
	defer s.live.sseOpen.Add(-1)

	lr.Reset(resp.Body)
	var f sseFrame
	first := true
	for {
		err := f.read(lr)
		if err != nil {
			c.sseEnded(ctx, s, err, drop)
			return
		}
		conn.SetReadDeadline(deadline())
		switch {
		case first && f.event != "hello":
			c.fail(&c.protocol, "first SSE frame is %q, want hello", f.event)
		case f.event == "hello", f.event == "ping":
		case f.event == "reset":
			to, err := parseCursor(f.id)
			if err != nil || !f.hasID {
				c.fail(&c.protocol, "reset frame id %q: %v", f.id, err)
				break
			}
			c.tally.resetToCursor(to, time.Now(), s.rules)
			c.cursor = f.id
			s.live.resets.Add(1)
		case f.event == "close":
			var why struct{ Reason string }
			json.Unmarshal(f.data, &why)
			if c.closes == nil {
				c.closes = map[string]int{}
			}
			c.closes[why.Reason]++
		default:
			var m message
			if err := json.Unmarshal(f.data, &m); err != nil || !f.hasID || f.id != m.ID || f.event != m.Event {
				c.fail(&c.protocol, "message frame id %q event %q does not match its data %.200s (%v)", f.id, f.event, f.data, err)
				break
			}
			c.take(s, &m)
		}
		first = false
		if c.done(s) {
			return
		}
	}
}

// sseEnded classifies how a stream ended and waits accordingly.
func (c *client) sseEnded(ctx context.Context, s *soak, err error, drop time.Time) {
	if ctx.Err() != nil {
		return
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout() && !drop.IsZero() && !time.Now().Before(drop):
		c.drops++
		c.offline(ctx, s)
	case errors.As(err, &ne) && ne.Timeout():
		c.fail(&c.stalls, "SSE: nothing for %s", 3*s.cfg.heartbeat+10*time.Second)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.ended++ // bridged ended the stream (after a close frame, or cut it); resume at once
		c.pause(ctx, s, time.Duration(50+c.rng.IntN(100))*time.Millisecond)
	default:
		c.fail(&c.netErrs, "SSE: %v", err)
		c.pause(ctx, s, 100*time.Millisecond)
	}
}

// refusedOrBroken handles an answer other than 200.
func (c *client) refusedOrBroken(ctx context.Context, s *soak, resp *http.Response) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		c.refused[refused429]++
		s.live.refused.Add(1)
		c.retryAfter(ctx, s, resp.Header)
	case http.StatusServiceUnavailable:
		c.refused[refused503]++
		s.live.refused.Add(1)
		c.retryAfter(ctx, s, resp.Header)
	default:
		c.fail(&c.protocol, "%s: %d %s", c.kind, resp.StatusCode, bytes.TrimSpace(body))
		c.pause(ctx, s, time.Second)
	}
}

// sseFrame is one SSE event block, parsed by the WHATWG rules the browser uses.
type sseFrame struct {
	id, event string
	hasID     bool
	data      []byte
	line      []byte // scratch for lines longer than the reader's buffer
}

// read reads the next event block (skipping comments and blocks with no field).
func (f *sseFrame) read(r *bufio.Reader) error {
	f.id, f.event, f.hasID, f.data = "", "", false, f.data[:0]
	fields := 0
	for {
		line, err := f.readLine(r)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			if fields > 0 {
				return nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		fields++
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "id":
			f.id, f.hasID = string(value), true
		case "event":
			f.event = string(value)
		case "data":
			if len(f.data) > 0 {
				f.data = append(f.data, '\n')
			}
			f.data = append(f.data, value...)
		}
	}
}

// readLine returns the next line without its end (LF, CRLF or CR-LF split across reads; bridged
// writes LF). The slice is valid until the next call.
func (f *sseFrame) readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		f.line = append(f.line[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = r.ReadSlice('\n')
			f.line = append(f.line, line...)
		}
		line = f.line
	}
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// --- long-poll ---

// pollAnswer is GET /v1/poll's body.
type pollAnswer struct {
	Messages []message `json:"messages"`
	Cursor   string    `json:"cursor"`
	Reset    bool      `json:"reset"`
	More     bool      `json:"more"`
}

// runLongPoll long-polls in a loop. At random moments (exponential with -drop-mean) it abandons
// the request in flight, whether or not an answer was on its way, and asks again with the same
// cursor after an offline pause: an answer that never arrived must cost nothing.
func (c *client) runLongPoll(ctx context.Context, s *soak) {
	drop := c.nextDrop(s)
	for ctx.Err() == nil && !c.done(s) {
		draining := isClosed(s.drained)
		rctx, cancel := context.WithTimeout(ctx, s.cfg.lpWait+15*time.Second) // the watchdog
		stop := func() bool { return false }
		if !draining {
			rctx, cancel = withDeadline(rctx, cancel, drop)
			stop = context.AfterFunc(s.drainedCtx, cancel) // when publishing ends, re-check at once whether we are done
		}
		ans, err := c.poll(rctx, s)
		stop()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			c.book(s, ans)
		case errors.Is(err, errRefused):
		case !draining && !time.Now().Before(drop):
			c.drops++
			c.offline(ctx, s)
			drop = c.nextDrop(s)
		case isClosed(s.drained) && !draining:
			// Publishing ended during the request; loop to check whether we are done.
		case errors.Is(err, context.DeadlineExceeded):
			c.fail(&c.stalls, "long-poll: no answer within wait + 15s")
		default:
			c.fail(&c.netErrs, "long-poll: %v", err)
			c.pause(ctx, s, 100*time.Millisecond)
		}
	}
	c.caughtUp = c.done(s)
}

func withDeadline(ctx context.Context, cancel context.CancelFunc, t time.Time) (context.Context, context.CancelFunc) {
	dctx, dcancel := context.WithDeadline(ctx, t)
	return dctx, func() { dcancel(); cancel() }
}

var errRefused = errors.New("refused")

// poll sends one long-poll and reads its whole answer; nothing is booked unless all of it
// arrived.
func (c *client) poll(ctx context.Context, s *soak) (*pollAnswer, error) {
	q := url.Values{"wait": {s.cfg.lpWait.String()}}
	if c.cursor != "" {
		q.Set("cursor", c.cursor)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", s.d.base+"/v1/poll?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.user.token)
	c.connects++
	s.live.lpOpen.Add(1)
	defer s.live.lpOpen.Add(-1)
	resp, err := s.lpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.refusedOrBroken(ctx, s, resp)
		return nil, errRefused
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	var ans pollAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		c.fail(&c.protocol, "long-poll answer: %v: %.200s", err, body)
		return nil, errRefused
	}
	return &ans, nil
}

// book applies a long-poll answer: a reset first (to just before its first message, or to its
// cursor when it has none), then each message, then the cursor to resume from.
func (c *client) book(s *soak, ans *pollAnswer) {
	if ans.Reset {
		if len(ans.Messages) > 0 {
			c.tally.resetTo(ans.Messages[0].Data.N-1, false, time.Now(), s.rules)
		} else {
			to, err := parseCursor(ans.Cursor)
			if err != nil {
				c.fail(&c.protocol, "long-poll reset cursor %q: %v", ans.Cursor, err)
				return
			}
			c.tally.resetToCursor(to, time.Now(), s.rules)
		}
		s.live.resets.Add(1)
	}
	for i := range ans.Messages {
		c.take(s, &ans.Messages[i])
	}
	if n := len(ans.Messages); n > 0 && ans.Cursor != ans.Messages[n-1].ID {
		c.fail(&c.protocol, "long-poll cursor %q is not the last message's id %q", ans.Cursor, ans.Messages[n-1].ID)
	}
	if _, err := parseCursor(ans.Cursor); err != nil {
		c.fail(&c.protocol, "long-poll cursor %q: %v", ans.Cursor, err)
		return
	}
	c.cursor = ans.Cursor
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// logf writes a line to stderr; the report and progress go to stdout.
func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "bridgesoak: "+format+"\n", a...) }
