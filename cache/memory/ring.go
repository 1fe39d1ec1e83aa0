package memory

import "unsafe"

// record is one retained message: 40 bytes. Its seq is not stored (a stream's retained seqs are
// contiguous) and its data is held as a string header over the publisher's bytes, which are
// never modified, so it costs 16 bytes rather than a slice's 24.
type record struct {
	at    int64 // unix nanoseconds
	event string
	data  string
}

func newRecord(at int64, event string, data []byte) record {
	return record{at: at, event: event, data: unsafe.String(unsafe.SliceData(data), len(data))}
}

// bytes returns the record's data as the []byte the cache API hands out; it shares the storage
// (cache.Message.Data must not be modified).
func (r *record) bytes() []byte {
	return unsafe.Slice(unsafe.StringData(r.data), len(r.data))
}

// ring is a FIFO of records in a power-of-two buffer: the oldest at head. It grows by doubling
// and shrinks by half when three quarters are empty, so a stream holds at most twice what it
// retains, and a capped stream (the common steady state) about exactly that.
type ring struct {
	buf  []record
	head int
	n    int
}

func (r *ring) len() int { return r.n }

// at returns the i-th oldest record, 0 <= i < len.
func (r *ring) at(i int) *record { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *ring) push(rec record) {
	if r.n == len(r.buf) {
		r.resize(max(1, 2*len(r.buf)))
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = rec
	r.n++
}

// pop removes the oldest record and releases its payload.
func (r *ring) pop() record {
	rec := r.buf[r.head]
	r.buf[r.head] = record{}
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	switch {
	case r.n == 0:
		*r = ring{} // an idle stream holds no buffer
	case len(r.buf) >= 8 && r.n <= len(r.buf)/4:
		r.resize(len(r.buf) / 2)
	}
	return rec
}

func (r *ring) resize(size int) {
	buf := make([]record, size)
	for i := range r.n {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}
