package bridge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest"
)

func TestSubscriberTokens(t *testing.T) {
	h := newHarness(t, nil)
	h.publish(`{"user":"u","data":1}`)
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs := func(c jwt.MapClaims) string { return sign(jwt.SigningMethodHS256, []byte(testSecret), c) }
	future := time.Now().Add(time.Hour).Unix()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u", "exp": future})
	tests := []struct {
		name, token, code string
	}{
		{"missing", "", "token_missing"},
		{"garbage", "not.a.token", "token_invalid"},
		{"alg none", none, "token_invalid"},
		{"other secret", sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), jwt.MapClaims{"sub": "u", "exp": future}), "token_invalid"},
		{"HS384 not pinned", sign(jwt.SigningMethodHS384, []byte(testSecret), jwt.MapClaims{"sub": "u", "exp": future}), "token_invalid"},
		{"ES256 not pinned", sign(jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "u", "exp": future}), "token_invalid"},
		{"expired", hs(jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Minute).Unix()}), "token_expired"},
		{"no exp", hs(jwt.MapClaims{"sub": "u"}), "token_invalid"},
		{"not yet valid", hs(jwt.MapClaims{"sub": "u", "exp": future, "nbf": time.Now().Add(time.Minute).Unix()}), "token_invalid"},
		{"no sub", hs(jwt.MapClaims{"exp": future}), "token_invalid"},
		{"sub with newline", hs(jwt.MapClaims{"sub": "u\nx", "exp": future}), "token_invalid"},
		{"sub too long", hs(jwt.MapClaims{"sub": strings.Repeat("u", 300), "exp": future}), "token_invalid"},
		{"sub not a string", hs(jwt.MapClaims{"sub": 42, "exp": future}), "token_invalid"},
		{"too long", strings.Repeat("a", maxTokenLen+1), "token_invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/v1/poll", "/v1/sse"} {
				rec := h.do("GET", path, tt.token, "")
				if rec.Code != http.StatusUnauthorized {
					t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
				}
				if code := errorCode(t, rec); code != tt.code {
					t.Fatalf("%s: code %q, want %q", path, code, tt.code)
				}
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Fatalf("%s: 401 without WWW-Authenticate", path)
				}
			}
		})
	}
}

func TestTokenInQueryAndHeader(t *testing.T) {
	h := newHarness(t, nil)
	h.publish(`{"user":"u","data":1}`)
	tok := token(t, "u", time.Hour)
	if rec := h.do("GET", "/v1/poll?token="+tok, "", ""); rec.Code != http.StatusOK {
		t.Fatalf("token in query: %d", rec.Code)
	}
	req, _ := http.NewRequest("GET", "/v1/poll", nil)
	req.Header.Set("Authorization", "bearer "+tok) // the scheme is case-insensitive (RFC 9110)
	rec := newRecorder()
	h.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("lower-case bearer: %d", rec.Code)
	}
}

func TestAdminNeedsAdminKey(t *testing.T) {
	h := newHarness(t, nil)
	for _, key := range []string{"", testPublishKey, token(t, "u", time.Hour), testAdminKey + "x", testAdminKey[:len(testAdminKey)-1]} {
		if rec := h.do("GET", "/v1/admin/messages", key, ""); rec.Code != http.StatusUnauthorized {
			t.Fatalf("admin listing with key %.12q…: %d", key, rec.Code)
		}
	}
}

func TestSecretKeyMatches(t *testing.T) {
	k := newSecretKey("correct horse battery")
	for cand, want := range map[string]bool{"correct horse battery": true, "correct horse batter": false, "": false, "correct horse battery ": false} {
		if got := k.matches(cand); got != want {
			t.Errorf("matches(%q) = %v", cand, got)
		}
	}
}

// tokens returns the verified-token cache of h's current keys.
func (h *harness) tokens() *tokenCache { return &h.srv.keys.ring.Load().tokens }

func TestTokenCacheAnswersARepeatedToken(t *testing.T) {
	h := newHarness(t, nil)
	tok := token(t, "u", time.Hour)
	first, err := h.srv.verifyToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if n := h.tokens().len(); n != 1 {
		t.Fatalf("%d tokens cached after one verification, want 1", n)
	}
	// Break the keys in place, behind the cache's back: only the cache can still accept tok.
	h.srv.keys.ring.Load().hmac = []byte("another-secret-another-secret-another")
	again, err := h.srv.verifyToken(tok)
	if err != nil {
		t.Fatalf("a cached token was verified again: %v", err)
	}
	if again != first {
		t.Fatalf("cached answer %+v, first %+v", again, first)
	}
	if rec := h.do("GET", "/v1/poll", tok, ""); rec.Code != http.StatusOK {
		t.Fatalf("poll with the cached token: %d %s", rec.Code, rec.Body)
	}
}

// TestTokenCacheHonoursExpiry: a cached token is accepted up to exp+leeway and refused with
// token_expired from that instant on, exactly as the parser does.
func TestTokenCacheHonoursExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.JWTLeeway = 5 * time.Second })
		tok := token(t, "u", 10*time.Second) // time starts on a whole second in the bubble
		for range 2 {
			if _, err := h.srv.verifyToken(tok); err != nil {
				t.Fatal(err)
			}
		}
		if h.tokens().len() != 1 {
			t.Fatal("token not cached")
		}
		time.Sleep(15*time.Second - time.Nanosecond) // exp + leeway - 1ns
		if _, err := h.srv.verifyToken(tok); err != nil {
			t.Fatalf("refused within the leeway: %v", err)
		}
		time.Sleep(time.Nanosecond)
		_, err := h.srv.verifyToken(tok)
		if e, _ := toAPIError(err); e == nil || e.Code != "token_expired" {
			t.Fatalf("cached token at exp+leeway: %v, want token_expired", err)
		}
		if n := h.tokens().len(); n != 0 {
			t.Fatalf("%d expired tokens still cached", n)
		}
		if rec := h.do("GET", "/v1/poll", tok, ""); rec.Code != http.StatusUnauthorized || errorCode(t, rec) != "token_expired" {
			t.Fatalf("poll with the expired token: %d %s", rec.Code, rec.Body)
		}
	})
}

func TestTokenCacheDroppedWhenKeysReload(t *testing.T) {
	k := newTestKeys(t)
	file := writeFile(t, "jwks.json", jwks(t, jwkOf(t, &k.rsa.PublicKey, "old", ""), jwkOf(t, &k.ec.PublicKey, "kept", "")))
	keys, err := LoadKeys(KeySource{JWKSFile: file})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) { o.Keys = keys })
	oldTok := signWith(t, jwt.SigningMethodRS256, k.rsa, "old", claimsFor("u"))
	keptTok := signWith(t, jwt.SigningMethodES256, k.ec, "kept", claimsFor("u"))
	for range 3 {
		for _, tok := range []string{oldTok, keptTok} {
			if _, err := h.srv.verifyToken(tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := h.tokens().len(); n != 2 {
		t.Fatalf("%d tokens cached, want 2", n)
	}

	// Retire the RSA key: the file loses it (and so changes size).
	if err := os.WriteFile(file, []byte(jwks(t, jwkOf(t, &k.ec.PublicKey, "kept", ""))), 0o600); err != nil {
		t.Fatal(err)
	}
	keys.reload(zaptest.NewLogger(t))
	_, err = h.srv.verifyToken(oldTok)
	if e, _ := toAPIError(err); e == nil || e.Code != "token_invalid" {
		t.Fatalf("token of the retired key after the reload: %v, want token_invalid", err)
	}
	if _, err := h.srv.verifyToken(keptTok); err != nil {
		t.Fatalf("token of the kept key after the reload: %v", err)
	}
	if n := h.tokens().len(); n != 1 {
		t.Fatalf("%d tokens cached after the reload, want only the kept key's", n)
	}
}

func TestTokenCacheHoldsOnlyAcceptedTokens(t *testing.T) {
	h := newHarness(t, nil)
	hs := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	future := time.Now().Add(time.Hour).Unix()
	good := token(t, "u", time.Hour)
	// One signature character changed, far from the end (the last one's low bits may not count).
	i := len(good) - 10
	forged := good[:i] + map[bool]string{true: "B", false: "A"}[good[i] == 'A'] + good[i+1:]
	other, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": future}).SignedString([]byte("another-secret-another-secret-another"))
	for name, tok := range map[string]string{
		"forged signature":  forged,
		"other secret":      other,
		"expired":           hs(jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Minute).Unix()}),
		"not yet valid":     hs(jwt.MapClaims{"sub": "u", "exp": future, "nbf": time.Now().Add(time.Minute).Unix()}),
		"bad sub":           hs(jwt.MapClaims{"sub": "u\nx", "exp": future}),
		"garbage":           "not.a.token",
		"forged after good": forged, // the good token is cached by now; its forgery is another token
	} {
		if name == "forged after good" {
			if _, err := h.srv.verifyToken(good); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			if _, err := h.srv.verifyToken(tok); err == nil {
				t.Fatalf("%s: accepted", name)
			}
		}
	}
	if n := h.tokens().len(); n != 1 {
		t.Fatalf("%d tokens cached, want only the good one", n)
	}
}

// TestTokenCacheKeepsEachServersRules: servers sharing Keys share the cache, and a token one of
// them accepted is still checked against the other's aud and iss.
func TestTokenCacheKeepsEachServersRules(t *testing.T) {
	keys, err := LoadKeys(KeySource{HMACSecret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	lax := newHarness(t, func(o *Options) { o.Keys = keys })
	strict := newHarness(t, func(o *Options) { o.Keys = keys; o.JWTAudience = "bridged" })
	tok := token(t, "u", time.Hour) // no aud
	for range 2 {
		if _, err := lax.srv.verifyToken(tok); err != nil {
			t.Fatal(err)
		}
		if _, err := strict.srv.verifyToken(tok); err == nil {
			t.Fatal("a token without aud passed a server that requires one, once the other had cached it")
		}
	}
}

func TestTokenCacheIsBounded(t *testing.T) {
	var c tokenCache
	v := verifiedToken{sub: subscriber{user: "u", expires: time.Now().Add(time.Hour)}}
	const want = tokenCacheShards * tokenCacheShardSize
	for i := range 3 * want {
		k := tokenKeyOf(strconv.Itoa(i))
		c.put(&k, v)
	}
	if n := c.len(); n > want || n < want/2 {
		t.Fatalf("%d tokens cached after %d puts, want at most %d and not far below", n, 3*want, want)
	}
	for i := range c.shards {
		if n := len(c.shards[i].m); n > tokenCacheShardSize {
			t.Fatalf("shard %d holds %d tokens", i, n)
		}
	}
	// The newest token is always kept.
	k := tokenKeyOf("newest")
	c.put(&k, v)
	if _, ok := c.get(&k, nil, time.Now(), 0); !ok {
		t.Fatal("the token just put is missing")
	}
}
