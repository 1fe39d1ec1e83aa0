package bridge

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestClientEventsCountsValidMoves(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "u", time.Hour)
	for _, body := range []string{
		`{"change":"down","from":"ws","to":"sse","reason":"connect_failed"}`,
		`{"change":"down","from":"ws","to":"sse","reason":"connect_failed"}`,
		`{"change":"down","from":"sse","to":"longpoll","reason":"silent"}`,
		`{"change":"up","from":"poll","to":"longpoll","reason":"probe_delivered"}`,
	} {
		if rec := h.do("POST", "/v1/client-events", tok, body); rec.Code != http.StatusNoContent {
			t.Fatalf("%s: %d %s", body, rec.Code, rec.Body)
		}
	}
	want := []ClientEvent{
		{Change: "down", From: "ws", To: "sse", Reason: "connect_failed", Count: 2},
		{Change: "down", From: "sse", To: "longpoll", Reason: "silent", Count: 1},
		{Change: "up", From: "poll", To: "longpoll", Reason: "probe_delivered", Count: 1},
	}
	if got := h.srv.ClientEvents(); !slices.Equal(got, want) {
		t.Fatalf("ClientEvents() = %+v, want %+v", got, want)
	}
}

func TestClientEventsRefusesWhatItCannotCount(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "u", time.Hour)
	tests := []struct {
		name, auth, body string
		status           int
	}{
		{"no token", "", `{"change":"down","from":"ws","to":"sse","reason":"silent"}`, http.StatusUnauthorized},
		{"unknown rung", tok, `{"change":"down","from":"ws","to":"carrier-pigeon","reason":"silent"}`, http.StatusBadRequest},
		{"unknown reason", tok, `{"change":"down","from":"ws","to":"sse","reason":"user-1234"}`, http.StatusBadRequest},
		{"down that goes up", tok, `{"change":"down","from":"poll","to":"ws","reason":"silent"}`, http.StatusBadRequest},
		{"up for a down reason", tok, `{"change":"up","from":"poll","to":"ws","reason":"silent"}`, http.StatusBadRequest},
		{"down for the up reason", tok, `{"change":"down","from":"ws","to":"poll","reason":"probe_delivered"}`, http.StatusBadRequest},
		{"same rung", tok, `{"change":"down","from":"sse","to":"sse","reason":"silent"}`, http.StatusBadRequest},
		{"unknown field", tok, `{"change":"down","from":"ws","to":"sse","reason":"silent","user":"x"}`, http.StatusBadRequest},
		{"not JSON", tok, `down ws sse`, http.StatusBadRequest},
		{"too large", tok, `{"change":"down","from":"ws","to":"sse","reason":"silent","x":"` + string(make([]byte, 600)) + `"}`, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := h.do("POST", "/v1/client-events", tt.auth, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			errorCode(t, rec)
		})
	}
	if got := h.srv.ClientEvents(); len(got) != 0 {
		t.Fatalf("refused reports were counted: %+v", got)
	}
	if rec := h.do("GET", "/v1/client-events", tok, ""); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", rec.Code)
	}
}
