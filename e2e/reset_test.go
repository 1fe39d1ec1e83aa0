package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestReset reads after a cursor whose following messages are gone. Poll and long-poll must say
// reset:true and return what is retained; SSE must send an "event: reset" frame whose id: is a
// cursor that, used to resume, yields the same messages and no further reset. A cursor after
// which nothing was lost must not be told about a reset.
func TestReset(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second // the expired row must finish its reads within one TTL
	tests := []struct {
		name string
		env  map[string]string
		// prepare publishes to user and returns a cursor after which messages are gone and the
		// messages a reader after it must get, and a cursor after which nothing was lost and
		// what a reader after that must get.
		prepare func(t *testing.T, d *daemon, user string) (lost string, wantLost []string, kept string, wantKept []string)
	}{
		{
			name: "messages expired",
			env:  map[string]string{"BRIDGE_MESSAGE_TTL": ttl.String()},
			prepare: func(t *testing.T, d *daemon, user string) (string, []string, string, []string) {
				tok := userToken(t, user)
				// A watcher keeps the stream, and so its epoch, alive while it is empty; it is
				// also a live reader that must see the expiry without any reset.
				w := d.openSSE(t, sseRequest{token: tok})
				w.hello(t)
				a1 := d.publishOne(t, user, "", "a1")
				a2 := d.publishOne(t, user, "", "a2")
				if diff := diffIDs(messageIDs(w.messages(t, 2)), []string{a1, a2}); diff != "" {
					t.Fatalf("live watcher: %s", diff)
				}
				time.Sleep(ttl + 300*time.Millisecond) // real time must pass for a1 and a2 to expire
				if p := d.poll(t, tok, nil); len(p.Messages) != 0 {
					t.Fatalf("after the TTL a poll still returns %v", p.ids())
				}
				a3 := d.publishOne(t, user, "", "a3")
				if diff := diffIDs(messageIDs(w.messages(t, 1)), []string{a3}); diff != "" {
					t.Fatalf("live watcher after the expiry: %s", diff)
				}
				return a1, []string{a3}, a2, []string{a3}
			},
		},
		{
			name: "messages evicted by BRIDGE_STREAM_MAX_MESSAGES",
			env:  map[string]string{"BRIDGE_STREAM_MAX_MESSAGES": "3"},
			prepare: func(t *testing.T, d *daemon, user string) (string, []string, string, []string) {
				ids := d.publishSeq(t, user, 6, 1)
				return ids[1], ids[3:], ids[2], ids[3:]
			},
		},
		{
			name: "cursor beyond the end of the stream",
			prepare: func(t *testing.T, d *daemon, user string) (string, []string, string, []string) {
				ids := d.publishSeq(t, user, 3, 3)
				epoch, _, _ := strings.Cut(ids[0], "-")
				return epoch + "-99", ids, ids[0], ids[1:]
			},
		},
		{
			name: "cursor of another epoch",
			prepare: func(t *testing.T, d *daemon, user string) (string, []string, string, []string) {
				ids := d.publishSeq(t, user, 3, 3)
				other := "zzzzzz-1"
				if strings.HasPrefix(ids[0], "zzzzzz-") {
					other = "yyyyyy-1"
				}
				return other, ids, ids[0], ids[1:]
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, tt.env)
			const user = "alice"
			tok := userToken(t, user)
			lost, wantLost, kept, wantKept := tt.prepare(t, d, user)
			last := wantLost[len(wantLost)-1]

			// Poll and long-poll after the lost cursor: reset, then what is retained.
			for _, q := range []url.Values{{"cursor": {lost}}, {"cursor": {lost}, "wait": {"20s"}}} {
				p := d.poll(t, tok, q)
				if !p.Reset || p.More || p.Cursor != last {
					t.Errorf("poll %v: reset=%v more=%v cursor=%s, want reset=true more=false cursor=%s", q, p.Reset, p.More, p.Cursor, last)
				}
				if diff := diffIDs(p.ids(), wantLost); diff != "" {
					t.Errorf("poll %v: %s", q, diff)
				}
			}
			// Nothing was lost after kept.
			p := d.poll(t, tok, url.Values{"cursor": {kept}})
			if p.Reset {
				t.Errorf("poll after %s (nothing after it is gone): reset=true", kept)
			}
			if diff := diffIDs(p.ids(), wantKept); diff != "" {
				t.Errorf("poll after %s: %s", kept, diff)
			}

			// SSE after the lost cursor: hello, reset with the new position, then the messages.
			s := d.openSSE(t, sseRequest{token: tok, lastEventID: lost})
			s.hello(t)
			r := s.mustNext(t)
			if r.Event != "reset" || !r.HasID || r.ID == "" {
				t.Fatalf("frame after hello %q, want event: reset with an id:", r.Raw)
			}
			var rd struct {
				Cursor string `json:"cursor"`
			}
			if err := strictUnmarshal([]byte(r.Data), &rd); err != nil || rd.Cursor != r.ID {
				t.Fatalf("reset frame data %q, want {\"cursor\":%q} (%v)", r.Data, r.ID, err)
			}
			if r.ID == lost {
				t.Fatalf("reset frame id: is the lost cursor %s itself", lost)
			}
			if diff := diffIDs(messageIDs(s.messages(t, len(wantLost))), wantLost); diff != "" {
				t.Fatalf("SSE after the reset frame: %s", diff)
			}
			s.close()

			// The reset frame's id resumes without another reset, on both transports.
			p = d.poll(t, tok, url.Values{"cursor": {r.ID}})
			if p.Reset {
				t.Errorf("poll after the reset frame's id %s: reset=true", r.ID)
			}
			if diff := diffIDs(p.ids(), wantLost); diff != "" {
				t.Errorf("poll after the reset frame's id %s: %s", r.ID, diff)
			}
			s = d.openSSE(t, sseRequest{token: tok, lastEventID: r.ID})
			s.hello(t)
			if diff := diffIDs(messageIDs(s.messages(t, len(wantLost))), wantLost); diff != "" {
				t.Fatalf("SSE resumed from the reset frame's id %s: %s", r.ID, diff)
			}
		})
	}
}
