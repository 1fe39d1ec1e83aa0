package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"testing"
	"time"
)

// TestLongPoll checks that a long-poll answers with a message published while it waits, and
// that one with nothing to return answers 200 with an empty list and a usable cursor when its
// wait (capped by BRIDGE_LONGPOLL_MAX) is over.
func TestLongPoll(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		before  int    // messages published before the long-poll; it starts after the last
		wait    string // the wait parameter
		publish bool   // publish one message while it waits
	}{
		{name: "wakes on publish", before: 2, wait: "20s", publish: true},
		{name: "wakes on the first message of a new stream", before: 0, wait: "20s", publish: true},
		{name: "times out empty, caught-up cursor", before: 2, wait: "1s"},
		{name: "times out empty, whole seconds", before: 1, wait: "1"},
		{name: "times out empty, stream that does not exist", before: 0, wait: "1s"},
		{
			name: "wait capped by BRIDGE_LONGPOLL_MAX",
			env:  map[string]string{"BRIDGE_LONGPOLL_MAX": "1s"},
			// The client gives up after requestTimeout (15 s), long before an uncapped 60 s.
			before: 1, wait: "60s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, tt.env)
			const user = "alice"
			tok := userToken(t, user)
			cursor := ""
			if tt.before > 0 {
				ids := d.publishSeq(t, user, tt.before, tt.before)
				cursor = ids[len(ids)-1]
			}

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
				q := url.Values{"cursor": {cursor}, "wait": {tt.wait}}
				r, err := d.tryDo(ctx, "GET", "/v1/poll?"+q.Encode(), tok, nil, nil)
				done <- result{r, err}
			}()

			var want []string
			if tt.publish {
				select {
				case <-sent:
				case res := <-done:
					t.Fatalf("long-poll ended before it was sent: %v %v", res.r, res.err)
				}
				// Give the request time to reach its wait, so the wake-up path is what runs.
				// The assertions below hold however long this takes.
				time.Sleep(100 * time.Millisecond)
				want = []string{d.publishOne(t, user, "", "while waiting")}
			}

			res := <-done
			if res.err != nil {
				t.Fatalf("long-poll wait=%s: %v", tt.wait, res.err)
			}
			p := decodePoll(t, res.r)
			if p.Reset || p.More {
				t.Errorf("long-poll: reset=%v more=%v, want false", p.Reset, p.More)
			}
			if diff := diffIDs(p.ids(), want); diff != "" {
				t.Fatalf("long-poll after %q: %s", cursor, diff)
			}
			if len(want) > 0 {
				if p.Cursor != want[len(want)-1] {
					t.Errorf("long-poll cursor %s, want the message's id %s", p.Cursor, want[len(want)-1])
				}
				return
			}

			// Nothing published: 200 with "messages":[] and a cursor to continue from.
			var raw map[string]json.RawMessage
			strictDecode(t, res.r.body, &raw)
			if string(raw["messages"]) != "[]" {
				t.Errorf(`empty long-poll answered "messages":%s, want []`, raw["messages"])
			}
			if p.Cursor == "" {
				t.Fatalf("empty long-poll answered no cursor: %s", res.r.body)
			}
			if cursor != "" && p.Cursor != cursor {
				t.Errorf("empty long-poll after %s answered cursor %s, want the same cursor", cursor, p.Cursor)
			}
			// The cursor is usable: the next message comes after it, with no reset.
			next := d.publishOne(t, user, "", "after the timeout")
			p = d.poll(t, tok, url.Values{"cursor": {p.Cursor}})
			if p.Reset {
				t.Errorf("poll after the empty long-poll's cursor: reset=true")
			}
			if diff := diffIDs(p.ids(), []string{next}); diff != "" {
				t.Errorf("poll after the empty long-poll's cursor: %s", diff)
			}
		})
	}
}

// TestLongPollClientLeaves checks that a long-poll whose client goes away does not keep the
// daemon from serving others or from shutting down (the cleanup asserts a clean exit).
func TestLongPollClientLeaves(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	tok := userToken(t, "alice")
	for range 5 {
		ctx, cancel := context.WithCancel(t.Context())
		sent := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			ctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { close(sent) },
			})
			_, err := d.tryDo(ctx, "GET", "/v1/poll?wait=25s", tok, nil, nil)
			done <- err
		}()
		select {
		case <-sent:
		case err := <-done:
			t.Fatalf("long-poll ended before it was sent: %v", err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatal("a cancelled long-poll returned no error")
		}
	}
	id := d.publishOne(t, "alice", "", "x")
	if p := d.poll(t, tok, nil); len(p.Messages) != 1 || p.Messages[0].ID != id {
		t.Fatalf("poll after abandoned long-polls: %v, want [%s]", p.ids(), id)
	}
	if r := d.do(t, "GET", "/readyz", "", "", nil); r.status != http.StatusOK {
		t.Fatalf("/readyz after abandoned long-polls: %s", r)
	}
}
