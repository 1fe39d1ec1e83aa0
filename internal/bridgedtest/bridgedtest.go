// Package bridgedtest builds the real bridged binary and runs it for tests of other packages
// (the publisher, the example app), the way e2e does for the daemon's own tests.
package bridgedtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Secrets every daemon started here uses; explicit, so it is not in demo mode unless asked.
const (
	JWTSecret  = "bridgedtest-jwt-secret-0123456789-abcdef"
	PublishKey = "bridgedtest-publish-key-0123"
	AdminKey   = "bridgedtest-admin-key-01234"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Build compiles cmd/bridged with -race into dir once per test process and returns its path.
// Call it from TestMain with a directory that outlives the tests.
func Build(dir string) (string, error) {
	buildOnce.Do(func() {
		binPath = filepath.Join(dir, "bridged")
		cmd := exec.Command("go", "build", "-race", "-o", binPath, "github.com/bridged/bridged/cmd/bridged")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		buildErr = cmd.Run()
	})
	return binPath, buildErr
}

// Daemon is one running bridged.
type Daemon struct {
	URL string // http://127.0.0.1:PORT
	log *lockedBuffer
}

// Start runs the binary Build made with the secrets above, BRIDGE_ADDR on a free port and env
// on top, waits until /readyz answers 200, and stops it (SIGTERM, then kill) at cleanup. A
// data race, a panic or a non-zero exit fails the test.
func Start(tb testing.TB, env map[string]string) *Daemon {
	tb.Helper()
	if binPath == "" {
		tb.Fatal("bridgedtest.Build was not called (call it from TestMain)")
	}
	vars := map[string]string{
		"BRIDGE_ADDR": "127.0.0.1:0", "BRIDGE_JWT_SECRET": JWTSecret,
		"BRIDGE_PUBLISH_KEY": PublishKey, "BRIDGE_ADMIN_KEY": AdminKey,
	}
	for k, v := range env {
		vars[k] = v
	}
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	cmd := exec.Command(binPath)
	cmd.Env = environ
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start bridged: %v", err)
	}
	log := &lockedBuffer{}
	addr := make(chan string, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			log.add(line)
			var l struct{ Msg, Addr string }
			if !sent && json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" {
				sent = true
				addr <- l.Addr
			}
		}
		io.Copy(io.Discard, pr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	d := &Daemon{log: log}
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			err = <-exited
			tb.Errorf("bridged did not stop within 15 s of SIGTERM")
		}
		<-scanDone
		out := log.String()
		if err != nil {
			tb.Errorf("bridged exited: %v", err)
		}
		if strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
			tb.Errorf("bridged reported a data race or a panic")
		}
		if tb.Failed() {
			tb.Logf("bridged output:\n%s", out)
		}
	})
	select {
	case a := <-addr:
		d.URL = "http://" + a
	case err := <-exited:
		tb.Fatalf("bridged exited before listening: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		tb.Fatalf("bridged did not listen within 30 s:\n%s", log.String())
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(d.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("/readyz did not answer 200: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Messages returns every retained message of user as "id event data", oldest first, from the
// operator listing.
func (d *Daemon) Messages(tb testing.TB, user string) []string {
	tb.Helper()
	req, _ := http.NewRequestWithContext(tb.Context(), "GET", d.URL+"/v1/admin/messages?user="+user, nil)
	req.Header.Set("Authorization", "Bearer "+AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("admin listing: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Messages []struct {
			ID, Event string
			Data      json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		tb.Fatalf("admin listing: %d %v", resp.StatusCode, err)
	}
	var lines []string
	for _, m := range out.Messages {
		lines = append(lines, fmt.Sprintf("%s %s %s", m.ID, m.Event, m.Data))
	}
	return lines
}

type lockedBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *lockedBuffer) add(l string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, l)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}
