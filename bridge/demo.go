package bridge

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bridged/bridged/static"
)

// demoTokenTTL is how long a token minted for the demo page lives.
const demoTokenTTL = time.Hour

// demoPage serves the demo at /. Its script and style are separate files, so the page runs under
// a strict Content-Security-Policy.
func (s *Server) demoPage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, static.FS, "index.html")
}

// demoToken handles GET /demo/token?user=U[&ttl=D], demo mode only: a subscriber token for any
// user, the job the app's own login does in production. ttl (a duration, 5s to 1h, default 1h)
// lets the page show a token expiring mid-stream and being refreshed.
func (s *Server) demoToken(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	user := q.Get("user")
	if err := validUser(user); err != nil {
		return err
	}
	if len(s.opts.JWTSecret) == 0 {
		return errorf(http.StatusNotImplemented, "demo_no_secret", "the demo signs tokens with BRIDGE_JWT_SECRET, which is not set")
	}
	ttl := demoTokenTTL
	if v := q.Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second || d > demoTokenTTL {
			return badRequest("bad_ttl", "ttl must be a duration from 5s to 1h")
		}
		ttl = d
	}
	exp := time.Now().Add(ttl)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(time.Now()),
		ExpiresAt: jwt.NewNumericDate(exp),
	}).SignedString(s.opts.JWTSecret)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"user": user, "token": tok, "expires": exp.UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// demoInfo handles GET /demo/info: what the page needs to draw itself.
func (s *Server) demoInfo(w http.ResponseWriter, r *http.Request) error {
	info := map[string]any{
		"users":       s.opts.Demo.Users,
		"heartbeatMs": s.opts.Heartbeat.Milliseconds(),
		"longPollMs":  s.opts.LongPollMax.Milliseconds(),
	}
	if s.opts.Demo.PublishKey != "" {
		info["publishKey"] = s.opts.Demo.PublishKey
	}
	body, err := json.Marshal(info)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
