// Package redistest runs real redis-server processes for tests: one per Start, on 127.0.0.1 and a
// free port, in its own temporary directory, stopped when the test ends. Tests that share one
// server keep apart with UniquePrefix. Kill and Restart let fault tests take the server down hard
// (kill -9) and bring it back on the same address, with or without its data.
//
// A missing redis-server binary fails the test: CI installs the Debian package redis-server
// (.ci/run). On a laptop without it, BRIDGE_TEST_SKIP_REDIS=1 turns the failure into a loud skip;
// where CI is set (as CI runners set it), it does not.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SkipEnv is the variable that turns a missing redis-server into a skip instead of a failure.
const SkipEnv = "BRIDGE_TEST_SKIP_REDIS"

// Generous bounds that only catch hangs; nothing asserts how fast a server starts.
const (
	readyTimeout = 30 * time.Second
	exitTimeout  = 10 * time.Second
)

// Option changes how Start runs the server.
type Option func(*config)

type config struct {
	aof  bool
	args []string
}

// WithAOF turns on append-only-file persistence with fsync on every write (appendfsync always),
// so a server killed with kill -9 and restarted has everything it acknowledged.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithArgs adds redis-server command-line options, such as "--maxmemory", "10mb".
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is one redis-server process started by Start. Its methods are safe for concurrent use,
// though tests that kill and restart it usually do so from one goroutine.
type Server struct {
	// Addr is the server's address, 127.0.0.1:PORT. It stays the same across Restart.
	Addr string

	dir  string
	args []string

	mu   sync.Mutex
	proc *process // nil while the server is down
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	out    *lockedWriter // stdout and stderr
	exited chan struct{}
}

// Start runs a redis-server for tb and stops it when tb ends. Without options it keeps nothing on
// disk (--save "" --appendonly no), so a restart starts empty.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin := lookPath(tb)
	var c config
	for _, o := range opts {
		o(&c)
	}
	s := &Server{dir: tb.TempDir()}
	persistence := []string{"--appendonly", "no"}
	if c.aof {
		persistence = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	tb.Cleanup(s.stop)

	// The port is free when we look, but another process may take it before redis-server binds
	// it; then try another.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: find a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.args = append([]string{
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", s.dir, "--save", "", "--daemonize", "no",
			"--logfile", "", "--loglevel", "warning",
		}, persistence...)
		s.args = append(s.args, c.args...)
		if lastErr = s.run(bin); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

func lookPath(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	// CI never skips: there a missing server is a broken setup, whatever the environment says.
	if os.Getenv(SkipEnv) == "1" && os.Getenv("CI") == "" {
		tb.Skipf("\n\n*** SKIPPED: redis-server is not installed and %s=1 is set. ***\n"+
			"*** The Redis engine is NOT tested by this run. CI installs it (.ci/run);  ***\n"+
			"*** on Debian: apt-get install -y redis-server                               ***\n", SkipEnv)
	}
	tb.Fatalf("redistest: redis-server not found (%v). Install it (Debian: apt-get install -y redis-server), "+
		"or on a laptop only set %s=1 to skip the Redis tests", err, SkipEnv)
	return ""
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// run starts redis-server with s.args and waits until it answers PING.
func (s *Server) run(bin string) error {
	out := &lockedWriter{w: new(bytes.Buffer)}
	cmd := exec.Command(bin, s.args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	if err := waitReady(s.Addr, p.exited); err != nil {
		cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%w\nredis-server output:\n%s", err, out.String())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// waitReady polls the server with PING until it answers PONG (not LOADING), it exits, or the
// time runs out.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := ping(addr); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s not ready within %s: %v", addr, readyTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("redis-server exited before it was ready")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// URL is the server's address as a redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Kill stops the server with SIGKILL, as a crash would, and waits for it to exit. Whatever it had
// not written to its append-only file is lost. Killing a server that is down does nothing.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(exitTimeout):
		tb.Fatalf("redistest: redis-server did not exit within %s of SIGKILL", exitTimeout)
	}
}

// Pause stops the server with SIGSTOP: it keeps its connections but answers nothing, as a hung
// or partitioned server would, until Resume.
func (s *Server) Pause(tb testing.TB) { s.signal(tb, syscall.SIGSTOP) }

// Resume lets a paused server go on (SIGCONT); it then answers what it was sent meanwhile.
func (s *Server) Resume(tb testing.TB) { s.signal(tb, syscall.SIGCONT) }

func (s *Server) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		tb.Fatalf("redistest: %v to a server that is down", sig)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("redistest: %v: %v", sig, err)
	}
}

// Restart starts the server again on the same address, directory and options after Kill. With
// WithAOF it reloads what it had acknowledged; without, it starts empty.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	up := s.proc != nil
	s.mu.Unlock()
	if up {
		tb.Fatal("redistest: Restart of a server that is running; Kill it first")
	}
	bin := lookPath(tb)
	// The port was ours a moment ago; redis-server binds with SO_REUSEADDR, so a connection in
	// TIME_WAIT does not stand in the way. Another process could still take it: retry briefly.
	var err error
	for range 50 {
		if err = s.run(bin); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("redistest: restart redis-server on %s: %v", s.Addr, err)
}

// Output returns what the server has printed so far (warnings and errors), for failure messages.
func (s *Server) Output() string {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.out.String()
}

func (s *Server) stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	// Nothing the tests keep is on disk, so there is no point in a graceful shutdown. (SIGKILL
	// also ends a paused server.)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// UniquePrefix returns a key prefix no other test in this process or any other uses, so tests can
// share one server without seeing each other's keys. It contains the test's name for people
// reading the server with redis-cli.
func UniquePrefix(tb testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, tb.Name())
	return fmt.Sprintf("t:%.40s:%s:", name, rand.Text()[:10])
}

// lockedWriter lets the server's stdout and stderr share one buffer safely.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
