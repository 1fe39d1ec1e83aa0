package main

import (
	"fmt"
	"testing"
	"time"
)

// The bookkeeping is what the soak's verdict rests on, so it is tested on its own: each case
// publishes a user's messages into a ledger, plays deliveries and resets into a client's tally
// and settles it against the newest acknowledged message.

var (
	testNow   = time.Unix(1_000_000, 0)
	testRules = rules{ttl: 10 * time.Second, streamMax: 1000, slack: time.Second}
)

const epochA, epochB, epochC = 0xa1, 0xb2, 0xc3

// op is one step played into a tally.
type op struct {
	deliver int     // deliver message n with the id the ledger holds (or id, when set)
	id      *cursor // the id to deliver with, overriding the ledger's
	reset   *cursor // a reset whose target is this cursor
	resetTo *int    // a reset whose target is this n (long-poll: before the answer's first message)
	ack     *cursor // publish answers for the next message now, with this id
}

func deliver(ns ...int) []op {
	var ops []op
	for _, n := range ns {
		ops = append(ops, op{deliver: n})
	}
	return ops
}

func resetAt(c cursor) op { return op{deliver: -1, reset: &c} }
func resetTo(n int) op    { return op{deliver: -1, resetTo: &n} }
func ackAs(c cursor) op   { return op{deliver: -1, ack: &c} }
func deliverAs(n int, c cursor) op {
	return op{deliver: n, id: &c}
}

func seq(ops ...[]op) []op {
	var out []op
	for _, o := range ops {
		out = append(out, o...)
	}
	return out
}

func one(o op) []op { return []op{o} }

// stream describes how the ledger was filled: n = 0..len-1 acknowledged, in the epochs given
// (each epoch's seqs start at 1), sent age ago.
type stream struct {
	epochs []uint64 // epoch of each acknowledged n
	issued int      // messages sent but not acknowledged, after those
	age    time.Duration
}

func oneEpoch(n int) stream {
	s := stream{age: time.Hour}
	for range n {
		s.epochs = append(s.epochs, epochA)
	}
	return s
}

func (s stream) build() *ledger {
	l := &ledger{}
	var seqs = map[uint64]uint64{}
	for _, e := range s.epochs {
		n := l.issue(testNow.Add(-s.age))
		seqs[e]++
		l.ack(n, cursor{e, seqs[e]})
	}
	for range s.issued {
		l.issue(testNow.Add(-s.age))
	}
	return l
}

// idIn is the id of message n in a one-epoch stream (genesis n = 0 is seq 1).
func idIn(n int) cursor { return cursor{epochA, uint64(n + 1)} }

type want struct {
	delivered, lost, dups, ooo, resets, excused, unresolved, recovered, mismatched, premature, backwards, unacked int
}

func (w want) String() string {
	type fields want // without this method, so %+v prints the fields
	return fmt.Sprintf("%+v", fields(w))
}

func got(t *tally) want {
	return want{t.Delivered, t.Lost, t.Dups, t.OutOfOrder, t.Resets, t.Excused, t.Unresolved, t.Recovered,
		t.Mismatched, t.Premature, t.Backwards, t.Unacked}
}

func TestTally(t *testing.T) {
	twoEpochs := stream{age: time.Hour}
	for n := range 9 { // n 0..5 in epoch A (seq 1..6), 6..8 in epoch B (seq 1..3): the stream was freed and recreated
		twoEpochs.epochs = append(twoEpochs.epochs, map[bool]uint64{true: epochA, false: epochB}[n < 6])
	}
	fresh := oneEpoch(8)
	fresh.age = 2 * time.Second // younger than the TTL: nothing can have expired
	evicting := fresh
	evicting.issued = 1000 // but a thousand messages were sent after: the stream cap may have evicted them

	tests := []struct {
		name   string
		stream stream
		final  int // the newest acknowledged n the client is owed up to; default: the ledger's
		ops    []op
		want   want
	}{
		{
			name:   "every message once and in order",
			stream: oneEpoch(6),
			ops:    deliver(1, 2, 3, 4, 5),
			want:   want{delivered: 5},
		},
		{
			name:   "a gap with no reset is a loss",
			stream: oneEpoch(6),
			ops:    deliver(1, 2, 4, 5),
			want:   want{delivered: 4, lost: 1},
		},
		{
			name:   "messages never delivered by the end are lost",
			stream: oneEpoch(6),
			ops:    deliver(1, 2, 3),
			want:   want{delivered: 3, lost: 2},
		},
		{
			name:   "nothing delivered: every acknowledged message after genesis is lost",
			stream: oneEpoch(4),
			want:   want{lost: 3},
		},
		{
			name:   "a repeated message is a duplicate, not a second delivery",
			stream: oneEpoch(4),
			ops:    deliver(1, 2, 2, 3, 1),
			want:   want{delivered: 3, dups: 2},
		},
		{
			name:   "a message after a later one is out of order, not lost",
			stream: oneEpoch(4),
			ops:    deliver(1, 3, 2),
			want:   want{delivered: 3, ooo: 1},
		},
		{
			name:   "the genesis message is before every client's start",
			stream: oneEpoch(3),
			ops:    deliver(0, 1, 2),
			want:   want{delivered: 3, ooo: 1},
		},
		{
			name:   "a reset excuses exactly the messages between the position and its target",
			stream: oneEpoch(7),
			ops:    seq(deliver(1, 2), one(resetAt(idIn(4))), deliver(5, 6)),
			want:   want{delivered: 4, resets: 1, excused: 2},
		},
		{
			name:   "a reset does not excuse a later gap",
			stream: oneEpoch(7),
			ops:    seq(deliver(1), one(resetAt(idIn(3))), deliver(4, 6)),
			want:   want{delivered: 3, resets: 1, excused: 2, lost: 1},
		},
		{
			name:   "a reset does not excuse a gap before the client's position",
			stream: oneEpoch(7),
			ops:    seq(deliver(1, 3), one(resetAt(idIn(5))), deliver(6)),
			want:   want{delivered: 3, resets: 1, excused: 2, lost: 1},
		},
		{
			name:   "a reset at the client's own position excuses nothing",
			stream: oneEpoch(4),
			ops:    seq(deliver(1, 2), one(resetAt(idIn(2))), deliver(3)),
			want:   want{delivered: 3, resets: 1},
		},
		{
			name:   "a message delivered after a reset passed it is out of order",
			stream: oneEpoch(5),
			ops:    seq(deliver(1), one(resetAt(idIn(3))), deliver(3, 4)),
			want:   want{delivered: 3, resets: 1, excused: 1, ooo: 1},
		},
		{
			name:   "a long-poll reset moves to just before the answer's first message",
			stream: oneEpoch(6),
			ops:    seq(deliver(1), one(resetTo(3)), deliver(4, 5)),
			want:   want{delivered: 3, resets: 1, excused: 2},
		},
		{
			name:   "a reset to a position behind the client is reported",
			stream: oneEpoch(6),
			ops:    seq(deliver(1, 2, 3, 4), one(resetAt(idIn(2))), deliver(5)),
			want:   want{delivered: 5, resets: 1, backwards: 1},
		},
		{
			name:   "two resets excuse their own ranges only",
			stream: oneEpoch(10),
			ops:    seq(deliver(1), one(resetAt(idIn(3))), deliver(4), one(resetAt(idIn(7))), deliver(8, 9)),
			want:   want{delivered: 4, resets: 2, excused: 5},
		},
		{
			name:   "a reset into a recreated stream excuses the old epoch's rest",
			stream: twoEpochs,
			ops:    seq(deliver(1, 2), one(resetAt(cursor{epochB, 0})), deliver(6, 7, 8)),
			want:   want{delivered: 5, resets: 1, excused: 3},
		},
		{
			name:   "ids of a recreated stream map back to their n",
			stream: twoEpochs,
			ops:    seq(deliver(1, 2), one(resetAt(cursor{epochB, 2})), deliver(8)),
			want:   want{delivered: 3, resets: 1, excused: 5},
		},
		{
			name:   "a reset into an epoch with nothing acknowledged excuses everything acknowledged",
			stream: oneEpoch(6),
			ops:    seq(deliver(1, 2), one(resetAt(cursor{epochC, 0}))),
			want:   want{delivered: 2, resets: 1, unresolved: 1, excused: 3},
		},
		{
			name:   "a long-poll reset with no cursor (the stream was freed) is a guess too",
			stream: oneEpoch(6),
			ops:    seq(deliver(1), one(resetAt(cursor{})), deliver()),
			want:   want{delivered: 1, resets: 1, unresolved: 1, excused: 4},
		},
		{
			name:   "a guessed excuse is withdrawn when the message arrives after all",
			stream: oneEpoch(6),
			ops:    seq(deliver(1, 2), one(resetAt(cursor{epochC, 0})), deliver(5)),
			want:   want{delivered: 3, resets: 1, unresolved: 1, recovered: 1, excused: 2},
		},
		{
			name:   "messages skipped after a guessed reset are lost",
			stream: oneEpoch(6),
			ops: seq(deliver(1), one(resetAt(cursor{})), // excuses 2..5, all there was
				one(ackAs(cursor{epochB, 1})), one(ackAs(cursor{epochB, 2})), one(ackAs(cursor{epochB, 3})),
				one(deliverAs(8, cursor{epochB, 3}))), // 6 and 7 never came
			want: want{delivered: 2, resets: 1, unresolved: 1, excused: 4, lost: 2},
		},
		{
			name:   "a reset that excuses messages younger than the TTL is premature",
			stream: fresh,
			ops:    seq(deliver(1), one(resetAt(idIn(4))), deliver(5, 6, 7)),
			want:   want{delivered: 4, resets: 1, excused: 3, premature: 3},
		},
		{
			name:   "a young message may have been evicted by the stream cap",
			stream: evicting,
			final:  7,
			ops:    seq(deliver(1), one(resetAt(idIn(4))), deliver(5, 6, 7)),
			want:   want{delivered: 4, resets: 1, excused: 3},
		},
		{
			name:   "a delivery whose id is not what publish returned is mismatched",
			stream: oneEpoch(4),
			ops:    seq(deliver(1), one(deliverAs(2, cursor{epochA, 99})), deliver(3)),
			want:   want{delivered: 3, mismatched: 1},
		},
		{
			name:   "a delivery before its acknowledgement is checked when settling",
			stream: oneEpoch(3),
			final:  3,
			ops:    seq(deliver(1, 2), one(deliverAs(3, idIn(3))), one(ackAs(cursor{epochA, 77}))),
			want:   want{delivered: 3, mismatched: 1},
		},
		{
			name:   "a correct delivery before its acknowledgement is fine",
			stream: oneEpoch(3),
			final:  3,
			ops:    seq(deliver(1, 2), one(deliverAs(3, idIn(3))), one(ackAs(idIn(3)))),
			want:   want{delivered: 3},
		},
		{
			name:   "deliveries of never-acknowledged messages are counted, not owed",
			stream: oneEpoch(4),
			final:  3,
			ops:    seq(deliver(1, 2, 3), one(deliverAs(4, idIn(4)))),
			want:   want{delivered: 4, unacked: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.stream.build()
			tl := newTally(l)
			for _, o := range tt.ops {
				switch {
				case o.ack != nil:
					n := l.issue(testNow)
					l.ack(n, *o.ack)
				case o.reset != nil:
					tl.resetToCursor(*o.reset, testNow, testRules)
				case o.resetTo != nil:
					tl.resetTo(*o.resetTo, false, testNow, testRules)
				default:
					id, _ := l.idOf(o.deliver)
					if o.id != nil {
						id = *o.id
					}
					tl.deliver(o.deliver, id)
				}
			}
			final := tt.final
			if final == 0 {
				final = l.acked()
			}
			tl.settle(final)
			if g := got(tl); g != tt.want {
				t.Errorf("got  %v\nwant %v", g, tt.want)
			}
			if wantBad := tt.want.lost + tt.want.dups + tt.want.ooo + tt.want.mismatched + tt.want.premature + tt.want.backwards; tl.bad() != wantBad {
				t.Errorf("bad() = %d, want %d", tl.bad(), wantBad)
			}
		})
	}
}

func TestTallyCaughtUp(t *testing.T) {
	l := oneEpoch(6).build()
	tl := newTally(l)
	if tl.caughtUp(5) {
		t.Fatal("a client at genesis is caught up with message 5")
	}
	tl.deliver(1, idIn(1))
	tl.resetToCursor(idIn(5), testNow, testRules)
	if !tl.caughtUp(5) {
		t.Fatal("a client reset past message 5 is not caught up with it")
	}
}

func TestParseCursor(t *testing.T) {
	for _, s := range []string{"k3x9f2am1qz-17", "1-0", "zzzzzzzzzzzz-18446744073709551615"} {
		c, err := parseCursor(s)
		if err != nil || c.String() != s {
			t.Errorf("parseCursor(%q) = %v, %v; String() = %q", s, c, err, c.String())
		}
	}
	if c, err := parseCursor(""); err != nil || !c.isZero() {
		t.Errorf(`parseCursor("") = %v, %v; want the zero cursor`, c, err)
	}
	for _, s := range []string{"17", "-17", "abc-", "0-5", "k3x-1.5", "K3X!-1"} {
		if _, err := parseCursor(s); err == nil {
			t.Errorf("parseCursor(%q) succeeded, want an error", s)
		}
	}
}

func TestLedgerPosition(t *testing.T) {
	l := stream{epochs: []uint64{epochA, epochA, epochA, epochB, epochB}}.build()
	tests := []struct {
		c      cursor
		n      int
		ok     bool
		reason string
	}{
		{cursor{epochA, 1}, 0, true, "genesis"},
		{cursor{epochA, 3}, 2, true, "last of the first epoch"},
		{cursor{epochB, 0}, 2, true, "before the first of the second epoch"},
		{cursor{epochB, 2}, 4, true, "last acknowledged"},
		{cursor{epochB, 3}, 5, true, "beyond the acknowledged: stored, answer not yet back"},
		{cursor{epochC, 1}, 0, false, "unknown epoch"},
		{cursor{}, 0, false, "no cursor"},
	}
	for _, tt := range tests {
		n, ok := l.position(tt.c)
		if n != tt.n || ok != tt.ok {
			t.Errorf("%s: position(%v) = %d, %v; want %d, %v", tt.reason, tt.c, n, ok, tt.n, tt.ok)
		}
	}
}
