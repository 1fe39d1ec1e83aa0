package main

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The bookkeeping of a soak: what the steady publisher had acknowledged for each user (a ledger)
// and what each client of that user got (its tally). The rules, which docs/benchmarks.md repeats:
//
//   - Every steady message carries its user and n, the user's publish sequence number. n = 0 is
//     the genesis message published before any client starts; every client starts from its id, so
//     it is owed every acknowledged message with n >= 1, and a loss before its first connection is
//     still a loss it must be told about.
//   - One goroutine publishes to a user and waits for each message's acknowledgement (retrying
//     refusals with the same idempotency key) before the next, so the user's stream holds its
//     messages in n order, each once, with consecutive seqs within an epoch. That is what lets a
//     cursor bridged sends be turned back into an n (ledger.position).
//   - A delivery of an n already delivered is a duplicate; of an n at or below the highest n the
//     client has delivered or been reset past, out of order. Its id must be the id publish
//     returned for that n (else mismatched), and its user the client's (else foreign).
//   - A reset moves the client from its position (the n of the cursor it held) to a new one
//     (SSE: the n of the reset frame's id; long-poll: just before the first message of the
//     answer, or the answer's cursor when it has none) and excuses exactly the n in between that
//     the client did not get. A reset is premature when it excuses a message that cannot have
//     been gone yet: sent less than the TTL ago (minus a slack) with fewer than
//     BRIDGE_STREAM_MAX_MESSAGES messages of that user sent after it.
//   - When the reset's target is in an epoch no acknowledged message has (the stream was freed and
//     recreated), or is no cursor at all (a long-poll of a stream that no longer exists), every
//     message in older epochs is gone and the target is the newest acknowledged n. Such a guess
//     may cover a message appended to the new stream between bridged's read and our bookkeeping;
//     if that message is delivered later, the delivery is accepted and the excuse withdrawn.
//   - At the end, after publishing stopped and the clients caught up, an acknowledged message
//     that the client neither got nor was excused from is lost. Messages delivered but never
//     acknowledged (the publisher was stopped while sending them) are counted, not owed.

// cursor is a message id as bridged writes it: "<epoch in base 36>-<seq>". The zero value is no
// cursor at all. The tool parses it on its own rather than with the daemon's code.
type cursor struct{ epoch, seq uint64 }

func parseCursor(s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	e, q, ok := strings.Cut(s, "-")
	if !ok {
		return cursor{}, errors.New("cursor " + strconv.Quote(s) + " is not <epoch>-<seq>")
	}
	epoch, err1 := strconv.ParseUint(e, 36, 64)
	seq, err2 := strconv.ParseUint(q, 10, 64)
	if err1 != nil || err2 != nil || epoch == 0 {
		return cursor{}, errors.New("cursor " + strconv.Quote(s) + " is malformed")
	}
	return cursor{epoch, seq}, nil
}

func (c cursor) isZero() bool { return c == cursor{} }

func (c cursor) String() string {
	if c.isZero() {
		return ""
	}
	return strconv.FormatUint(c.epoch, 36) + "-" + strconv.FormatUint(c.seq, 10)
}

// ledger is what the steady publisher knows of one user's stream. It is safe for concurrent use:
// the user's publisher writes, the user's clients read.
type ledger struct {
	mu   sync.Mutex
	ids  []cursor // ids[n]: what publish returned for message n; len(ids) is the next n to be acknowledged
	sent []int64  // sent[n]: unix nanoseconds of message n's first attempt, the earliest it can have been stored
}

// issue records that message n = len(sent) is about to be sent at now and returns n.
func (l *ledger) issue(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, now.UnixNano())
	return len(l.sent) - 1
}

// ack records the id publish returned for message n, which must be the next one.
func (l *ledger) ack(n int, id cursor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n != len(l.ids) {
		panic("ledger: acknowledgement out of order") // the publisher's own invariant
	}
	l.ids = append(l.ids, id)
}

// acked returns the highest acknowledged n, or -1.
func (l *ledger) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids) - 1
}

// idOf returns the id publish returned for message n, if it has.
func (l *ledger) idOf(n int) (cursor, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n < 0 || n >= len(l.ids) {
		return cursor{}, false
	}
	return l.ids[n], true
}

// position returns the n that cursor c stands for: the message with that id, or for a cursor
// between messages (a reset's target, "<epoch>-0") the message just before. ok is false when c
// is zero or no acknowledged message has c's epoch.
func (l *ledger) position(c cursor) (n int, ok bool) {
	if c.isZero() {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Epochs change rarely, so the newest message of c's epoch is near the end.
	for k := len(l.ids) - 1; k >= 0; k-- {
		if l.ids[k].epoch == c.epoch {
			return k + int(int64(c.seq)-int64(l.ids[k].seq)), true
		}
	}
	return 0, false
}

// couldBeGone reports whether message n may have left the store by now: it was sent at least
// ttl-slack ago, or at least streamMax later messages of the user were sent.
func (l *ledger) couldBeGone(n int, now time.Time, r rules) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n < 0 || n >= len(l.sent) {
		return true // never sent by us: nothing to judge
	}
	if now.UnixNano()-l.sent[n] >= int64(r.ttl-r.slack) {
		return true
	}
	return r.streamMax > 0 && len(l.sent)-1-n >= r.streamMax
}

// rules are the daemon settings the bookkeeping judges resets by.
type rules struct {
	ttl       time.Duration // BRIDGE_MESSAGE_TTL
	streamMax int           // BRIDGE_STREAM_MAX_MESSAGES
	slack     time.Duration // clock and scheduling slack allowed on ttl
}

// bitset is a growable set of small non-negative ints.
type bitset []uint64

func (b bitset) has(i int) bool { return i>>6 < len(b) && b[i>>6]&(1<<(i&63)) != 0 }

func (b *bitset) set(i int) {
	for i>>6 >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[i>>6] |= 1 << (i & 63)
}

func (b bitset) clear(i int) {
	if i>>6 < len(b) {
		b[i>>6] &^= 1 << (i & 63)
	}
}

// tally is one client's bookkeeping. It is owned by the client's goroutine, then read by the
// report once the client has ended.
type tally struct {
	user *ledger
	pos  int // the n of the cursor the client holds: the last message or reset it processed
	hi   int // the highest n delivered or reset past

	got     bitset // delivered
	excused bitset // covered by a reset and not delivered
	guessed bitset // excused by a reset whose target had to be guessed (see the package rules)

	unverified []delivery // delivered before publish's answer for them arrived; checked in settle

	Delivered  int // distinct messages delivered
	Dups       int // deliveries of a message already delivered
	OutOfOrder int // deliveries at or below the highest n delivered or reset past
	Resets     int
	Unresolved int // resets whose target had to be guessed
	Recovered  int // deliveries of guessed-excused messages (not errors)
	Mismatched int // deliveries whose id is not what publish returned for their n
	Premature  int // messages excused by a reset that cannot have been gone yet
	Backwards  int // resets whose target is before the client's position
	Lost       int // set by settle
	Excused    int // set by settle: excused and never delivered
	Unacked    int // set by settle: delivered messages publish never acknowledged
}

type delivery struct {
	n  int
	id cursor
}

func newTally(user *ledger) *tally { return &tally{user: user} }

// deliver books the delivery of message n with id.
func (t *tally) deliver(n int, id cursor) {
	if want, ok := t.user.idOf(n); ok {
		if want != id {
			t.Mismatched++
		}
	} else {
		t.unverified = append(t.unverified, delivery{n, id})
	}
	switch {
	case t.got.has(n):
		t.Dups++
	case t.guessed.has(n) && t.excused.has(n):
		t.excused.clear(n)
		t.guessed.clear(n)
		t.got.set(n)
		t.Delivered++
		t.Recovered++
	case n <= t.hi:
		t.OutOfOrder++
		t.got.set(n)
		t.Delivered++
	default:
		t.got.set(n)
		t.Delivered++
		t.hi = n
	}
	t.pos = n
}

// resetTo books a reset that moves the client to position to (an n), excusing every n after the
// client's position up to it that it did not get. guess says the target was guessed.
func (t *tally) resetTo(to int, guess bool, now time.Time, r rules) {
	t.Resets++
	if guess {
		t.Unresolved++
	}
	if to < t.pos {
		t.Backwards++
	}
	for n := t.pos + 1; n <= to; n++ {
		if t.got.has(n) || t.excused.has(n) {
			continue
		}
		t.excused.set(n)
		if guess {
			t.guessed.set(n)
		} else if !t.user.couldBeGone(n, now, r) {
			t.Premature++
		}
	}
	t.pos = to
	t.hi = max(t.hi, to)
}

// resetToCursor books a reset whose target is a cursor (SSE's reset frame id, or a long-poll
// answer's cursor when it carries no message).
func (t *tally) resetToCursor(c cursor, now time.Time, r rules) {
	to, ok := t.user.position(c)
	if !ok {
		to = t.user.acked()
	}
	t.resetTo(to, !ok, now, r)
}

// caughtUp reports whether the client has reached position final (or beyond).
func (t *tally) caughtUp(final int) bool { return t.pos >= final }

// settle counts, once the client has ended, what it lost of messages 1..final (the user's
// acknowledged messages) and checks the deliveries that arrived before their acknowledgement.
func (t *tally) settle(final int) {
	for _, d := range t.unverified {
		if want, ok := t.user.idOf(d.n); ok && want != d.id {
			t.Mismatched++
		}
	}
	t.unverified = nil
	t.Lost, t.Excused, t.Unacked = 0, 0, 0
	for n := 1; n <= final; n++ {
		switch {
		case t.got.has(n):
		case t.excused.has(n):
			t.Excused++
		default:
			t.Lost++
		}
	}
	for n := final + 1; n < len(t.got)*64; n++ {
		if t.got.has(n) {
			t.Unacked++
		}
	}
}

// bad is the number of errors the verdict fails on, counted once each.
func (t *tally) bad() int {
	return t.Lost + t.Dups + t.OutOfOrder + t.Mismatched + t.Premature + t.Backwards
}
