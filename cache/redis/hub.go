package redis

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// hub is a node's one pub/sub connection and the local readers behind it.
//
// Each watched stream is a topic with a count of local Subscriptions. The first one makes the
// hub SUBSCRIBE to the stream's channel, the last one leaving makes it UNSUBSCRIBE, so a node
// hears about the streams its own users read and nothing else.
//
// Confirmation: after sending SUBSCRIBEs the hub sends PING with a fresh token on the same
// connection. Redis answers commands of one connection in order, so the PONG carrying that token
// proves every command before it took effect; a Subscribe returns only then. Counting SUBSCRIBE
// replies instead would be fooled by a late reply to an earlier SUBSCRIBE of the same channel.
//
// Sessions: one goroutine (run) owns the connection. A session begins by subscribing to every
// watched channel and sending a PING; when its PONG arrives every local reader is woken, since
// notifications sent while there was no connection are lost. Spurious wake-ups are allowed;
// lost ones are not. Any error, or a health PING left unanswered for a whole interval, ends the
// session; after a short backoff the next begins. go-redis's PubSub reconnects by itself too,
// but its reconnects are always reported by an error from Receive or from a write, which ends
// our session, so no reconnect goes unnoticed.
//
// Locking: mu guards the topics and the confirmation queue and is never held across network I/O.
type hub struct {
	s *Store

	ctx    context.Context // the engine's own, for its background work; canceled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // buffered 1: something in dirty needs the session's attention
	up     atomic.Bool   // a session is established and its first PONG arrived
	notes  atomic.Int64  // notifications received, for benchmarks and tests

	mu      sync.RWMutex
	closed  bool
	topics  map[string]*topic // by channel
	dirty   map[string]*topic // topics whose local count crossed zero since the last flush
	token   uint64            // the last barrier token sent
	resync  uint64            // the current session's first token; its PONG wakes everyone
	pending []confirm         // SUBSCRIBEs waiting for their barrier PONG, in token order

	keepEvery time.Duration
}

// topic is one watched stream on this node.
type topic struct {
	stream, channel string
	sig             cache.Signal // wakes the topic's local Subscriptions

	// Guarded by hub.mu.
	refs       int
	subscribed bool          // SUBSCRIBE sent in this session, and no UNSUBSCRIBE since
	confirmed  bool          // and its barrier PONG arrived
	barrier    uint64        // the token of the PING after that SUBSCRIBE
	ready      chan struct{} // closed once confirmed; a new one after each session loss
}

type confirm struct {
	token uint64
	t     *topic
}

const (
	healthEvery = 5 * time.Second         // a PING on an idle connection; no PONG by the next one ends the session
	backoffMin  = 50 * time.Millisecond   // before the first reconnect
	backoffMax  = 1000 * time.Millisecond // between reconnects while Redis stays down
	chunk       = 1024                    // channels per SUBSCRIBE or UNSUBSCRIBE command
	barrierMark = "b"                     // PONG payloads: b<token> for barriers, h<n> for health
	healthMark  = "h"
)

func newHub(s *Store, keepEvery time.Duration) *hub {
	// The engine's background goroutines need a context of their own: they outlive every request
	// and end with Close.
	ctx, cancel := context.WithCancel(context.Background())
	h := &hub{
		s:         s,
		ctx:       ctx,
		cancel:    cancel,
		kick:      make(chan struct{}, 1),
		topics:    make(map[string]*topic),
		dirty:     make(map[string]*topic),
		keepEvery: keepEvery,
	}
	h.wg.Go(h.run)
	h.wg.Go(h.keepAlive)
	return h
}

func (h *hub) isUp() bool { return h.up.Load() }

func (h *hub) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// subscribe adds a local reader of stream and returns once this node's subscription to channel
// is confirmed in the current session, or fails when ctx ends first.
func (h *hub) subscribe(ctx context.Context, stream, channel string) (*subscription, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, cache.ErrClosed
	}
	t := h.topics[channel]
	if t == nil {
		t = &topic{stream: stream, channel: channel, ready: make(chan struct{})}
		h.topics[channel] = t
	}
	t.refs++
	ready := t.ready
	if !t.subscribed {
		h.dirty[channel] = t
	}
	h.mu.Unlock()
	h.poke()

	select {
	case <-ready:
		return &subscription{SignalSub: cache.NewSignalSub(&t.sig, &h.s.closed), h: h, t: t}, nil
	case <-ctx.Done():
		h.release(t)
		return nil, errors.New("subscription not confirmed in time")
	case <-h.ctx.Done():
		h.release(t)
		return nil, cache.ErrClosed
	}
}

// release drops one local reader of t; the session unsubscribes when none is left.
func (h *hub) release(t *topic) {
	h.mu.Lock()
	t.refs--
	if t.refs == 0 && !h.closed {
		h.dirty[t.channel] = t
	}
	h.mu.Unlock()
	h.poke()
}

// run owns the pub/sub connection: one session after another until close, with a growing,
// jittered pause between failed ones.
func (h *hub) run() {
	backoff := backoffMin
	for h.ctx.Err() == nil {
		err := h.session()
		wasUp := h.up.Load()
		h.lost()
		if h.ctx.Err() != nil {
			return
		}
		if wasUp {
			h.s.log.Warn("redis pub/sub connection lost; reconnecting", zap.Error(err))
			backoff = backoffMin
		} else {
			h.s.log.Debug("redis pub/sub connection failed", zap.Error(err))
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, backoffMax)
		select {
		case <-h.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session runs one pub/sub connection until it fails or the hub closes.
func (h *hub) session() error {
	ps := h.s.rdb.Subscribe(h.ctx) // no channels yet: connects on first use
	var wg sync.WaitGroup
	defer func() {
		ps.Close() // ends the receiver's blocking read
		wg.Wait()
	}()

	// Subscribe to every watched channel, then the barrier whose PONG makes the session "up".
	h.mu.Lock()
	h.token++
	tok := h.token
	h.resync = tok
	var channels []string
	for ch, t := range h.topics {
		if t.refs == 0 { // left between sessions
			delete(h.topics, ch)
			continue
		}
		channels = append(channels, ch)
		t.subscribed, t.barrier = true, tok
		h.pending = append(h.pending, confirm{token: tok, t: t})
	}
	clear(h.dirty)
	h.mu.Unlock()
	if err := h.send(ps, "subscribe", channels); err != nil {
		return err
	}
	if err := h.ping(ps, barrierMark, tok); err != nil {
		return err
	}

	var healthSent, healthSeen atomic.Uint64
	recv := make(chan error, 1)
	wg.Go(func() { recv <- h.receive(ps, &healthSeen) })

	health := time.NewTicker(healthEvery)
	defer health.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return nil
		case err := <-recv:
			return err
		case <-health.C:
			if healthSeen.Load() < healthSent.Load() {
				return errors.New("no answer to the health PING")
			}
			if err := h.ping(ps, healthMark, healthSent.Add(1)); err != nil {
				return err
			}
		case <-h.kick:
			if err := h.flush(ps); err != nil {
				return err
			}
		}
	}
}

// flush sends the SUBSCRIBEs and UNSUBSCRIBEs that the topics changed since the last flush call
// for, and a barrier PING after the SUBSCRIBEs.
func (h *hub) flush(ps *goredis.PubSub) error {
	h.mu.Lock()
	var subs, unsubs []string
	var fresh []*topic
	for ch, t := range h.dirty {
		switch {
		case t.refs > 0 && !t.subscribed:
			t.subscribed = true
			subs = append(subs, ch)
			fresh = append(fresh, t)
		case t.refs == 0 && t.subscribed:
			t.subscribed = false
			unsubs = append(unsubs, ch)
			delete(h.topics, ch)
		case t.refs == 0:
			delete(h.topics, ch)
		}
	}
	clear(h.dirty)
	var tok uint64
	if len(fresh) > 0 {
		h.token++
		tok = h.token
		for _, t := range fresh {
			t.barrier = tok
			h.pending = append(h.pending, confirm{token: tok, t: t})
		}
	}
	h.mu.Unlock()

	if err := h.send(ps, "unsubscribe", unsubs); err != nil {
		return err
	}
	if len(subs) == 0 {
		return nil
	}
	if err := h.send(ps, "subscribe", subs); err != nil {
		return err
	}
	return h.ping(ps, barrierMark, tok)
}

// send writes SUBSCRIBE or UNSUBSCRIBE commands for channels, a chunk at a time.
func (h *hub) send(ps *goredis.PubSub, cmd string, channels []string) error {
	for part := range slices.Chunk(channels, chunk) {
		ctx, cancel := context.WithTimeout(h.ctx, h.s.timeout)
		var err error
		if cmd == "subscribe" {
			err = ps.Subscribe(ctx, part...)
		} else {
			err = ps.Unsubscribe(ctx, part...)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *hub) ping(ps *goredis.PubSub, mark string, n uint64) error {
	ctx, cancel := context.WithTimeout(h.ctx, h.s.timeout)
	defer cancel()
	return ps.Ping(ctx, mark+strconv.FormatUint(n, 10))
}

// receive reads the connection until it fails: notifications wake their topic's readers, PONGs
// confirm barriers and health checks.
func (h *hub) receive(ps *goredis.PubSub, healthSeen *atomic.Uint64) error {
	for {
		msg, err := ps.Receive(h.ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *goredis.Message:
			h.notes.Add(1)
			h.mu.RLock()
			t := h.topics[m.Channel]
			h.mu.RUnlock()
			if t != nil {
				t.sig.Wake()
			}
		case *goredis.Pong:
			switch {
			case strings.HasPrefix(m.Payload, barrierMark):
				if tok, err := strconv.ParseUint(m.Payload[len(barrierMark):], 10, 64); err == nil {
					h.confirmed(tok)
				}
			case strings.HasPrefix(m.Payload, healthMark):
				if n, err := strconv.ParseUint(m.Payload[len(healthMark):], 10, 64); err == nil {
					healthSeen.Store(n)
				}
			}
		case *goredis.Subscription:
			// Replies to SUBSCRIBE and UNSUBSCRIBE; confirmation comes from the barrier PONGs.
		}
	}
}

// confirmed handles the PONG of barrier tok: every SUBSCRIBE sent before it is in effect.
func (h *hub) confirmed(tok uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if tok == h.resync {
		// The session's first barrier: wake every reader before any Subscribe waiting on this
		// session returns, so that only readers from before the reconnect see the wake-up.
		for _, t := range h.topics {
			t.sig.Wake()
		}
		h.up.Store(true)
		h.s.log.Info("redis pub/sub connected", zap.Int("channels", len(h.topics)))
	}
	n := 0
	for n < len(h.pending) && h.pending[n].token <= tok {
		c := h.pending[n]
		if c.t.subscribed && c.t.barrier == c.token && !c.t.confirmed {
			c.t.confirmed = true
			close(c.t.ready)
		}
		n++
	}
	clear(h.pending[:n])
	h.pending = h.pending[n:]
}

// lost records the end of a session: nothing is subscribed any more; readers stay registered
// and the next session subscribes again for them.
func (h *hub) lost() {
	h.up.Store(false)
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch, t := range h.topics {
		if t.refs == 0 {
			delete(h.topics, ch)
			continue
		}
		t.subscribed, t.barrier = false, 0
		if t.confirmed {
			t.confirmed = false
			t.ready = make(chan struct{})
		}
	}
	h.pending = nil
	clear(h.dirty)
}

// keepAlive refreshes the idle expiry of watched streams every keepEvery (see Store.touch).
func (h *hub) keepAlive() {
	tick := time.NewTicker(h.keepEvery)
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.RLock()
		streams := make([]string, 0, len(h.topics))
		for _, t := range h.topics {
			if t.refs > 0 {
				streams = append(streams, t.stream)
			}
		}
		h.mu.RUnlock()
		if err := h.s.touch(h.ctx, streams); err != nil && h.ctx.Err() == nil {
			h.s.log.Debug("redis keep-alive of watched streams failed", zap.Error(err))
		}
	}
}

// close stops the session and the keep-alive and wakes every reader.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, t := range h.topics {
		t.sig.Wake()
	}
}

// subscription is one local reader's interest in a topic.
type subscription struct {
	cache.SignalSub
	h *hub
	t *topic
}

func (sub *subscription) Close() {
	if sub.End() {
		sub.h.release(sub.t)
	}
}
