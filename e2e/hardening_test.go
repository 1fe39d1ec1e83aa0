package e2e

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// doAt sends one request to base (another listener of the daemon) and returns status and body.
func doAt(tb testing.TB, base, method, path, auth, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), method, base+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s%s: %v", method, base, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestInternalListener(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_INTERNAL_ADDR": "127.0.0.1:0"})
	if d.internal == "http://" || d.internal == "" {
		t.Fatal("no internal listener address logged")
	}
	tok := userToken(t, "alice")
	body := `{"user":"alice","data":"via internal"}`

	// Publishing and the operator endpoints are not on the public listener at all.
	for _, c := range []struct{ method, path, auth, body string }{
		{"POST", "/v1/publish", publishKey, body},
		{"GET", "/v1/admin/messages", adminKey, ""},
		{"GET", "/v1/admin/stats", adminKey, ""},
	} {
		if status, b := doAt(t, d.base, c.method, c.path, c.auth, c.body); status != http.StatusNotFound {
			t.Errorf("public %s %s: %d %s", c.method, c.path, status, b)
		}
	}
	// Subscribers are not served on the internal one.
	if status, _ := doAt(t, d.internal, "GET", "/v1/poll", tok, ""); status != http.StatusNotFound {
		t.Errorf("internal /v1/poll: %d", status)
	}
	if status, b := doAt(t, d.internal, "POST", "/v1/publish", publishKey, body); status != http.StatusOK {
		t.Fatalf("internal publish: %d %s", status, b)
	}
	if status, b := doAt(t, d.internal, "GET", "/v1/admin/stats", adminKey, ""); status != http.StatusOK || !strings.Contains(b, `"goroutines"`) {
		t.Fatalf("internal stats: %d %s", status, b)
	}
	if status, b := doAt(t, d.base, "GET", "/v1/poll", tok, ""); status != http.StatusOK || !strings.Contains(b, "via internal") {
		t.Fatalf("public poll: %d %s", status, b)
	}
	for _, base := range []string{d.base, d.internal} {
		if status, _ := doAt(t, base, "GET", "/readyz", "", ""); status != http.StatusOK {
			t.Errorf("%s/readyz: %d", base, status)
		}
	}
}

// TestSlowHeadersAreCut: a client that trickles its request headers (slowloris) is disconnected
// after BRIDGE_READ_HEADER_TIMEOUT, and other clients are served meanwhile.
func TestSlowHeadersAreCut(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_READ_HEADER_TIMEOUT": "1s"})
	u, _ := url.Parse(d.base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /v1/poll HTTP/1.1\r\nHost: x\r\n")
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c) // returns when the server closes the connection
		closed <- err
	}()
	trickle := time.NewTicker(200 * time.Millisecond)
	defer trickle.Stop()
	deadline := time.After(20 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-closed:
			if r := d.do(t, "GET", "/healthz", "", "", nil); r.status != http.StatusOK {
				t.Fatalf("healthz after the slow client: %s", r)
			}
			return
		case <-trickle.C:
			fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i) // never the blank line that ends the headers
		case <-deadline:
			t.Fatal("a client trickling headers was never disconnected")
		}
	}
}

func TestHeaderFloodIsRefused(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	u, _ := url.Parse(d.base)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriter(c)
	fmt.Fprint(w, "GET /v1/poll HTTP/1.1\r\nHost: x\r\n")
	for i := range 2000 {
		fmt.Fprintf(w, "X-Flood-%d: %s\r\n", i, strings.Repeat("f", 60))
	}
	fmt.Fprint(w, "\r\n")
	w.Flush()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a header flood: %v", err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("header flood: %d", resp.StatusCode)
	}
}

// TestConnectionFlood: streams past the per-user cap get 429, past the node cap 503, both with
// Retry-After; slots come back when streams close.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{"BRIDGE_MAX_CONNECTIONS": "8", "BRIDGE_MAX_CONNECTIONS_PER_USER": "3"})
	var open []*sseStream
	for range 3 {
		s := d.openSSE(t, sseRequest{token: userToken(t, "flood")})
		s.hello(t)
		open = append(open, s)
	}
	r := d.do(t, "GET", "/v1/sse", userToken(t, "flood"), "", nil)
	if r.status != http.StatusTooManyRequests || apiErrorCode(t, r) != "too_many_connections" || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th stream of one user: %s", r)
	}
	for i := range 5 {
		s := d.openSSE(t, sseRequest{token: userToken(t, fmt.Sprint("user", i))})
		s.hello(t)
		open = append(open, s)
	}
	r = d.do(t, "GET", "/v1/poll?wait=5s", userToken(t, "other"), "", nil)
	if r.status != http.StatusServiceUnavailable || apiErrorCode(t, r) != "overloaded" || r.header.Get("Retry-After") == "" {
		t.Fatalf("long-poll past the node cap: %s", r)
	}
	if r := d.do(t, "GET", "/v1/poll", userToken(t, "other"), "", nil); r.status != http.StatusOK {
		t.Fatalf("a plain poll holds nothing and must be served: %s", r)
	}
	open[0].close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, cancel, err := d.trySSE(t.Context(), sseRequest{token: userToken(t, "late")})
		if err == nil && resp.StatusCode == http.StatusOK {
			resp.Body.Close()
			cancel()
			return
		}
		if err == nil {
			resp.Body.Close()
			cancel()
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed stream's slot never came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPublicKeyFileAndRotation: with only a PEM public key configured, tokens signed by its
// private key are accepted and HS256 ones are not; replacing the file rotates the key.
func TestPublicKeyFileAndRotation(t *testing.T) {
	t.Parallel()
	writeKey := func(path string, pub ed25519.PublicKey) {
		der, _ := x509.MarshalPKIXPublicKey(pub)
		tmp := path + ".tmp"
		os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
		os.Rename(tmp, path) // how operators and secret mounts replace files
	}
	pub1, priv1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	path := filepath.Join(t.TempDir(), "jwt.pem")
	writeKey(path, pub1)
	d := startDaemon(t, map[string]string{"BRIDGE_JWT_SECRET": "", "BRIDGE_JWT_PUBLIC_KEY_FILE": path})
	sign := func(k ed25519.PrivateKey) string {
		return signToken(t, jwt.SigningMethodEdDSA, k, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	}
	if r := d.do(t, "GET", "/v1/poll", sign(priv1), "", nil); r.status != http.StatusOK {
		t.Fatalf("EdDSA token: %s", r)
	}
	if r := d.do(t, "GET", "/v1/poll", userToken(t, "alice"), "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("HS256 token with no secret configured: %s", r)
	}
	writeKey(path, pub2)
	deadline := time.Now().Add(30 * time.Second)
	for d.do(t, "GET", "/v1/poll", sign(priv2), "", nil).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the rotated key was never picked up")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := d.do(t, "GET", "/v1/poll", sign(priv1), "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("the retired key still works: %s", r)
	}
}

// TestTicketOverTheWire: a ticket opens one SSE stream and only one; the token never enters a URL.
func TestTicketOverTheWire(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	id := d.publish(t, `{"user":"alice","data":"t"}`)[0]
	r := d.do(t, "POST", "/v1/ticket", userToken(t, "alice"), "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("ticket: %s", r)
	}
	var tk struct{ Ticket string }
	if err := json.Unmarshal(r.body, &tk); err != nil || tk.Ticket == "" {
		t.Fatalf("ticket body %s", r.body)
	}
	s := d.openSSE(t, sseRequest{query: url.Values{"ticket": {tk.Ticket}}})
	s.hello(t)
	if got := s.messages(t, 1); got[0].ID != id {
		t.Fatalf("stream by ticket gave %+v", got)
	}
	again := d.do(t, "GET", "/v1/sse?ticket="+url.QueryEscape(tk.Ticket), "", "", nil)
	if again.status != http.StatusUnauthorized || apiErrorCode(t, again) != "ticket_used" {
		t.Fatalf("ticket reused: %s", again)
	}
}
