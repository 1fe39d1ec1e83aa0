package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"time"
)

// conn is one HTTP/1.1 client connection, written by hand rather than with net/http's Transport:
// a Transport runs two goroutines and two 4 KiB buffers per connection, and at 10,000 streams the
// load tool's own cost would compete with the server for the same two cores. A conn is one
// goroutine's, with one small read buffer; it keeps the connection alive across requests.
// It is not safe for concurrent use.
type conn struct {
	nc net.Conn
	br *bufio.Reader
}

// respHead is what the load tool needs of a response's head.
type respHead struct {
	status        int
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool   // the server will close the connection after this response
	etag          string // long-poll cursor of Nchan, with lastModified
	lastModified  string
}

// dial connects to addr (host:port on loopback) with a read buffer of rbuf bytes.
func dial(ctx context.Context, addr string, rbuf int) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, rbuf)}, nil
}

// close closes the connection at once with a reset (SO_LINGER 0), so tearing down thousands of
// connections leaves no TIME_WAIT entries behind on a shared machine.
func (c *conn) close() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.nc.Close()
}

// write sends a whole request.
func (c *conn) write(req []byte) error {
	_, err := c.nc.Write(req)
	return err
}

var errHeadTooLong = errors.New("response head too long")

// readHead reads a response's status line and headers.
func (c *conn) readHead() (respHead, error) {
	h := respHead{contentLength: -1}
	line, err := c.readLine()
	if err != nil {
		return h, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return h, fmt.Errorf("malformed status line %q", line)
	}
	h.close = line[7] == '0'
	st, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return h, fmt.Errorf("malformed status line %q", line)
	}
	h.status = st
	for n := 0; ; n++ {
		if n > 100 {
			return h, errHeadTooLong
		}
		line, err := c.readLine()
		if err != nil {
			return h, err
		}
		if len(line) == 0 {
			return h, nil
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case asciiEqualFold(k, "content-length"):
			if h.contentLength, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				return h, fmt.Errorf("bad Content-Length %q", v)
			}
		case asciiEqualFold(k, "transfer-encoding"):
			h.chunked = asciiEqualFold(v, "chunked")
		case asciiEqualFold(k, "connection"):
			if asciiEqualFold(v, "close") {
				h.close = true
			}
		case asciiEqualFold(k, "etag"):
			h.etag = string(v)
		case asciiEqualFold(k, "last-modified"):
			h.lastModified = string(v)
		}
	}
}

// readLine returns the next line without its CR LF; the slice is valid until the next read.
func (c *conn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errHeadTooLong
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// readBody reads the whole body of a response with head h into dst[:0] and returns it.
func (c *conn) readBody(h respHead, dst []byte) ([]byte, error) {
	dst = dst[:0]
	switch {
	case h.status == 204 || h.status == 304 || h.status/100 == 1:
		return dst, nil
	case h.chunked:
		var b bytes.Buffer
		b.Write(dst)
		_, err := b.ReadFrom(httputil.NewChunkedReader(c.br))
		return b.Bytes(), err
	case h.contentLength >= 0:
		if h.contentLength > 64<<20 {
			return dst, fmt.Errorf("body of %d bytes", h.contentLength)
		}
		if int64(cap(dst)) < h.contentLength {
			dst = make([]byte, h.contentLength)
		}
		dst = dst[:h.contentLength]
		_, err := io.ReadFull(c.br, dst)
		return dst, err
	default:
		b, err := io.ReadAll(c.br)
		return append(dst, b...), err
	}
}

// body returns a reader of the streamed body of a response with head h (SSE).
func (c *conn) body(h respHead) io.Reader {
	switch {
	case h.chunked:
		return httputil.NewChunkedReader(c.br)
	case h.contentLength >= 0:
		return io.LimitReader(c.br, h.contentLength)
	default:
		return c.br // until the server closes: Nchan's event stream has neither length nor chunks
	}
}

// roundTrip sends req and reads the answer into body[:0]. It measures the time from before the
// write to after the last body byte.
func (c *conn) roundTrip(req, body []byte) (respHead, []byte, time.Duration, error) {
	start := time.Now()
	if err := c.write(req); err != nil {
		return respHead{}, body, 0, err
	}
	h, err := c.readHead()
	if err != nil {
		return h, body, 0, err
	}
	body, err = c.readBody(h, body)
	return h, body, time.Since(start), err
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// sseReader reads Server-Sent Events from a stream: only what the load tool needs (event name
// and data), comments skipped. Its buffer is small; a longer line is gathered in a scratch slice.
type sseReader struct {
	br      *bufio.Reader
	event   []byte
	data    []byte
	scratch []byte
}

func newSSEReader(r io.Reader, size int) *sseReader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, size)
	}
	return &sseReader{br: br}
}

// next returns the next event's name (empty for the default) and its data lines joined by "\n".
// Both are valid until the next call.
func (s *sseReader) next() (event, data []byte, err error) {
	s.event, s.data = s.event[:0], s.data[:0]
	hasData := false
	for {
		line, err := s.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			s.scratch = append(s.scratch[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = s.br.ReadSlice('\n')
				s.scratch = append(s.scratch, line...)
			}
			line = s.scratch
		}
		if err != nil {
			return nil, nil, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if hasData || len(s.event) > 0 {
				return s.event, s.data, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimPrefix(v, []byte(" "))
		switch string(k) {
		case "event":
			s.event = append(s.event[:0], v...)
		case "data":
			if hasData {
				s.data = append(s.data, '\n')
			}
			s.data = append(s.data, v...)
			hasData = true
		}
	}
}
