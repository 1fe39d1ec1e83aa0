package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// steadyEvent is the event name of the steady publisher's messages.
const steadyEvent = "soak"

// pubStats counts what the publishers did; safe for concurrent use.
type pubStats struct {
	issued, acked     atomic.Int64 // steady messages
	attempts          atomic.Int64 // steady publish requests, retries included
	storeFull         atomic.Int64 // steady: 503 store_full
	other503, tooMany atomic.Int64 // steady: other 503s, 429s
	netErrs           atomic.Int64 // steady: no answer (retried with the same key)

	floodStored, floodBytes atomic.Int64
	floodFull               atomic.Int64 // flood: 503 store_full
	floodOther              atomic.Int64 // flood: any other failure
	firstFull               atomic.Int64 // unix nanoseconds of the first store_full, either publisher
}

func (p *pubStats) noteFull() {
	p.firstFull.CompareAndSwap(0, time.Now().UnixNano())
}

// errFatal marks a publish answer that retrying cannot fix (the tool or bridged is misconfigured).
var errFatal = errors.New("fatal")

// refusal is a 429 or 503 answer to a publish.
type refusal struct {
	status int
	code   string        // the error code, e.g. store_full
	retry  time.Duration // Retry-After
}

// publish posts body and returns the ids, or the refusal (429, 503), or an error: errFatal for
// any other answer.
func (s *soak) publish(ctx context.Context, body []byte) (ids []string, ref *refusal, err error) {
	req, err := http.NewRequestWithContext(ctx, "POST", s.d.base+"/v1/publish", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.d.pubKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.pubClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusOK {
		var out struct {
			IDs []string `json:"ids"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return nil, nil, fmt.Errorf("%w: publish answer %.200s: %v", errFatal, b, err)
		}
		return out.IDs, nil, nil
	}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	switch resp.StatusCode {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return nil, &refusal{resp.StatusCode, e.Error.Code, time.Duration(max(secs, 1)) * time.Second}, nil
	}
	return nil, nil, fmt.Errorf("%w: publish: %d %.300s", errFatal, resp.StatusCode, bytes.TrimSpace(b))
}

type steadyItem struct {
	User  string `json:"user"`
	Event string `json:"event"`
	Data  struct {
		U   string `json:"u"`
		N   int    `json:"n"`
		Pad string `json:"pad,omitempty"`
	} `json:"data"`
	Key string `json:"key"`
}

func (s *soak) steadyItem(u *user, n int) steadyItem {
	it := steadyItem{User: u.name, Event: steadyEvent, Key: "n" + strconv.Itoa(n)}
	it.Data.U, it.Data.N, it.Data.Pad = u.name, n, s.pad
	return it
}

// publishAcked publishes body until bridged accepts it, retrying refusals (after Retry-After,
// capped at 1 s) and lost answers; every item carries an idempotency key, so a retry never
// stores a message twice. It fails only when ctx ends or the answer is fatal.
func (s *soak) publishAcked(ctx context.Context, body []byte, want int) ([]cursor, error) {
	for {
		s.pub.attempts.Add(1)
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		ids, ref, err := s.publish(rctx, body)
		cancel()
		var retry time.Duration
		switch {
		case errors.Is(err, errFatal):
			return nil, err
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			s.pub.netErrs.Add(1)
			retry = 100 * time.Millisecond
		case ref != nil:
			retry = ref.retry
			switch {
			case ref.code == "store_full":
				s.pub.storeFull.Add(1)
				s.pub.noteFull()
			case ref.status == http.StatusTooManyRequests:
				s.pub.tooMany.Add(1)
			default:
				s.pub.other503.Add(1)
			}
		default:
			if len(ids) != want {
				return nil, fmt.Errorf("%w: publish of %d messages returned %d ids", errFatal, want, len(ids))
			}
			out := make([]cursor, len(ids))
			for i, id := range ids {
				if out[i], err = parseCursor(id); err != nil || out[i].isZero() {
					return nil, fmt.Errorf("%w: publish returned id %q: %v", errFatal, id, err)
				}
			}
			return out, nil
		}
		retry = min(retry, time.Second)
		t := time.NewTimer(retry/2 + rand.N(retry/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// genesis publishes message n = 0 to every user, in batches, before any client starts.
func (s *soak) genesis(ctx context.Context) error {
	const batch = 500
	for i := 0; i < len(s.users); i += batch {
		us := s.users[i:min(i+batch, len(s.users))]
		var items []steadyItem
		for _, u := range us {
			items = append(items, s.steadyItem(u, u.ledger.issue(time.Now())))
		}
		body, _ := json.Marshal(map[string]any{"messages": items})
		ids, err := s.publishAcked(ctx, body, len(items))
		if err != nil {
			return fmt.Errorf("genesis messages: %w", err)
		}
		for j, u := range us {
			u.ledger.ack(0, ids[j])
		}
	}
	return nil
}

// runSteady publishes -rate messages per second over all users until stop closes, from
// -publishers goroutines. Goroutine k owns users k, k+P, k+2P…, sends to them in turn and waits
// for each message's acknowledgement before the next: that is what keeps every user's stream in
// n order (see ledger.go). A refusal holds its goroutine back, so the rate sags while the store is
// full; messages are delayed, never dropped. ctx ends a message still being retried.
func (s *soak) runSteady(ctx context.Context, stop <-chan struct{}) error {
	p := min(s.cfg.publishers, len(s.users))
	interval := time.Duration(float64(time.Second) * float64(p) / s.cfg.rate)
	var wg sync.WaitGroup
	errs := make([]error, p)
	for k := range p {
		wg.Go(func() {
			var own []*user
			for i := k; i < len(s.users); i += p {
				own = append(own, s.users[i])
			}
			next := time.Now().Add(time.Duration(rand.Int64N(int64(interval) + 1)))
			for i := 0; ; i++ {
				t := time.NewTimer(time.Until(next))
				select {
				case <-stop:
					t.Stop()
					return
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				u := own[i%len(own)]
				n := u.ledger.issue(time.Now())
				s.pub.issued.Add(1)
				body, _ := json.Marshal(s.steadyItem(u, n))
				ids, err := s.publishAcked(ctx, body, 1)
				if err != nil {
					if errors.Is(err, errFatal) {
						errs[k] = err
					}
					return
				}
				u.ledger.ack(n, ids[0])
				s.pub.acked.Add(1)
				next = pace(next, interval)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// floodHold is how long a flood that reached the cap only after -flood-end keeps at it.
const floodHold = 3 * time.Second

// floodMinSize is the smallest flood message: with its accounting overhead it is smaller than a
// steady message, so the flood can fill the store closer to the cap than a steady message fits.
const floodMinSize = 64

// runFlood publishes messages of up to -flood-size to the flood users, from -flood-workers
// goroutines, back to back (or at -flood-rate when set), to drive the store into
// BRIDGE_MAX_MEMORY and keep it there: from from until until, and on past until (up to last) if
// the store has not refused anything yet, then floodHold more, so that a slow machine still tests
// the cap. After a refusal a worker halves its message size and tries again at once, down to
// floodMinSize, then pauses briefly; after a success it doubles the size again. So the flood also
// takes the gaps that expiring messages leave, and the steady publisher meets store_full too
// instead of slipping its small messages into them. Nothing is retried.
func (s *soak) runFlood(ctx context.Context, from, until, last time.Time) {
	w := s.cfg.floodWorkers
	var interval time.Duration // between one worker's publishes; 0: back to back
	if s.cfg.floodRate > 0 {
		interval = time.Duration(float64(time.Second) * float64(w) * float64(s.cfg.floodSize) / float64(s.cfg.floodRate))
	}
	if !sleepUntil(ctx, from) {
		return
	}
	s.floodBegan.Store(int64(time.Since(s.start)))
	s.phase.CompareAndSwap("ramp", "flood")
	s.phase.CompareAndSwap("steady", "flood")
	defer func() {
		s.floodEnded.Store(int64(time.Since(s.start)))
		s.phase.CompareAndSwap("flood", "steady")
	}()
	more := func() bool {
		now, full := time.Now(), s.pub.firstFull.Load()
		switch {
		case now.Before(until):
			return true
		case full == 0:
			return now.Before(last)
		default: // late: hold the cap a little, so the steady publisher meets it too
			return now.Before(time.Unix(0, full).Add(floodHold)) && now.Before(last)
		}
	}
	full := int(s.cfg.floodSize)
	data := `"` + strings.Repeat("x", full-2) + `"`
	var seq atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			next := time.Now().Add(time.Duration(rand.Int64N(int64(interval) + 1)))
			size := full
			var body bytes.Buffer
			for more() {
				if !sleepUntil(ctx, next) {
					return
				}
				next = pace(next, interval)
				body.Reset()
				fmt.Fprintf(&body, `{"user":"flood-%04d","event":"flood","data":%s"}`, seq.Add(1)%int64(s.cfg.floodUsers), data[:size-1])
				rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				ids, ref, err := s.publish(rctx, body.Bytes())
				cancel()
				switch {
				case ctx.Err() != nil:
					return
				case err == nil && ids != nil:
					s.pub.floodStored.Add(1)
					s.pub.floodBytes.Add(int64(size))
					size = min(2*size, full)
				case ref != nil && ref.code == "store_full":
					s.pub.floodFull.Add(1)
					s.pub.noteFull()
					if size > floodMinSize {
						size = max(size/2, floodMinSize)
						next = time.Now()
					} else {
						next = time.Now().Add(100 * time.Millisecond)
					}
				default:
					s.pub.floodOther.Add(1)
					next = time.Now().Add(100 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pace returns the next send time: one interval after the last, but not more than one interval
// in the past, so a publisher held back (by refusals) resumes its pace instead of bursting.
func pace(last time.Time, interval time.Duration) time.Time {
	next, floor := last.Add(interval), time.Now().Add(-interval)
	if next.Before(floor) {
		return floor
	}
	return next
}
