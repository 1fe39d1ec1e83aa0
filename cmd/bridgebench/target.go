package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The secrets bridged is started with: explicit, so it never runs its demo.
const (
	benchJWTSecret  = "bridgebench-jwt-secret-0123456789-abcdef"
	benchPublishKey = "bridgebench-publish-key-0123456789"
	benchAdminKey   = "bridgebench-admin-key-0123456789"
)

// Target names.
const (
	targetBridged = "bridged"
	targetNchan   = "nchan"
	targetHello   = "hello" // the hello-world Go handler, the ceiling for the publish rows
)

// protocol is how the load tool speaks to one kind of target. Every method appends to b and
// returns it, so callers reuse one buffer per connection.
type protocol interface {
	// sseRequest is the request that opens user's event stream.
	sseRequest(b []byte, user int) []byte
	// pollRequest is the next (long-)poll of user from position st.
	pollRequest(b []byte, user int, st *pollState, wait bool) []byte
	// pollAnswer moves st past an answer. Answers without a message (bridged's empty list,
	// Nchan's 304 and 408) are fine; any other status is an error.
	pollAnswer(h respHead, body []byte, st *pollState) error
	// publishRequest publishes p to user.
	publishRequest(b []byte, user int, p payload) []byte
	// batchRequest publishes ps[i] to users[i] in one request, or returns nil when the target
	// has no batch publish.
	batchRequest(b []byte, users []int, ps []payload) []byte
	// publishOK reports whether a publish answer's status means the message was accepted.
	publishOK(status int) bool
	// waiting returns how many subscribers (SSE streams plus parked long-polls) the server
	// reports holding.
	waiting(ctx context.Context) (int, error)
}

// pollState is one poller's position: bridged's cursor, or Nchan's Last-Modified and Etag.
type pollState struct {
	token        string // bridged: the user's subscriber token
	cursor       string
	lastModified string
	etag         string
	resets       int
}

// proc is a running target process (bridged, nginx with Nchan, or the hello server).
type proc struct {
	kind   string
	addr   string // 127.0.0.1:port
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string // temp dir: logs, nginx prefix
	logf   *os.File
	proto  protocol
	notes  []string  // what was set, for the report
	pprof  string    // bridged built with -profile: its pprof listener
	prof   *profiler // nil unless profiling
	// wakeLog is where runLongPoll writes the wake-up's latencies (-wake-log); "" for none.
	wakeLog string
}

// tail returns the end of the process's output, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logf.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// pids returns the target's processes: nginx's master and workers, or the one Go process.
func (p *proc) pids() []int { return procTree(p.cmd.Process.Pid) }

// stop ends the target: SIGTERM, then after 10 s SIGKILL to its process group (nginx's workers
// included). It only ever signals the process it started and that process's group.
func (p *proc) stop() error {
	pid := p.cmd.Process.Pid
	select {
	case <-p.exited:
	default:
		syscall.Kill(pid, syscall.SIGTERM)
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	var err error
	select {
	case <-p.exited:
	case <-t.C:
		err = fmt.Errorf("%s (pid %d) did not exit within 10s of SIGTERM; killed", p.kind, pid)
		syscall.Kill(-pid, syscall.SIGKILL)
		<-p.exited
	}
	// nginx's workers normally leave with the master; make sure nothing of the group lingers.
	if syscall.Kill(-pid, 0) == nil {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	p.logf.Close()
	if err == nil {
		os.RemoveAll(p.dir)
	}
	return err
}

// startOpts configures the targets.
type startOpts struct {
	bridgedBin  string
	bridgedEnv  []string // extra KEY=VALUE for bridged
	nchanConf   string
	nginxBin    string
	selfBin     string // this executable, for the hello server
	pprof       bool   // bridgedBin serves pprof when BRIDGEBENCH_PPROF_ADDR is set
	readyWithin time.Duration
}

// start launches a fresh target process of kind and waits until it answers.
func start(ctx context.Context, o startOpts, kind string) (*proc, error) {
	dir, err := os.MkdirTemp("", "bridgebench-"+kind+"-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p := &proc{kind: kind, dir: dir, logf: logf, exited: make(chan struct{})}
	var port string
	switch kind {
	case targetBridged:
		env := []string{
			"PATH=" + os.Getenv("PATH"),
			"BRIDGE_ADDR=127.0.0.1:0",
			"BRIDGE_JWT_SECRET=" + benchJWTSecret,
			"BRIDGE_PUBLISH_KEY=" + benchPublishKey,
			"BRIDGE_ADMIN_KEY=" + benchAdminKey,
			"BRIDGE_MAX_CONNECTIONS=1000000",
			"BRIDGE_MAX_CONNECTIONS_PER_USER=64",
			"BRIDGE_LOG_LEVEL=warn", // no access log line per request
			"BRIDGE_DRAIN_DELAY=0s",
			"BRIDGE_DRAIN_WINDOW=0s",
		}
		env = append(env, o.bridgedEnv...)
		for _, kv := range env[1:] {
			if !strings.Contains(kv, "SECRET") && !strings.Contains(kv, "KEY=") {
				p.notes = append(p.notes, kv)
			}
		}
		if o.pprof {
			pp, err := freePort()
			if err != nil {
				logf.Close()
				os.RemoveAll(dir)
				return nil, err
			}
			p.pprof = "127.0.0.1:" + pp
			env = append(env, "BRIDGEBENCH_PPROF_ADDR="+p.pprof)
		}
		p.cmd = exec.Command(o.bridgedBin)
		p.cmd.Env = env
	case targetHello:
		p.cmd = exec.Command(o.selfBin, "hello", "-addr", "127.0.0.1:0")
		p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	case targetNchan:
		var conf []byte
		if port, err = freePort(); err == nil {
			conf, p.notes, err = nchanConf(o.nchanConf, "127.0.0.1:"+port, runtime.GOMAXPROCS(0))
		}
		if err == nil {
			err = os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
		}
		cf := filepath.Join(dir, "nginx.conf")
		if err == nil {
			err = os.WriteFile(cf, conf, 0o644)
		}
		if err != nil {
			logf.Close()
			os.RemoveAll(dir)
			return nil, err
		}
		p.cmd = exec.Command(o.nginxBin, "-p", dir, "-c", cf, "-g", "daemon off;")
	default:
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("unknown target %q", kind)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Its own process group, so stop can reach nginx's workers; and killed with us if we die.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }() // joined by stop through p.exited

	ctx, cancel := context.WithTimeout(ctx, o.readyWithin)
	defer cancel()
	fail := func(err error) (*proc, error) {
		p.stop()
		return nil, fmt.Errorf("%s did not start: %w\n%s", kind, err, p.tail())
	}
	// Find the address: nginx's is ours to pick; the Go processes bind :0 and we read the
	// socket they listen on from /proc.
	for p.addr == "" {
		if port != "" {
			p.addr = "127.0.0.1:" + port
			break
		}
		addrs, _ := listeningAddrs(p.cmd.Process.Pid)
		if i := slices.Index(addrs, p.pprof); i >= 0 {
			addrs = slices.Delete(addrs, i, i+1)
		}
		if len(addrs) > 0 {
			p.addr = addrs[0]
			break
		}
		if err := pause(ctx, p.exited, 20*time.Millisecond); err != nil {
			return fail(err)
		}
	}
	switch kind {
	case targetBridged:
		p.proto = &bridgedProto{host: p.addr}
	case targetHello:
		p.proto = &bridgedProto{host: p.addr, hello: true}
	case targetNchan:
		p.proto = &nchanProto{host: p.addr}
	}
	readyPath := map[string]string{targetBridged: "/readyz", targetHello: "/readyz", targetNchan: "/nchan_status"}[kind]
	for {
		if st, _, err := httpGet(ctx, "http://"+p.addr+readyPath, ""); err == nil && st == 200 {
			return p, nil
		}
		if err := pause(ctx, p.exited, 20*time.Millisecond); err != nil {
			return fail(err)
		}
	}
}

// pause waits d, or fails when ctx ends or the process has exited.
func pause(ctx context.Context, exited <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-exited:
		return errors.New("exited")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// nchanConfListen is the listen address bench/nchan/nginx.conf is written with; the tool
// replaces it with a free port.
const nchanConfListen = "127.0.0.1:8089"

var workerProcesses = regexp.MustCompile(`(?m)^(\s*worker_processes\s+)\S+;`)

// nchanConf reads the repository's nginx.conf and rewrites its listen address to addr and its
// worker_processes to workers (bridged's GOMAXPROCS on this machine).
func nchanConf(path, addr string, workers int) ([]byte, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("nchan config: %w", err)
	}
	if !bytes.Contains(b, []byte(nchanConfListen)) {
		return nil, nil, fmt.Errorf("nchan config %s does not listen on %s", path, nchanConfListen)
	}
	if !workerProcesses.Match(b) {
		return nil, nil, fmt.Errorf("nchan config %s sets no worker_processes", path)
	}
	b = bytes.ReplaceAll(b, []byte(nchanConfListen), []byte(addr))
	b = workerProcesses.ReplaceAll(b, []byte("${1}"+strconv.Itoa(workers)+";"))
	return b, []string{"config " + path, "worker_processes " + strconv.Itoa(workers) + " (= GOMAXPROCS)"}, nil
}

// httpGet is a plain request for control endpoints (readiness, stats), never on a hot path.
func httpGet(ctx context.Context, url, bearer string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := controlClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

var controlClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// --- bridged ---

type bridgedProto struct {
	host  string
	hello bool // the hello server: publish only

	mu     sync.Mutex
	tokens map[int]string
}

// token mints (once per user) an HS256 subscriber token valid for a day.
func (b *bridgedProto) token(user int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.tokens[user]; ok {
		return t
	}
	t, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": userName(user), "exp": time.Now().Add(24 * time.Hour).Unix(),
	}).SignedString([]byte(benchJWTSecret))
	if err != nil {
		panic(err) // HS256 with a fixed key cannot fail
	}
	if b.tokens == nil {
		b.tokens = map[int]string{}
	}
	b.tokens[user] = t
	return t
}

func userName(u int) string { return "u" + strconv.Itoa(u) }

func (b *bridgedProto) head(buf []byte, method, path string) []byte {
	buf = append(buf, method...)
	buf = append(buf, ' ')
	buf = append(buf, path...)
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	return append(buf, b.host...)
}

func (b *bridgedProto) sseRequest(buf []byte, user int) []byte {
	buf = b.head(buf, "GET", "/v1/sse")
	buf = append(buf, "\r\nAccept: text/event-stream\r\nAuthorization: Bearer "...)
	buf = append(buf, b.token(user)...)
	return append(buf, "\r\n\r\n"...)
}

func (b *bridgedProto) pollRequest(buf []byte, user int, st *pollState, wait bool) []byte {
	if st.token == "" {
		st.token = b.token(user)
	}
	path := "/v1/poll?cursor=" + st.cursor
	if wait {
		path += "&wait=30s"
	}
	buf = b.head(buf, "GET", path)
	buf = append(buf, "\r\nAuthorization: Bearer "...)
	buf = append(buf, st.token...)
	return append(buf, "\r\n\r\n"...)
}

var (
	cursorKey = []byte(`"cursor":"`)
	resetTrue = []byte(`"reset":true`)
)

func (b *bridgedProto) pollAnswer(h respHead, body []byte, st *pollState) error {
	if h.status != 200 {
		return fmt.Errorf("poll: status %d: %.200s", h.status, body)
	}
	i := bytes.LastIndex(body, cursorKey) // the answer's own cursor comes after the messages
	if i < 0 {
		return fmt.Errorf("poll: no cursor in %.200s", body)
	}
	rest := body[i+len(cursorKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return fmt.Errorf("poll: malformed cursor in %.200s", body)
	}
	st.cursor = string(rest[:j])
	if bytes.Contains(body, resetTrue) {
		st.resets++
	}
	return nil
}

func (b *bridgedProto) publishRequest(buf []byte, user int, p payload) []byte {
	var body [128]byte
	bb := append(body[:0], `{"user":"u`...)
	bb = strconv.AppendInt(bb, int64(user), 10)
	bb = append(bb, `","data":`...)
	bb = appendPayload(bb, p)
	bb = append(bb, '}')
	return b.post(buf, bb)
}

func (b *bridgedProto) post(buf, body []byte) []byte {
	buf = b.head(buf, "POST", "/v1/publish")
	buf = append(buf, "\r\nAuthorization: Bearer "+benchPublishKey+"\r\nContent-Type: application/json\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(body)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, body...)
}

func (b *bridgedProto) batchRequest(buf []byte, users []int, ps []payload) []byte {
	body := make([]byte, 0, 16+len(users)*80)
	body = append(body, `{"messages":[`...)
	for i, u := range users {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"user":"u`...)
		body = strconv.AppendInt(body, int64(u), 10)
		body = append(body, `","data":`...)
		body = appendPayload(body, ps[i])
		body = append(body, '}')
	}
	body = append(body, "]}"...)
	return b.post(buf, body)
}

func (b *bridgedProto) publishOK(status int) bool { return status == 200 }

func (b *bridgedProto) waiting(ctx context.Context) (int, error) {
	st, body, err := httpGet(ctx, "http://"+b.host+"/v1/admin/stats", benchAdminKey)
	if err != nil {
		return 0, err
	}
	if st != 200 {
		return 0, fmt.Errorf("admin stats: %d %s", st, body)
	}
	var s struct {
		Connections struct {
			SSE      int `json:"sse"`
			LongPoll int `json:"longpoll"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return 0, err
	}
	return s.Connections.SSE + s.Connections.LongPoll, nil
}

// --- Nchan ---

type nchanProto struct{ host string }

func (n *nchanProto) head(buf []byte, method, loc string, user int) []byte {
	buf = append(buf, method...)
	buf = append(buf, ' ')
	buf = append(buf, loc...)
	buf = append(buf, 'u')
	buf = strconv.AppendInt(buf, int64(user), 10)
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	return append(buf, n.host...)
}

func (n *nchanProto) sseRequest(buf []byte, user int) []byte {
	buf = n.head(buf, "GET", "/sse/", user)
	return append(buf, "\r\nAccept: text/event-stream\r\n\r\n"...)
}

// pollRequest walks Nchan's queue the way its docs describe: If-Modified-Since and
// If-None-Match set to the previous answer's Last-Modified and Etag.
func (n *nchanProto) pollRequest(buf []byte, user int, st *pollState, wait bool) []byte {
	loc := "/ip/"
	if wait {
		loc = "/lp/"
	}
	buf = n.head(buf, "GET", loc, user)
	if st.lastModified != "" {
		buf = append(buf, "\r\nIf-Modified-Since: "...)
		buf = append(buf, st.lastModified...)
		buf = append(buf, "\r\nIf-None-Match: "...)
		buf = append(buf, st.etag...)
	}
	return append(buf, "\r\n\r\n"...)
}

func (n *nchanProto) pollAnswer(h respHead, body []byte, st *pollState) error {
	switch h.status {
	case 200:
		if h.lastModified == "" || h.etag == "" {
			return fmt.Errorf("poll: 200 without Last-Modified and Etag")
		}
		st.lastModified, st.etag = h.lastModified, h.etag
		return nil
	case 304, 408: // nothing new (interval poll), or the long-poll timed out
		return nil
	}
	return fmt.Errorf("poll: status %d: %.200s", h.status, body)
}

func (n *nchanProto) publishRequest(buf []byte, user int, p payload) []byte {
	var body [96]byte
	bb := appendPayload(body[:0], p)
	buf = n.head(buf, "POST", "/pub/", user)
	buf = append(buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(bb)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, bb...)
}

func (n *nchanProto) batchRequest([]byte, []int, []payload) []byte { return nil }

// publishOK: 201 when the channel had a subscriber, 202 when it had none.
func (n *nchanProto) publishOK(status int) bool { return status == 201 || status == 202 }

func (n *nchanProto) waiting(ctx context.Context) (int, error) {
	st, body, err := httpGet(ctx, "http://"+n.host+"/nchan_status", "")
	if err != nil {
		return 0, err
	}
	if st != 200 {
		return 0, fmt.Errorf("nchan_status: %d", st)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "subscribers: "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("nchan_status has no subscribers line: %.200s", body)
}
