package bridge

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (h *harness) ticket(tok string) string {
	h.t.Helper()
	rec := h.do("POST", "/v1/ticket", tok, "")
	if rec.Code != http.StatusOK {
		h.t.Fatalf("POST /v1/ticket: %d %s", rec.Code, rec.Body)
	}
	var out struct{ Ticket, Expires string }
	decode(h.t, rec.Body.Bytes(), &out)
	if out.Ticket == "" || out.Expires == "" {
		h.t.Fatalf("ticket answer %s", rec.Body)
	}
	return out.Ticket
}

func TestTicketIsSingleUse(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	h.publish(`{"user":"u","data":1}`)
	tk := h.ticket(token(t, "u", time.Hour))
	if strings.Contains(tk, "u") && strings.Contains(tk, token(t, "u", time.Hour)) {
		t.Fatal("the ticket embeds the token")
	}
	s := openSSE(t, ts.URL, "?ticket="+tk, "", nil)
	if s.resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE with a fresh ticket: %d", s.resp.StatusCode)
	}
	s.expect("hello")
	s.expect("message")
	// The same URL again, as a leaked log line or history entry would give it: refused.
	rec := h.do("GET", "/v1/sse?ticket="+tk, "", "")
	if rec.Code != http.StatusUnauthorized || errorCode(t, rec) != "ticket_used" {
		t.Fatalf("second use: %d %s", rec.Code, rec.Body)
	}
}

func TestTicketRules(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.TicketTTL = 50 * time.Millisecond })
	tok := token(t, "u", time.Hour)

	// Only from a header: a token in the query is what tickets exist to avoid.
	if rec := h.do("POST", "/v1/ticket?token="+tok, "", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("ticket for a query token: %d", rec.Code)
	}
	if rec := h.do("GET", "/v1/ticket", tok, ""); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/ticket: %d", rec.Code)
	}
	// Tickets are for URLs that cannot carry headers; poll can.
	if rec := h.do("GET", "/v1/poll?ticket="+h.ticket(tok), "", ""); rec.Code != http.StatusUnauthorized || errorCode(t, rec) != "token_missing" {
		t.Fatalf("poll with a ticket: %d %s", rec.Code, rec.Body)
	}

	expired := h.ticket(tok)
	time.Sleep(60 * time.Millisecond) // let the 50 ms ticket lapse
	if rec := h.do("GET", "/v1/sse?ticket="+expired, "", ""); errorCode(t, rec) != "ticket_expired" {
		t.Fatalf("expired ticket: %d %s", rec.Code, rec.Body)
	}

	good := h.ticket(tok)
	payload, mac, _ := strings.Cut(good, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	raw[len(raw)-1] = 'x' // another user
	forged := base64.RawURLEncoding.EncodeToString(raw) + "." + mac
	for name, tk := range map[string]string{
		"forged user": forged, "no mac": payload, "garbage": "abc.def", "empty": "", "long": strings.Repeat("a", 2000),
	} {
		rec := h.do("GET", "/v1/sse?ticket="+tk, "", "")
		if rec.Code != http.StatusUnauthorized || errorCode(t, rec) != "ticket_invalid" {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
		}
	}
}

func TestTicketStreamEndsWithTheToken(t *testing.T) {
	h := newHarness(t, nil)
	ts := h.serve()
	s := openSSE(t, ts.URL, "?ticket="+h.ticket(token(t, "u", 1500*time.Millisecond)), "", nil)
	s.expect("hello")
	if f := s.expect("close"); !strings.Contains(f.Data, "token_expired") {
		t.Fatalf("close %+v", f)
	}
}

func TestTicketsAreNodeIndependent(t *testing.T) {
	// Two servers sharing a store and the publish key: a ticket from one works once on the other.
	a := newHarness(t, nil)
	b, err := New(Options{Store: a.store, JWTSecret: []byte(testSecret), PublishKey: testPublishKey, AdminKey: testAdminKey})
	if err != nil {
		t.Fatal(err)
	}
	tk := a.ticket(token(t, "u", time.Hour))
	if _, err := b.redeemTicket(t.Context(), tk); err != nil {
		t.Fatalf("ticket from node a on node b: %v", err)
	}
	if _, err := a.srv.redeemTicket(t.Context(), tk); err == nil {
		t.Fatal("the ticket worked again on node a")
	}
}
