package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxTokenLen bounds what the JWT parser is given; real subscriber tokens are a few hundred bytes.
const maxTokenLen = 4096

// subscriber is who a request's token names. The user is the stream the request reads: it comes
// from the verified token and from nothing the client sends alongside it.
type subscriber struct {
	user    string
	expires time.Time
}

type subscriberKey struct{}

func subscriberFrom(ctx context.Context) subscriber {
	sub, _ := ctx.Value(subscriberKey{}).(subscriber)
	return sub
}

// bearer returns the credential of an "Authorization: Bearer" header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func unauthorized(code, msg string) *apiError {
	return errorf(http.StatusUnauthorized, code, "%s", msg)
}

// credential names where subscriberOnly looks for the subscriber's identity.
type credential int

const (
	tokenOnly       credential = iota // Authorization: Bearer, or the token query parameter
	tokenHeaderOnly                   // Authorization: Bearer only (POST /v1/ticket)
	tokenOrTicket                     // either of the first, or a ticket query parameter (SSE, WS)
)

// subscriberOnly verifies the subscriber's credential and puts its subject in the context. The
// token may come in the query because EventSource cannot set headers; a ticket keeps it out.
func (s *Server) subscriberOnly(cred credential, next apiFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var sub subscriber
		var err error
		tok := bearer(r)
		q := r.URL.Query()
		switch {
		case tok != "":
			sub, err = s.verifyToken(tok)
		case cred == tokenOrTicket && q.Has("ticket"):
			sub, err = s.redeemTicket(r.Context(), q.Get("ticket"))
		case cred != tokenHeaderOnly:
			sub, err = s.verifyToken(q.Get("token"))
		default:
			err = unauthorized("token_missing", "send the token in an Authorization: Bearer header")
		}
		if err != nil {
			s.countAuthFailure(err)
			return err
		}
		return next(w, r.WithContext(context.WithValue(r.Context(), subscriberKey{}, sub)))
	}
}

// verifyToken checks a subscriber JWT strictly: an algorithm pinned by the configured key that
// verifies it (HS256 for the secret, RS/PS/ES/EdDSA by public key type; never "none", never one
// the token picks), exp required and in the future, nbf respected, aud and iss when configured,
// within a small clock leeway, and a sub that is a valid stream name.
func (s *Server) verifyToken(tok string) (subscriber, error) {
	if tok == "" {
		return subscriber{}, unauthorized("token_missing", "a subscriber token is required (Authorization: Bearer, or the token query parameter)")
	}
	if len(tok) > maxTokenLen {
		return subscriber{}, unauthorized("token_invalid", "token is too long")
	}
	var claims jwt.RegisteredClaims
	_, err := s.jwt.ParseWithClaims(tok, &claims, s.keys.keyFor)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return subscriber{}, unauthorized("token_expired", "token has expired; fetch a new one and resume from your last id")
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return subscriber{}, unauthorized("token_invalid", "token is for another audience or issuer")
	case err != nil:
		return subscriber{}, unauthorized("token_invalid", "token is not valid")
	}
	if validUser(claims.Subject) != nil {
		return subscriber{}, unauthorized("token_invalid", "token has no valid sub claim")
	}
	return subscriber{user: claims.Subject, expires: claims.ExpiresAt.Time}, nil
}

// secretKey holds a shared key as its SHA-256 digest, so comparing it takes the same time
// whatever the candidate's length or content.
type secretKey [sha256.Size]byte

func newSecretKey(k string) secretKey { return sha256.Sum256([]byte(k)) }

func (k *secretKey) matches(candidate string) bool {
	h := sha256.Sum256([]byte(candidate))
	return subtle.ConstantTimeCompare(h[:], k[:]) == 1
}

// keyOnly admits requests whose bearer credential is key.
func (s *Server) keyOnly(key *secretKey, name string, next apiFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var err error
		switch got := bearer(r); {
		case got == "":
			err = unauthorized("key_missing", "this endpoint needs Authorization: Bearer $"+name)
		case !key.matches(got):
			err = unauthorized("key_invalid", "the key does not match "+name)
		default:
			return next(w, r)
		}
		s.countAuthFailure(err)
		return err
	}
}
