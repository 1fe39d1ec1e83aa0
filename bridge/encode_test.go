package bridge

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/bridged/bridged/cache"
)

func TestAppendMessage(t *testing.T) {
	m := cache.Message{
		ID:    cache.Cursor{Epoch: 99, Seq: 7},
		Event: "chat",
		Data:  []byte(`{"text":"<b>&</b>"}`),
		Time:  time.Date(2026, 11, 24, 12, 0, 0, 123456789, time.FixedZone("x", 3600)),
	}
	got := string(appendMessage(nil, &m))
	want := `{"id":"2r-7","event":"chat","data":{"text":"<b>&</b>"},"time":"2026-11-24T11:00:00.123Z"}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = appendMessage(make([]byte, 0, 256), &m) }); n > 1 {
		t.Fatalf("appendMessage allocated %v times beyond its buffer", n-1)
	}
}

// FuzzJSONString: appendJSONString always yields one valid JSON string without raw line breaks,
// which decodes to the input with each invalid UTF-8 byte replaced by U+FFFD.
func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "nl\ncr\rtab\t", "\x00\x1f\x7f", "\u2028\u2029", "\xff\xfe", "é日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		if bytes.ContainsAny(b, "\r\n") {
			t.Fatalf("raw line break in %q", b)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("appendJSONString(%q) = %q is not JSON: %v", s, b, err)
		}
		var want strings.Builder
		for _, r := range s {
			want.WriteRune(r) // ranging turns each invalid byte into U+FFFD
		}
		if back != want.String() {
			t.Fatalf("round trip of %q gave %q", s, back)
		}
	})
}

// FuzzSSEFrame: whatever the data, a frame written by the SSE encoder parses back, with r3labs'
// independent reader, as exactly one event with the same id and event and the same data (line
// breaks normalised to LF, as the SSE spec does), and no field the encoder did not write.
func FuzzSSEFrame(f *testing.F) {
	f.Add("message", []byte(`{"a":1}`))
	f.Add("x", []byte("line1\nline2\r\nline3\rline4"))
	f.Add("e", []byte("\n\nid: 999\nevent: forged\r\rdata: x"))
	f.Add("e", []byte(":comment\nretry: 1"))
	f.Add("e", []byte(""))
	f.Fuzz(func(t *testing.T, event string, data []byte) {
		if !validEvent(event) {
			return // publish refuses these names
		}
		id := cache.Cursor{Epoch: 12345, Seq: 6}
		var b []byte
		b = appendSSEField(b, "id", id.String())
		b = appendSSEField(b, "event", event)
		b = appendSSEData(b, data)
		b = append(b, '\n')
		b = append(b, "event: sentinel\ndata: end\n\n"...)

		r := sse.NewEventStreamReader(bytes.NewReader(b), 1<<20)
		raw, err := r.ReadEvent()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		got := parseFrame(raw)
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(data))
		if got.ID != id.String() || got.Event != event || got.Data != want || got.Retry != "" {
			t.Fatalf("frame %q parsed as %+v, want id %s event %s data %q", b, got, id, event, want)
		}
		next, err := r.ReadEvent()
		if err != nil || parseFrame(next).Event != "sentinel" {
			t.Fatalf("the frame leaked into the next one: %q, %v", next, err)
		}
	})
}
