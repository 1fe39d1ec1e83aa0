package bridge

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Kept connections: bridged reads the requests of the connections its Listener accepts itself
// and serves the two hot ones, a poll and a publish, without net/http; everything else goes to
// net/http on the same connection. The goroutine that reads a connection serves its requests one
// after another, and after a parked long-poll's answer the goroutine that wrote it reads the next
// request. A client in a long-poll loop or an app publishing over a keep-alive connection then
// costs one goroutine and no buffer while idle; net/http would keep a connection goroutine, a
// background reader (which every park must stop again) and 4 KiB read and write buffers, and
// hand every re-poll through its accept loop.
//
// The fast path is narrow on purpose. It takes a request only when it is exactly
// "GET /v1/poll?…" with no body or "POST /v1/publish" with a Content-Length body, over HTTP/1.1,
// head and body together at most keptHeadMax bytes, the head ending in CRLF CRLF, with no Expect
// or Upgrade, one Host header and header bytes from a conservative set. It parses the head itself
// (parseKept, checked against a real http.Server by FuzzKeptHead) and runs the http.Server's
// handler on it, so the middleware, authentication, limits and access log are those of every
// other request. Anything else, malformed input included, goes to net/http with every byte read
// so far, and net/http answers it (400, 431, 505…) exactly as it would have. The http.Server's
// ReadHeaderTimeout (from the connection's start, for its first request) and IdleTimeout bound
// the waits as net/http would.

// keptHeadMax is the largest request, head and body, the fast path reads; a poll's head is a few
// hundred bytes, a publish of one message rarely 1 KiB. Larger ones go to net/http, whose
// MaxHeaderBytes and the publish handler's limits then apply.
const keptHeadMax = 4 << 10

var keptHeadPool = sync.Pool{New: func() any { b := make([]byte, keptHeadMax); return &b }}

var (
	crlfCRLF = []byte("\r\n\r\n")
	lfLF     = []byte("\n\n")
	// keptTargets: how the requests the fast path may take begin; a space or '?' must follow.
	keptTargets = [][]byte{[]byte("GET /v1/poll"), []byte("POST /v1/publish")}
)

// keptResponse is the http.ResponseWriter of a request served on a kept connection: it buffers
// the answer, written after the handler returns, or lets park take the connection over.
type keptResponse struct {
	rawResponse
	p        *parked  // the connection, owned by the goroutine serving the request
	body     keptBody // the request's body, read with its head
	rest     []byte   // bytes read past the request (a pipelined request), for park
	hijacked bool     // park took the connection over
}

// SetReadDeadline lets readers that set one (decodePublish) run; the body is already in memory.
func (kw *keptResponse) SetReadDeadline(time.Time) error { return nil }

// keptBody is a kept request's body: bytes read with its head, valid while the handler runs.
type keptBody struct{ bytes.Reader }

func (*keptBody) Close() error { return nil }

// adopt serves c, just accepted by its listener, from its first request: through the fast path
// or, for anything else, by handing it to net/http.
func (s *Server) adopt(c *ownedConn) {
	p := &parked{id: s.parked.seq.Add(1), conn: c}
	s.runParked(p, func() bool { return s.serveKept(p, nil, true) })
}

// serveKept serves the requests on p's connection (see above), from pending (bytes already read)
// and then the connection; fresh says no request has been read on it yet. It returns when the
// connection is closed for, handed to net/http, or taken over by a new park; closeConn says the
// caller must close it.
func (s *Server) serveKept(p *parked, pending []byte, fresh bool) (closeConn bool) {
	c, ok := p.conn.(*ownedConn)
	if !ok || c.l.srv == nil || c.l.srv.Handler == nil {
		return !p.keep(pending)
	}
	for first := fresh; ; first = false {
		// As net/http: a new connection's head must arrive within ReadHeaderTimeout of its
		// start, and its first request is served even while the node drains; between requests
		// the connection may idle for IdleTimeout, and is closed by a drain.
		if c.l.isClosed() || (!first && s.isDraining()) {
			return true
		}
		var headBy time.Time // zero: ReadHeaderTimeout from the request's first byte
		if first {
			headBy = c.l.timeout(c.l.srv.ReadHeaderTimeout)
		}
		var done bool
		switch {
		case p.next != nil: // read while a publisher answered a long-poll (answer.go)
			bufp, n := p.next, p.nextN
			p.next, p.nextN = nil, 0
			done, closeConn, pending = s.serveHead(p, c, bufp, n, headBy, !first)
		case len(pending) == 0:
			until := headBy
			if !first {
				until = c.l.timeout(c.l.srv.IdleTimeout)
			}
			bufp, n, ok := s.awaitRequest(p, c, until, first)
			if !ok {
				return true
			}
			done, closeConn, pending = s.serveHead(p, c, bufp, n, headBy, !first)
		default:
			done, closeConn, pending = s.serveNextKept(p, c, pending, headBy, !first)
		}
		if done {
			return closeConn
		}
		if wait := p.then; wait != nil { // the request parked a long-poll (parkWait)
			p.then = nil
			if wait() {
				return true
			}
		}
	}
}

// serveNextKept reads one request on a kept connection, starting with the bytes in pending, its
// head due by headBy (zero: ReadHeaderTimeout from now), and serves it (inline: see
// serveKeptRequest) or hands the connection to net/http with every byte read. done says the loop
// is over (closeConn then says whether to close); otherwise next holds the bytes read past the
// request, the start of the next one.
func (s *Server) serveNextKept(p *parked, c *ownedConn, pending []byte, headBy time.Time, inline bool) (done, closeConn bool, next []byte) {
	if len(pending) > keptHeadMax {
		return true, !p.keep(pending), nil
	}
	bufp := keptHeadPool.Get().(*[]byte)
	return s.serveHead(p, c, bufp, copy(*bufp, pending), headBy, inline)
}

// serveHead is serveNextKept with the request's first n bytes in *bufp, a keptHeadPool buffer it
// gives back.
func (s *Server) serveHead(p *parked, c *ownedConn, bufp *[]byte, n int, headBy time.Time, inline bool) (done, closeConn bool, next []byte) {
	defer keptHeadPool.Put(bufp)
	buf := *bufp
	if headBy.IsZero() {
		headBy = c.l.timeout(c.l.srv.ReadHeaderTimeout)
	}
	end, n, verdict := p.readHead(buf, n, headBy)
	if verdict == headClose {
		return true, true, nil
	}
	if verdict == headServe {
		var req http.Request // parseKept fills it; serveKeptRequest's copy with a context is the one on the heap
		if parseKept(buf[:end], &req) && end+int(req.ContentLength) <= len(buf) {
			// The body, read under the head's deadline; one that is late goes to net/http
			// with the rest, and the handler's own limits and deadlines apply to it there.
			need := end + int(req.ContentLength)
			var verdict int
			if n, verdict = p.readAtLeast(buf, n, need, headBy); verdict == headClose {
				return true, true, nil
			}
			if n >= need {
				return s.serveKeptRequest(p, c, &req, buf[end:need], buf[need:n], inline)
			}
		}
	}
	return true, !p.keep(buf[:n]), nil // keep copies what it hands back
}

// awaitRequest waits, up to until, for the connection's next request. On true, *bufp, a
// keptHeadPool buffer the caller gives back, holds its first n bytes. It reports false when the
// connection is to be closed: the client left or broke it, the time passed, the listener closed,
// or (unless first, a new connection's first request) the node is draining.
//
// A waiting connection holds no buffer. Through its raw descriptor (awaitRaw) each read attempt
// takes one and gives it back when nothing has arrived, so a request that has arrived is read in
// one syscall; a connection without one (a pipe) waits with a one-byte read, then the rest follows.
func (s *Server) awaitRequest(p *parked, c *ownedConn, until time.Time, first bool) (bufp *[]byte, n int, ok bool) {
	for {
		var poked bool
		var err error
		if r := c.raw(); r != nil {
			bufp, n, poked, err = p.awaitRaw(r, until)
		} else {
			var b [1]byte
			if n, poked, err = p.await(until, b[:]); n > 0 {
				bufp = keptHeadPool.Get().(*[]byte)
				(*bufp)[0] = b[0]
			}
		}
		switch {
		case n > 0:
			return bufp, n, true
		case err != nil:
			return nil, 0, false
		case poked:
			if c.l.isClosed() || (!first && s.isDraining()) {
				return nil, 0, false
			}
		case !until.IsZero() && !time.Now().Before(until):
			return nil, 0, false
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
// net/http's to judge (headHandBack). Bytes past the head's end are its body and what follows.
func scanHead(got []byte, max int) (end, verdict int) {
	if !keptTarget(got) {
		return 0, headHandBack
	}
	head := got
	if i := bytes.Index(got, crlfCRLF); i >= 0 {
		end = i + len(crlfCRLF)
		head = got[:end]
	}
	switch {
	case bytes.Contains(head, lfLF):
		return 0, headHandBack // bare line feeds: net/http's parser decides where the head ends
	case end > 0:
		return end, headServe
	case len(got) >= max:
		return 0, headHandBack
	}
	return 0, headMore
}

// keptTarget reports whether got may begin a request the fast path takes: one of keptTargets, or
// the start of one, followed by a space or '?' (so /v1/polls or /v1/publish/x are not ours).
func keptTarget(got []byte) bool {
	for _, t := range keptTargets {
		if m := min(len(got), len(t)); !bytes.Equal(got[:m], t[:m]) {
			continue
		}
		if len(got) > len(t) && got[len(t)] != '?' && got[len(t)] != ' ' {
			continue
		}
		return true
	}
	return false
}

// readHead reads into buf (n bytes already there) until scanHead has a verdict. It returns the
// head's end and the bytes now in buf.
func (p *parked) readHead(buf []byte, n int, until time.Time) (end, _ int, verdict int) {
	for {
		if end, verdict := scanHead(buf[:n], len(buf)); verdict != headMore {
			return end, n, verdict
		}
		var got readOutcome
		if n, got = p.readMore(buf, n, until); got != readGot {
			return 0, n, headClose // as net/http: a head that is too slow gets no answer
		}
	}
}

// readAtLeast reads into buf (n bytes already there) until it holds need bytes. When until
// passes first it says headHandBack (net/http gets what arrived, and judges the rest); when the
// client leaves, headClose.
func (p *parked) readAtLeast(buf []byte, n, need int, until time.Time) (_ int, verdict int) {
	for n < need {
		var got readOutcome
		switch n, got = p.readMore(buf, n, until); got {
		case readLate:
			return n, headHandBack
		case readGone:
			return n, headClose
		}
	}
	return n, headServe
}

type readOutcome int

const (
	readGot  readOutcome = iota // bytes arrived
	readGone                    // the client left or broke the connection
	readLate                    // the deadline passed first
)

// readMore reads what arrives into buf[n:], waiting up to until, and returns the bytes now in
// buf. A poke does not end the wait: Drain's poke waits for the request, whose answer tells the
// client the node drains.
func (p *parked) readMore(buf []byte, n int, until time.Time) (int, readOutcome) {
	for {
		m, poked, err := p.await(until, buf[n:])
		switch {
		case m > 0:
			return n + m, readGot
		case err != nil:
			return n, readGone
		case poked:
		case !until.IsZero() && !time.Now().Before(until):
			return n, readLate
		}
	}
}

// parseKept parses a head from scanHead (a request line and header lines, each ending in CRLF,
// then CRLF) into req, the request net/http's server makes of it, and reports whether the fast
// path takes it (keptEligible). It is stricter than net/http, never looser: it takes only a
// request line "METHOD target HTTP/1.1" for one of keptTargets, header lines "Name: value" with
// token names, exactly one plain Host, at most one Content-Length of digits and no
// Transfer-Encoding. From what it takes it makes what net/http makes, which FuzzKeptHead checks
// against a real http.Server: the target split into path and raw query as url.ParseRequestURI
// splits it, canonical header names, values trimmed of spaces and tabs, Host moved to req.Host,
// "Pragma: no-cache" implying "Cache-Control: no-cache", and Close from the Connection header.
func parseKept(head []byte, req *http.Request) bool {
	if !plainHead(head) {
		return false
	}
	hs := string(head) // one copy: every string of the request is a piece of it
	line, rest, _ := strings.Cut(hs, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" {
		return false
	}
	u := &url.URL{}
	var query bool
	u.Path, u.RawQuery, query = strings.Cut(target, "?")
	u.ForceQuery = query && u.RawQuery == "" // "/v1/poll?", as url.ParseRequestURI has it

	lines := strings.Count(rest, "\r\n")
	h := make(http.Header, lines)
	values := make([]string, lines) // one array for the values of all the names, as textproto's
	var host string
	var length int64
	seenLength := false
	for i := 0; ; i++ {
		line, rest, _ = strings.Cut(rest, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !plainToken(name) {
			return false
		}
		value = strings.Trim(value, " \t")
		name = http.CanonicalHeaderKey(name)
		switch name {
		case "Host":
			host = value // plainHead saw exactly one
			continue
		case "Content-Length":
			if seenLength || value == "" || len(value) > 9 || strings.Trim(value, "0123456789") != "" {
				return false // several, signed, empty or huge: net/http judges
			}
			seenLength = true
			n, _ := strconv.Atoi(value)
			length = int64(n)
		case "Transfer-Encoding":
			return false
		}
		if vs, ok := h[name]; ok {
			h[name] = append(vs, value)
		} else {
			values[i] = value
			h[name] = values[i : i+1 : i+1]
		}
	}
	if pragma := h["Pragma"]; len(pragma) > 0 && pragma[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	*req = http.Request{
		Method:        method,
		URL:           u,
		Proto:         proto,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          http.NoBody, // serveKeptRequest gives a body it read its own reader
		ContentLength: length,
		Close:         hasToken(h["Connection"], "close"),
		Host:          host,
		RequestURI:    target,
	}
	return keptEligible(req)
}

// hasToken reports whether one of the comma-separated lists in values holds token (compared
// without regard to ASCII case, around optional spaces and tabs), as a Connection header is read.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(t, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// serveKeptRequest runs the http.Server's handler on req, a request parseKept took, with body
// (read with its head) as its body, and writes its answer. rest holds the bytes read past the
// request; inline lets a long-poll wait on this goroutine (parkWait). done, closeConn and next
// are serveNextKept's.
func (s *Server) serveKeptRequest(p *parked, c *ownedConn, parsed *http.Request, body, rest []byte, inline bool) (done, closeConn bool, next []byte) {
	parsed.RemoteAddr = c.remoteAddr()
	ctx, cancel := context.WithCancel(c.l.baseCtx)
	defer cancel()
	req := parsed.WithContext(ctx) // a copy: parsed stays on serveNextKept's stack

	kw := &keptResponse{rawResponse: rawResponse{header: make(http.Header, 8)}, p: p}
	if len(body) > 0 {
		kw.body.Reset(body) // body lives in a pooled buffer, until this returns
		req.Body = &kw.body
	}
	if len(rest) > 0 {
		kw.rest = append([]byte(nil), rest...) // rest lives in a pooled buffer
	}
	s.parked.keptServed.Add(1)
	p.serving = inline
	ok := s.runKeptHandler(c.l.srv.Handler, kw, req)
	p.serving = false
	switch {
	case !ok:
		if wait := p.then; wait != nil { // the panic came after a park: its wait releases what it holds
			p.then = nil
			wait()
		}
		return true, true, nil
	case p.then != nil: // a long-poll parked: serveKept waits for its answer, then reads on
		return false, false, kw.rest
	case kw.hijacked: // a connection's first long-poll parked on a new goroutine, which owns it now
		return true, false, nil
	}
	closeAfter := req.Close || s.isDraining() || c.l.isClosed()
	if err := kw.writeTo(p, closeAfter, s.opts.WriteTimeout); err != nil || closeAfter {
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
// /v1/poll with no body or a POST of /v1/publish with a Content-Length (or no) body, over HTTP/1.1,
// with nothing to negotiate and a plain Host. It is stricter than net/http, never looser:
// whatever it refuses, net/http judges.
func keptEligible(req *http.Request) bool {
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/v1/poll":
		if req.ContentLength != 0 {
			return false
		}
	case req.Method == http.MethodPost && req.URL.Path == "/v1/publish":
		if req.ContentLength < 0 {
			return false // a length unknown (chunked): net/http reads it
		}
	default:
		return false
	}
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.URL.Host != "" || !plainHost(req.Host) ||
		len(req.TransferEncoding) != 0 {
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
