//go:build unix

package bridge

import (
	"io"
	"syscall"
)

// rawReads says kept connections read requests through their raw descriptors (awaitRequest).
const rawReads = true

// read is one attempt of rc.Read: false when nothing has arrived, so the poller waits for the
// descriptor without a buffer held.
func (r *rawReader) read(fd uintptr) bool {
	bp := keptHeadPool.Get().(*[]byte)
	m, e := syscall.Read(int(fd), *bp)
	for e == syscall.EINTR {
		m, e = syscall.Read(int(fd), *bp)
	}
	switch {
	case e == syscall.EAGAIN:
		keptHeadPool.Put(bp)
		return false
	case e != nil:
		r.err = e
	case m == 0:
		r.err = io.EOF
	default:
		r.bufp, r.n = bp, m
		return true
	}
	keptHeadPool.Put(bp)
	return true
}

// put writes what the socket takes of r.out at once and leaves the rest in r.out (writeNow).
func (r *rawReader) put(fd uintptr) {
	for len(r.out) > 0 {
		m, e := syscall.Write(int(fd), r.out)
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return
		case e != nil:
			r.werr = e
			return
		}
		r.out = r.out[m:]
	}
}
