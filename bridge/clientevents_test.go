package bridge

import (
	"maps"
	"net/http"
	"strings"
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
	got := map[string]float64{}
	for k, v := range h.scrape() {
		if strings.HasPrefix(k, "bridged_client_rung_changes_total{") {
			got[k] = v
		}
	}
	want := map[string]float64{
		"bridged_client_rung_changes_total{direction=down,from=ws,reason=connect_failed,to=sse}":       2,
		"bridged_client_rung_changes_total{direction=down,from=sse,reason=silent,to=longpoll}":         1,
		"bridged_client_rung_changes_total{direction=up,from=poll,reason=probe_delivered,to=longpoll}": 1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("rung change series = %v, want %v", got, want)
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
	for k := range h.scrape() {
		if strings.HasPrefix(k, "bridged_client_rung_changes_total{") {
			t.Fatalf("a refused report was counted: %s", k)
		}
	}
	if rec := h.do("GET", "/v1/client-events", tok, ""); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", rec.Code)
	}
}
