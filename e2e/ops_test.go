package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServerErrorsAreLogged runs bridged with few file descriptors and opens more connections
// than it can accept. net/http then reports "http: Accept error: … too many open files" through
// http.Server.ErrorLog; an operator must see that in the log, since the node is refusing
// clients.
func TestServerErrorsAreLogged(t *testing.T) {
	t.Parallel()
	const nofile = 64
	d := startDaemonArgs(t, nil, "/bin/sh", "-c", `ulimit -n `+strconv.Itoa(nofile)+` && exec "$0"`, binPath)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := strings.TrimPrefix(d.base, "http://")
	for range 2 * nofile {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break // the kernel's backlog is full too: enough
		}
		conns = append(conns, c)
	}
	// Wait until the daemon has run out: a request on a fresh connection gets no answer.
	var dry bool
	for range 100 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := d.tryDo(ctx, "GET", "/healthz", "", nil, http.Header{"Connection": {"close"}})
		cancel()
		if err != nil {
			dry = true
			break
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			conns = append(conns, c)
		}
	}
	if !dry {
		t.Fatalf("bridged kept accepting with RLIMIT_NOFILE %d and %d connections open", nofile, len(conns))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil

	// Once it accepts again, its access line for this request comes after any Accept error
	// line in the log, which is written by one locked writer.
	marker := "/healthz-after-exhaustion"
	deadline := time.Now().Add(requestTimeout)
	for {
		r, err := d.tryDo(t.Context(), "GET", marker, "", nil, nil)
		if err == nil && r.status == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridged did not recover after the connections closed: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLog(t, d, `"path":"`+marker+`"`)
	if out := d.log.String(); !strings.Contains(out, "Accept error") {
		t.Errorf("bridged refused connections for lack of file descriptors and logged nothing about it; " +
			"net/http's ErrorLog output is lost (cmd/bridged/run.go: zap.NewStdLog writes at info level, and " +
			"IncreaseLevel(WarnLevel) drops every info entry)")
	}
}

// waitLog waits until the daemon's output contains s.
func waitLog(tb testing.TB, d *daemon, s string) {
	tb.Helper()
	deadline := time.Now().Add(requestTimeout)
	for !strings.Contains(d.log.String(), s) {
		if time.Now().After(deadline) {
			tb.Fatalf("bridged never logged %s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConfigErrors starts bridged with bad configurations: it must refuse to start, exit 1 and
// name the offending variable.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string // in the output
	}{
		{"short JWT secret", map[string]string{"BRIDGE_JWT_SECRET": "too-short"}, "BRIDGE_JWT_SECRET"},
		{"short publish key", map[string]string{"BRIDGE_PUBLISH_KEY": "short"}, "BRIDGE_PUBLISH_KEY"},
		{"missing admin key", map[string]string{"BRIDGE_ADMIN_KEY": ""}, "BRIDGE_ADMIN_KEY"},
		{"zero TTL", map[string]string{"BRIDGE_MESSAGE_TTL": "0s"}, "BRIDGE_MESSAGE_TTL"},
		{"bad duration", map[string]string{"BRIDGE_HEARTBEAT": "soon"}, "BRIDGE_HEARTBEAT"},
		{"bad size", map[string]string{"BRIDGE_MAX_MEMORY": "lots"}, "BRIDGE_MAX_MEMORY"},
		{"message cap above stream cap", map[string]string{"BRIDGE_MAX_MESSAGE_BYTES": "2MiB"}, "BRIDGE_MAX_MESSAGE_BYTES"},
		{"unknown store", map[string]string{"BRIDGE_STORE": "redis"}, "BRIDGE_STORE"},
		{"bad address", map[string]string{"BRIDGE_ADDR": "127.0.0.1:99999"}, "BRIDGE_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{
				"BRIDGE_ADDR":        "127.0.0.1:0",
				"BRIDGE_JWT_SECRET":  jwtSecret,
				"BRIDGE_PUBLISH_KEY": publishKey,
				"BRIDGE_ADMIN_KEY":   adminKey,
			}
			env := []string{"PATH=/usr/bin:/bin"}
			for k, v := range vars {
				if _, ok := tt.env[k]; !ok {
					env = append(env, k+"="+v)
				}
			}
			for k, v := range tt.env {
				if v != "" {
					env = append(env, k+"="+v)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), stopTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath)
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("bridged with %v: %v, want exit code 1\n%s", tt.env, err, out.String())
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("output does not name %s:\n%s", tt.want, out.String())
			}
			if strings.Contains(out.String(), `"msg":"listening"`) {
				t.Errorf("bridged started listening with a bad configuration")
			}
		})
	}
}

// TestPublishIdempotencyKey publishes with an idempotency key more than once: the retry gets the
// first id back and nothing is stored twice, on every transport.
func TestPublishIdempotencyKey(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil)
	tok := userToken(t, "alice")
	first := d.publish(t, `{"user":"alice","data":1,"key":"order-17"}`)
	retry := d.publish(t, `{"user":"alice","data":1,"key":"order-17"}`)
	batch := d.publish(t, `{"messages":[{"user":"alice","data":2,"key":"order-18"},{"user":"alice","data":2,"key":"order-18"},{"user":"bob","data":1,"key":"order-17"},{"user":"alice","data":1,"key":"order-17"}]}`)
	if first[0] != retry[0] {
		t.Errorf("retried publish got id %s, first got %s", retry[0], first[0])
	}
	if batch[0] != batch[1] || batch[3] != first[0] || batch[2] == first[0] {
		t.Errorf("batch ids %v: a key repeated within a batch or from an earlier call must get the first id (%s); bob's key is his own", batch, first[0])
	}
	want := []string{first[0], batch[0]}
	if diff := diffIDs(d.poll(t, tok, nil).ids(), want); diff != "" {
		t.Errorf("poll: %s", diff)
	}
	if diff := diffIDs(messageIDs(d.collectSSE(t, tok, "", nil, batch[0])), want); diff != "" {
		t.Errorf("SSE: %s", diff)
	}
}

// TestMemoryCap fills the store up to BRIDGE_MAX_MEMORY: the publish that does not fit is
// refused with 503 store_full and Retry-After, stores none of its messages, and what was stored
// before stays readable.
func TestMemoryCap(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, map[string]string{
		"BRIDGE_MAX_MEMORY":        "64KiB",
		"BRIDGE_STREAM_MAX_BYTES":  "64KiB",
		"BRIDGE_MAX_MESSAGE_BYTES": "4KiB",
	})
	data := `"` + strings.Repeat("m", 3000) + `"`
	var stored int
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("100 publishes of 3 KB fit in a 64 KiB store")
		}
		body := fmt.Sprintf(`{"messages":[{"user":"u%d","data":%s},{"user":"v%d","data":%s}]}`, i, data, i, data)
		r := d.do(t, "POST", "/v1/publish", publishKey, body, nil)
		if r.status == http.StatusOK {
			stored += 2
			continue
		}
		if r.status != http.StatusServiceUnavailable || apiErrorCode(t, r) != "store_full" || r.header.Get("Retry-After") == "" {
			t.Fatalf("publish over the cap: %s (Retry-After %q), want 503 store_full with Retry-After", r, r.header.Get("Retry-After"))
		}
		for _, u := range []string{fmt.Sprintf("u%d", i), fmt.Sprintf("v%d", i)} {
			if p := d.poll(t, userToken(t, u), nil); len(p.Messages) != 0 {
				t.Errorf("the refused publish stored %s's message %v", u, p.ids())
			}
		}
		break
	}
	if stored == 0 {
		t.Fatal("not even one publish fitted")
	}
	if p := d.poll(t, userToken(t, "u0"), nil); len(p.Messages) != 1 {
		t.Errorf("u0's message before the cap: poll returns %v", p.ids())
	}
}
