package bridge

import (
	"bytes"
	"io"
	"sync"
	"unicode/utf8"
)

// Publish bodies are read whole into a pooled buffer, then decoded by parsePublish, a decoder
// for the shapes apps send, and by encoding/json for everything else. parsePublish answers only
// when it is sure encoding/json would accept the body and decode exactly the same publishBody;
// anything else (escapes or bad UTF-8 in a user, event or key, null members, a repeated or
// differently cased member name, unknown members, malformed or very deep JSON, trailing data)
// makes it give up, and encoding/json decides and words the error as it always has.
// FuzzPublishDecode holds parsePublish to that.

// bodyBufs holds buffers for publish bodies and for answers built whole (poll answers, responses
// on kept connections). Nothing decoded from a body refers to its buffer: strings and data are
// copied out, so the buffer is reused once decoding is done; an answer's is reused once written.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// putBodyBuf gives b, grown from bufp's buffer, back to bodyBufs unless it grew past maxPooledBody.
func putBodyBuf(bufp *[]byte, b []byte) {
	if cap(b) <= maxPooledBody {
		*bufp = b[:0]
		bodyBufs.Put(bufp)
	}
}

const (
	maxPooledBody = 64 << 10 // larger buffers are left to the GC, so the pool holds little
	maxBodyHint   = 64 << 10 // Content-Length is trusted this far for sizing the first read
)

// readBody reads r to its end into buf, growing it as data arrives; hint (a Content-Length, or
// -1) sizes the buffer up front, capped so a claimed length costs nothing before it is sent. It
// returns what was read and the error that stopped reading, nil at io.EOF.
func readBody(r io.Reader, buf []byte, hint int64) ([]byte, error) {
	if hint > int64(cap(buf)) {
		buf = make([]byte, 0, min(hint, maxBodyHint)+1) // +1: io.EOF without growing again
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// errReader is a reader that fails with err: what a body's reader said after its last byte.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// parsePublish decodes in into b and reports true when in is one JSON object of the members
// user, event, key (plain strings), data (any JSON value) and messages (an array of objects of
// the first four), each at most once, with nothing but whitespace after it. It reports false,
// with b in any state, for everything else.
func (b *publishBody) parsePublish(in []byte) bool {
	p := jsonParser{in: in}
	p.ws()
	var seen uint8
	if !p.objectMembers(func(name []byte) bool {
		if string(name) != "messages" {
			return p.itemMember(&b.publishItem, &seen, name)
		}
		if b.Messages != nil || !p.next('[') {
			return false
		}
		// Room for the messages up front: an estimate ("user" may also occur inside data),
		// capped so a body cannot make it reserve more than a 1024-message batch needs.
		b.Messages = make([]publishItem, 0, min(bytes.Count(p.in[p.i:], []byte(`"user"`)), 1024))
		p.ws()
		if p.next(']') {
			return true
		}
		for {
			var it publishItem
			var seen uint8
			if !p.objectMembers(func(name []byte) bool { return p.itemMember(&it, &seen, name) }) {
				return false
			}
			b.Messages = append(b.Messages, it)
			p.ws()
			switch {
			case p.next(']'):
				return true
			case !p.next(','):
				return false
			}
			p.ws()
		}
	}) {
		return false
	}
	p.ws()
	return p.i == len(p.in)
}

// jsonParser reads JSON from in at i. Its methods report false when the input is not what they
// handle; the parse is then abandoned.
type jsonParser struct {
	in    []byte
	i     int
	event string // the last event name read: a batch's messages often share one
}

// maxFastDepth bounds the nesting parsePublish follows inside data; deeper data is left to
// encoding/json, whose limit (10000) is far beyond it.
const maxFastDepth = 100

func (p *jsonParser) ws() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// next consumes c if it is the next byte.
func (p *jsonParser) next(c byte) bool {
	if p.i < len(p.in) && p.in[p.i] == c {
		p.i++
		return true
	}
	return false
}

// objectMembers reads an object at p.i, calling member with each member's name once the input
// is at the member's value (whitespace skipped). member reads the value.
func (p *jsonParser) objectMembers(member func(name []byte) bool) bool {
	if !p.next('{') {
		return false
	}
	p.ws()
	if p.next('}') {
		return true
	}
	for {
		name, ok := p.plainString()
		if !ok {
			return false
		}
		p.ws()
		if !p.next(':') {
			return false
		}
		p.ws()
		if !member(name) {
			return false
		}
		p.ws()
		switch {
		case p.next('}'):
			return true
		case !p.next(','):
			return false
		}
		p.ws()
	}
}

// itemMember reads the value of the member name of a message into it; seen holds the members
// read so far. Each may appear once: encoding/json would let a later one win, left to it.
func (p *jsonParser) itemMember(it *publishItem, seen *uint8, name []byte) bool {
	var bit uint8
	var dst *string
	switch string(name) {
	case "user":
		bit, dst = 1, &it.User
	case "event":
		bit, dst = 2, &it.Event
	case "key":
		bit, dst = 4, &it.Key
	case "data":
		bit = 8
	default:
		return false // unknown, or a name encoding/json matches without regard to case
	}
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	if dst == nil {
		start := p.i
		if !p.value(0) {
			return false
		}
		it.Data = bytes.Clone(p.in[start:p.i])
		return true
	}
	s, ok := p.plainString()
	if !ok {
		return false
	}
	switch {
	case string(s) == "message": // the default event, often sent: no copy
		*dst = "message"
	case dst == &it.Event && string(s) == p.event:
		*dst = p.event
	default:
		*dst = string(s)
		if dst == &it.Event {
			p.event = *dst
		}
	}
	return true
}

// plainString reads a string with no escape sequence and returns its contents, which are what
// encoding/json decodes it to only when they are valid UTF-8.
func (p *jsonParser) plainString() ([]byte, bool) {
	if !p.next('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.in) {
		c := p.in[p.i]
		switch {
		case c == '"':
			s := p.in[start:p.i]
			p.i++
			return s, utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// value reads any JSON value as strictly as encoding/json's scanner: RFC 8259 numbers, the
// three literals, strings with valid escapes and no control characters. Like the scanner, it
// does not look at UTF-8 inside strings here; publish checks data's UTF-8 afterwards.
func (p *jsonParser) value(depth int) bool {
	if p.i >= len(p.in) {
		return false
	}
	switch c := p.in[p.i]; {
	case c == '{':
		if depth >= maxFastDepth {
			return false
		}
		p.i++
		p.ws()
		if p.next('}') {
			return true
		}
		for {
			if !p.string() {
				return false
			}
			p.ws()
			if !p.next(':') {
				return false
			}
			p.ws()
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			switch {
			case p.next('}'):
				return true
			case !p.next(','):
				return false
			}
			p.ws()
		}
	case c == '[':
		if depth >= maxFastDepth {
			return false
		}
		p.i++
		p.ws()
		if p.next(']') {
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			switch {
			case p.next(']'):
				return true
			case !p.next(','):
				return false
			}
			p.ws()
		}
	case c == '"':
		return p.string()
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return false
}

func (p *jsonParser) literal(lit string) bool {
	if len(p.in)-p.i >= len(lit) && string(p.in[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// string reads a string with any valid escapes.
func (p *jsonParser) string() bool {
	if !p.next('"') {
		return false
	}
	for p.i < len(p.in) {
		c := p.in[p.i]
		p.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if p.i >= len(p.in) {
				return false
			}
			e := p.in[p.i]
			p.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p.in)-p.i < 4 {
					return false
				}
				for _, h := range p.in[p.i : p.i+4] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				p.i += 4
			default:
				return false
			}
		}
	}
	return false
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. What follows it is the caller's
// to check (encoding/json, too, refuses 01 or 1x only at the second character).
func (p *jsonParser) number() bool {
	p.next('-')
	switch {
	case p.next('0'):
	case p.i < len(p.in) && '1' <= p.in[p.i] && p.in[p.i] <= '9':
		p.digits()
	default:
		return false
	}
	if p.next('.') && !p.digits() {
		return false
	}
	if p.next('e') || p.next('E') {
		if !p.next('+') {
			p.next('-')
		}
		if !p.digits() {
			return false
		}
	}
	return true
}

// digits reads [0-9]* and reports whether there was at least one.
func (p *jsonParser) digits() bool {
	start := p.i
	for p.i < len(p.in) && '0' <= p.in[p.i] && p.in[p.i] <= '9' {
		p.i++
	}
	return p.i > start
}
