package bridge

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest"
)

type testKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, d, _ := ed25519.GenerateKey(rand.Reader)
	return testKeys{rsa: r, ec: e, ed: d}
}

func pemPublic(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func signWith(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsFor(user string) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}
}

// verifyWith builds a server whose tokens are verified by src and reports the code of verifying tok
// ("" when it is accepted).
func verifyWith(t *testing.T, src KeySource, tweak func(*Options), tok string) string {
	t.Helper()
	keys, err := LoadKeys(src)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) {
		o.Keys = keys
		if tweak != nil {
			tweak(o)
		}
	})
	if _, err := h.srv.verifyToken(tok); err != nil {
		e, _ := toAPIError(err)
		return e.Code
	}
	return ""
}

func TestPublicKeyTokensArePinnedToTheKeyType(t *testing.T) {
	k := newTestKeys(t)
	rsaPEM := pemPublic(t, &k.rsa.PublicKey)
	pemFile := writeFile(t, "keys.pem", rsaPEM+pemPublic(t, &k.ec.PublicKey)+pemPublic(t, k.ed.Public()))
	src := KeySource{PublicKeyFile: pemFile}
	tests := []struct {
		name, token, code string
	}{
		{"RS256 by the RSA key", signWith(t, jwt.SigningMethodRS256, k.rsa, "", claimsFor("u")), ""},
		{"ES256 by the EC key", signWith(t, jwt.SigningMethodES256, k.ec, "", claimsFor("u")), ""},
		{"EdDSA by the Ed25519 key", signWith(t, jwt.SigningMethodEdDSA, k.ed, "", claimsFor("u")), ""},
		// The classic confusion: an HS256 token whose "secret" is the public key's PEM text.
		{"HS256 keyed with the public PEM", signWith(t, jwt.SigningMethodHS256, []byte(rsaPEM), "", claimsFor("u")), "token_invalid"},
		{"RS384 not pinned", signWith(t, jwt.SigningMethodRS384, k.rsa, "", claimsFor("u")), "token_invalid"},
		{"PS256 not pinned", signWith(t, jwt.SigningMethodPS256, k.rsa, "", claimsFor("u")), "token_invalid"},
		{"HS256 with no secret configured", signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", claimsFor("u")), "token_invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := verifyWith(t, src, nil, tt.token); code != tt.code {
				t.Fatalf("code %q, want %q", code, tt.code)
			}
		})
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if code := verifyWith(t, src, nil, signWith(t, jwt.SigningMethodRS256, other, "", claimsFor("u"))); code != "token_invalid" {
		t.Fatalf("a token signed by an unknown RSA key: %q", code)
	}
}

func TestCertificateAndPKCS1(t *testing.T) {
	k := newTestKeys(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.rsa.PublicKey, k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}))
	tok := signWith(t, jwt.SigningMethodRS256, k.rsa, "", claimsFor("u"))
	for name, content := range map[string]string{"certificate": cert, "pkcs1": pkcs1} {
		if code := verifyWith(t, KeySource{PublicKeyFile: writeFile(t, name, content)}, nil, tok); code != "" {
			t.Errorf("%s: %q", name, code)
		}
	}
}

func TestBadKeyFilesAreRefused(t *testing.T) {
	k := newTestKeys(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	priv, _ := x509.MarshalPKCS8PrivateKey(k.ec)
	tests := map[string]KeySource{
		"missing file":      {PublicKeyFile: filepath.Join(t.TempDir(), "nope.pem")},
		"no PEM":            {PublicKeyFile: writeFile(t, "a", "hello")},
		"private key":       {PublicKeyFile: writeFile(t, "b", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})))},
		"RSA 1024":          {PublicKeyFile: writeFile(t, "c", pemPublic(t, &small.PublicKey))},
		"JWKS not JSON":     {JWKSFile: writeFile(t, "d", "{")},
		"JWKS empty":        {JWKSFile: writeFile(t, "e", `{"keys":[]}`)},
		"JWKS symmetric":    {JWKSFile: writeFile(t, "f", `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)},
		"JWKS wrong alg":    {JWKSFile: writeFile(t, "g", jwks(t, jwkOf(t, k.ec.Public(), "a", "RS256")))},
		"JWKS bad EC point": {JWKSFile: writeFile(t, "h", `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`)},
		"nothing":           {},
	}
	for name, src := range tests {
		if _, err := LoadKeys(src); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func jwkOf(t *testing.T, pub crypto.PublicKey, kid, alg string) map[string]string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]string{"kid": kid, "use": "sig"}
	if alg != "" {
		m["alg"] = alg
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc(pub.N.Bytes()), enc(big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		b, _ := pub.Bytes()
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", enc(b[1:33]), enc(b[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", enc(pub)
	}
	return m
}

func jwks(t *testing.T, keys ...map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJWKSSelectsByKid(t *testing.T) {
	k := newTestKeys(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	file := writeFile(t, "jwks.json", jwks(t,
		jwkOf(t, &k.rsa.PublicKey, "rsa-1", "RS256"),
		jwkOf(t, &other.PublicKey, "rsa-2", ""),
		jwkOf(t, k.ec.Public(), "ec-1", "ES256"),
		jwkOf(t, k.ed.Public(), "ed-1", ""),
	))
	src := KeySource{JWKSFile: file}
	tests := []struct {
		name, token, code string
	}{
		{"RSA by kid", signWith(t, jwt.SigningMethodRS256, k.rsa, "rsa-1", claimsFor("u")), ""},
		{"second RSA by kid", signWith(t, jwt.SigningMethodRS256, other, "rsa-2", claimsFor("u")), ""},
		{"RSA without kid tries both", signWith(t, jwt.SigningMethodRS256, other, "", claimsFor("u")), ""},
		{"wrong kid", signWith(t, jwt.SigningMethodRS256, k.rsa, "rsa-2", claimsFor("u")), "token_invalid"},
		{"unknown kid", signWith(t, jwt.SigningMethodRS256, k.rsa, "rsa-9", claimsFor("u")), "token_invalid"},
		{"EC", signWith(t, jwt.SigningMethodES256, k.ec, "ec-1", claimsFor("u")), ""},
		{"Ed25519", signWith(t, jwt.SigningMethodEdDSA, k.ed, "ed-1", claimsFor("u")), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := verifyWith(t, src, nil, tt.token); code != tt.code {
				t.Fatalf("code %q, want %q", code, tt.code)
			}
		})
	}
}

func TestKeysReloadWhenTheFileChanges(t *testing.T) {
	k := newTestKeys(t)
	next, _ := rsa.GenerateKey(rand.Reader, 2048)
	file := writeFile(t, "jwks.json", jwks(t, jwkOf(t, &k.rsa.PublicKey, "old", "")))
	keys, err := LoadKeys(KeySource{JWKSFile: file})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) { o.Keys = keys })
	oldTok := signWith(t, jwt.SigningMethodRS256, k.rsa, "old", claimsFor("u"))
	newTok := signWith(t, jwt.SigningMethodRS256, next, "new", claimsFor("u"))
	if _, err := h.srv.verifyToken(oldTok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); keys.Watch(ctx, 10*time.Millisecond, zaptest.NewLogger(t)) }()
	defer func() { cancel(); <-done }()

	// A broken rotation keeps the old keys.
	os.WriteFile(file, []byte("{broken"), 0o600)
	time.Sleep(100 * time.Millisecond)
	if _, err := h.srv.verifyToken(oldTok); err != nil {
		t.Fatalf("a broken file replaced the working keys: %v", err)
	}
	// A good one replaces them.
	os.WriteFile(file, []byte(jwks(t, jwkOf(t, &next.PublicKey, "new", ""))), 0o600)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.srv.verifyToken(newTok); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotated key was never loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := h.srv.verifyToken(oldTok); err == nil {
		t.Fatal("the retired key still verifies")
	}
}

func TestAudienceIssuerAndLeeway(t *testing.T) {
	hs := func(c jwt.MapClaims) string { return signWith(t, jwt.SigningMethodHS256, []byte(testSecret), "", c) }
	future := time.Now().Add(time.Hour).Unix()
	strict := func(o *Options) {
		o.JWTAudience = "bridged"
		o.JWTIssuer = "https://app.example"
		o.JWTLeeway = 10 * time.Second
	}
	src := KeySource{HMACSecret: []byte(testSecret)}
	tests := []struct {
		name   string
		claims jwt.MapClaims
		code   string
	}{
		{"right aud and iss", jwt.MapClaims{"sub": "u", "exp": future, "aud": "bridged", "iss": "https://app.example"}, ""},
		{"aud among several", jwt.MapClaims{"sub": "u", "exp": future, "aud": []string{"api", "bridged"}, "iss": "https://app.example"}, ""},
		{"no aud", jwt.MapClaims{"sub": "u", "exp": future, "iss": "https://app.example"}, "token_invalid"},
		{"other aud", jwt.MapClaims{"sub": "u", "exp": future, "aud": "api", "iss": "https://app.example"}, "token_invalid"},
		{"other iss", jwt.MapClaims{"sub": "u", "exp": future, "aud": "bridged", "iss": "https://evil.example"}, "token_invalid"},
		{"expired within leeway", jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-3 * time.Second).Unix(), "aud": "bridged", "iss": "https://app.example"}, ""},
		{"expired beyond leeway", jwt.MapClaims{"sub": "u", "exp": time.Now().Add(-time.Minute).Unix(), "aud": "bridged", "iss": "https://app.example"}, "token_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := verifyWith(t, src, strict, hs(tt.claims)); code != tt.code {
				t.Fatalf("code %q, want %q", code, tt.code)
			}
		})
	}
}

func TestPublicKeyTokenReadsStream(t *testing.T) {
	k := newTestKeys(t)
	keys, err := LoadKeys(KeySource{PublicKeyFile: writeFile(t, "k.pem", pemPublic(t, k.ed.Public()))})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) { o.Keys = keys })
	h.publish(`{"user":"u","data":1}`)
	rec := h.do("GET", "/v1/poll", signWith(t, jwt.SigningMethodEdDSA, k.ed, "", claimsFor("u")), "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"data":1`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
