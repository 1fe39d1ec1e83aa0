package e2e

import (
	"fmt"
	"maps"
	"net/http/httptrace"
	"net/url"
	"slices"
	"testing"
)

// TestIsolation checks that a token reads its own user's stream and nothing else, whatever the
// request says: on poll, long-poll and SSE, with query parameters naming another user, and with
// another user's cursor, which must reset rather than skip the reader's own messages.
func TestIsolation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	alice, bob := userToken(t, "alice"), userToken(t, "bob")
	bobIDs := d.publishSeq(t, "bob", 3, 3)
	aliceIDs := []string{d.publishOne(t, "alice", "", "a1")}
	// Parameters a careless server might take the stream from.
	spoofs := []struct {
		name string
		q    url.Values
	}{
		{"no parameters", url.Values{}},
		{"user=bob", url.Values{"user": {"bob"}}},
		{"stream, sub, channel, topic = bob", url.Values{"stream": {"bob"}, "sub": {"bob"}, "channel": {"bob"}, "topic": {"bob"}}},
	}
	with := func(q url.Values, kv ...string) url.Values {
		out := maps.Clone(q)
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}

	t.Run("poll", func(t *testing.T) {
		for _, sp := range spoofs {
			p := d.poll(t, alice, sp.q)
			if diff := diffIDs(p.ids(), aliceIDs); diff != "" {
				t.Errorf("alice's poll with %s: %s", sp.name, diff)
			}
		}
	})

	t.Run("long-poll", func(t *testing.T) {
		for _, sp := range spoofs {
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
				q := with(sp.q, "cursor", aliceIDs[len(aliceIDs)-1], "wait", "20s")
				r, err := d.tryDo(ctx, "GET", "/v1/poll?"+q.Encode(), alice, nil, nil)
				done <- result{r, err}
			}()
			select {
			case <-sent:
			case res := <-done:
				t.Fatalf("alice's long-poll ended before it was sent: %v %v", res.r, res.err)
			}
			// Bob's message first: it must neither wake alice's long-poll with his data nor be
			// returned with hers.
			bobIDs = append(bobIDs, d.publishOne(t, "bob", "", "b while alice waits"))
			a := d.publishOne(t, "alice", "", "a while alice waits")
			aliceIDs = append(aliceIDs, a)
			res := <-done
			if res.err != nil {
				t.Fatalf("alice's long-poll with %s: %v", sp.name, res.err)
			}
			p := decodePoll(t, res.r)
			if p.Reset {
				t.Errorf("alice's long-poll with %s: reset=true", sp.name)
			}
			if diff := diffIDs(p.ids(), []string{a}); diff != "" {
				t.Errorf("alice's long-poll with %s: %s", sp.name, diff)
			}
		}
	})

	t.Run("SSE", func(t *testing.T) {
		for _, sp := range spoofs {
			s := d.openSSE(t, sseRequest{token: alice, query: sp.q})
			s.hello(t)
			if diff := diffIDs(messageIDs(s.messages(t, len(aliceIDs))), aliceIDs); diff != "" {
				t.Errorf("alice's SSE replay with %s: %s", sp.name, diff)
			}
			bobIDs = append(bobIDs, d.publishOne(t, "bob", "", "b while alice streams"))
			a := d.publishOne(t, "alice", "", "a while alice streams")
			aliceIDs = append(aliceIDs, a)
			if diff := diffIDs(messageIDs(s.messages(t, 1)), []string{a}); diff != "" {
				t.Errorf("alice's live SSE with %s: %s", sp.name, diff)
			}
			s.close()
		}
		// The same through r3labs' Client.
		got := d.collectSSE(t, alice, "", with(spoofs[1].q), aliceIDs[len(aliceIDs)-1])
		if diff := diffIDs(messageIDs(got), aliceIDs); diff != "" {
			t.Errorf("alice's SSE (r3labs Client) with user=bob: %s", diff)
		}
	})

	// Bob with alice's cursors: every one must reset to bob's oldest message. A server comparing
	// seq numbers alone would skip bob's first messages (alice's seqs are small) or return
	// nothing (when alice's seq is beyond bob's end).
	t.Run("other user's cursor", func(t *testing.T) {
		cursors := slices.Clone(aliceIDs)
		for i, c := range cursors {
			t.Run(fmt.Sprintf("cursor %d", i), func(t *testing.T) {
				for _, q := range []url.Values{{"cursor": {c}}, {"cursor": {c}, "wait": {"20s"}}} {
					p := d.poll(t, bob, q)
					if !p.Reset {
						t.Errorf("bob's poll %v with alice's cursor: reset=false", q)
					}
					if diff := diffIDs(p.ids(), bobIDs); diff != "" {
						t.Errorf("bob's poll %v with alice's cursor: %s", q, diff)
					}
				}
				s := d.openSSE(t, sseRequest{token: bob, lastEventID: c})
				s.hello(t)
				if f := s.mustNext(t); f.Event != "reset" {
					t.Fatalf("bob's SSE with alice's cursor %s: frame after hello %q, want a reset", c, f.Raw)
				}
				if diff := diffIDs(messageIDs(s.messages(t, len(bobIDs))), bobIDs); diff != "" {
					t.Errorf("bob's SSE with alice's cursor %s: %s", c, diff)
				}
			})
		}
	})
}
