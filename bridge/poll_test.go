package bridge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bridged/bridged/cache"
)

func TestPollReadsAfterCursor(t *testing.T) {
	h := newHarness(t, nil)
	ids := h.publish(`{"messages":[{"user":"u","data":1},{"user":"u","data":2},{"user":"u","data":3}]}`)
	all := h.poll("u", "")
	if len(all.Messages) != 3 || all.Cursor != ids[2] || all.Reset || all.More {
		t.Fatalf("poll from the start: %+v", all)
	}
	rest := h.poll("u", "?cursor="+ids[0])
	if len(rest.Messages) != 2 || rest.Messages[0].ID != ids[1] {
		t.Fatalf("poll after %s: %+v", ids[0], rest)
	}
	// Polling is not consuming: the same poll gives the same answer.
	if again := h.poll("u", "?cursor="+ids[0]); len(again.Messages) != 2 {
		t.Fatalf("second identical poll: %+v", again)
	}
	end := h.poll("u", "?cursor="+ids[2])
	if len(end.Messages) != 0 || end.Cursor != ids[2] || end.Reset {
		t.Fatalf("poll at the end: %+v", end)
	}
}

func TestPollEmptyStreamGivesResumableCursor(t *testing.T) {
	h := newHarness(t, nil)
	a := h.poll("nobody", "")
	if len(a.Messages) != 0 || a.Reset {
		t.Fatalf("poll of an unknown user: %+v", a)
	}
	// A long-poll that times out on a new stream hands out a real cursor...
	lp := h.poll("u", "?wait=10ms")
	if lp.Cursor == "" {
		t.Fatal("long-poll on an empty stream returned no cursor")
	}
	// ...so the first message is found after it, without a reset.
	id := h.publish(`{"user":"u","data":1}`)[0]
	next := h.poll("u", "?cursor="+lp.Cursor)
	if next.Reset || len(next.Messages) != 1 || next.Messages[0].ID != id {
		t.Fatalf("poll after the long-poll's cursor: %+v", next)
	}
}

func TestPollResetAfterExpiry(t *testing.T) {
	h := newHarness(t, nil)
	old := h.publish(`{"messages":[{"user":"u","data":"old1"},{"user":"u","data":"old2"}]}`)
	h.clock.Advance(2 * time.Minute)
	fresh := h.publish(`{"user":"u","data":"new"}`)
	a := h.poll("u", "?cursor="+old[0]+"&wait=5s") // a reset answers a long-poll at once
	if !a.Reset || len(a.Messages) != 1 || a.Messages[0].ID != fresh[0] {
		t.Fatalf("poll after an expired message: %+v", a)
	}
	// The reader at old2 saw everything that expired: nothing is lost, no reset.
	if b := h.poll("u", "?cursor="+old[1]); b.Reset || len(b.Messages) != 1 {
		t.Fatalf("poll after the last expired id: %+v", b)
	}
	// And the cursor of the reset answer is not foreign.
	if b := h.poll("u", "?cursor="+a.Cursor); b.Reset {
		t.Fatalf("poll after the reset answer's cursor reset again: %+v", b)
	}
}

func TestPollMore(t *testing.T) {
	h := newHarnessWith(t, cache.Options{TTL: time.Minute, StreamMaxMessages: 5000}, nil)
	for range 3 {
		body := `{"messages":[` + repeatItems(500) + `]}`
		h.do("POST", "/v1/publish", testPublishKey, body)
	}
	first := h.poll("u", "")
	if len(first.Messages) != pollLimit || !first.More {
		t.Fatalf("first page: %d messages, more=%v", len(first.Messages), first.More)
	}
	second := h.poll("u", "?cursor="+first.Cursor)
	if len(second.Messages) != 1500-pollLimit || second.More || second.Reset {
		t.Fatalf("second page: %d messages, more=%v reset=%v", len(second.Messages), second.More, second.Reset)
	}
}

func repeatItems(n int) string {
	b := make([]byte, 0, n*24)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user":"u","data":1}`...)
	}
	return string(b)
}

func TestLongPollWakesOnPublish(t *testing.T) {
	h := newHarness(t, nil)
	start := h.poll("u", "?wait=1ms").Cursor
	done := make(chan pollAnswer)
	go func() {
		rec := h.do("GET", "/v1/poll?wait=30s&cursor="+start, token(t, "u", time.Hour), "")
		var a pollAnswer
		decode(t, rec.Body.Bytes(), &a)
		done <- a
	}()
	// Publish until the waiter has answered: the first publish may land before it subscribes,
	// and then it answers with that message at once, which is just as right.
	var ids []string
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case a := <-done:
			if len(a.Messages) == 0 || a.Messages[0].ID != ids[0] {
				t.Fatalf("long-poll answered %+v, want the first of %v", a, ids)
			}
			return
		case <-tick.C:
			if len(ids) == 0 {
				ids = append(ids, h.publish(`{"user":"u","data":"wake"}`)...)
			}
		}
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.LongPollMax = 50 * time.Millisecond })
	id := h.publish(`{"user":"u","data":1}`)[0]
	a := h.poll("u", "?cursor="+id+"&wait=1h") // capped by LongPollMax
	if len(a.Messages) != 0 || a.Cursor != id || a.Reset {
		t.Fatalf("timed-out long-poll: %+v", a)
	}
}

func TestLongPollAnswersOnDrain(t *testing.T) {
	h := newHarness(t, nil)
	id := h.publish(`{"user":"u","data":1}`)[0]
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- h.do("GET", "/v1/poll?wait=30s&cursor="+id, token(t, "u", time.Hour), "") }()
	time.Sleep(20 * time.Millisecond) // let it park; if it has not, it answers at once anyway
	h.srv.Drain()
	rec := <-done
	if rec.Code != http.StatusOK {
		t.Fatalf("long-poll during drain: %d %s", rec.Code, rec.Body)
	}
	if r := h.do("GET", "/readyz", "", ""); r.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", r.Code)
	}
	if r := h.do("POST", "/v1/publish", testPublishKey, `{"user":"u","data":2}`); r.Code != http.StatusServiceUnavailable {
		t.Fatalf("publish while draining: %d", r.Code)
	}
}

func TestPollBadParameters(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "u", time.Hour)
	tests := []struct {
		name, query, code string
	}{
		{"malformed cursor", "?cursor=12", "bad_cursor"},
		{"upper-case cursor", "?cursor=A-1", "bad_cursor"},
		{"negative wait", "?wait=-1s", "bad_wait"},
		{"garbage wait", "?wait=soon", "bad_wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := h.do("GET", "/v1/poll"+tt.query, tok, "")
			if rec.Code != http.StatusBadRequest || errorCode(t, rec) != tt.code {
				t.Fatalf("%d %s, want 400 %s", rec.Code, rec.Body, tt.code)
			}
		})
	}
}

func TestParseWait(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false}, {"0", 0, false}, {"25", 25 * time.Second, false}, {"25s", 25 * time.Second, false},
		{"1500ms", 1500 * time.Millisecond, false}, {"10m", 30 * time.Second, false},
		{"-1", 0, true}, {"1e9", 0, true}, {"99999999999", 0, true}, {"x", 0, true},
	}
	for _, tt := range tests {
		got, err := parseWait(tt.in, 30*time.Second)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("parseWait(%q) = %v, %v; want %v, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestUsersAreIsolated(t *testing.T) {
	h := newHarness(t, nil)
	bob := h.publish(`{"user":"bob","data":"secret"}`)
	h.publish(`{"user":"alice","data":"hers"}`)
	// No parameter selects another stream: user=, stream= and the like are ignored.
	a := h.poll("alice", "?user=bob&stream=bob&sub=bob")
	if len(a.Messages) != 1 || string(a.Messages[0].Data) != `"hers"` {
		t.Fatalf("alice read %+v", a)
	}
	// Bob's cursor is foreign on Alice's stream: she gets her own messages and a reset.
	a = h.poll("alice", "?cursor="+bob[0])
	if !a.Reset || len(a.Messages) != 1 || string(a.Messages[0].Data) != `"hers"` {
		t.Fatalf("alice with bob's cursor: %+v", a)
	}
}

// A long-poll whose client has gone is a normal event, not an internal error: nothing is logged
// at error level (found by the soak tool: "read stream: context canceled").
func TestGoneLongPollIsNotAnError(t *testing.T) {
	core, logs := observer.New(zapcore.ErrorLevel)
	h := newHarness(t, func(o *Options) { o.Log = zap.New(core) })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	req := httptest.NewRequest("GET", "/v1/poll?wait=5s", nil).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+token(t, "u", time.Hour))
	h.srv.ServeHTTP(httptest.NewRecorder(), req)
	for _, e := range logs.All() {
		t.Errorf("logged at %s: %q %v", e.Level, e.Message, e.ContextMap())
	}
}

// FuzzQueryValue checks queryValue against url.ParseQuery, whose rules it follows.
func FuzzQueryValue(f *testing.F) {
	for _, seed := range [][2]string{
		{"cursor=abc-0&wait=25s", "cursor"},
		{"wait=25s&wait=1s", "wait"},
		{"curs%6Fr=x&cursor=y", "cursor"},
		{"cursor=%zz&cursor=ok", "cursor"},
		{"cursor=a;b&cursor=c", "cursor"},
		{"a+b=c+d&a%20b=e", "a b"},
		{"&&cursor&=x", "cursor"},
		{"token=" + strings.Repeat("t", 300) + "&cursor=", "cursor"},
		{"ticket&token=t", "ticket"},
		{"ticket=&ticket=x", "ticket"},
		{"tick%zzet=1&ticket", "ticket"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, raw, key string) {
		v, _ := url.ParseQuery(raw)
		got, has := queryLookup(raw, key)
		if got != v.Get(key) || has != v.Has(key) || queryValue(raw, key) != got {
			t.Fatalf("queryLookup(%q, %q) = %q, %v; url.ParseQuery gives %q, %v", raw, key, got, has, v.Get(key), v.Has(key))
		}
	})
}

// BenchmarkPollQuery: reading a long-poll's two parameters with url.Values and with queryValue.
func BenchmarkPollQuery(b *testing.B) {
	const raw = "cursor=24iqq1pv00krh-17&wait=30s"
	b.Run("url.Query", func(b *testing.B) {
		b.ReportAllocs()
		u := url.URL{RawQuery: raw}
		for b.Loop() {
			q := u.Query()
			if q.Get("cursor") == "" || q.Get("wait") == "" {
				b.Fatal("missing")
			}
		}
	})
	b.Run("queryValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if queryValue(raw, "cursor") == "" || queryValue(raw, "wait") == "" {
				b.Fatal("missing")
			}
		}
	})
}
