package main

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

// passing is a summary of a soak that went well.
func passing() summary {
	return summary{
		clients: 400, delivered: 12000,
		baseGoroutines: 7, afterGoroutines: 7, slack: 5,
		peakRSS: 140 << 20, bound: 185 << 20,
		storeFull: 400, flooded: true,
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name   string
		change func(*summary)
		want   string // a phrase of the one reason expected; "" for a pass
	}{
		{"a clean soak passes", func(*summary) {}, ""},
		{"one lost message fails", func(s *summary) { s.lost = 1 }, "1 messages lost"},
		{"one duplicate fails", func(s *summary) { s.dups = 1 }, "duplicated"},
		{"one reordered message fails", func(s *summary) { s.ooo = 1 }, "out of order"},
		{"a wrong id fails", func(s *summary) { s.mismatched = 1 }, "id is not the one publish returned"},
		{"a premature reset fails", func(s *summary) { s.premature = 2 }, "before they could have expired"},
		{"a backward reset fails", func(s *summary) { s.backw = 1 }, "backwards"},
		{"a contract break fails", func(s *summary) { s.protocol = 1 }, "broke the API contract"},
		{"a client left behind fails", func(s *summary) { s.behind = 3 }, "not caught up"},
		{"a silent stream fails", func(s *summary) { s.stalls = 1 }, "went silent"},
		{"nothing delivered fails", func(s *summary) { s.delivered = 0 }, "no message was delivered"},
		{"goroutines above the slack fail", func(s *summary) { s.afterGoroutines = 13 }, "did not return to the baseline: 13 after, 7 before"},
		{"goroutines within the slack pass", func(s *summary) { s.afterGoroutines = 12 }, ""},
		{"connections left open fail", func(s *summary) { s.afterConns = 2 }, "still counts 2 open connections"},
		{"RSS over the bound fails", func(s *summary) { s.peakRSS = s.bound + 1 }, "above the bound"},
		{"RSS at the bound passes", func(s *summary) { s.peakRSS = s.bound }, ""},
		{"RSS is not judged under -race", func(s *summary) { s.raceBuild, s.peakRSS = true, 10*s.bound }, ""},
		{"a flood that never hit the cap fails", func(s *summary) { s.storeFull = 0 }, "never drove the store"},
		{"no flood, no cap to reach", func(s *summary) { s.storeFull, s.flooded = 0, false }, ""},
		{"a non-zero exit fails", func(s *summary) { s.exitCode = 2 }, "exited with code 2"},
		{"a kill fails", func(s *summary) { s.killed, s.exitCode = true, -1 }, "did not exit within"},
		{"a race report fails", func(s *summary) { s.raceReport = true }, "data race"},
		{"a panic fails", func(s *summary) { s.panics = true }, "panicked"},
		{"an interrupted soak fails", func(s *summary) { s.interrupted = true }, "interrupted"},
		{"a publisher failure fails", func(s *summary) { s.pubErr = errors.New("publish: 401") }, "steady publisher failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := passing()
			tt.change(&s)
			why := verdict(s)
			switch {
			case tt.want == "" && len(why) > 0:
				t.Errorf("verdict fails: %q", why)
			case tt.want != "" && len(why) != 1:
				t.Errorf("verdict gives %d reasons %q, want one saying %q", len(why), why, tt.want)
			case tt.want != "" && !strings.Contains(why[0], tt.want):
				t.Errorf("verdict says %q, want it to say %q", why[0], tt.want)
			}
		})
	}
}

// The SSE reader must parse frames as a browser does, and as bridged writes them.
func TestSSEFrame(t *testing.T) {
	stream := "retry: 2000\nevent: hello\ndata: {\"cursor\":\"\"}\n\n" +
		": a comment\n\n" +
		"id: k3x-5\nevent: soak\ndata: {\"id\":\"k3x-5\"}\n\n" +
		"id:k3x-6\r\nevent:reset\r\ndata: a\r\ndata: b\r\n\r\n" +
		"event: ping\ndata: {}\n\n" +
		"id: k3x-7\nevent: soak\ndata: " + strings.Repeat("x", 10000) + "\n\n"
	r := bufio.NewReaderSize(strings.NewReader(stream), 16)
	want := []sseFrame{
		{event: "hello", data: []byte(`{"cursor":""}`)},
		{id: "k3x-5", hasID: true, event: "soak", data: []byte(`{"id":"k3x-5"}`)},
		{id: "k3x-6", hasID: true, event: "reset", data: []byte("a\nb")},
		{event: "ping", data: []byte("{}")},
		{id: "k3x-7", hasID: true, event: "soak", data: []byte(strings.Repeat("x", 10000))},
	}
	var f sseFrame
	for i, w := range want {
		if err := f.read(r); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.id != w.id || f.hasID != w.hasID || f.event != w.event || string(f.data) != string(w.data) {
			t.Errorf("frame %d: got id %q (%v) event %q data %.40q; want id %q (%v) event %q data %.40q",
				i, f.id, f.hasID, f.event, f.data, w.id, w.hasID, w.event, w.data)
		}
	}
	if err := f.read(r); err == nil {
		t.Errorf("read past the end: got frame %q, want an error", f.event)
	}
}

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]size{"64MiB": 64 << 20, "32KiB": 32 << 10, "1GiB": 1 << 30, "100KB": 100_000, "4096": 4096, "1.5MiB": 3 << 19} {
		var s size
		if err := s.Set(in); err != nil || s != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1KiB", "lots"} {
		var s size
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) succeeded, want an error", in)
		}
	}
}
