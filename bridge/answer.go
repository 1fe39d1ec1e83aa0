package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridged/bridged/cache"
)

// Long-polls answered by the publisher.
//
// A parked long-poll (poll.go) waits in its owning goroutine's read. Woken by a poke, that
// goroutine would run only to read the stream, write the answer and go back to reading the
// connection for the client's next request: two goroutine switches, two deadline changes and a
// read that finds nothing, for every message delivered. With a store whose reads are in memory
// (cache.InMemory), the goroutine whose publish woke the long-poll answers it instead, once its
// Append has returned, and the owner sleeps on until the client's next request arrives, which it
// would have waited for anyway. The publish's own answer comes after, so the long-poll's wake-up
// costs what a function call costs.
//
// The Notify function runs under the store's lock and must not read the store, so it only
// offers the long-poll to answerOffers; the publisher takes what was offered once Append returns
// (appendAndAnswer). An offer is taken only while some publish is between begin and the end of
// appendAndAnswer, so one of them is sure to take it; any other wake-up (the demo's publisher, a
// store closing) pokes the owner as before.
//
// Exactly one side answers: the publisher claims the long-poll from offerQueued, the owner from
// offerWaiting (it cannot while an offer is out), each with a compare-and-swap. The publisher
// never waits for the client: it writes what the socket takes (writeNow) and leaves the rest, if
// any, to the owner, whom it then pokes.
//
// SSE streams on parked connections are written to by publishers the same way (parkedStream,
// stream.go).

// The states of an offer (its state field): those every offer has, and a parkedPoll's own.
const (
	offerWaiting    int32 = iota // the owner waits; a Notify may offer it to the publishers
	offerQueued                  // offered to a publisher, which will answer or give it back
	offerAnswering               // a publisher is writing
	offerOwned                   // the owner holds it: it answers, reads, writes or decides
	offerUnfinished              // a publisher wrote part of what it had: the owner writes the rest
	offerBroken                  // a publisher's write failed: the owner ends the connection

	pollAnswered // a publisher wrote the whole answer: the owner reads the next request
)

// offer is what a parked long-poll or stream shares with the publishers: a state that the owner
// and the publishers change only by compare-and-swap (or while they hold it), the connection and
// its raw descriptor, through which a publisher writes (writeNow), and the offer list's link.
type offer struct {
	state atomic.Int32
	p     *parked
	rr    *rawReader
	next  offerable // in answerOffers' list, under its lock
}

func (o *offer) base() *offer { return o }

// giveBack hands the offer back to its owner, waiting, and pokes the owner if poke.
func (o *offer) giveBack(poke bool) {
	o.state.Store(offerWaiting)
	if poke {
		o.p.poke()
	}
}

// offerable is a parked long-poll (parkedPoll) or SSE stream (parkedStream, stream.go) that a
// publisher may write to.
type offerable interface {
	base() *offer
	// answer is the publisher's part, once answerOne has claimed the offer: read, write, and
	// leave the offer in a state its owner handles.
	answer()
}

// publisherWriter returns the raw descriptor through which publishers may write to p, or nil
// when they may not: the store is not in memory, the demo's faults are on, or the connection has
// none (it did not come through Listener, or bytes handed back wait to be read).
func (s *Server) publisherWriter(p *parked) *rawReader {
	oc, ok := p.conn.(*ownedConn)
	if !ok || s.answers == nil || s.faults != nil {
		return nil
	}
	return oc.raw()
}

// parkedPoll is a long-poll parked on a kept connection, answerable by a publisher.
type parkedPoll struct {
	s        *Server
	user     string
	cursor   cache.Cursor
	deadline time.Time
	sub      cache.Subscription
	release  func()
	header   http.Header
	logLine  func(status int, bytes int64)
	// closeAfter: the connection closes after the answer (the client asked, or it did not come
	// through Listener); such a long-poll is never offered to publishers.
	closeAfter bool

	offer

	// Set by the publisher before offerUnfinished: the whole answer, of which it wrote sent bytes,
	// and the pool entry of its buffer.
	wire  []byte
	sent  int
	wirep *[]byte
}

// answerOffers collects the long-polls and streams offered to publishers.
type answerOffers struct {
	mu        sync.Mutex
	appending int       // publishes between begin and the end of appendAndAnswer
	offered   offerable // a list through offer.next
}

// begin says a publish is about to Append; it must then take until the list is empty.
func (a *answerOffers) begin() {
	a.mu.Lock()
	a.appending++
	a.mu.Unlock()
}

// offer queues o for the publishers to answer, if one is appending. It reports false when it
// did not (nobody would take it, or o's owner holds it): the caller pokes o's owner instead.
func (a *answerOffers) offer(o offerable) bool {
	b := o.base()
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case b.state.Load() == offerQueued:
		return true // offered already, and not yet read: the publisher will see this message too
	case a.appending == 0 || !b.state.CompareAndSwap(offerWaiting, offerQueued):
		return false
	}
	b.next = a.offered
	a.offered = o
	return true
}

// take returns the offers made so far, or nil when there are none, and then counts the caller's
// publish done: a publish ends only on finding the list empty.
func (a *answerOffers) take() offerable {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.offered
	a.offered = nil
	if o == nil {
		a.appending--
	}
	return o
}

// appendAndAnswer is Store.Append for a publish: with an in-memory store, the long-polls it wakes
// are answered here, before the publish is.
func (s *Server) appendAndAnswer(ctx context.Context, drafts []cache.Draft) ([]cache.Cursor, error) {
	if s.answers == nil {
		return s.store.Append(ctx, drafts)
	}
	s.answers.begin()
	ids, err := s.store.Append(ctx, drafts)
	for {
		o := s.answers.take()
		if o == nil {
			return ids, err
		}
		for o != nil {
			b := o.base()
			next := b.next
			b.next = nil
			answerOne(o)
			o = next
		}
	}
}

// answerOne claims o for the calling publisher and runs its answer. A panic in answer (a bug)
// must not leave the owner waiting on offerAnswering for ever: it marks o broken and pokes the
// owner, which ends the connection, and the publish's handler reports the panic.
func answerOne(o offerable) {
	b := o.base()
	if !b.state.CompareAndSwap(offerQueued, offerAnswering) {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			b.state.CompareAndSwap(offerAnswering, offerBroken)
			b.p.poke()
			panic(v)
		}
	}()
	o.answer()
}

// notifier returns o's Subscription.Notify function. It runs in the appending goroutine under
// the store's lock, so it only offers o or pokes its owner.
func (a *answerOffers) notifier(o offerable) func() {
	return func() {
		if !a.offer(o) {
			o.base().p.poke()
		}
	}
}

// answer is a publisher's part: it reads lp's stream and writes the answer, or gives lp back to
// its owner when there is nothing to send or the node drains.
func (lp *parkedPoll) answer() {
	s := lp.s
	if s.isDraining() {
		lp.giveBack(true) // the owner answers the drain
		return
	}
	b, err := s.store.ReadAfter(context.Background(), lp.user, lp.cursor, pollLimit+1)
	if err != nil || (len(b.Messages) == 0 && !b.Reset) {
		lp.giveBack(err != nil) // on an error, the owner reads again and answers it if it persists
		return
	}
	s.metrics.longPollOutcomes.WithLabelValues(s.longPollOver(b, lp.deadline)).Inc()
	lp.done()
	rr := &rawResponse{header: lp.header}
	s.writeBatch(rr, "longpoll", b)
	size := len(rr.body)
	bufp := bodyBufs.Get().(*[]byte)
	wire := rr.appendWire((*bufp)[:0], false)
	rr.release()
	rest, err := lp.rr.writeNow(wire)
	lp.logLine(rr.status, int64(size))
	switch {
	case err != nil:
		putBodyBuf(bufp, wire)
		lp.state.Store(offerBroken)
		lp.p.poke()
	case len(rest) > 0:
		s.parked.answeredInPart.Add(1)
		lp.wire, lp.sent, lp.wirep = wire, len(wire)-len(rest), bufp
		lp.state.Store(offerUnfinished)
		lp.p.poke()
	default:
		s.parked.answeredByPublisher.Add(1)
		putBodyBuf(bufp, wire)
		lp.state.Store(pollAnswered)
	}
}

// dropWire gives the buffer of an answer the publisher left unfinished back to the pool.
func (lp *parkedPoll) dropWire() {
	putBodyBuf(lp.wirep, lp.wire)
	lp.wire, lp.sent, lp.wirep = nil, 0, nil
}

// done releases what the long-poll held: its subscription and its connection slot. It comes
// before the answer goes out, so the client's next poll finds the slot free.
func (lp *parkedPoll) done() {
	lp.sub.Close()
	lp.release()
}

// wait is the owner's part, run by the connection's goroutine as the long-poll's wait
// (parkWait): it waits for the client's next request while a publisher may answer, and answers
// itself when the long-poll ends otherwise. It reports whether to close the connection; when it
// returns false, the next request's first bytes may wait in p.next.
func (lp *parkedPoll) wait() (closeConn bool) {
	s, p := lp.s, lp.p
	for {
		switch lp.state.Load() {
		case offerQueued, offerAnswering:
			settle(&lp.state)
			continue
		case pollAnswered:
			return false
		case offerUnfinished:
			err := p.write(lp.wire[lp.sent:], s.opts.WriteTimeout)
			lp.dropWire()
			return err != nil
		case offerBroken:
			if p.next != nil {
				keptHeadPool.Put(p.next)
				p.next = nil
			}
			return true
		}
		b, err := s.store.ReadAfter(context.Background(), lp.user, lp.cursor, pollLimit+1)
		outcome := ""
		if err != nil {
			err = fmt.Errorf("read stream: %w", err)
		} else {
			outcome = s.longPollOver(b, lp.deadline)
		}
		if err != nil || outcome != "" {
			if !lp.state.CompareAndSwap(offerWaiting, offerOwned) {
				continue // a publisher got there first
			}
			if outcome != "" {
				s.metrics.longPollOutcomes.WithLabelValues(outcome).Inc()
			}
			return lp.finish(longPollEnd{batch: b, err: err})
		}
		bufp, n, _, err := p.awaitRaw(lp.rr, lp.deadline)
		switch {
		case n > 0:
			if lp.state.CompareAndSwap(offerWaiting, offerOwned) {
				keptHeadPool.Put(bufp)
				return lp.finish(lp.gone(errClientSpoke))
			}
			p.next, p.nextN = bufp, n // the next request, read after the publisher's answer
			// Most likely a re-poll, whose parking can wait: publishes that became ready to run
			// meanwhile deliver messages, so they go first. With nothing else to run, the yield
			// costs a few hundred nanoseconds. In a burst of 5,000 wake-ups it took a third of
			// the wake-ups later than 5 ms off (docs/benchmarks.md).
			runtime.Gosched()
		case err != nil:
			if lp.state.CompareAndSwap(offerWaiting, offerOwned) {
				return lp.finish(lp.gone(err))
			}
			settle(&lp.state)
			if lp.state.Load() == offerUnfinished {
				lp.dropWire()
			}
			return true
		}
		// Poked, or the deadline passed: look again.
	}
}

// gone is the end of a long-poll whose client left or broke the protocol, counted.
func (lp *parkedPoll) gone(err error) longPollEnd {
	lp.s.metrics.longPollOutcomes.WithLabelValues("client_gone").Inc()
	return longPollEnd{err: err, gone: true}
}

// settle waits while a publisher holds an offer (offerQueued, offerAnswering): state is the
// offer's. Answering takes microseconds, and an owner gets here only when it woke during one (a
// long-poll's client sent its next request right behind the answer, a drain's poke, a message
// for a stream that a publisher is writing to), so it yields rather than sleeps, at first.
func settle(state *atomic.Int32) {
	for i := 0; ; i++ {
		if st := state.Load(); st != offerQueued && st != offerAnswering {
			return
		}
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// finish is the owner's answer: it releases what the long-poll held and writes a, or only logs
// when the client is gone. It reports whether to close the connection.
func (lp *parkedPoll) finish(a longPollEnd) (closeConn bool) {
	s := lp.s
	lp.done()
	if a.gone && !errors.Is(a.err, errDemoCut) {
		lp.logLine(499, 0) // nginx's "client closed request"
		return true
	}
	rr := &rawResponse{header: lp.header}
	if a.err != nil {
		s.writeError(rr, "/v1/poll", a.err)
	} else {
		s.writeBatch(rr, "longpoll", a.batch)
	}
	closing := lp.closeAfter || s.isDraining() // a drained node says so, then closes
	size := len(rr.body)
	err := rr.writeTo(lp.p, closing, s.opts.WriteTimeout)
	lp.logLine(rr.status, int64(size))
	return err != nil || closing
}
