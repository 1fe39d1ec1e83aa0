package bridge

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
	"unsafe"

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

// subscriberFunc is an apiFunc for a verified subscriber (subscriberOnly).
type subscriberFunc func(w http.ResponseWriter, r *http.Request, who subscriber) error

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

// subscriberOnly verifies the subscriber's credential and hands its subject to next (as an
// argument, not in the request's context: that would copy the request). The token may come in
// the query because EventSource cannot set headers; a ticket keeps it out.
func (s *Server) subscriberOnly(cred credential, next subscriberFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var sub subscriber
		var err error
		tok := bearer(r)
		var ticket string
		var hasTicket bool
		if tok == "" && cred == tokenOrTicket {
			ticket, hasTicket = queryLookup(r.URL.RawQuery, "ticket")
		}
		switch {
		case tok != "":
			sub, err = s.verifyToken(tok)
		case hasTicket:
			sub, err = s.redeemTicket(r.Context(), ticket)
		case cred != tokenHeaderOnly:
			sub, err = s.verifyToken(queryValue(r.URL.RawQuery, "token"))
		default:
			err = unauthorized("token_missing", "send the token in an Authorization: Bearer header")
		}
		if err != nil {
			s.countAuthFailure(err)
			return err
		}
		return next(w, r, sub)
	}
}

// verifyToken checks a subscriber JWT strictly: an algorithm pinned by the configured key that
// verifies it (HS256 for the secret, RS/PS/ES/EdDSA by public key type; never "none", never one
// the token picks), exp required and in the future, nbf respected, aud and iss when configured,
// within a small clock leeway, and a sub that is a valid stream name.
//
// Clients poll with the same token again and again, so a token the current keys have already
// accepted is answered from their cache (tokenCache) after the same exp and nbf checks; every
// other token, and every refusal, goes through the parser.
func (s *Server) verifyToken(tok string) (subscriber, error) {
	if tok == "" {
		return subscriber{}, unauthorized("token_missing", "a subscriber token is required (Authorization: Bearer, or the token query parameter)")
	}
	if len(tok) > maxTokenLen {
		return subscriber{}, unauthorized("token_invalid", "token is too long")
	}
	ring := s.keys.ring.Load()
	key := tokenKeyOf(tok)
	if sub, ok := ring.tokens.get(&key, s.jwt, time.Now(), s.opts.JWTLeeway); ok {
		return sub, nil
	}
	v, err := s.parseToken(ring, tok)
	if err != nil {
		return subscriber{}, err
	}
	ring.tokens.put(&key, v)
	return v.sub, nil
}

// parseToken verifies tok with ring's keys and s's claim rules: the whole check, without the cache.
func (s *Server) parseToken(ring *keyring, tok string) (verifiedToken, error) {
	var claims jwt.RegisteredClaims
	_, err := s.jwt.ParseWithClaims(tok, &claims, ring.keyFor)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return verifiedToken{}, unauthorized("token_expired", "token has expired; fetch a new one and resume from your last id")
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return verifiedToken{}, unauthorized("token_invalid", "token is for another audience or issuer")
	case err != nil:
		return verifiedToken{}, unauthorized("token_invalid", "token is not valid")
	}
	if validUser(claims.Subject) != nil {
		return verifiedToken{}, unauthorized("token_invalid", "token has no valid sub claim")
	}
	v := verifiedToken{by: s.jwt, sub: subscriber{user: claims.Subject, expires: claims.ExpiresAt.Time}}
	if claims.NotBefore != nil {
		v.nbf = claims.NotBefore.Time
	}
	return v, nil
}

// Token cache bounds: at most tokenCacheShards*tokenCacheShardSize tokens (65,536) of about
// 150 bytes each, whatever the tokens' length.
const (
	tokenCacheShards    = 32
	tokenCacheShardSize = 2048
)

// tokenKey is the SHA-256 digest of a token: the cache holds no token itself, its keys have one
// size however long tokens are, and two tokens share a key only if SHA-256 collides.
type tokenKey [sha256.Size]byte

func tokenKeyOf(tok string) tokenKey {
	// A read-only view of tok's bytes: Sum256 does not modify or keep its argument, and the
	// copy []byte(tok) would cost an allocation per request.
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// verifiedToken is what the parser concluded about a token it accepted: who it names, when it
// expires (sub.expires) and when it starts being valid (nbf; zero when the token has none).
type verifiedToken struct {
	by  *jwt.Parser // the claim rules (aud, iss, leeway) it was accepted under
	sub subscriber
	nbf time.Time
}

// validAt repeats the parser's time checks (jwt.Validator's verifyExpiresAt and
// verifyNotBefore, the same expressions) at now, so a cached token stops being accepted at the
// very instant the parser would start refusing it. The other checks do not depend on time.
func (v *verifiedToken) validAt(now time.Time, leeway time.Duration) bool {
	return now.Before(v.sub.expires.Add(leeway)) && (v.nbf.IsZero() || !now.Before(v.nbf.Add(-leeway)))
}

// tokenCache remembers the tokens one generation of keys (a keyring) has accepted. It lives in
// the keyring, so a reload that retires a key drops everything verified before it. Only tokens
// the parser accepted are put in; a lookup must also match the Server's parser (servers that share
// Keys may check aud and iss differently) and pass validAt. Its zero value is empty and ready. It
// is safe for concurrent use.
type tokenCache struct {
	shards [tokenCacheShards]tokenShard
}

type tokenShard struct {
	mu sync.Mutex
	m  map[tokenKey]verifiedToken // made on first put
}

func (c *tokenCache) shard(k *tokenKey) *tokenShard { return &c.shards[k[0]%tokenCacheShards] }

// get returns the subscriber of a token accepted under parser by and still valid at now.
func (c *tokenCache) get(k *tokenKey, by *jwt.Parser, now time.Time, leeway time.Duration) (subscriber, bool) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	v, ok := sh.m[*k]
	switch {
	case !ok || v.by != by:
		return subscriber{}, false
	case !v.validAt(now, leeway):
		delete(sh.m, *k) // the parser will refuse it from now on (or, for nbf, until the clock is back)
		return subscriber{}, false
	}
	return v.sub, true
}

// put remembers a token the parser accepted. A full shard first drops the tokens that have
// expired, then arbitrary others, until an eighth of it is free: the cache only saves work, so
// any entry may go.
func (c *tokenCache) put(k *tokenKey, v verifiedToken) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[tokenKey]verifiedToken)
	}
	if _, ok := sh.m[*k]; !ok && len(sh.m) >= tokenCacheShardSize {
		now := time.Now()
		for key, e := range sh.m {
			if !now.Before(e.sub.expires) {
				delete(sh.m, key)
			}
		}
		for key := range sh.m {
			if len(sh.m) <= tokenCacheShardSize-tokenCacheShardSize/8 {
				break
			}
			delete(sh.m, key) // map iteration starts at a random entry
		}
	}
	sh.m[*k] = v
}

// len returns how many tokens c holds.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
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
