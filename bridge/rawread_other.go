//go:build !unix

package bridge

// rawReads is false where a descriptor is not read with read(2): kept connections wait for a
// request with a one-byte read instead (awaitRequest).
const rawReads = false

func (r *rawReader) read(uintptr) bool { panic("bridge: raw reads on a platform without them") }

func (r *rawReader) put(uintptr) { panic("bridge: raw writes on a platform without them") }
