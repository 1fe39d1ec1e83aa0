package publisher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridged/bridged/internal/bridgedtest"
	"github.com/bridged/bridged/internal/faultproxy"
	"github.com/bridged/bridged/publisher"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "publisher-test-")
	if err != nil {
		panic(err)
	}
	if _, err := bridgedtest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "build bridged:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setup starts the real daemon behind a fault proxy and a publisher that goes through it.
func setup(t *testing.T, tweak func(*publisher.Options)) (*bridgedtest.Daemon, *faultproxy.Proxy, *publisher.Publisher) {
	t.Helper()
	d := bridgedtest.Start(t, nil)
	u, _ := url.Parse(d.URL)
	proxy := faultproxy.New(u, nil)
	ts := httptest.NewServer(proxy)
	t.Cleanup(ts.Close)
	o := publisher.Options{URL: ts.URL, Key: bridgedtest.PublishKey, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if tweak != nil {
		tweak(&o)
	}
	pub, err := publisher.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := pub.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d, proxy, pub
}

func TestPublishReturnsIDsInOrderAndBatches(t *testing.T) {
	t.Parallel()
	d, proxy, pub := setup(t, func(o *publisher.Options) { o.FlushInterval = 5 * time.Millisecond })
	const n = 200
	ids := make([]string, n)
	var wg sync.WaitGroup
	// One user's messages from one goroutine keep their order; other users publish alongside.
	wg.Go(func() {
		for i := range n {
			id, err := pub.Publish(t.Context(), publisher.Message{User: "alice", Event: "notice", Data: map[string]int{"n": i}})
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			ids[i] = id
		}
	})
	for g := range 4 {
		wg.Go(func() {
			msgs := make([]publisher.Message, 25)
			for i := range msgs {
				msgs[i] = publisher.Message{User: fmt.Sprintf("bob-%d", g), Data: json.RawMessage(`{"x":1}`)}
			}
			if _, err := pub.PublishBatch(t.Context(), msgs); err != nil {
				t.Errorf("batch: %v", err)
			}
		})
	}
	wg.Wait()
	stored := d.Messages(t, "alice")
	if len(stored) != n {
		t.Fatalf("stored %d messages for alice, want %d", len(stored), n)
	}
	for i, line := range stored {
		if want := fmt.Sprintf(`%s notice {"n":%d}`, ids[i], i); line != want {
			t.Fatalf("message %d stored as %q, want %q", i, line, want)
		}
	}
	if reqs := proxy.Stats().ByPath["/v1/publish"]; reqs >= n+4*25 {
		t.Errorf("%d requests for %d messages: nothing was batched", reqs, n+100)
	}
}

func TestRetryAfterLostAnswerStoresOnce(t *testing.T) {
	t.Parallel()
	d, proxy, pub := setup(t, nil)
	proxy.Set(faultproxy.Faults{Drop: []faultproxy.DropRule{{Path: "/v1/publish", Count: 2}}})
	id, err := pub.Publish(t.Context(), publisher.Message{User: "carol", Data: "once"})
	if err != nil {
		t.Fatal(err)
	}
	if s := proxy.Stats(); s.Dropped != 2 {
		t.Fatalf("proxy dropped %d answers, want 2 (the test did not exercise the retry)", s.Dropped)
	}
	if got := d.Messages(t, "carol"); len(got) != 1 || !strings.HasPrefix(got[0], id+" ") {
		t.Fatalf("stored %q, want exactly one message with id %s", got, id)
	}
}

func TestRetriesOverloadHonouringRetryAfter(t *testing.T) {
	t.Parallel()
	d, proxy, pub := setup(t, nil)
	proxy.Set(faultproxy.Faults{Fail: []faultproxy.FailRule{
		{Path: "/v1/publish", Status: 503, RetryAfter: 1, Count: 1},
		{Path: "/v1/publish", Status: 429, Count: 2},
	}})
	start := time.Now()
	id, err := pub.Publish(t.Context(), publisher.Message{User: "dave", Data: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s := proxy.Stats(); s.Failed != 3 {
		t.Fatalf("proxy failed %d requests, want 3", s.Failed)
	}
	// Retry-After: 1 is a floor the publisher must respect (an outcome, not a speed).
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %s, before the Retry-After of 1 s", waited)
	}
	if got := d.Messages(t, "dave"); len(got) != 1 || !strings.HasPrefix(got[0], id+" ") {
		t.Fatalf("stored %q", got)
	}
}

func TestRefusalFailsOnlyTheBadMessage(t *testing.T) {
	t.Parallel()
	d, _, pub := setup(t, func(o *publisher.Options) { o.FlushInterval = 100 * time.Millisecond })
	var wg sync.WaitGroup
	var good, bad error
	wg.Go(func() { _, good = pub.Publish(t.Context(), publisher.Message{User: "erin", Data: "fine"}) })
	wg.Go(func() {
		_, bad = pub.Publish(t.Context(), publisher.Message{User: "erin", Event: "ping", Data: "reserved"})
	})
	wg.Wait()
	if good != nil {
		t.Fatalf("good message failed with its bad neighbour: %v", good)
	}
	var e *publisher.Error
	if !errors.As(bad, &e) || e.Status != 400 || e.Code != "bad_event" {
		t.Fatalf("bad message: %v, want a 400 bad_event", bad)
	}
	if got := d.Messages(t, "erin"); len(got) != 1 {
		t.Fatalf("stored %q", got)
	}
}

func TestQueueFullIsAnError(t *testing.T) {
	t.Parallel()
	_, proxy, pub := setup(t, func(o *publisher.Options) { o.QueueSize = 4; o.MaxBatch = 1 })
	// bridged is "down": every publish fails, so the queue fills behind the first message.
	proxy.Set(faultproxy.Faults{Fail: []faultproxy.FailRule{{Path: "/v1/publish", Status: 503, Count: 1 << 30}}})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	results := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			_, err := pub.Publish(ctx, publisher.Message{User: "frank", Data: i})
			results <- err
		})
	}
	var full int
	for range 64 - 5 { // at most 4 queued and 1 in flight can be waiting
		if err := <-results; errors.Is(err, publisher.ErrQueueFull) {
			full++
		} else {
			t.Fatalf("want ErrQueueFull while the queue is full, got %v", err)
		}
	}
	cancel()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, publisher.ErrQueueFull) {
			t.Fatalf("waiting caller: %v", err)
		}
	}
	if full == 0 {
		t.Fatal("no ErrQueueFull")
	}
}

func TestCloseSendsWhatIsQueuedAndRefusesMore(t *testing.T) {
	t.Parallel()
	d := bridgedtest.Start(t, nil)
	// The flush interval is far longer than the test: a full batch of two goes at once, and
	// only Close can make the third go.
	pub, err := publisher.New(publisher.Options{URL: d.URL, Key: bridgedtest.PublishKey, FlushInterval: time.Hour, MaxBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := pub.PublishBatch(t.Context(), []publisher.Message{{User: "gina", Data: 1}, {User: "gina", Data: 2}, {User: "gina", Data: 3}})
		done <- err
	}()
	for len(d.Messages(t, "gina")) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := pub.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("queued messages: %v", err)
	}
	if got := d.Messages(t, "gina"); len(got) != 3 {
		t.Fatalf("stored %q after Close, want all three", got)
	}
	if _, err := pub.Publish(t.Context(), publisher.Message{User: "gina", Data: 4}); !errors.Is(err, publisher.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
