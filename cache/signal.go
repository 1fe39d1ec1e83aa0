package cache

import (
	"sync"
	"sync/atomic"
)

// Signal is how an engine wakes the readers of one stream: Changed hands out a channel that the
// next Wake closes, and Watch registers a function the next Wakes call. Engines embed one per
// watched stream and build their Subscriptions on it. The zero Signal is ready to use; it is safe
// for concurrent use.
//
// Functions are for readers that park without a goroutine of their own (bridge's hijacked
// connections): a parked reader costs a list node instead of a goroutine's stack.
type Signal struct {
	note atomic.Pointer[chan struct{}] // created by the first Changed after a Wake

	mu      sync.Mutex
	watches *Watch // a doubly linked list; Wake walks it under mu
}

// Watch is one function registered with Signal.Watch.
type Watch struct {
	sig        *Signal
	fn         func()
	prev, next *Watch
	stopped    bool // guarded by sig.mu
}

// Changed returns the channel the next Wake closes, creating it on first use so that streams
// nobody waits on never allocate one.
func (s *Signal) Changed() <-chan struct{} {
	for {
		if ch := s.note.Load(); ch != nil {
			return *ch
		}
		ch := make(chan struct{})
		if s.note.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// Wake closes the current channel and calls every watching function, in the caller's goroutine
// and under the Signal's lock: the functions must be quick and must not call the Signal.
func (s *Signal) Wake() {
	if ch := s.note.Swap(nil); ch != nil {
		close(*ch)
	}
	s.mu.Lock()
	for w := s.watches; w != nil; w = w.next {
		w.fn()
	}
	s.mu.Unlock()
}

// Watch registers fn to be called by every Wake until Stop.
func (s *Signal) Watch(fn func()) *Watch {
	w := &Watch{sig: s, fn: fn}
	s.mu.Lock()
	w.next = s.watches
	if w.next != nil {
		w.next.prev = w
	}
	s.watches = w
	s.mu.Unlock()
	return w
}

// Stop unregisters the function; once Stop returns, no Wake calls it. It is idempotent and safe
// on a nil Watch.
func (w *Watch) Stop() {
	if w == nil {
		return
	}
	s := w.sig
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		s.watches = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
}

// closedChan is a closed channel: what Changed returns once a Subscription or its Store is closed.
var closedChan = func() <-chan struct{} { c := make(chan struct{}); close(c); return c }()

// SignalSub is the half of a Subscription every engine shares: Changed and Notify on a stream's
// Signal, answering as closed once the Subscription or its Store is. An engine embeds one and
// writes Close: End, then its own release. Build it with NewSignalSub.
type SignalSub struct {
	sig         *Signal
	storeClosed *atomic.Bool // the Store's closed flag
	closed      atomic.Bool
	watch       atomic.Pointer[Watch] // set by Notify
}

// NewSignalSub returns the shared half of a Subscription to sig, of a Store whose closed flag is
// storeClosed.
func NewSignalSub(sig *Signal, storeClosed *atomic.Bool) SignalSub {
	return SignalSub{sig: sig, storeClosed: storeClosed}
}

func (s *SignalSub) isClosed() bool { return s.closed.Load() || s.storeClosed.Load() }

// Changed implements Subscription.
func (s *SignalSub) Changed() <-chan struct{} {
	if s.isClosed() {
		return closedChan
	}
	return s.sig.Changed()
}

// Notify implements Subscription.
func (s *SignalSub) Notify(fn func()) {
	w := s.sig.Watch(fn)
	s.watch.Store(w)
	if s.isClosed() {
		w.Stop()
		fn()
	}
}

// End marks the Subscription closed and stops its Notify function. It reports false when it was
// closed already, so Close releases the engine's side once.
func (s *SignalSub) End() bool {
	if s.closed.Swap(true) {
		return false
	}
	s.watch.Load().Stop()
	return true
}
