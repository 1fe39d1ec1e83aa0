package bridge

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// KeySource says where the keys that verify subscriber tokens come from. Any combination may be
// set; at least one must be.
type KeySource struct {
	HMACSecret    []byte // verifies HS256 tokens
	PublicKeyFile string // PEM: PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE blocks
	JWKSFile      string // a JSON Web Key Set ({"keys":[…]}, RFC 7517)
}

// Keys is the current set of verification keys. It is safe for concurrent use; Watch replaces
// the set when its files change.
type Keys struct {
	src  KeySource
	ring atomic.Pointer[keyring]

	mu    sync.Mutex // guards stamp, held only by the reloader
	stamp map[string]fileStamp
}

// keyring is one generation of keys. The keys never change; a reload makes a new keyring, and
// with it an empty tokens cache, so nothing a retired key verified outlives it.
type keyring struct {
	hmac []byte
	pubs []publicKey

	tokens tokenCache // tokens these keys have verified (auth.go)
}

// publicKey is a verification key and the one algorithm it verifies: the algorithm is pinned
// to the key's type, so a token cannot choose how it is checked (no HS/RS confusion, no none).
type publicKey struct {
	kid string
	alg string
	key crypto.PublicKey
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// LoadKeys reads the keys src names. Errors name the file and the key at fault.
func LoadKeys(src KeySource) (*Keys, error) {
	k := &Keys{src: src, stamp: map[string]fileStamp{}}
	ring, err := k.load()
	if err != nil {
		return nil, err
	}
	k.ring.Store(ring)
	return k, nil
}

func (k *Keys) load() (*keyring, error) {
	ring := &keyring{hmac: k.src.HMACSecret}
	if k.src.PublicKeyFile != "" {
		b, st, err := readStamped(k.src.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		pubs, err := parsePEMKeys(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.src.PublicKeyFile, err)
		}
		ring.pubs = append(ring.pubs, pubs...)
		k.stamp[k.src.PublicKeyFile] = st
	}
	if k.src.JWKSFile != "" {
		b, st, err := readStamped(k.src.JWKSFile)
		if err != nil {
			return nil, err
		}
		pubs, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.src.JWKSFile, err)
		}
		ring.pubs = append(ring.pubs, pubs...)
		k.stamp[k.src.JWKSFile] = st
	}
	if len(ring.hmac) == 0 && len(ring.pubs) == 0 {
		return nil, errors.New("no token verification key: set a secret, a public key file or a JWKS file")
	}
	return ring, nil
}

func readStamped(path string) ([]byte, fileStamp, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	return b, fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// Watch checks the key files every interval and loads them again when one has changed, until
// ctx ends. A file that fails to load leaves the previous keys in place and is logged; the
// caller owns the goroutine that runs Watch.
func (k *Keys) Watch(ctx context.Context, interval time.Duration, log *zap.Logger) {
	if k.src.PublicKeyFile == "" && k.src.JWKSFile == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.reload(log)
	}
}

// reload loads the key files again if one has changed since the last load. A file that fails to
// load leaves the previous keys in place and is logged.
func (k *Keys) reload(log *zap.Logger) {
	if !k.changed() {
		return
	}
	k.mu.Lock()
	ring, err := k.load()
	k.mu.Unlock()
	if err != nil {
		log.Warn("token keys not reloaded; keeping the previous ones", zap.Error(err))
		return
	}
	k.ring.Store(ring)
	log.Info("token keys reloaded", zap.Int("public_keys", len(ring.pubs)))
}

func (k *Keys) changed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, path := range []string{k.src.PublicKeyFile, k.src.JWKSFile} {
		if path == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			continue // a file being replaced; try again next tick
		}
		if st := k.stamp[path]; !fi.ModTime().Equal(st.mod) || fi.Size() != st.size {
			return true
		}
	}
	return false
}

// keyFor is the jwt.Keyfunc: it returns the key, or keys, of this generation that may verify
// t, and refuses any algorithm no configured key is pinned to.
func (ring *keyring) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		if len(ring.hmac) == 0 {
			return nil, errors.New("HS256 is not configured")
		}
		return ring.hmac, nil
	}
	kid, _ := t.Header["kid"].(string)
	var match []jwt.VerificationKey
	for _, p := range ring.pubs {
		if p.alg == alg && (kid == "" || p.kid == "" || p.kid == kid) {
			match = append(match, p.key)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("no key for alg %q", alg)
	case 1:
		return match[0], nil
	}
	return jwt.VerificationKeySet{Keys: match}, nil
}

// algFor returns the algorithm a key is pinned to, given the one a JWK declares (may be "").
func algFor(key crypto.PublicKey, declared string) (string, error) {
	switch key := key.(type) {
	case *rsa.PublicKey:
		if key.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits; at least 2048 are required", key.N.BitLen())
		}
		switch declared {
		case "", "RS256":
			return "RS256", nil
		case "RS384", "RS512", "PS256", "PS384", "PS512":
			return declared, nil
		}
	case *ecdsa.PublicKey:
		want := map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[key.Curve.Params().Name]
		if want == "" {
			return "", fmt.Errorf("unsupported curve %s", key.Curve.Params().Name)
		}
		if declared == "" || declared == want {
			return want, nil
		}
	case ed25519.PublicKey:
		if declared == "" || declared == "EdDSA" {
			return "EdDSA", nil
		}
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
	return "", fmt.Errorf("alg %q does not fit a %T", declared, key)
}

func parsePEMKeys(b []byte) ([]publicKey, error) {
	var out []publicKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var key crypto.PublicKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			return nil, fmt.Errorf("PEM block %d is %q; give bridged public keys or certificates only", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		alg, err := algFor(key, "")
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		out = append(out, publicKey{alg: alg, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	if len(bytes.TrimSpace(b)) > 0 {
		return nil, errors.New("trailing data after the last PEM block")
	}
	return out, nil
}

// jwk holds the members of a JSON Web Key that verification needs (RFC 7517, 7518, 8037).
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func parseJWKS(b []byte) ([]publicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	var out []publicKey
	for i, j := range set.Keys {
		if j.Use == "enc" {
			continue // an encryption key, not one that signs tokens
		}
		key, err := j.publicKey()
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err)
		}
		alg, err := algFor(key, j.Alg)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, j.Kid, err)
		}
		out = append(out, publicKey{kid: j.Kid, alg: alg, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("the JWKS holds no signature key")
	}
	return out, nil
}

func (j *jwk) publicKey() (crypto.PublicKey, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch j.Kty {
	case "RSA":
		n, err1 := dec(j.N)
		e, err2 := dec(j.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return nil, errors.New("bad RSA exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}, nil
	case "EC":
		curve := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[j.Crv]
		if curve == nil {
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err1 := dec(j.X)
		y, err2 := dec(j.Y)
		size := (curve.Params().BitSize + 7) / 8
		if errors.Join(err1, err2) != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC x or y")
		}
		point := append(append([]byte{4}, x...), y...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	case "OKP":
		x, err := dec(j.X)
		if j.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("only Ed25519 OKP keys are supported")
		}
		return ed25519.PublicKey(x), nil
	case "oct":
		return nil, errors.New("symmetric keys do not belong in a JWKS file; use BRIDGE_JWT_SECRET")
	}
	return nil, fmt.Errorf("unsupported kty %q", j.Kty)
}
