package bridge

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Kept connections: after a parked long-poll has written its answer, the goroutine that wrote it
// reads the connection's next request itself when it is another poll, instead of handing the
// connection back to net/http. A client in a long-poll loop then costs one goroutine for its
// whole life; through net/http each re-poll would cost a hand-off to the accept loop, a new
// connection goroutine, net/http's background reader (which the next park must stop again) and
// a new parked goroutine.
//
// The fast path is narrow on purpose. It takes a request only when it is exactly
// "GET /v1/poll?…" over HTTP/1.1 with a head of at most keptHeadMax bytes ending in CRLF CRLF,
// no body, no Expect or Upgrade, one Host header and header bytes from a conservative set. It
// parses the head with net/http's own parser (http.ReadRequest) and runs the http.Server's
// handler on it, so the middleware, authentication, limits and access log are those of every
// other request. Anything else, malformed input included, goes back to net/http with every byte
// read so far, and net/http answers it (400, 431, 505…) exactly as on a new connection. The
// http.Server's IdleTimeout and ReadHeaderTimeout bound the waits as net/http would.

// keptHeadMax is the largest request head the fast path reads; a poll's head is a few hundred
// bytes. Larger ones go to net/http, whose MaxHeaderBytes then applies.
const keptHeadMax = 4 << 10

var keptHeadPool = sync.Pool{New: func() any { b := make([]byte, keptHeadMax); return &b }}

// keptParser feeds a request head already in memory to http.ReadRequest.
type keptParser struct {
	src bytes.Reader
	br  *bufio.Reader
}

var keptParserPool = sync.Pool{New: func() any {
	kp := &keptParser{}
	kp.br = bufio.NewReaderSize(&kp.src, keptHeadMax)
	return kp
}}

var (
	crlfCRLF   = []byte("\r\n\r\n")
	lfLF       = []byte("\n\n")
	pollPrefix = []byte("GET /v1/poll")
)

// keptResponse is the http.ResponseWriter of a request served on a kept connection: it buffers
// the answer, written after the handler returns, or lets park take the connection over.
type keptResponse struct {
	rawResponse
	conn     *ownedConn
	rest     []byte // bytes read past the request head (a pipelined request), for park
	hijacked bool   // park took the connection: a new parked goroutine owns it
}

// SetWriteDeadline lets writers that set one (writeBatch) run; the answer is written after the
// handler returns, under its own write deadline.
func (kw *keptResponse) SetWriteDeadline(time.Time) error { return nil }

// serveKept serves the requests that follow a parked long-poll's answer on p's connection (see
// above), from pending (bytes already read) and then the connection. It returns when the
// connection is closed for, handed back to net/http, or taken over by a new park; closeConn says
// the caller must close it.
func (s *Server) serveKept(p *parked, pending []byte) (closeConn bool) {
	c, ok := p.conn.(*ownedConn)
	if !ok || c.l.srv == nil || c.l.srv.Handler == nil {
		return !p.keep(pending)
	}
	for {
		if s.isDraining() || c.l.isClosed() {
			return true // net/http too closes idle connections on Shutdown
		}
		if len(pending) == 0 {
			var first [1]byte
			if !s.awaitRequest(p, c.l, first[:]) {
				return true
			}
			pending = first[:]
		}
		var done bool
		if done, closeConn, pending = s.serveNextKept(p, c, pending); done {
			return closeConn
		}
	}
}

// serveNextKept reads one request on a kept connection, starting with the bytes in pending, and
// serves it or hands the connection back to net/http with every byte read. done says the loop is
// over (closeConn then says whether to close); otherwise next holds the bytes read past the
// request, the start of the next one.
func (s *Server) serveNextKept(p *parked, c *ownedConn, pending []byte) (done, closeConn bool, next []byte) {
	bufp := keptHeadPool.Get().(*[]byte)
	defer keptHeadPool.Put(bufp)
	buf := *bufp
	if len(pending) > len(buf) {
		return true, !p.keep(pending), nil
	}
	end, n, verdict := s.readHead(p, c.l, buf, copy(buf, pending))
	switch verdict {
	case headClose:
		return true, true, nil
	case headServe:
		if req := parseKept(buf[:end]); req != nil {
			return s.serveKeptRequest(p, c, req, buf[end:n])
		}
	}
	return true, !p.keep(buf[:n]), nil // keep copies what it hands back
}

// awaitRequest waits, up to the idle timeout, for the first byte of the connection's next
// request and puts it in b. It reports false when the connection is to be closed: the client
// left or broke it, the idle timeout passed, or the node is draining or the listener closed.
func (s *Server) awaitRequest(p *parked, l *reuseListener, b []byte) bool {
	until := l.timeout(l.srv.IdleTimeout)
	for {
		n, poked, err := p.await(until, b)
		switch {
		case n > 0:
			return true
		case err != nil:
			return false
		case poked:
			if s.isDraining() || l.isClosed() {
				return false
			}
		case !until.IsZero() && !time.Now().Before(until):
			return false
		}
	}
}

// What scanHead and readHead found.
const (
	headServe    = iota // a request for the fast path; its head is buf[:end]
	headHandBack        // something else: net/http gets it, with every byte read
	headClose           // the client left, broke the connection or was too slow
	headMore            // so far so good: more bytes are needed
)

// scanHead judges the bytes of a request read so far, at most max: a whole head that may be one
// for the fast path ends at end (headServe), more bytes are needed (headMore), or the request is
// net/http's to judge (headHandBack).
func scanHead(got []byte, max int) (end, verdict int) {
	if m := min(len(got), len(pollPrefix)); !bytes.Equal(got[:m], pollPrefix[:m]) {
		return 0, headHandBack
	}
	if len(got) > len(pollPrefix) && got[len(pollPrefix)] != '?' && got[len(pollPrefix)] != ' ' {
		return 0, headHandBack // /v1/polls, /v1/poll/x: not ours to judge
	}
	if bytes.Contains(got, lfLF) {
		return 0, headHandBack // bare line feeds: net/http's parser decides
	}
	if i := bytes.Index(got, crlfCRLF); i >= 0 {
		return i + len(crlfCRLF), headServe
	}
	if len(got) >= max {
		return 0, headHandBack
	}
	return 0, headMore
}

// readHead reads into buf (n bytes already there) until scanHead has a verdict. It returns the
// head's end and the bytes now in buf.
func (s *Server) readHead(p *parked, l *reuseListener, buf []byte, n int) (end, _ int, verdict int) {
	until := l.timeout(l.srv.ReadHeaderTimeout)
	for {
		if end, verdict := scanHead(buf[:n], len(buf)); verdict != headMore {
			return end, n, verdict
		}
		m, poked, err := p.await(until, buf[n:])
		n += m
		switch {
		case m > 0 || poked:
			// Drain's poke waits for the request: its answer tells the client the node drains.
		case err != nil:
			return 0, n, headClose
		case !until.IsZero() && !time.Now().Before(until):
			return 0, n, headClose // as net/http: a head that is too slow gets no answer
		}
	}
}

// parseKept parses a head from scanHead with net/http's parser and returns the request when the
// fast path takes it, or nil. http.ReadRequest moves the Host header into req.Host, as net/http's
// server does.
func parseKept(head []byte) *http.Request {
	if !plainHead(head) {
		return nil
	}
	kp := keptParserPool.Get().(*keptParser)
	kp.src.Reset(head)
	kp.br.Reset(&kp.src)
	req, err := http.ReadRequest(kp.br)
	kp.br.Reset(nil)
	keptParserPool.Put(kp)
	if err != nil || !keptEligible(req) {
		return nil
	}
	return req
}

// serveKeptRequest runs the http.Server's handler on req, a request parseKept took, and writes
// its answer. rest holds the bytes read past its head. done, closeConn and next are
// serveNextKept's.
func (s *Server) serveKeptRequest(p *parked, c *ownedConn, req *http.Request, rest []byte) (done, closeConn bool, next []byte) {
	req.RemoteAddr = c.remoteAddr()
	ctx, cancel := context.WithCancel(c.l.baseCtx)
	defer cancel()
	req = req.WithContext(ctx)

	kw := &keptResponse{rawResponse: rawResponse{header: make(http.Header, 8)}, conn: c}
	if len(rest) > 0 {
		kw.rest = append([]byte(nil), rest...) // rest lives in a pooled buffer
	}
	s.parked.keptServed.Add(1)
	if !s.runKeptHandler(c.l.srv.Handler, kw, req) {
		return true, true, nil
	}
	if kw.hijacked {
		return true, false, nil
	}
	closeAfter := req.Close || s.isDraining() || c.l.isClosed()
	if err := p.write(kw.wire(closeAfter), s.opts.WriteTimeout); err != nil || closeAfter {
		return true, true, nil
	}
	return false, false, kw.rest
}

// runKeptHandler runs h as net/http's connection goroutine would; it reports false when the
// handler panicked (the accessLog middleware logs and answers other panics; it re-panics only
// http.ErrAbortHandler), and the connection is then closed.
func (s *Server) runKeptHandler(h http.Handler, kw *keptResponse, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				s.log.Error("handler panic on a kept connection", zap.Any("panic", v), zap.Stack("stack"))
			}
			ok = false
		}
	}()
	h.ServeHTTP(kw, req)
	return true
}

// plainHead reports whether head (ending in CRLF CRLF) is made of printable ASCII and tabs, ends
// its lines with CRLF only, folds no header line, and has exactly one Host line. http.ReadRequest
// keeps only the first of several Host headers, so this is where two are caught.
func plainHead(head []byte) bool {
	hosts := 0
	line := 0 // start of the current line
	for i := 0; i < len(head); i++ {
		c := head[i]
		switch {
		case c == '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
			i++
			if l := head[line : i-1]; line > 0 && len(l) > 0 {
				if l[0] == ' ' || l[0] == '\t' {
					return false // an obsolete folded line
				}
				if len(l) >= 5 && strings.EqualFold(string(l[:5]), "host:") {
					hosts++
				}
			}
			line = i + 1
		case (c < ' ' && c != '\t') || c > '~':
			return false
		}
	}
	return hosts == 1
}

// keptEligible reports whether the fast path takes req, whose head passed plainHead: a GET of
// /v1/poll over HTTP/1.1 with no body, nothing to negotiate and a plain Host. It is stricter than
// net/http, never looser: whatever it refuses, net/http judges.
func keptEligible(req *http.Request) bool {
	if req.Method != http.MethodGet || req.ProtoMajor != 1 || req.ProtoMinor != 1 ||
		req.URL.Path != "/v1/poll" || req.URL.Host != "" || !plainHost(req.Host) ||
		req.ContentLength != 0 || len(req.TransferEncoding) != 0 {
		return false
	}
	for k := range req.Header {
		if k == "Expect" || k == "Upgrade" || !plainToken(k) {
			return false
		}
	}
	return true
}

// plainHost: letters, digits and . - _ : [ ] (host names, IPv4, bracketed IPv6, a port).
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !isAlnum(c) && c != '.' && c != '-' && c != '_' && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// plainToken: an RFC 9110 token.
func plainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
