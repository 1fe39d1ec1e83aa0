package bridge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A parked connection is an HTTP/1.1 connection that waits for messages (an SSE stream or a
// long-poll) after bridged took it over from net/http (Hijack). net/http would keep, for every
// waiting client, a goroutine grown to 16 KiB by the request path, a background reader goroutine,
// and 10 KiB of read, write and chunking buffers; a parked connection keeps a fresh goroutine
// blocked in the network poller and nothing else. That goroutine owns the connection:
//
//   - It waits in conn.Read with the read deadline set to the next thing it must do (heartbeat,
//     token expiry, the long-poll's end, its moment in the drain window). A Read that returns
//     data or EOF means the client left or broke the protocol; one that times out is the timer.
//   - Wake-ups from other goroutines (Subscription.Notify, Drain, the demo's faults) call poke,
//     which sets a flag and moves the read deadline to the past. wait sets the deadline first and
//     reads the flag second, so a poke is never lost between the two.
//
// Responses are written straight to the connection, under a write deadline (SSE frames from a
// pooled buffer, released while the stream is idle).
// HTTP/2 requests, and requests through writers that cannot be hijacked (tests' recorders), stay
// on the handler goroutine (serveStream, the long-poll loop in poll.go).
type parked struct {
	id    uint64 // picks a parkedSet shard
	conn  net.Conn
	woken atomic.Bool
	cut   context.Context // the demo's fault switch; nil outside demo mode

	// Of a kept connection (keepalive.go), kept by its owning goroutine: serving while the
	// handler of a request after the first runs, and then the wait of a long-poll the handler
	// parked (parkWait).
	serving bool
	then    func() (closeConn bool)
	// The first bytes of the next request, read while a publisher answered a long-poll
	// (answer.go): n bytes in a keptHeadPool buffer, for serveKept.
	next  *[]byte
	nextN int
}

// inThePast is a deadline that has passed: setting it makes a blocked Read return at once.
var inThePast = time.Unix(1, 0)

func (p *parked) poke() {
	p.woken.Store(true)
	p.conn.SetReadDeadline(inThePast)
}

var errClientSpoke = errors.New("client sent data on a connection waiting for messages")

// wait blocks until until, a poke, or the client leaving. It reports whether it was poked (and
// clears the flag, so a poke after wait returns is seen by the next wait); err is non-nil when the
// connection is done for.
func (p *parked) wait(until time.Time) (poked bool, err error) {
	var b [1]byte
	n, poked, err := p.await(until, b[:])
	if n > 0 {
		return false, errClientSpoke
	}
	return poked, err
}

// await is wait that keeps what the client sent: it reads into b until until, a poke, or the
// client sending or leaving. n > 0 means b[:n] arrived (an error with it is left for the next
// call); with n == 0 and no error, neither a poke nor data came, so until has passed or the read
// was empty.
func (p *parked) await(until time.Time, b []byte) (n int, poked bool, err error) {
	if err := p.conn.SetReadDeadline(until); err != nil {
		return 0, false, err
	}
	if p.woken.Swap(false) {
		return 0, true, nil
	}
	n, err = p.conn.Read(b)
	switch {
	case n > 0:
		return n, false, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, p.woken.Swap(false), nil
	case err == nil:
		return 0, false, nil // a zero-byte read: look again
	default:
		return 0, false, err
	}
}

// awaitRaw is await reading through r, the connection's raw descriptor, into a keptHeadPool
// buffer taken for each attempt and given back when the attempt finds nothing: n > 0 means *bufp
// holds n bytes, and the caller gives it back.
func (p *parked) awaitRaw(r *rawReader, until time.Time) (bufp *[]byte, n int, poked bool, err error) {
	if err := p.conn.SetReadDeadline(until); err != nil {
		return nil, 0, false, err
	}
	if p.woken.Swap(false) {
		return nil, 0, true, nil
	}
	r.bufp, r.n, r.err = nil, 0, nil
	err = r.rc.Read(r.fn)
	bufp, n = r.bufp, r.n
	r.bufp = nil
	switch {
	case n > 0:
		return bufp, n, false, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, 0, p.woken.Swap(false), nil
	case err != nil:
		return nil, 0, false, err
	default:
		return nil, 0, false, r.err
	}
}

// rawReader reads a connection's requests through its raw descriptor (awaitRaw), and writes a
// publisher's long-poll answer or SSE frames through it without waiting (writeNow).
type rawReader struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // read, bound once: a closure made per read would be an allocation
	bufp *[]byte               // what read got: n bytes in *bufp, or err
	n    int
	err  error

	// Of writeNow, used by one goroutine at a time (the publisher holding the connection's offer).
	putFn func(fd uintptr) // put, bound once
	out   []byte           // what is left to write
	werr  error
}

func newRawReader(rc syscall.RawConn) *rawReader {
	r := &rawReader{rc: rc}
	r.fn = r.read
	r.putFn = r.put
	return r
}

// writeNow writes what the socket's buffer takes of b at once and returns the rest, never
// waiting for the client: a goroutine that answers for others (answer.go) must not be held by
// one that stopped reading. It goes through Control, not Write, so the write deadline the
// connection's owner last set (long passed, perhaps) does not refuse it.
func (r *rawReader) writeNow(b []byte) (rest []byte, err error) {
	r.out, r.werr = b, nil
	if err := r.rc.Control(r.putFn); err != nil {
		r.out = nil
		return b, err
	}
	rest, err = r.out, r.werr
	r.out, r.werr = nil, nil
	return rest, err
}

// cutByFault reports whether the demo's fault controls cut this connection.
func (p *parked) cutByFault() bool { return p.cut != nil && p.cut.Err() != nil }

// write puts b on the connection under the write deadline.
func (p *parked) write(b []byte, timeout time.Duration) error {
	if err := p.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := p.conn.Write(b)
	return err
}

// parkedSet holds the parked connections, so Drain can poke them, and counts their goroutines,
// so Wait can wait for them (http.Server.Shutdown does not track hijacked connections).
type parkedSet struct {
	wg         sync.WaitGroup
	seq        atomic.Uint64
	keptServed atomic.Uint64 // requests served on kept connections (keepalive.go)
	shards     [16]struct {
		sync.Mutex
		m map[*parked]struct{}
	}
	// Long-poll answers written by a publisher (answer.go): whole, and begun with the rest left
	// to the owner.
	answeredByPublisher, answeredInPart atomic.Uint64
	// SSE frames written by a publisher (stream.go): whole, and begun with the rest left to the
	// owner.
	streamWritesByPublisher, streamWritesInPart atomic.Uint64
}

func (ps *parkedSet) shard(p *parked) *struct {
	sync.Mutex
	m map[*parked]struct{}
} {
	return &ps.shards[p.id%uint64(len(ps.shards))]
}

func (ps *parkedSet) add(p *parked) {
	sh := ps.shard(p)
	sh.Lock()
	if sh.m == nil {
		sh.m = make(map[*parked]struct{})
	}
	sh.m[p] = struct{}{}
	sh.Unlock()
}

func (ps *parkedSet) remove(p *parked) {
	sh := ps.shard(p)
	sh.Lock()
	delete(sh.m, p)
	sh.Unlock()
}

// pokeAll wakes every parked connection; they see the node draining.
func (ps *parkedSet) pokeAll() {
	for i := range ps.shards {
		sh := &ps.shards[i]
		sh.Lock()
		for p := range sh.m {
			p.poke()
		}
		sh.Unlock()
	}
}

// park takes r's connection over from net/http for a transport that waits. It returns nil, and
// leaves the request to the handler goroutine, when the connection cannot be taken over (HTTP/2,
// a writer without Hijack). The buffered bytes net/http had read past the request, if any, are
// returned so a connection handed back to the listener (keep) reads them first.
//
// On success the caller must start the owning goroutine with s.runParked, which registers it for
// Drain and Wait.
func (s *Server) park(w http.ResponseWriter, r *http.Request) (*parked, []byte) {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet {
		return nil, nil // HEAD (which GET routes also match) must get no body: net/http sees to it
	}
	if kw, ok := beneath[*keptResponse](w); ok { // a request read by a kept connection (keepalive.go)
		kw.hijacked = true
		if kw.p.serving {
			return kw.p, kw.rest // its goroutine, which owns the connection already, waits too (parkWait)
		}
		return &parked{id: s.parked.seq.Add(1), conn: kw.p.conn}, kw.rest
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil
	}
	var pending []byte
	if n := rw.Reader.Buffered(); n > 0 {
		pending, _ = rw.Reader.Peek(n)
		pending = append([]byte(nil), pending...)
	}
	return &parked{id: s.parked.seq.Add(1), conn: conn}, pending
}

// parkWait runs wait, a long-poll's wait and answer, as p's owner, then serves the connection's
// next requests (keepalive.go) unless wait says to close it. A re-poll read by a kept connection
// has its goroutine own the connection already: that goroutine runs wait once the handler has
// returned (serveKept), so a client in a long-poll loop keeps one goroutine, whose stack grew to
// what a request needs once, instead of a new one whose stack grows at every poll. Otherwise
// (a connection's first long-poll: most clients park once and wait, on the smallest stack) a new
// goroutine does (runParked); pending are the bytes read past the request.
func (s *Server) parkWait(p *parked, pending []byte, wait func() (closeConn bool)) {
	if p.serving {
		p.then = wait
		return
	}
	s.runParked(p, func() bool { return wait() || s.serveKept(p, pending, false) })
}

// runParked runs fn as p's owning goroutine, registered so Drain pokes it and Wait waits for it.
// When fn returns the connection is closed unless fn handed it back (it then returns false).
func (s *Server) runParked(p *parked, fn func() (closeConn bool)) {
	s.parked.wg.Add(1)
	s.parked.add(p)
	if s.isDraining() {
		p.poke() // Drain may have walked the set before p joined it
	}
	go func() {
		defer s.parked.wg.Done()
		defer s.parked.remove(p)
		if fn() {
			p.conn.Close()
		}
	}()
}

// rawResponse is an http.ResponseWriter that buffers a whole response, so the ordinary writers
// (writeBatch, writeError) can answer on a parked connection. Its body is a pooled buffer, which
// writeTo gives back.
type rawResponse struct {
	header http.Header
	status int
	body   []byte
	bodyp  *[]byte // body's pool entry, once Write took one
}

func (rr *rawResponse) Header() http.Header { return rr.header }

// SetWriteDeadline lets writers that set one (writeBatch) run: the whole response is written
// later, under its own write deadline.
func (rr *rawResponse) SetWriteDeadline(time.Time) error { return nil }

func (rr *rawResponse) WriteHeader(status int) {
	if rr.status == 0 {
		rr.status = status
	}
}

func (rr *rawResponse) Write(b []byte) (int, error) {
	if rr.status == 0 {
		rr.status = http.StatusOK
	}
	if rr.bodyp == nil {
		rr.bodyp = bodyBufs.Get().(*[]byte)
		rr.body = (*rr.bodyp)[:0]
	}
	rr.body = append(rr.body, b...)
	return len(b), nil
}

// appendWire appends the whole response to b. As net/http does, a handler that wrote nothing
// answers 200 and a body without a Content-Type gets a sniffed one.
func (rr *rawResponse) appendWire(b []byte, close bool) []byte {
	status := rr.status
	if status == 0 {
		status = http.StatusOK
	}
	if len(rr.body) > 0 && rr.header.Get("Content-Type") == "" {
		rr.header.Set("Content-Type", http.DetectContentType(rr.body))
	}
	b = appendHead(b, status, rr.header, len(rr.body), close)
	return append(b, rr.body...)
}

// writeTo writes the whole response, head and body, to p under timeout (close says the
// connection ends after it), from a pooled buffer: answers are written once and forgotten, so
// building each in a new one only fed the collector. The body's buffer goes back to the pool too;
// rr must not be written to after.
func (rr *rawResponse) writeTo(p *parked, close bool, timeout time.Duration) error {
	bufp := bodyBufs.Get().(*[]byte)
	b := rr.appendWire((*bufp)[:0], close)
	err := p.write(b, timeout)
	putBodyBuf(bufp, b)
	rr.release()
	return err
}

// release gives the body's buffer back to the pool; rr must not be written to after.
func (rr *rawResponse) release() {
	if rr.bodyp != nil {
		putBodyBuf(rr.bodyp, rr.body)
		rr.body, rr.bodyp = nil, nil
	}
}

// appendHead appends an HTTP/1.1 status line and header block. A negative contentLength means
// the body runs until the connection closes (an SSE stream), which also implies close.
func appendHead(b []byte, status int, h http.Header, contentLength int, close bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	for k, vs := range h {
		if k == "Connection" || k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Date: "...)
	b = appendDate(b, time.Now())
	b = append(b, "\r\n"...)
	if contentLength >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(contentLength), 10)
		b = append(b, "\r\n"...)
	}
	if close || contentLength < 0 {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// httpDate is the Date header's text for one second; formatting it for every answer cost as much
// as the rest of the head.
type httpDate struct {
	unix int64
	text [len(http.TimeFormat)]byte
}

var lastDate atomic.Pointer[httpDate]

// appendDate appends now as a Date header's value (http.TimeFormat), formatted once a second.
func appendDate(b []byte, now time.Time) []byte {
	sec := now.Unix()
	d := lastDate.Load()
	if d == nil || d.unix != sec {
		d = &httpDate{unix: sec}
		now.UTC().AppendFormat(d.text[:0], http.TimeFormat)
		lastDate.Store(d)
	}
	return append(b, d.text[:]...)
}

// Listener wraps ln, which srv serves over plain HTTP, so that bridged reads the requests of the
// connections it accepts: polls and publishes are served with srv.Handler on bridged's own
// goroutine, under srv's ReadHeaderTimeout and IdleTimeout, without net/http's per-connection
// goroutines and buffers (keepalive.go), and a long-poll's connection stays open after its answer.
// Every other request goes to srv, with the connection, as if newly accepted. srv's ConnState
// and ConnContext hooks see only the connections handed to it. Without Listener, everything is
// net/http's and long-polls end their connections after answering.
func (s *Server) Listener(ln net.Listener, srv *http.Server) net.Listener {
	base := context.WithValue(context.Background(), http.ServerContextKey, srv)
	l := &reuseListener{
		Listener: ln,
		s:        s,
		srv:      srv,
		baseCtx:  context.WithValue(base, http.LocalAddrContextKey, ln.Addr()),
		failed:   make(chan error),
		back:     make(chan net.Conn), // unbuffered: a connection handed back is accepted or closed, never stranded
		done:     make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// reuseListener adopts the connections its listener accepts (Server.adopt) and gives srv those
// handed to it, and the listener's errors.
type reuseListener struct {
	net.Listener
	s         *Server
	srv       *http.Server
	baseCtx   context.Context // of requests served on kept connections, as net/http's
	failed    chan error
	back      chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

// acceptLoop is the listener's goroutine; it ends when the listener is closed. An accept error
// waits for srv's Accept, so srv's back-off on temporary errors paces this loop too.
func (l *reuseListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			l.s.adopt(&ownedConn{Conn: c, l: l})
			continue
		}
		select {
		case l.failed <- err:
		case <-l.done:
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

func (l *reuseListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.back:
		return c, nil
	case err := <-l.failed:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *reuseListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.Listener.Close()
		l.s.parked.pokeAll() // kept connections waiting for a request close
	})
	return err
}

func (l *reuseListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// timeout turns one of srv's timeouts into a deadline as net/http does: zero means ReadTimeout,
// and no positive value means none.
func (l *reuseListener) timeout(d time.Duration) time.Time {
	if d == 0 {
		d = l.srv.ReadTimeout
	}
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// giveBack hands c to the http.Server as if accepted; it reports false when the listener is closed.
func (l *reuseListener) giveBack(c *ownedConn) bool {
	select {
	case l.back <- c:
		return true
	case <-l.done:
		return false
	}
}

// ownedConn is a connection accepted by a reuseListener, so a parked long-poll knows where to
// hand it back. pending holds bytes net/http had read past the request (a pipelined request).
type ownedConn struct {
	net.Conn
	l       *reuseListener
	pending []byte
	remote  string     // RemoteAddr().String(), once a kept request needed it
	rr      *rawReader // reads through the raw descriptor, once raw looked it up
	noRaw   bool       // the connection has none (a test's pipe)
}

// raw returns a reader of the connection's raw descriptor, for reads that bypass net.Conn
// (awaitRequest), or nil when it has none or bytes handed back wait in pending.
func (c *ownedConn) raw() *rawReader {
	if c.rr == nil && !c.noRaw && rawReads {
		if sc, ok := c.Conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				c.rr = newRawReader(rc)
			}
		}
		c.noRaw = c.rr == nil
	}
	if len(c.pending) > 0 {
		return nil
	}
	return c.rr
}

func (c *ownedConn) remoteAddr() string {
	if c.remote == "" {
		c.remote = c.RemoteAddr().String()
	}
	return c.remote
}

func (c *ownedConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil // an empty slice would keep the bytes for the connection's life
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// reusable reports whether keep can hand p's connection back (it came through Listener).
func (p *parked) reusable() bool {
	_, ok := p.conn.(*ownedConn)
	return ok
}

// keep hands p's connection back to its listener for the next request. It reports false when
// that is not possible (the connection came from a plain listener, or it is closing); the caller
// then closes it.
func (p *parked) keep(pending []byte) bool {
	c, ok := p.conn.(*ownedConn)
	return ok && c.giveBackWith(pending)
}

// giveBackWith hands c back to its listener, to be read from pending (copied) first.
func (c *ownedConn) giveBackWith(pending []byte) bool {
	if err := c.SetDeadline(time.Time{}); err != nil {
		return false
	}
	c.pending = append(c.pending, pending...)
	return c.l.giveBack(c)
}
