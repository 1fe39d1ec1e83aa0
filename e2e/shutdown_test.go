package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestShutdown sends SIGTERM while SSE streams and a long-poll are open. Every stream must get
// "event: close" with reason shutdown and then end, the long-poll must be answered, no new
// client may be told the node is ready, and the process must exit 0, which it does only when
// http.Server.Shutdown finished within BRIDGE_SHUTDOWN_TIMEOUT.
func TestShutdown(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_SHUTDOWN_TIMEOUT": "10s"})

	var streams []*sseStream
	for i := range 4 {
		user := fmt.Sprintf("user-%d", i)
		s := d.openSSE(t, sseRequest{token: userToken(t, user), tokenInQuery: i%2 == 1})
		s.hello(t)
		id := d.publishOne(t, user, "", "before shutdown")
		if got := s.messages(t, 1); got[0].ID != id {
			t.Fatalf("stream %d got %s, want %s", i, got[0].ID, id)
		}
		streams = append(streams, s)
	}

	// The long-poll runs on a client of its own whose one connection has already been served,
	// so the daemon has accepted it before SIGTERM closes the listener.
	lpClient := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer lpClient.CloseIdleConnections()
	if r, err := lpClient.Get(d.base + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		r.Body.Close()
	}
	tok := userToken(t, "waiter")
	cursor := d.publishOne(t, "waiter", "", "already read")
	type result struct {
		r   *response
		err error
	}
	sent := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { close(sent) },
		})
		q := url.Values{"cursor": {cursor}, "wait": {"25s"}}
		req, _ := http.NewRequestWithContext(ctx, "GET", d.base+"/v1/poll?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := lpClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{&response{status: resp.StatusCode, header: resp.Header, body: b}, err}
	}()
	select {
	case <-sent:
	case r := <-done:
		t.Fatalf("long-poll ended before it was sent: %v", r.err)
	}
	// Let the daemon read the request and start waiting: real time has to pass here, and the
	// long-poll would fail below, not pass, if it were too short.
	time.Sleep(250 * time.Millisecond)

	d.sigterm()

	for i, s := range streams {
		var f frame
		for {
			f = s.mustNext(t)
			if f.Event != "ping" {
				break
			}
		}
		if f.Event != "close" || f.Data != `{"reason":"shutdown"}` || f.HasID {
			t.Errorf("stream %d: frame after SIGTERM %q, want event: close with {\"reason\":\"shutdown\"} and no id", i, f.Raw)
		}
		if f, ok := s.next(t); ok {
			t.Errorf("stream %d: frame after the close frame: %q; the stream must end", i, f.Raw)
		}
	}

	// Streams are closed only after the node started draining, which is after the listener
	// closed: no new client may be told it is ready.
	if r, err := d.tryDo(t.Context(), "GET", "/readyz", "", nil, nil); err == nil && r.status == http.StatusOK {
		t.Errorf("/readyz after SIGTERM answered %s", r)
	}

	res := <-done
	if res.err != nil {
		t.Fatalf("pending long-poll at SIGTERM: %v", res.err)
	}
	p := decodePoll(t, res.r)
	if len(p.Messages) != 0 || p.Reset || p.Cursor != cursor {
		t.Errorf("pending long-poll answered %s, want no messages and cursor %s", res.r.body, cursor)
	}

	code, killed := d.stop()
	if killed || code != 0 {
		t.Fatalf("exit after SIGTERM: code %d, killed %v (%v)", code, killed, d.waitErr)
	}
	out := d.log.String()
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(out, "still open") {
		t.Errorf("log says connections were still open at the shutdown timeout")
	}
}
