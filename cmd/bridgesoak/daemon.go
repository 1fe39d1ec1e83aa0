package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// daemon is the bridged process under test, started by the tool with its own secrets.
type daemon struct {
	cmd      *exec.Cmd
	base     string // http://127.0.0.1:PORT
	addr     string // 127.0.0.1:PORT
	adminKey string
	pubKey   string
	secret   []byte
	logPath  string
	log      *logWatch

	exited  chan struct{} // closed when the process has exited and its output is drained
	waitErr error         // cmd.Wait's result; read after exited is closed
}

// buildDaemon builds ./cmd/bridged (from the module the tool runs in) into dir.
func buildDaemon(ctx context.Context, dir string, race bool) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(dir, "bridged")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, "github.com/bridged/bridged/cmd/bridged")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build bridged (run from the module, or pass -bin): %w", err)
	}
	return bin, nil
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startDaemon starts bin with a clean environment (PATH, HOME, the BRIDGE_ variables in env plus
// fresh secrets) and its output going to logPath, waits for the listening line and /readyz.
func startDaemon(ctx context.Context, bin string, env map[string]string, logPath string) (*daemon, error) {
	d := &daemon{
		adminKey: randomSecret(),
		pubKey:   randomSecret(),
		secret:   []byte(randomSecret()),
		logPath:  logPath,
		exited:   make(chan struct{}),
	}
	vars := map[string]string{
		"BRIDGE_JWT_SECRET":  string(d.secret),
		"BRIDGE_PUBLISH_KEY": d.pubKey,
		"BRIDGE_ADMIN_KEY":   d.adminKey,
	}
	maps.Copy(vars, env)
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		environ = append(environ, k+"="+vars[k])
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	d.log = newLogWatch(f)
	d.cmd = exec.Command(bin)
	d.cmd.Env = environ
	// Its own process group, so a Ctrl-C meant for the tool does not also stop bridged mid-soak
	// (the tool stops it when the soak is done); SIGTERM if the tool dies first.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start bridged: %w", err)
	}
	go func() { // owned by d: ends when the process exits
		d.waitErr = d.cmd.Wait()
		d.log.close()
		close(d.exited)
	}()

	deadline := time.NewTimer(60 * time.Second) // only catches a hang; the race build is slow
	defer deadline.Stop()
	select {
	case addr := <-d.log.listening:
		d.addr = addr
		d.base = "http://" + addr
	case <-d.exited:
		return nil, fmt.Errorf("bridged exited before listening (%v); its log: %s", d.waitErr, logPath)
	case <-deadline.C:
		d.kill()
		return nil, fmt.Errorf("bridged logged no listening line within a minute; its log: %s", logPath)
	case <-ctx.Done():
		d.kill()
		return nil, ctx.Err()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for {
		resp, err := client.Get(d.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("bridged exited before /readyz answered 200 (%v); its log: %s", d.waitErr, logPath)
		case <-deadline.C:
			d.kill()
			return nil, fmt.Errorf("/readyz did not answer 200 within a minute")
		case <-ctx.Done():
			d.kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// kill ends the process at once and waits for it.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.exited
}

// stop sends sig (SIGTERM, or SIGQUIT for a goroutine dump) and waits up to timeout for the
// process to exit, then kills it. It returns the exit code and whether it had to kill.
func (d *daemon) stop(sig syscall.Signal, timeout time.Duration) (code int, killed bool) {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(sig)
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-d.exited:
		case <-t.C:
			killed = true
			d.kill()
		}
	}
	return d.cmd.ProcessState.ExitCode(), killed
}

// stats is GET /v1/admin/stats.
type stats struct {
	Goroutines  int `json:"goroutines"`
	Connections struct {
		SSE      int `json:"sse"`
		LongPoll int `json:"longpoll"`
		WS       int `json:"ws"`
		Total    int `json:"total"`
	} `json:"connections"`
	Store struct {
		Streams  int64 `json:"streams"` // decoding ignores case: the daemon writes "Streams"
		Messages int64 `json:"messages"`
		Bytes    int64 `json:"bytes"`
	} `json:"store"`
	Draining bool `json:"draining"`
}

func (d *daemon) stats(ctx context.Context, c *http.Client) (stats, error) {
	var s stats
	req, err := http.NewRequestWithContext(ctx, "GET", d.base+"/v1/admin/stats", nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Authorization", "Bearer "+d.adminKey)
	resp, err := c.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return s, fmt.Errorf("admin stats: %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// rss returns the resident set size of process pid, from /proc/<pid>/status.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

// logWatch copies the daemon's output to a file and watches it line by line: it spots the
// listening line, counts lines at warn level and above (keeping the last few), and notes a race
// report or a panic. Safe for concurrent use.
type logWatch struct {
	f         *os.File
	listening chan string // the address, once

	mu       sync.Mutex
	partial  []byte
	sent     bool
	warns    map[string]int // message → count, for warn and above
	lastWarn []string
	race     bool
	panicked bool
	lines    int
}

func newLogWatch(f *os.File) *logWatch {
	return &logWatch{f: f, listening: make(chan string, 1), warns: map[string]int{}}
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.f.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(w.partial[:i])
		w.partial = w.partial[i+1:]
	}
	if len(w.partial) > 64<<10 { // not line-oriented output; keep memory bounded
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

func (w *logWatch) line(b []byte) {
	w.lines++
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		w.race = true
	}
	if bytes.HasPrefix(b, []byte("panic:")) || bytes.Contains(b, []byte(`"msg":"handler panic"`)) {
		w.panicked = true
	}
	if len(b) == 0 || b[0] != '{' {
		return
	}
	var l struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
		Addr  string `json:"addr"`
	}
	if json.Unmarshal(b, &l) != nil {
		return
	}
	if !w.sent && l.Msg == "listening" && l.Addr != "" {
		w.sent = true
		w.listening <- l.Addr
	}
	switch l.Level {
	case "warn", "error", "dpanic", "panic", "fatal":
		w.warns[l.Level+": "+l.Msg]++
		if len(w.lastWarn) == 5 {
			w.lastWarn = w.lastWarn[1:]
		}
		w.lastWarn = append(w.lastWarn, string(b))
	}
}

func (w *logWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.line(w.partial)
		w.partial = nil
	}
	w.f.Close()
}

// summary returns the counted warnings and the flags, for the report.
func (w *logWatch) summary() (warns map[string]int, last []string, race, panicked bool, lines int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.warns), slices.Clone(w.lastWarn), w.race, w.panicked, w.lines
}
