package bridge

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

func TestPublishBadInputChangesNothing(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	batch := func(n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = `{"user":"u","data":1}`
		}
		return `{"messages":[` + strings.Join(items, ",") + `]}`
	}
	deep := strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000)
	tests := []struct {
		name   string
		auth   string
		body   string
		status int
		code   string
	}{
		{"no key", "", `{"user":"u","data":1}`, 401, "key_missing"},
		{"wrong key", "nope", `{"user":"u","data":1}`, 401, "key_invalid"},
		{"subscriber token is not a publish key", "TOKEN", `{"user":"u","data":1}`, 401, "key_invalid"},
		{"empty body", testPublishKey, ``, 400, "bad_json"},
		{"malformed json", testPublishKey, `{"user":"u","data":`, 400, "bad_json"},
		{"not an object", testPublishKey, `[1,2]`, 400, "bad_json"},
		{"trailing data", testPublishKey, `{"user":"u","data":1} {"user":"u","data":2}`, 400, "bad_json"},
		{"unknown field", testPublishKey, `{"user":"u","data":1,"receiver":"x"}`, 400, "bad_json"},
		{"wrong type", testPublishKey, `{"user":5,"data":1}`, 400, "bad_json"},
		{"deep nesting", testPublishKey, `{"user":"u","data":` + deep + `}`, 400, "bad_json"},
		{"nothing", testPublishKey, `{}`, 400, "bad_request"},
		{"missing data", testPublishKey, `{"user":"u"}`, 400, "bad_data"},
		{"missing user", testPublishKey, `{"data":1}`, 400, "bad_user"},
		{"control char in user", testPublishKey, `{"user":"a\nb","data":1}`, 400, "bad_user"},
		{"long user", testPublishKey, `{"user":"` + strings.Repeat("u", 257) + `","data":1}`, 400, "bad_user"},
		{"bad event", testPublishKey, `{"user":"u","event":"a b","data":1}`, 400, "bad_event"},
		{"event with newline", testPublishKey, `{"user":"u","event":"x\nid: 9","data":1}`, 400, "bad_event"},
		{"reserved event", testPublishKey, `{"user":"u","event":"reset","data":1}`, 400, "bad_event"},
		{"long key", testPublishKey, `{"user":"u","data":1,"key":"` + strings.Repeat("k", 257) + `"}`, 400, "bad_key"},
		{"bad utf-8 in data", testPublishKey, "{\"user\":\"u\",\"data\":\"\xff\"}", 400, "bad_data"},
		{"too large", testPublishKey, `{"user":"u","data":"` + big + `"}`, 413, "too_large"},
		{"single and batch", testPublishKey, `{"user":"u","data":1,"messages":[{"user":"u","data":2}]}`, 400, "bad_request"},
		{"empty batch", testPublishKey, `{"messages":[]}`, 400, "bad_request"},
		{"batch over max", testPublishKey, batch(11), 413, "batch_too_large"},
		{"one bad item spoils the batch", testPublishKey, `{"messages":[{"user":"u","data":1},{"user":"u","event":"!","data":2}]}`, 400, "bad_event"},
		{"body over limit", testPublishKey, `{"user":"u","data":"` + strings.Repeat("y", 200<<10) + `"}`, 413, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.MaxBatch = 10; o.MaxBodyBytes = 128 << 10 })
			h.publish(`{"user":"u","data":"before"}`)
			auth := tt.auth
			if auth == "TOKEN" {
				auth = token(t, "u", 1e9)
			}
			rec := h.do("POST", "/v1/publish", auth, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if code := errorCode(t, rec); code != tt.code {
				t.Fatalf("code %q, want %q", code, tt.code)
			}
			if got := h.stored(); !slices.Equal(got, []string{`u:"before"`}) {
				t.Fatalf("store changed: %v", got)
			}
		})
	}
}

func TestPublishSingleAndBatch(t *testing.T) {
	h := newHarness(t, nil)
	one := h.publish(`{"user":"alice","event":"chat.msg","data":{"text":"hi"}}`)
	ids := h.publish(`{"messages":[
		{"user":"bob","data":"b1"},
		{"user":"alice","data":"a2"},
		{"user":"bob","data":"b2"}]}`)
	if len(one) != 1 || len(ids) != 3 {
		t.Fatalf("ids %v %v", one, ids)
	}
	a := h.poll("alice", "")
	if len(a.Messages) != 2 || a.Messages[0].ID != one[0] || a.Messages[1].ID != ids[1] {
		t.Fatalf("alice read %+v; ids must come back in input order", a)
	}
	if a.Messages[0].Event != "chat.msg" || string(a.Messages[0].Data) != `{"text":"hi"}` {
		t.Fatalf("first message %+v", a.Messages[0])
	}
	if a.Messages[1].Event != "message" {
		t.Fatalf("default event %q, want message", a.Messages[1].Event)
	}
	b := h.poll("bob", "")
	if len(b.Messages) != 2 || b.Messages[0].ID != ids[0] || b.Messages[1].ID != ids[2] {
		t.Fatalf("bob read %+v", b)
	}
}

func TestPublishCompactsLineBreaks(t *testing.T) {
	h := newHarness(t, nil)
	h.publish("{\"user\":\"u\",\"data\":{\r\n\"a\" : [1,\n 2]\n}}")
	if got := h.poll("u", "").Messages[0].Data; string(got) != `{"a":[1,2]}` {
		t.Fatalf("data %s, want it compacted", got)
	}
}

func TestPublishIdempotencyKey(t *testing.T) {
	h := newHarness(t, nil)
	first := h.publish(`{"user":"u","data":1,"key":"order-17"}`)
	retry := h.publish(`{"user":"u","data":1,"key":"order-17"}`)
	if first[0] != retry[0] {
		t.Fatalf("retry got %v, first %v", retry, first)
	}
	if n := len(h.poll("u", "").Messages); n != 1 {
		t.Fatalf("%d messages stored after a retried publish", n)
	}
}

func TestPublishStoreFullIs503(t *testing.T) {
	h := newHarness(t, nil)
	h.store.Close() // a closed store is unavailable; a full one answers the same way (see status table)
	rec := h.do("POST", "/v1/publish", testPublishKey, `{"user":"u","data":1}`)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("publish to an unavailable store: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	errorCode(t, rec)
}

func TestPublishMemoryCapIs503(t *testing.T) {
	h := newHarnessWith(t, cache.Options{MaxMemory: 1 << 20}, nil)
	var last int
	for i := range 1000 {
		rec := h.do("POST", "/v1/publish", testPublishKey, fmt.Sprintf(`{"user":"u%d","data":"%s"}`, i%10, strings.Repeat("z", 60000)))
		last = rec.Code
		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != "store_full" {
				t.Fatalf("publish %d over the cap: %d %s", i, rec.Code, rec.Body)
			}
			break
		}
	}
	if last != http.StatusServiceUnavailable {
		t.Fatal("a 1 MiB cap never refused 1000 publishes of 60 KB")
	}
}

// FuzzPublish: whatever the body, POST /v1/publish either refuses it with a 4xx JSON error and
// the store unchanged, or answers 200 with one id per message and stores exactly those messages.
func FuzzPublish(f *testing.F) {
	for _, s := range []string{
		`{"user":"u","data":1}`,
		`{"user":"u","event":"chat.msg","data":{"a":[1,2,"x"]},"key":"k1"}`,
		`{"messages":[{"user":"a","data":"x"},{"user":"b","data":null,"key":"k"}]}`,
		`{"user":"u","data":"line\nbreak"}`, "{\"user\":\"u\",\"data\":{\n\"a\" : 1\r\n}}",
		`{"user":"","data":1}`, `{"user":"u"}`, `{"messages":[]}`, `[]`, `{`, ``, `{"user":"u","data":1}x`,
		`{"user":"u","event":"reset","data":1}`, "{\"user\":\"\xff\",\"data\":1}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		h := newHarnessWith(t, cache.Options{TTL: time.Minute}, func(o *Options) {
			o.Log = zap.NewNop()
			o.MaxBatch = 20
			o.MaxMessageBytes = 1024
			o.MaxBodyBytes = 32 << 10
		})
		rec := h.do("POST", "/v1/publish", testPublishKey, body)
		stored := h.stored()
		switch {
		case rec.Code == http.StatusOK:
			var out struct{ IDs []string }
			decode(t, rec.Body.Bytes(), &out)
			if len(out.IDs) == 0 || len(stored) == 0 || len(stored) > len(out.IDs) {
				t.Fatalf("200 with %d ids but %d stored: %q", len(out.IDs), len(stored), body)
			}
			for _, id := range out.IDs {
				if _, err := cache.ParseCursor(id); err != nil || id == "" {
					t.Fatalf("bad id %q", id)
				}
			}
			// Every stored message reads back as valid JSON data without a line break.
			for _, m := range stored {
				if strings.ContainsAny(m, "\r\n") {
					t.Fatalf("stored data holds a line break: %q", m)
				}
			}
		case rec.Code >= 400 && rec.Code < 500:
			errorCode(t, rec)
			if len(stored) != 0 {
				t.Fatalf("%d answer but %d messages stored for %q", rec.Code, len(stored), body)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
