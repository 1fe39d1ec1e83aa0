package bridge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
