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
