package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/bridged/bridged/internal/redistest"
)

// startNodes starts n bridged processes on the Redis srv, sharing one key prefix, with env on
// top of the defaults, as n nodes behind a load balancer would run.
func startNodes(tb testing.TB, srv *redistest.Server, n int, env map[string]string) []*daemon {
	tb.Helper()
	vars := map[string]string{
		"BRIDGE_STORE":        "redis",
		"BRIDGE_REDIS_URL":    srv.URL(),
		"BRIDGE_REDIS_PREFIX": redistest.UniquePrefix(tb),
	}
	for k, v := range env {
		vars[k] = v
	}
	nodes := make([]*daemon, n)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { nodes[i] = startDaemon(tb, vars) })
	}
	wg.Wait()
	for _, d := range nodes {
		if d == nil {
			tb.FailNow() // startDaemon reported why
		}
	}
	return nodes
}

// TestMultiNode runs three nodes on one Redis. An app publishes 5,000 messages for 10 users
// through node 1; every user has an SSE reader and a long-poll reader that connect to node 2 or
// node 3 at random for every connection and request, disconnecting at random moments and
// resuming from the last id they got. Every reader must receive every message of its user
// exactly once and in order.
func TestMultiNode(t *testing.T) {
	t.Parallel()
	const (
		users      = 10
		perUser    = 500 // 5,000 messages in all
		publishers = 5   // publisher p owns users 2p and 2p+1
		deadline   = 50 * time.Second
	)
	srv := redistest.Start(t)
	nodes := startNodes(t, srv, 3, map[string]string{
		"BRIDGE_MESSAGE_TTL":         "10m",
		"BRIDGE_STREAM_MAX_MESSAGES": "100000",
		"BRIDGE_STREAM_MAX_BYTES":    "64MiB",
		"BRIDGE_HEARTBEAT":           "500ms",
	})
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	pick := func() *daemon { return nodes[1+rand.N(2)] }

	userName := func(u int) string { return fmt.Sprintf("multi-%d", u) }
	published := make([][]string, users)
	pubDone := make(chan struct{})
	cs := make([]*churnClient, 2*users)
	var wg sync.WaitGroup
	for i := range cs {
		c := &churnClient{n: i, user: i % users, userName: userName(i % users), sse: i < users, pubDone: pubDone, published: published}
		cs[i] = c
		tok := userToken(t, c.userName)
		if c.sse {
			wg.Go(func() { c.runSSE(ctx, pick, tok) })
		} else {
			wg.Go(func() { c.runLongPoll(ctx, pick, tok) })
		}
	}

	var pwg sync.WaitGroup
	var pubMu sync.Mutex
	var pubErrs []string
	start := time.Now()
	for p := range publishers {
		pwg.Go(func() {
			own := []int{2 * p, 2*p + 1}
			seq := map[int]int{}
			mine := map[int][]string{}
			for seq[own[0]] < perUser || seq[own[1]] < perUser {
				var items []map[string]any
				var to []int
				for range 1 + rand.N(20) {
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
				ids, err := tryPublish(ctx, nodes[0], map[string]any{"messages": items})
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
				time.Sleep(time.Duration(rand.N(60)) * time.Millisecond) // spread over some seconds
			}
			for u, ids := range mine {
				published[u] = ids
			}
		})
	}
	pwg.Wait()
	pubTime := time.Since(start)
	close(pubDone)
	wg.Wait()
	t.Logf("published %d messages through node 1 in %s; readers done %s after start", users*perUser, pubTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, e := range pubErrs {
		t.Error(e)
	}
	if len(pubErrs) > 0 {
		t.FailNow()
	}
	checkChurnClients(t, cs, published, ctx.Err() != nil, deadline)
}

// checkChurnClients fails the test for every client that did not get exactly its user's
// published ids, in order.
func checkChurnClients(t *testing.T, cs []*churnClient, published [][]string, timedOut bool, deadline time.Duration) {
	t.Helper()
	failed, connections := 0, 0
	for _, c := range cs {
		connections += c.connects
		want := published[c.user]
		problems := append([]string(nil), c.errs...)
		if c.dropped > 0 {
			problems = append(problems, fmt.Sprintf("%d further errors not shown", c.dropped))
		}
		if diff := diffIDs(c.ids(), want); diff != "" {
			problems = append(problems, "ids: "+diff)
		}
		for i, r := range c.got {
			if i < len(want) && r.id == want[i] && r.seq != i+1 {
				problems = append(problems, fmt.Sprintf("message %s carries seq %d, want %d", r.id, r.seq, i+1))
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
	if timedOut && failed == 0 {
		t.Errorf("clients were still reading at the %s deadline", deadline)
	}
	t.Logf("%d clients, %d connections in all", len(cs), connections)
}

// TestRedisOutage kills the real redis-server under two nodes and starts it again, with AOF
// (appendfsync always) and without persistence. While it is down: publishes answer 503 and never
// a false 200, /readyz fails on every node, and an open SSE stream either stays up or ends with
// "event: close" (unavailable). When it is back, readers resume by their last id: with AOF they
// get everything acknowledged, exactly once and in order, and no reset; without persistence
// they are told of the loss with a reset and get everything acknowledged after it.
func TestRedisOutage(t *testing.T) {
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "aof", false: "no-persistence"}[durable], func(t *testing.T) {
			t.Parallel()
			opts := []redistest.Option{}
			if durable {
				opts = append(opts, redistest.WithAOF())
			}
			srv := redistest.Start(t, opts...)
			nodes := startNodes(t, srv, 2, map[string]string{"BRIDGE_HEARTBEAT": "200ms", "BRIDGE_REDIS_TIMEOUT": "500ms"})
			ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
			defer cancel()
			const user = "outage"
			tok := userToken(t, user)

			// The reader: SSE on node 2 with r3labs' Client, resuming by Last-Event-ID whenever
			// the stream ends or fails, until it has the last acknowledged message.
			var (
				mu        sync.Mutex
				got       []string
				resets    int
				closes    int
				badFrames []string
				lastID    string
				endID     string
				current   context.CancelFunc // the reader's connection
			)
			readerDone := make(chan struct{})
			go func() {
				defer close(readerDone)
				for ctx.Err() == nil {
					mu.Lock()
					from, end := lastID, endID
					mu.Unlock()
					if end != "" && from == end {
						return
					}
					rctx, rcancel := context.WithCancel(ctx)
					mu.Lock()
					current = rcancel
					mu.Unlock()
					nodes[1].subscribe(rctx, tok, from, nil, func(e *sse.Event) {
						if rctx.Err() != nil {
							return // a frame cut by our own disconnect (see runSSE)
						}
						mu.Lock()
						defer mu.Unlock()
						switch string(e.Event) {
						case "hello", "ping":
							return
						case "reset":
							resets++
							lastID = string(e.ID)
							return
						case "close":
							closes++
							return
						}
						m, err := eventMessage(e)
						if err != nil {
							badFrames = append(badFrames, err.Error())
							return
						}
						got = append(got, m.ID)
						lastID = m.ID
						if lastID == endID {
							rcancel()
						}
					})
					rcancel()
					select { // the stream ended (Redis down, or an end check): reconnect shortly
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()

			// The app: publishes through node 1, retrying each message with its idempotency key
			// until it gets a 200, as the API asks of a publisher that got a 503.
			var acked []string
			var refused atomic.Int64
			publish := func(i int) {
				body := fmt.Sprintf(`{"user":%q,"event":"n","data":%d,"key":"k%d"}`, user, i, i)
				for ctx.Err() == nil {
					r, err := nodes[0].tryDo(ctx, "POST", "/v1/publish", publishKey, strings.NewReader(body), nil)
					if err != nil {
						t.Errorf("publish %d: %v", i, err)
						return
					}
					switch r.status {
					case http.StatusOK:
						var out struct {
							IDs []string `json:"ids"`
						}
						if err := strictUnmarshal(r.body, &out); err != nil || len(out.IDs) != 1 {
							t.Errorf("publish %d: %s: %v", i, r, err)
							return
						}
						acked = append(acked, out.IDs[0])
						return
					case http.StatusServiceUnavailable:
						if code := apiErrorCode(t, r); code != "unavailable" {
							t.Errorf("publish while Redis is down: 503 %q, want code unavailable", code)
						}
						refused.Add(1)
						time.Sleep(20 * time.Millisecond)
					default:
						t.Errorf("publish %d: %s, want 200 or 503", i, r)
						return
					}
				}
			}
			for i := 1; i <= 20; i++ {
				publish(i)
			}

			srv.Kill(t)
			for _, d := range nodes {
				if r := d.do(t, "GET", "/readyz", "", "", nil); r.status != http.StatusServiceUnavailable {
					t.Errorf("/readyz with Redis down: %s, want 503", r)
				}
			}
			r := nodes[0].do(t, "POST", "/v1/publish", publishKey, `{"user":"outage","data":"during","key":"during"}`, nil)
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
				t.Errorf("publish with Redis down: %s, want 503 with Retry-After", r)
			}
			if r := nodes[1].do(t, "GET", "/v1/poll?wait=1s", tok, "", nil); r.status != http.StatusServiceUnavailable && r.status != http.StatusOK {
				t.Errorf("long-poll with Redis down: %s, want 503 or an empty 200", r)
			}

			// Publishing goes on: the first of these waits out the outage. The publisher runs on
			// its own goroutine (it reports with t.Errorf only) while this one restarts Redis.
			published := make(chan struct{})
			go func() {
				defer close(published)
				for i := 21; i <= 60; i++ {
					publish(i)
				}
			}()
			for refused.Load() < 3 && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			srv.Restart(t)
			<-published
			for _, d := range nodes {
				waitReadyz(t, d)
			}
			if len(acked) != 60 {
				t.Fatalf("%d of 60 messages acknowledged", len(acked))
			}
			mu.Lock()
			endID = acked[len(acked)-1]
			if lastID == endID && current != nil {
				current() // it already has everything
			}
			mu.Unlock()
			<-readerDone

			mu.Lock()
			defer mu.Unlock()
			for _, b := range badFrames {
				t.Error(b)
			}
			t.Logf("%d publishes refused while Redis was down; the reader saw %d resets and %d close frames", refused.Load(), resets, closes)
			if durable {
				if resets != 0 {
					t.Errorf("reader got %d resets though Redis kept everything", resets)
				}
				if d := diffIDs(got, acked); d != "" {
					t.Errorf("reader: %s", d)
				}
				return
			}
			// Without persistence the 20 messages from before the outage are gone from Redis; a
			// reader may have read them before it went. What was acknowledged after the restart
			// must all arrive, in order, after a reset.
			after := acked[20:]
			var gotAfter []string
			for _, id := range got {
				if strings.SplitN(id, "-", 2)[0] == strings.SplitN(after[0], "-", 2)[0] {
					gotAfter = append(gotAfter, id)
				}
			}
			if resets == 0 {
				t.Error("the reader was not told that Redis lost its messages")
			}
			if d := diffIDs(gotAfter, after); d != "" {
				t.Errorf("reader after the restart: %s", d)
			}
		})
	}
}

// waitReadyz waits for /readyz to answer 200 (a bound that only catches hangs).
func waitReadyz(tb testing.TB, d *daemon) {
	tb.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		r, err := d.tryDo(tb.Context(), "GET", "/readyz", "", nil, nil)
		if err == nil && r.status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("/readyz not 200 within %s after Redis returned: %v %v", startTimeout, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownWithRedisDown: a node whose Redis is gone still shuts down cleanly on SIGTERM,
// ending its SSE streams with "event: close", and exits 0 in time.
func TestShutdownWithRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	d := startNodes(t, srv, 1, map[string]string{"BRIDGE_SHUTDOWN_TIMEOUT": "10s"})[0]
	s := d.openSSE(t, sseRequest{token: userToken(t, "bye")})
	s.hello(t)
	srv.Kill(t)
	code, killed := d.stop()
	if killed || code != 0 {
		t.Fatalf("SIGTERM with Redis down: exit code %d, killed %v; want a clean exit 0", code, killed)
	}
	for {
		f, ok := s.next(t)
		if !ok {
			t.Fatal("the SSE stream ended without event: close")
		}
		if f.Event == "close" {
			if !strings.Contains(f.Data, "shutdown") && !strings.Contains(f.Data, "unavailable") {
				t.Fatalf("close frame %q, want reason shutdown or unavailable", f.Data)
			}
			return
		}
	}
}

// TestTicketAcrossNodes: a ticket is single-use across the nodes sharing a Redis (the store's
// Claimer): issued by node 1, it opens a stream on node 2, and node 3 refuses it after that.
func TestTicketAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	nodes := startNodes(t, srv, 3, nil)
	id := nodes[0].publish(t, `{"user":"alice","data":"t"}`)[0]
	r := nodes[0].do(t, "POST", "/v1/ticket", userToken(t, "alice"), "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("ticket: %s", r)
	}
	var tk struct {
		Ticket  string `json:"ticket"`
		Expires string `json:"expires"`
	}
	strictDecode(t, r.body, &tk)
	s := nodes[1].openSSE(t, sseRequest{query: map[string][]string{"ticket": {tk.Ticket}}})
	s.hello(t)
	if got := s.messages(t, 1); got[0].ID != id {
		t.Fatalf("stream by ticket on node 2 gave %+v", got)
	}
	again := nodes[2].do(t, "GET", "/v1/sse?ticket="+tk.Ticket, "", "", nil)
	if again.status != http.StatusUnauthorized || apiErrorCode(t, again) != "ticket_used" {
		t.Fatalf("the ticket used on node 2, again on node 3: %s", again)
	}
}
