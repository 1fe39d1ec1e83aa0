package e2e

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"testing"
)

// TestReplay publishes messages and reads them back with no cursor: SSE (r3labs' Client)
// replays all of them in order, and polling returns the same messages, page by page.
func TestReplay(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{
		"BRIDGE_STREAM_MAX_MESSAGES": "5000",
		"BRIDGE_STREAM_MAX_BYTES":    "8MiB",
	})
	tests := []struct {
		name  string
		n     int // messages
		batch int // messages per publish request
	}{
		{name: "one per request", n: 20, batch: 1},
		{name: "batches, more than one SSE read", n: 600, batch: 200}, // SSE reads 256 at a time
		{name: "more than one poll page", n: 1300, batch: 1000},       // a poll answers 1000 at most
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := fmt.Sprintf("replay-%d", i)
			tok := userToken(t, user)
			ids := d.publishSeq(t, user, tt.n, tt.batch)
			if len(ids) != tt.n {
				t.Fatalf("publish returned %d ids, want %d", len(ids), tt.n)
			}
			checkData := func(transport string, ms []message) {
				t.Helper()
				for j, m := range ms {
					want := fmt.Sprintf(`{"n":%d}`, j+1)
					if string(m.Data) != want || m.Event != "message" {
						t.Fatalf("%s message %d: event %q data %s, want event \"message\" data %s", transport, j, m.Event, m.Data, want)
					}
				}
			}

			got := d.collectSSE(t, tok, "", nil, ids[len(ids)-1])
			if diff := diffIDs(messageIDs(got), ids); diff != "" {
				t.Fatalf("SSE replay with no cursor: %s", diff)
			}
			checkData("SSE", got)

			var polled []message
			cursor := ""
			for page := 0; ; page++ {
				p := d.poll(t, tok, url.Values{"cursor": {cursor}})
				if p.Reset {
					t.Fatalf("poll page %d after %q: reset", page, cursor)
				}
				if len(p.Messages) > 0 && p.Cursor != p.Messages[len(p.Messages)-1].ID {
					t.Fatalf("poll page %d: cursor %s, want the last message's id %s", page, p.Cursor, p.Messages[len(p.Messages)-1].ID)
				}
				polled = append(polled, p.Messages...)
				cursor = p.Cursor
				if !p.More {
					break
				}
				if page > tt.n/1000+1 {
					t.Fatalf("poll still says more after %d pages", page+1)
				}
			}
			if diff := diffIDs(messageIDs(polled), ids); diff != "" {
				t.Fatalf("poll with no cursor: %s", diff)
			}
			checkData("poll", polled)
			for j := range polled {
				if polled[j].Event != got[j].Event || !bytes.Equal(polled[j].Data, got[j].Data) || polled[j].Time != got[j].Time {
					t.Fatalf("message %s differs between poll (%+v) and SSE (%+v)", ids[j], polled[j], got[j])
				}
			}
		})
	}
}

// TestReplayEventsAndData checks that what an app publishes comes back unchanged on every
// transport: event names, the default event, and data of every JSON kind, including characters
// that matter to HTML or to SSE framing.
func TestReplayEventsAndData(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	tok := userToken(t, "alice")
	items := []struct{ event, data, want string }{
		{event: "chat.msg", data: `{"text":"hi"}`, want: `{"text":"hi"}`},
		{event: "", data: `"a string"`, want: `"a string"`},
		{event: "a:b_c-d.e", data: `[1,2.5,true,null]`, want: `[1,2.5,true,null]`},
		{event: "html", data: `"<script>&amp;</script>"`, want: `"<script>&amp;</script>"`},
		{event: "lines", data: `"line1\nline2\r\nid: 999\nevent: forged"`, want: `"line1\nline2\r\nid: 999\nevent: forged"`},
		{event: "unicode", data: "\"h\u00e9llo \u2028 \U0001F600\"", want: "\"h\u00e9llo \u2028 \U0001F600\""},
		{event: "pretty", data: "{\n  \"a\" : [1,\r\n 2]\n}", want: `{"a":[1,2]}`},
		{event: "null", data: `null`, want: `null`},
	}
	var msgs []string
	for _, it := range items {
		m := `{"user":"alice","data":` + it.data
		if it.event != "" {
			m += `,"event":"` + it.event + `"`
		}
		msgs = append(msgs, m+"}")
	}
	ids := d.publish(t, `{"messages":[`+joinComma(msgs)+`]}`)
	if len(ids) != len(items) {
		t.Fatalf("publish returned %d ids for %d messages", len(ids), len(items))
	}
	check := func(transport string, got []message) {
		t.Helper()
		if diff := diffIDs(messageIDs(got), ids); diff != "" {
			t.Fatalf("%s: %s", transport, diff)
		}
		for i, it := range items {
			wantEvent := it.event
			if wantEvent == "" {
				wantEvent = "message"
			}
			if got[i].Event != wantEvent || string(got[i].Data) != it.want {
				t.Errorf("%s message %d: event %q data %s, want event %q data %s", transport, i, got[i].Event, got[i].Data, wantEvent, it.want)
			}
		}
	}
	check("poll", d.poll(t, tok, nil).Messages)
	check("SSE (r3labs Client)", d.collectSSE(t, tok, "", nil, ids[len(ids)-1]))
	s := d.openSSE(t, sseRequest{token: tok})
	s.hello(t)
	check("SSE (raw frames)", s.messages(t, len(ids)))
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

// TestResume reads part of a stream over SSE, disconnects, lets more messages be published, and
// resumes from the last id seen: it must get exactly the rest, no repeats and nothing skipped.
// The resume point travels in Last-Event-ID, in the cursor query parameter, or in both, where
// the header wins.
func TestResume(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	tests := []struct {
		name string
		// resume returns how to reconnect after the message with id last; ids are all the
		// messages published before the reconnect.
		resume       func(last string, ids []string) (lastEventID string, q url.Values)
		tokenInQuery bool
	}{
		{
			name: "Last-Event-ID header",
			resume: func(last string, _ []string) (string, url.Values) {
				return last, nil
			},
		},
		{
			name: "cursor query parameter",
			resume: func(last string, _ []string) (string, url.Values) {
				return "", url.Values{"cursor": {last}}
			},
		},
		{
			name: "header wins over query",
			resume: func(last string, ids []string) (string, url.Values) {
				return last, url.Values{"cursor": {ids[0]}} // the query alone would repeat ids[1:]
			},
		},
		{
			name: "header wins over a later query cursor",
			resume: func(last string, ids []string) (string, url.Values) {
				return last, url.Values{"cursor": {ids[len(ids)-2]}} // the query alone would skip
			},
		},
		{
			name: "token and cursor in the query, as EventSource sends them",
			resume: func(last string, _ []string) (string, url.Values) {
				return "", url.Values{"cursor": {last}}
			},
			tokenInQuery: true,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			user := fmt.Sprintf("resume-%d", i)
			tok := userToken(t, user)
			first := d.publishSeq(t, user, 10, 3)

			// Read the first four and disconnect.
			s := d.openSSE(t, sseRequest{token: tok, tokenInQuery: tt.tokenInQuery})
			s.hello(t)
			seen := s.messages(t, 4)
			if diff := diffIDs(messageIDs(seen), first[:4]); diff != "" {
				t.Fatalf("first connection: %s", diff)
			}
			s.close()
			last := seen[3].ID

			// Publish more while disconnected, then a marker that ends the read.
			more := d.publishSeq(t, user, 5, 2)
			marker := d.publishOne(t, user, "marker", "end")
			all := slices.Concat(first, more)
			want := slices.Concat(first[4:], more, []string{marker})

			lastEventID, q := tt.resume(last, all)
			var got []message
			if tt.tokenInQuery {
				q.Set("token", tok)
				s := d.openSSE(t, sseRequest{lastEventID: lastEventID, query: q})
				s.hello(t)
				got = s.messages(t, len(want))
			} else {
				got = d.collectSSE(t, tok, lastEventID, q, marker)
			}
			if diff := diffIDs(messageIDs(got), want); diff != "" {
				t.Fatalf("resumed after %s: %s", last, diff)
			}

			// Polling from the same point agrees.
			p := d.poll(t, tok, url.Values{"cursor": {last}})
			if p.Reset || p.More {
				t.Fatalf("poll after %s: reset=%v more=%v", last, p.Reset, p.More)
			}
			if diff := diffIDs(p.ids(), want); diff != "" {
				t.Fatalf("poll after %s: %s", last, diff)
			}
		})
	}
}
