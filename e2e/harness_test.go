package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// The daemon's secrets. They are explicit, so the daemon is never in demo mode.
const (
	jwtSecret  = "e2e-jwt-secret-0123456789-abcdefghijklmnop"
	publishKey = "e2e-publish-key-0123456789"
	adminKey   = "e2e-admin-key-0123456789"
)

// Generous bounds that only catch hangs; no test asserts how fast anything is.
const (
	startTimeout   = 30 * time.Second // until the listening line and /readyz 200
	stopTimeout    = 15 * time.Second // SIGTERM to exit, before kill -9
	requestTimeout = 15 * time.Second // one plain request
	frameTimeout   = 10 * time.Second // the next SSE frame
)

// daemon is one running bridged process. Its methods are safe for concurrent use.
type daemon struct {
	base     string       // http://127.0.0.1:PORT
	internal string       // the BRIDGE_INTERNAL_ADDR listener's base URL, when there is one
	client   *http.Client // this daemon's own connection pool
	cmd      *exec.Cmd
	log      *logSink // stderr and stdout, captured

	exited  chan struct{} // closed when the process has exited and its output is drained
	waitErr error         // cmd.Wait's result; read after exited is closed

	termSent atomic.Bool
	stopOnce sync.Once
	stopCode int
	stopKill bool
}

// startDaemon starts the bridged binary with a clean environment: PATH, HOME, the default
// BRIDGE_ variables below and env on top of them (an empty value unsets a default). It waits
// for the listening line and for /readyz to answer 200. t.Cleanup sends SIGTERM and waits; a
// daemon that does not exit within 15 s is killed and fails the test, and so does a non-zero
// exit or a race report.
func startDaemon(tb testing.TB, env map[string]string) *daemon {
	tb.Helper()
	return startDaemonArgs(tb, env, binPath)
}

// startDaemonArgs is startDaemon with the command line given: a wrapper that ends by exec'ing
// the binary, so that signals reach bridged itself.
func startDaemonArgs(tb testing.TB, env map[string]string, argv ...string) *daemon {
	tb.Helper()
	vars := map[string]string{
		"BRIDGE_ADDR":        "127.0.0.1:0",
		"BRIDGE_JWT_SECRET":  jwtSecret,
		"BRIDGE_PUBLISH_KEY": publishKey,
		"BRIDGE_ADMIN_KEY":   adminKey,
		// Shut down at once; TestRollingRestart sets these itself.
		"BRIDGE_DRAIN_DELAY":  "0s",
		"BRIDGE_DRAIN_WINDOW": "0s",
	}
	maps.Copy(vars, env)
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if vars[k] != "" {
			environ = append(environ, k+"="+vars[k])
		}
	}

	sink := newLogSink()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = sink, sink
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start bridged: %v", err)
	}
	d := &daemon{
		cmd:    cmd,
		log:    sink,
		exited: make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns:        200,
			MaxIdleConnsPerHost: 200,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	tb.Cleanup(func() { d.cleanup(tb) })

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	select {
	case line := <-sink.listening:
		if line.Demo {
			tb.Fatalf("bridged started in demo mode despite explicit secrets")
		}
		d.base = "http://" + line.Addr
	case <-d.exited:
		tb.Fatalf("bridged exited before listening: %v\n%s", d.waitErr, sink.String())
	case <-deadline.C:
		tb.Fatalf("bridged logged no listening line within %s:\n%s", startTimeout, sink.String())
	}

	for {
		r, err := d.tryDo(tb.Context(), "GET", "/readyz", "", nil, nil)
		if err == nil && r.status == http.StatusOK {
			// The internal listener's line may come after the public one serves, and the log
			// reaches the sink through a pipe: wait for it too.
			sink.mu.Lock()
			internal := sink.internal
			sink.mu.Unlock()
			if env["BRIDGE_INTERNAL_ADDR"] == "" {
				return d
			}
			if internal != "" {
				d.internal = "http://" + internal
				return d
			}
		}
		select {
		case <-d.exited:
			tb.Fatalf("bridged exited before /readyz answered 200: %v\n%s", d.waitErr, sink.String())
		case <-deadline.C:
			tb.Fatalf("/readyz did not answer 200 within %s (last: %v %v)", startTimeout, r, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cleanup stops the daemon and checks how it went.
func (d *daemon) cleanup(tb testing.TB) {
	d.client.CloseIdleConnections()
	code, killed := d.stop()
	if killed {
		tb.Errorf("bridged did not exit within %s of SIGTERM; killed it", stopTimeout)
	} else if code != 0 {
		tb.Errorf("bridged exited with code %d after SIGTERM, want 0 (%v)", code, d.waitErr)
	}
	out := d.log.String()
	if strings.Contains(out, "WARNING: DATA RACE") {
		tb.Errorf("the race detector reported a data race in bridged")
	} else if strings.Contains(out, "panic:") || strings.Contains(out, `"msg":"handler panic"`) {
		tb.Errorf("bridged panicked")
	}
	for _, secret := range []string{jwtSecret, publishKey, adminKey, "eyJ"} { // every JWT starts with eyJ
		if strings.Contains(out, secret) {
			tb.Errorf("bridged logged a secret or a token (%.6s…)", secret)
		}
	}
	if tb.Failed() {
		tb.Logf("bridged output (last 80 lines):\n%s", d.log.Tail(80))
	}
}

// stop sends SIGTERM (unless it was sent or the process has exited), waits up to stopTimeout, and
// kills the process after that. It returns the exit code and whether it had to kill. Only the
// first call acts; later calls return the same result.
func (d *daemon) stop() (code int, killed bool) {
	d.stopOnce.Do(func() {
		d.sigterm()
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-d.exited:
		case <-t.C:
			d.stopKill = true
			d.cmd.Process.Kill()
			<-d.exited
		}
		d.stopCode = d.cmd.ProcessState.ExitCode()
	})
	return d.stopCode, d.stopKill
}

// sigterm sends SIGTERM once. A second one could arrive after the daemon has restored the
// default signal action on its way out and kill it (the race runtime lingers at exit).
func (d *daemon) sigterm() {
	if d.termSent.Swap(true) {
		return
	}
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// logSink collects the daemon's output and spots the listening line.
type logSink struct {
	mu        sync.Mutex
	all       bytes.Buffer
	partial   []byte
	sent      bool
	listening chan listeningLine
	internal  string // address of the internal listener, once logged
}

type listeningLine struct {
	Msg      string `json:"msg"`
	Addr     string `json:"addr"`
	Listener string `json:"listener"`
	Demo     bool   `json:"demo"`
}

func newLogSink() *logSink { return &logSink{listening: make(chan listeningLine, 1)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := s.partial[:i]
		var l listeningLine
		if json.Unmarshal(line, &l) == nil && l.Msg == "listening" && l.Addr != "" {
			if l.Listener == "BRIDGE_INTERNAL_ADDR" {
				s.internal = l.Addr
			} else if !s.sent {
				s.sent = true
				s.listening <- l
			}
		}
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.String()
}

// Lines returns the complete lines written so far.
func (s *logSink) Lines() []string {
	out := strings.TrimSuffix(s.String(), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

func (s *logSink) Tail(n int) string {
	lines := s.Lines()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// --- tokens ---

// mintToken signs an HS256 subscriber token for sub with the daemon's secret.
func mintToken(tb testing.TB, sub string, exp time.Time) string {
	tb.Helper()
	return signToken(tb, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": sub, "exp": exp.Unix()})
}

// userToken is a subscriber token for user that is valid for an hour.
func userToken(tb testing.TB, user string) string {
	tb.Helper()
	return mintToken(tb, user, time.Now().Add(time.Hour))
}

func signToken(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign token: %v", err)
	}
	return s
}

// --- plain requests ---

// response is a whole HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) String() string {
	if r == nil {
		return "<no response>"
	}
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

// tryDo sends one request; auth, when not empty, goes in "Authorization: Bearer".
func (d *daemon) tryDo(ctx context.Context, method, path, auth string, body io.Reader, header http.Header) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, body)
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// do sends one request and fails the test if no answer comes.
func (d *daemon) do(tb testing.TB, method, path, auth, body string, header http.Header) *response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := d.tryDo(tb.Context(), method, path, auth, rd, header)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// publish posts body to /v1/publish with the publish key and returns the ids; anything but 200
// fails the test.
func (d *daemon) publish(tb testing.TB, body string) []string {
	tb.Helper()
	r := d.do(tb, "POST", "/v1/publish", publishKey, body, nil)
	if r.status != http.StatusOK {
		tb.Fatalf("publish %.200s: %s", body, r)
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	strictDecode(tb, r.body, &out)
	return out.IDs
}

// publishOne publishes one message and returns its id.
func (d *daemon) publishOne(tb testing.TB, user, event string, data any) string {
	tb.Helper()
	item := map[string]any{"user": user, "data": data}
	if event != "" {
		item["event"] = event
	}
	ids := d.publish(tb, mustJSON(tb, item))
	if len(ids) != 1 {
		tb.Fatalf("publish of one message returned ids %v", ids)
	}
	return ids[0]
}

// publishSeq publishes n messages to user, batch at a time, with data {"n":i} (i from 1) and
// returns their ids in order.
func (d *daemon) publishSeq(tb testing.TB, user string, n, batch int) []string {
	tb.Helper()
	var ids []string
	for i := 1; i <= n; i += batch {
		var items []map[string]any
		for j := i; j < i+batch && j <= n; j++ {
			items = append(items, map[string]any{"user": user, "data": map[string]int{"n": j}})
		}
		got := d.publish(tb, mustJSON(tb, map[string]any{"messages": items}))
		if len(got) != len(items) {
			tb.Fatalf("publish of %d messages returned %d ids", len(items), len(got))
		}
		ids = append(ids, got...)
	}
	return ids
}

// message is the object every transport carries.
type message struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Time  string          `json:"time"`
}

// pollAnswer is GET /v1/poll's body.
type pollAnswer struct {
	Messages []message `json:"messages"`
	Cursor   string    `json:"cursor"`
	Reset    bool      `json:"reset"`
	More     bool      `json:"more"`
}

func (p pollAnswer) ids() []string { return messageIDs(p.Messages) }

func messageIDs(ms []message) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// poll GETs /v1/poll with query q and token tok and requires 200 and a well-formed answer.
func (d *daemon) poll(tb testing.TB, tok string, q url.Values) pollAnswer {
	tb.Helper()
	r := d.do(tb, "GET", "/v1/poll?"+q.Encode(), tok, "", nil)
	return decodePoll(tb, r)
}

func decodePoll(tb testing.TB, r *response) pollAnswer {
	tb.Helper()
	if r.status != http.StatusOK {
		tb.Fatalf("poll: %s", r)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("poll Content-Type %q, want application/json", ct)
	}
	var raw map[string]json.RawMessage
	strictDecode(tb, r.body, &raw)
	for _, k := range []string{"messages", "cursor", "reset", "more"} {
		if _, ok := raw[k]; !ok {
			tb.Fatalf("poll answer has no %q: %s", k, r.body)
		}
	}
	if !bytes.HasPrefix(raw["messages"], []byte("[")) {
		tb.Fatalf(`poll answer's "messages" is %s, want an array`, raw["messages"])
	}
	var p pollAnswer
	strictDecode(tb, r.body, &p)
	for _, m := range p.Messages {
		checkMessage(tb, m)
	}
	return p
}

// checkMessage checks the fields every message object must have.
func checkMessage(tb testing.TB, m message) {
	tb.Helper()
	if m.ID == "" || m.Event == "" || len(m.Data) == 0 || m.Time == "" {
		tb.Errorf("message %+v lacks a field", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Time); err != nil {
		tb.Errorf("message %s: time %q is not RFC 3339: %v", m.ID, m.Time, err)
	}
}

// adminMessage is one entry of GET /v1/admin/messages.
type adminMessage struct {
	User string `json:"user"`
	message
}

// snapshot is everything the store holds, as the operator listing and the users' polls see it.
// Bad requests must leave it unchanged.
func (d *daemon) snapshot(tb testing.TB, users ...string) string {
	tb.Helper()
	r := d.do(tb, "GET", "/v1/admin/messages", adminKey, "", nil)
	if r.status != http.StatusOK {
		tb.Fatalf("admin listing: %s", r)
	}
	var all struct {
		Messages  []adminMessage `json:"messages"`
		Count     int            `json:"count"`
		Truncated bool           `json:"truncated"`
	}
	strictDecode(tb, r.body, &all)
	slices.SortFunc(all.Messages, func(a, b adminMessage) int {
		return strings.Compare(a.User+"\x00"+a.ID, b.User+"\x00"+b.ID)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "store: %d messages\n", all.Count)
	for _, m := range all.Messages {
		fmt.Fprintf(&b, "  %s %s %s %s\n", m.User, m.ID, m.Event, m.Data)
	}
	for _, u := range users {
		p := d.poll(tb, userToken(tb, u), nil)
		fmt.Fprintf(&b, "poll %s: %v cursor=%s reset=%v\n", u, p.ids(), p.Cursor, p.Reset)
	}
	return b.String()
}

// apiErrorCode checks that r is a JSON error answer {"error":{"code","message"}} and returns
// its code.
func apiErrorCode(tb testing.TB, r *response) string {
	tb.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("error answer Content-Type %q, want application/json (body %s)", ct, r.body)
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := strictUnmarshal(r.body, &e); err != nil {
		tb.Errorf("error answer is not {\"error\":{\"code\",\"message\"}}: %v: %s", err, r.body)
		return ""
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		tb.Errorf("error answer lacks a code or message: %s", r.body)
	}
	return e.Error.Code
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// strictDecode decodes b into v, failing on unknown fields or trailing data.
func strictDecode(tb testing.TB, b []byte, v any) {
	tb.Helper()
	if err := strictUnmarshal(b, v); err != nil {
		tb.Fatalf("decode %T: %v: %.500s", v, err, b)
	}
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return string(b)
}

// --- raw SSE frames ---

// frame is one SSE event block, parsed by the WHATWG field rules.
type frame struct {
	ID    string
	HasID bool // an id: line was present, even empty
	Event string
	Data  string // data lines joined with "\n"
	Retry string
	Raw   string
}

// parseFrame parses one event block as EventStreamReader returns it (without the blank line).
// Lines end at CRLF, LF or CR; a field's value loses one leading space; comments are skipped.
func parseFrame(raw []byte) frame {
	f := frame{Raw: string(raw)}
	var data []string
	hasData := false
	s := strings.ReplaceAll(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\r", "\n")
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" || line[0] == ':' {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "id":
			f.ID, f.HasID = value, true
		case "event":
			f.Event = value
		case "data":
			data, hasData = append(data, value), true
		case "retry":
			f.Retry = value
		}
	}
	if hasData {
		f.Data = strings.Join(data, "\n")
	}
	return f
}

// sseStream is an open GET /v1/sse read frame by frame with r3labs' EventStreamReader.
type sseStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	frames chan frame
	done   chan struct{} // closed when the stream has ended; err says how
	err    error
}

// sseRequest describes how to open a stream: the token in the Authorization header (or in the
// token query parameter when tokenInQuery), Last-Event-ID when not empty, and extra query.
type sseRequest struct {
	token        string
	tokenInQuery bool
	lastEventID  string
	query        url.Values
}

// openSSE opens a stream and requires a 200 event stream. The stream is closed at cleanup.
func (d *daemon) openSSE(tb testing.TB, sr sseRequest) *sseStream {
	tb.Helper()
	resp, cancel, err := d.trySSE(tb.Context(), sr)
	if err != nil {
		tb.Fatalf("open SSE: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		tb.Fatalf("open SSE: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		tb.Errorf("SSE Content-Type %q", ct)
	}
	s := &sseStream{resp: resp, cancel: cancel, frames: make(chan frame, 4096), done: make(chan struct{})}
	go s.read()
	tb.Cleanup(s.close)
	return s
}

// trySSE sends the request and returns the response as it is, whatever its status.
func (d *daemon) trySSE(ctx context.Context, sr sseRequest) (*http.Response, context.CancelFunc, error) {
	q := url.Values{}
	maps.Copy(q, sr.query)
	if sr.tokenInQuery {
		q.Set("token", sr.token)
	}
	u := d.base + "/v1/sse"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if sr.token != "" && !sr.tokenInQuery {
		req.Header.Set("Authorization", "Bearer "+sr.token)
	}
	if sr.lastEventID != "" {
		req.Header.Set("Last-Event-ID", sr.lastEventID)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, cancel, nil
}

func (s *sseStream) read() {
	defer close(s.done)
	r := sse.NewEventStreamReader(s.resp.Body, 1<<20)
	for {
		b, err := r.ReadEvent()
		if err != nil {
			s.err = err
			return
		}
		s.frames <- parseFrame(b)
	}
}

func (s *sseStream) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// next returns the next frame, or ok=false once the stream has ended and every frame was read.
// It fails the test if nothing happens within frameTimeout.
func (s *sseStream) next(tb testing.TB) (f frame, ok bool) {
	tb.Helper()
	t := time.NewTimer(frameTimeout)
	defer t.Stop()
	select {
	case f := <-s.frames:
		return f, true
	case <-s.done:
		select {
		case f := <-s.frames:
			return f, true
		default:
			return frame{}, false
		}
	case <-t.C:
		tb.Fatalf("no SSE frame within %s", frameTimeout)
		return frame{}, false
	}
}

// mustNext returns the next frame and fails the test if the stream ended.
func (s *sseStream) mustNext(tb testing.TB) frame {
	tb.Helper()
	f, ok := s.next(tb)
	if !ok {
		tb.Fatalf("SSE stream ended (%v), want another frame", s.err)
	}
	return f
}

// hello reads the first frame and checks it is retry: plus event: hello without an id.
func (s *sseStream) hello(tb testing.TB) frame {
	tb.Helper()
	f := s.mustNext(tb)
	if f.Event != "hello" || f.HasID || f.Retry == "" {
		tb.Fatalf("first frame %q, want retry: and event: hello without an id", f.Raw)
	}
	return f
}

// messages reads frames until it has n messages. Pings in between are skipped; any other
// control frame (hello, reset, close) fails the test.
func (s *sseStream) messages(tb testing.TB, n int) []message {
	tb.Helper()
	var out []message
	for len(out) < n {
		f := s.mustNext(tb)
		if f.Event == "ping" {
			continue
		}
		out = append(out, frameMessage(tb, f))
	}
	return out
}

// frameMessage checks that f is a message frame whose id: and event: agree with the message
// object in its data, and returns the message.
func frameMessage(tb testing.TB, f frame) message {
	tb.Helper()
	switch f.Event {
	case "hello", "ping", "reset", "close":
		tb.Fatalf("got a %q control frame where a message was due: %q", f.Event, f.Raw)
	}
	var m message
	if err := strictUnmarshal([]byte(f.Data), &m); err != nil {
		tb.Fatalf("message frame data is not a message object: %v: %q", err, f.Raw)
	}
	if !f.HasID || f.ID != m.ID || f.Event != m.Event {
		tb.Fatalf("message frame id:/event: (%q/%q) disagree with its data %s", f.ID, f.Event, f.Data)
	}
	checkMessage(tb, m)
	return m
}

// --- r3labs Client ---

// subscribe reads /v1/sse with r3labs' Client until ctx ends or the server ends the stream,
// calling fn for every event that has data (bridged's control frames included; heartbeat
// comments, which r3labs delivers as empty events, are dropped). It never reconnects on its
// own: the caller decides. lastID, when not empty, is sent as Last-Event-ID.
func (d *daemon) subscribe(ctx context.Context, tok, lastID string, query url.Values, fn func(e *sse.Event)) error {
	u := d.base + "/v1/sse"
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	c := sse.NewClient(u, sse.ClientMaxBufferSize(1<<20))
	c.Connection = d.client
	c.Headers["Authorization"] = "Bearer " + tok
	c.ReconnectStrategy = backoff.WithContext(&backoff.StopBackOff{}, ctx)
	if lastID != "" {
		c.LastEventID.Store([]byte(lastID))
	}
	return c.SubscribeRawWithContext(ctx, func(e *sse.Event) {
		if len(e.Data) == 0 {
			return
		}
		fn(e)
	})
}

// eventMessage turns an r3labs event carrying a message into the message, checking that the
// event's id and name agree with the object in its data.
func eventMessage(e *sse.Event) (message, error) {
	var m message
	if err := strictUnmarshal(e.Data, &m); err != nil {
		return m, fmt.Errorf("event %q data is not a message object: %v: %s", e.Event, err, e.Data)
	}
	if string(e.ID) != m.ID || string(e.Event) != m.Event {
		return m, fmt.Errorf("event id/name %q/%q disagree with its data %s", e.ID, e.Event, e.Data)
	}
	return m, nil
}

// collectSSE reads with r3labs' Client, from lastID, until the message with id stop arrives,
// and returns every message event in order. Control frames other than hello and ping fail the
// test.
func (d *daemon) collectSSE(tb testing.TB, tok, lastID string, query url.Values, stop string) []message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 20*time.Second)
	defer cancel()
	var got []message
	var bad []string
	err := d.subscribe(ctx, tok, lastID, query, func(e *sse.Event) {
		switch string(e.Event) {
		case "hello", "ping":
			return
		case "reset", "close":
			bad = append(bad, fmt.Sprintf("unexpected %s event %s", e.Event, e.Data))
			return
		}
		m, err := eventMessage(e)
		if err != nil {
			bad = append(bad, err.Error())
			return
		}
		got = append(got, m)
		if m.ID == stop {
			cancel()
		}
	})
	for _, b := range bad {
		tb.Error(b)
	}
	if len(got) == 0 || got[len(got)-1].ID != stop {
		tb.Fatalf("SSE read from %q ended before message %s (%v); got %v", lastID, stop, err, messageIDs(got))
	}
	return got
}

// diffIDs describes how got differs from want, or returns "" when they are equal.
func diffIDs(got, want []string) string {
	if slices.Equal(got, want) {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "got %d ids, want %d", len(got), len(want))
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			fmt.Fprintf(&b, "; first difference at index %d: got %s, want %s", i, got[i], want[i])
			break
		}
	}
	wantSet := make(map[string]bool, len(want))
	for _, id := range want {
		wantSet[id] = true
	}
	seen := make(map[string]int, len(got))
	var dups, extra []string
	for _, id := range got {
		seen[id]++
		if seen[id] == 2 {
			dups = append(dups, id)
		}
		if !wantSet[id] && seen[id] == 1 {
			extra = append(extra, id)
		}
	}
	var missing []string
	for _, id := range want {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	list := func(name string, ids []string) {
		if len(ids) > 0 {
			fmt.Fprintf(&b, "; %d %s %v", len(ids), name, ids[:min(len(ids), 10)])
			if len(ids) > 10 {
				b.WriteString("…")
			}
		}
	}
	list("missing", missing)
	list("duplicated", dups)
	list("unexpected", extra)
	if len(missing) == 0 && len(dups) == 0 && len(extra) == 0 {
		b.WriteString("; same ids in another order")
	}
	return b.String()
}
