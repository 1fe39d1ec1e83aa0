package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
)

// TestChurn runs many clients against a publisher while every client keeps disconnecting at
// random moments and resuming from the last id it got. Half read over SSE (r3labs' Client),
// half long-poll. At the end every client must have received every message of its user exactly
// once and in order: the ids publish returned, with the per-user sequence numbers in the data.
func TestChurn(t *testing.T) {
	t.Parallel()
	const (
		users      = 10
		perUser    = 150 // messages per user; 1,500 in all
		clients    = 40  // client i reads user i%users; even i over SSE, odd i by long-poll
		publishers = 5   // publisher p owns users 2p and 2p+1 and mixes them in its batches
		deadline   = 25 * time.Second
	)
	d := startDaemon(t, map[string]string{
		"BRIDGE_MESSAGE_TTL":         "10m",
		"BRIDGE_STREAM_MAX_MESSAGES": "100000",
		"BRIDGE_STREAM_MAX_BYTES":    "64MiB",
		"BRIDGE_MAX_MEMORY":          "512MiB",
		"BRIDGE_HEARTBEAT":           "250ms", // pings interleave with messages
	})
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()

	userName := func(u int) string { return fmt.Sprintf("churn-%d", u) }
	published := make([][]string, users) // each user's ids in publish order; read after pubDone
	pubDone := make(chan struct{})

	cs := make([]*churnClient, clients)
	var wg sync.WaitGroup
	for i := range cs {
		c := &churnClient{n: i, user: i % users, userName: userName(i % users), sse: i%2 == 0, pubDone: pubDone, published: published}
		cs[i] = c
		tok := userToken(t, c.userName)
		pick := func() *daemon { return d }
		if c.sse {
			wg.Go(func() { c.runSSE(ctx, pick, tok) })
		} else {
			wg.Go(func() { c.runLongPoll(ctx, pick, tok) })
		}
	}

	var pwg sync.WaitGroup
	var pubMu sync.Mutex
	var pubErrs []string
	for p := range publishers {
		pwg.Go(func() {
			own := []int{2 * p, 2*p + 1}
			seq := map[int]int{}
			mine := map[int][]string{}
			for seq[own[0]] < perUser || seq[own[1]] < perUser {
				var items []map[string]any
				var to []int
				for range 1 + rand.N(6) {
					u := own[rand.N(2)]
					if seq[u] == perUser {
						u = own[0] + own[1] - u
					}
					if seq[u] == perUser {
						break
					}
					seq[u]++
					items = append(items, map[string]any{"user": userName(u), "event": "churn", "data": map[string]any{"user": userName(u), "seq": seq[u]}})
					to = append(to, u)
				}
				ids, err := tryPublish(ctx, d, map[string]any{"messages": items})
				if err == nil && len(ids) != len(items) {
					err = fmt.Errorf("%d ids for %d messages", len(ids), len(items))
				}
				if err != nil {
					pubMu.Lock()
					pubErrs = append(pubErrs, fmt.Sprintf("publisher %d: %v", p, err))
					pubMu.Unlock()
					cancel()
					return
				}
				for j, u := range to {
					mine[u] = append(mine[u], ids[j])
				}
				time.Sleep(time.Duration(rand.N(40)) * time.Millisecond) // spread over a few seconds
			}
			for u, ids := range mine {
				published[u] = ids // distinct users per publisher: no two goroutines write one slot
			}
		})
	}
	start := time.Now()
	pwg.Wait()
	pubTime := time.Since(start)
	close(pubDone)
	wg.Wait()
	t.Logf("published %d messages in %s; clients done %s after start", users*perUser, pubTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, e := range pubErrs {
		t.Error(e)
	}
	if len(pubErrs) > 0 {
		t.FailNow()
	}

	failed := 0
	reconnects := 0
	for _, c := range cs {
		reconnects += c.connects
		want := published[c.user]
		var problems []string
		problems = append(problems, c.errs...)
		if c.dropped > 0 {
			problems = append(problems, fmt.Sprintf("%d further errors not shown", c.dropped))
		}
		if diff := diffIDs(c.ids(), want); diff != "" {
			problems = append(problems, "ids: "+diff)
		}
		for i, r := range c.got {
			if i < len(want) && r.id == want[i] && r.seq != i+1 {
				problems = append(problems, fmt.Sprintf("message %s carries seq %d, want %d: publish returned ids out of input order", r.id, r.seq, i+1))
				break
			}
		}
		if len(problems) > 0 {
			failed++
			if failed <= 8 {
				t.Errorf("client %d (%s, user %s, %d connections): %s", c.n, c.kind(), c.userName, c.connects, strings.Join(problems, "\n\t"))
			}
		}
	}
	if failed > 8 {
		t.Errorf("... and %d more clients failed", failed-8)
	}
	if ctx.Err() != nil && failed == 0 {
		t.Errorf("clients were still reading at the %s deadline", deadline)
	}
	t.Logf("%d clients, %d connections in all", clients, reconnects)
}

// churnClient is one reader of TestChurn. Its fields are written by its own goroutine only and
// read after it ends.
type churnClient struct {
	n         int
	user      int
	userName  string
	sse       bool
	pubDone   <-chan struct{}
	published [][]string // valid after pubDone

	got      []churnMsg
	last     string // id of the last message received
	connects int
	errs     []string
	dropped  int
}

type churnMsg struct {
	id  string
	seq int
}

func (c *churnClient) kind() string {
	if c.sse {
		return "SSE"
	}
	return "long-poll"
}

func (c *churnClient) ids() []string {
	out := make([]string, len(c.got))
	for i, m := range c.got {
		out[i] = m.id
	}
	return out
}

func (c *churnClient) errorf(format string, a ...any) {
	if len(c.errs) < 10 {
		c.errs = append(c.errs, fmt.Sprintf(format, a...))
	} else {
		c.dropped++
	}
}

// done reports whether publishing is over and the client has the user's last message.
func (c *churnClient) done() bool {
	select {
	case <-c.pubDone:
		ids := c.published[c.user]
		return len(ids) > 0 && c.last == ids[len(ids)-1]
	default:
		return false
	}
}

func (c *churnClient) record(m message) {
	var data struct {
		User string `json:"user"`
		Seq  int    `json:"seq"`
	}
	if err := strictUnmarshal(m.Data, &data); err != nil || data.User != c.userName || m.Event != "churn" {
		c.errorf("message %s is not one of %s's: event %q data %s", m.ID, c.userName, m.Event, m.Data)
	}
	c.got = append(c.got, churnMsg{id: m.ID, seq: data.Seq})
	c.last = m.ID
}

// runSSE reads with r3labs' Client, cancelling each connection after a random lifetime and
// resuming with Last-Event-ID set to the last message it handled, each time on the node pick
// returns.
func (c *churnClient) runSSE(ctx context.Context, pick func() *daemon, tok string) {
	for ctx.Err() == nil && !c.done() {
		cctx, ccancel := context.WithTimeout(ctx, time.Duration(20+rand.N(400))*time.Millisecond)
		c.connects++
		err := pick().subscribe(cctx, tok, c.last, nil, func(e *sse.Event) {
			if cctx.Err() != nil {
				// Our own disconnect may cut a frame; r3labs' reader hands the cut bytes over as
				// an event (bufio.Scanner splits at any read error as at EOF). Whatever arrives
				// now is read again on the next connection, from c.last.
				return
			}
			switch string(e.Event) {
			case "hello", "ping":
				return
			case "reset", "close":
				c.errorf("unexpected %s event %s after %q", e.Event, e.Data, c.last)
				return
			}
			m, err := eventMessage(e)
			if err != nil {
				c.errorf("%v", err)
				return
			}
			c.record(m)
			if c.done() {
				ccancel()
			}
		})
		if cctx.Err() == nil {
			// The server ended the stream, or the connection failed, on its own.
			c.errorf("SSE connection %d ended by itself: %v", c.connects, err)
		}
		ccancel()
	}
}

// runLongPoll long-polls in a loop, each request on the node pick returns; about a third of its
// requests are abandoned after a random delay, closing the connection, whether or not an answer
// was on its way.
func (c *churnClient) runLongPoll(ctx context.Context, pick func() *daemon, tok string) {
	cursor := ""
	for ctx.Err() == nil && !c.done() {
		life := requestTimeout
		if rand.N(3) == 0 {
			life = time.Duration(rand.N(150)) * time.Millisecond
		}
		rctx, rcancel := context.WithTimeout(ctx, life)
		select {
		case <-c.pubDone:
		default:
			// A client that already has its user's last message learns so only when
			// publishing ends; do not leave it waiting out a long-poll until then.
			go func() {
				select {
				case <-c.pubDone:
					rcancel()
				case <-rctx.Done():
				}
			}()
		}
		c.connects++
		q := url.Values{"cursor": {cursor}, "wait": {"5s"}}
		r, err := pick().tryDo(rctx, "GET", "/v1/poll?"+q.Encode(), tok, nil, nil)
		abandoned := rctx.Err() != nil
		rcancel()
		switch {
		case err != nil && abandoned:
			continue // our own disconnect: ask again with the same cursor
		case err != nil:
			c.errorf("long-poll: %v", err)
			continue
		case r.status != http.StatusOK:
			c.errorf("long-poll: %s", r)
			continue
		}
		var p pollAnswer
		if err := strictUnmarshal(r.body, &p); err != nil {
			c.errorf("long-poll answer %s: %v", r.body, err)
			continue
		}
		if p.Reset {
			c.errorf("long-poll after %q: reset", cursor)
		}
		for _, m := range p.Messages {
			c.record(m)
		}
		if n := len(p.Messages); n > 0 && p.Cursor != p.Messages[n-1].ID {
			c.errorf("long-poll cursor %s is not the last message's id %s", p.Cursor, p.Messages[n-1].ID)
		}
		cursor = p.Cursor
	}
}

// tryPublish publishes body and returns the ids, or an error; safe to call from any goroutine.
func tryPublish(ctx context.Context, d *daemon, body any) ([]string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	r, err := d.tryDo(ctx, "POST", "/v1/publish", publishKey, strings.NewReader(string(b)), nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("publish: %s", r)
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	if err := strictUnmarshal(r.body, &out); err != nil {
		return nil, err
	}
	return out.IDs, nil
}
