package bridge

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Tickets keep long-lived tokens out of URLs. EventSource and WebSocket cannot send headers, so
// without a ticket the token rides in the query string, where proxies, browser history and
// referrers may keep it. A client instead posts its token in a header to POST /v1/ticket and puts
// the ticket it gets in the URL: it is good for one connection, within seconds, for one user.
//
// A ticket is self-contained, so any node can check it:
//
//	base64url(version | expires unix ms | token exp unix s | nonce (16 bytes) | user) "." base64url(HMAC-SHA256)
//
// Single use holds across nodes through the store's Claimer: redeeming claims the nonce.

const (
	ticketVersion  = 1
	ticketFixedLen = 1 + 8 + 8 + 16
	maxTicketLen   = 1024
)

// ticketKey derives the key that signs tickets from the publish key, which every node of a
// deployment shares already, unless one is configured.
func ticketKey(configured []byte, publishKey string) []byte {
	if len(configured) > 0 {
		return configured
	}
	k, err := hkdf.Key(sha256.New, []byte(publishKey), nil, "bridged ticket v1", 32)
	if err != nil {
		panic(err) // only for lengths hkdf cannot produce; 32 is fine
	}
	return k
}

// issueTicket handles POST /v1/ticket: the token comes only in the Authorization header.
func (s *Server) issueTicket(w http.ResponseWriter, r *http.Request, sub subscriber) error {
	if s.claimer == nil {
		return errorf(http.StatusNotImplemented, "tickets_unavailable", "this store cannot make tickets single-use; use the token")
	}
	exp := time.Now().Add(s.opts.TicketTTL)
	if sub.expires.Before(exp) {
		exp = sub.expires
	}
	payload := make([]byte, ticketFixedLen, ticketFixedLen+len(sub.user))
	payload[0] = ticketVersion
	binary.BigEndian.PutUint64(payload[1:], uint64(exp.UnixMilli()))
	binary.BigEndian.PutUint64(payload[9:], uint64(sub.expires.Unix()))
	rand.Read(payload[17:33])
	payload = append(payload, sub.user...)
	enc := base64.RawURLEncoding
	ticket := enc.EncodeToString(payload) + "." + enc.EncodeToString(s.ticketMAC(payload))
	body, err := json.Marshal(map[string]string{"ticket": ticket, "expires": exp.UTC().Format(timeFormat)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, append(body, '\n'))
	return nil
}

func (s *Server) ticketMAC(payload []byte) []byte {
	m := hmac.New(sha256.New, s.ticketKey)
	m.Write(payload)
	return m.Sum(nil)
}

// redeemTicket checks a ticket and claims it, so it works once.
func (s *Server) redeemTicket(ctx context.Context, ticket string) (subscriber, error) {
	bad := unauthorized("ticket_invalid", "ticket is not valid; get a new one from POST /v1/ticket")
	if s.claimer == nil || len(ticket) > maxTicketLen {
		return subscriber{}, bad
	}
	p, m, ok := strings.Cut(ticket, ".")
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(m)
	if !ok || err1 != nil || err2 != nil || len(payload) <= ticketFixedLen || payload[0] != ticketVersion ||
		!hmac.Equal(mac, s.ticketMAC(payload)) {
		return subscriber{}, bad
	}
	exp := time.UnixMilli(int64(binary.BigEndian.Uint64(payload[1:])))
	if !time.Now().Before(exp) {
		return subscriber{}, unauthorized("ticket_expired", "ticket has expired; get a new one from POST /v1/ticket")
	}
	nonce := payload[17:33]
	first, err := s.claimer.Claim(ctx, "ticket:"+hex.EncodeToString(nonce), time.Until(exp)+s.opts.JWTLeeway)
	if err != nil {
		return subscriber{}, fmt.Errorf("claim ticket: %w", err)
	}
	if !first {
		return subscriber{}, unauthorized("ticket_used", "ticket was already used; get a new one from POST /v1/ticket")
	}
	return subscriber{
		user:    string(payload[ticketFixedLen:]),
		expires: time.Unix(int64(binary.BigEndian.Uint64(payload[9:])), 0),
	}, nil
}
