// Package faultproxy is a reverse proxy for tests that breaks traffic the way real
// intermediaries do: it refuses WebSocket upgrades, buffers text/event-stream responses, cuts
// any request that lasts too long, fails chosen requests with a status, or forwards a request
// and then loses its response. The browser tests put it between Chromium and bridged (and the
// example app), and the publisher tests between the publisher and bridged.
//
// Faults are changed through Set, or over HTTP at /__faultproxy/faults (GET and PUT, JSON
// Faults), so a test written in any language can drive it; /__faultproxy/stats reports the
// requests it carries.
package faultproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Faults is what the proxy breaks. The zero value breaks nothing.
type Faults struct {
	// RefuseUpgrade answers every WebSocket upgrade with 502, as a proxy that does not speak
	// WebSocket does. Switching it on also drops the WebSockets open through the proxy.
	RefuseUpgrade bool `json:"refuseUpgrade"`
	// BufferEventStream holds text/event-stream bodies until 64 KiB have arrived or the stream
	// ends, as nginx does with proxy_buffering on. Switching it on also drops open streams.
	BufferEventStream bool `json:"bufferEventStream"`
	// CutAfterMs ends any request (long-poll, SSE, WebSocket) still open after this many
	// milliseconds, as a gateway timeout does: 504 if no answer has started, else the
	// connection is dropped mid-body; 0 cuts nothing. Setting it ends every long-lived
	// request open at the time.
	CutAfterMs int `json:"cutAfterMs"`
	// Fail answers requests with a status instead of forwarding them.
	Fail []FailRule `json:"fail,omitempty"`
	// Drop forwards requests and then cuts the connection instead of answering, so the backend
	// acted but the client never hears of it.
	Drop []DropRule `json:"drop,omitempty"`
}

// FailRule answers the next Count requests whose path is Path with Status and, when
// RetryAfter > 0, a Retry-After header in seconds.
type FailRule struct {
	Path       string `json:"path"`
	Status     int    `json:"status"`
	RetryAfter int    `json:"retryAfter,omitempty"`
	Count      int    `json:"count"`
}

// DropRule loses the response of the next Count requests whose path is Path.
type DropRule struct {
	Path  string `json:"path"`
	Count int    `json:"count"`
}

// Stats is what the proxy has carried. Kinds are "ws", "sse", "longpoll" and "other".
type Stats struct {
	Open     map[string]int `json:"open"`     // requests in flight, by kind
	Requests map[string]int `json:"requests"` // requests seen, by kind
	ByPath   map[string]int `json:"byPath"`   // requests seen, by path
	Failed   int            `json:"failed"`   // answered by a FailRule
	Dropped  int            `json:"dropped"`  // lost by a DropRule
	Cut      int            `json:"cut"`      // cut by CutAfterMs or by a fault switched on
	Refused  int            `json:"refused"`  // WebSocket upgrades refused
}

// Proxy is the fault-injecting reverse proxy. It is an http.Handler, safe for concurrent use.
type Proxy struct {
	routes []route
	rp     *httputil.ReverseProxy

	mu       sync.Mutex
	faults   Faults
	inflight map[*inflight]struct{}
	stats    Stats
}

type route struct {
	prefix string
	target *url.URL
}

type inflight struct {
	kind   string
	cancel context.CancelCauseFunc
}

// errCut is the cause of a request the proxy cut on purpose.
var errCut = errors.New("faultproxy: cut")

type kindKey struct{}

// New returns a proxy to target. routes maps path prefixes to other targets (the prefix is
// stripped: "/app/" -> http://app sends /app/ws to http://app/ws); the longest prefix wins.
func New(target *url.URL, routes map[string]*url.URL) *Proxy {
	p := &Proxy{inflight: map[*inflight]struct{}{}}
	p.stats = Stats{Open: map[string]int{}, Requests: map[string]int{}, ByPath: map[string]int{}}
	for prefix, t := range routes {
		p.routes = append(p.routes, route{prefix, t})
	}
	sort.Slice(p.routes, func(i, j int) bool { return len(p.routes[i].prefix) > len(p.routes[j].prefix) })
	p.routes = append(p.routes, route{"/", target})
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			rt := p.route(r.In.URL.Path)
			r.SetURL(rt.target)
			if rt.prefix != "/" {
				r.Out.URL.Path = "/" + strings.TrimPrefix(r.In.URL.Path, rt.prefix)
				r.Out.URL.RawPath = ""
			}
			r.Out.Host = r.In.Host // as a proxy in front of one site does, so Origin checks pass
			r.SetXForwarded()
		},
		ModifyResponse: p.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(context.Cause(r.Context()), errCut) {
				// A gateway that times out before the backend answers says 504. (Dropping the
				// connection instead would be hidden: browsers retry a GET whose reused
				// connection was reset.) A response already streaming is cut mid-body.
				http.Error(w, "faultproxy: gateway timeout", http.StatusGatewayTimeout)
				return
			}
			http.Error(w, "faultproxy: backend: "+err.Error(), http.StatusBadGateway)
		},
	}
	return p
}

func (p *Proxy) route(path string) route {
	for _, rt := range p.routes {
		if strings.HasPrefix(path, rt.prefix) {
			return rt
		}
	}
	return p.routes[len(p.routes)-1]
}

// Set replaces the faults. Faults switched on drop the open requests they would have broken.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.faults
	p.faults = f
	drop := map[string]bool{}
	if f.RefuseUpgrade && !old.RefuseUpgrade {
		drop["ws"] = true
	}
	if f.BufferEventStream && !old.BufferEventStream {
		drop["sse"] = true
	}
	if f.CutAfterMs > 0 && f.CutAfterMs != old.CutAfterMs {
		drop["ws"], drop["sse"], drop["longpoll"] = true, true, true
	}
	for in := range p.inflight {
		if drop[in.kind] {
			p.stats.Cut++
			in.cancel(errCut)
		}
	}
}

// Faults returns the faults in force.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults
	f.Fail = append([]FailRule(nil), f.Fail...)
	f.Drop = append([]DropRule(nil), f.Drop...)
	return f
}

// Stats returns a copy of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open, s.Requests, s.ByPath = copyMap(s.Open), copyMap(s.Requests), copyMap(s.ByPath)
	return s
}

func copyMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func kindOf(r *http.Request) string {
	switch {
	case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return "ws"
	case strings.HasSuffix(r.URL.Path, "/sse"):
		return "sse"
	case r.URL.Query().Get("wait") != "":
		return "longpoll"
	}
	return "other"
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/__faultproxy/") {
		p.control(w, r)
		return
	}
	kind := kindOf(r)
	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), kindKey{}, kind))
	defer cancel(nil)
	in := &inflight{kind: kind, cancel: cancel}

	p.mu.Lock()
	f := p.faults
	p.stats.Requests[kind]++
	p.stats.ByPath[r.URL.Path]++
	fail := takeFail(&p.faults, r.URL.Path)
	drop := fail == nil && takeDrop(&p.faults, r.URL.Path)
	refuse := kind == "ws" && f.RefuseUpgrade
	switch {
	case fail != nil:
		p.stats.Failed++
	case refuse:
		p.stats.Refused++
	default:
		p.inflight[in] = struct{}{}
		p.stats.Open[kind]++
	}
	p.mu.Unlock()

	switch {
	case fail != nil:
		if fail.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fail.RetryAfter))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(fail.Status)
		io.WriteString(w, `{"error":{"code":"faultproxy","message":"failed on purpose by the test's proxy"}}`)
		return
	case refuse:
		http.Error(w, "faultproxy: WebSocket upgrades are refused here", http.StatusBadGateway)
		return
	}
	defer func() {
		p.mu.Lock()
		delete(p.inflight, in)
		p.stats.Open[kind]--
		p.mu.Unlock()
	}()

	if f.CutAfterMs > 0 {
		t := time.AfterFunc(time.Duration(f.CutAfterMs)*time.Millisecond, func() {
			p.mu.Lock()
			p.stats.Cut++
			p.mu.Unlock()
			cancel(errCut)
		})
		defer t.Stop()
	}
	if drop {
		p.dropResponse(w, r.WithContext(ctx))
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

func takeFail(f *Faults, path string) *FailRule {
	for i := range f.Fail {
		if f.Fail[i].Path == path && f.Fail[i].Count > 0 {
			f.Fail[i].Count--
			rule := f.Fail[i]
			return &rule
		}
	}
	return nil
}

func takeDrop(f *Faults, path string) bool {
	for i := range f.Drop {
		if f.Drop[i].Path == path && f.Drop[i].Count > 0 {
			f.Drop[i].Count--
			return true
		}
	}
	return false
}

// dropResponse forwards r, waits for the whole answer, and then cuts the client's connection
// without a byte of it.
func (p *Proxy) dropResponse(w http.ResponseWriter, r *http.Request) {
	p.rp.ServeHTTP(&discard{header: http.Header{}}, r)
	p.mu.Lock()
	p.stats.Dropped++
	p.mu.Unlock()
	panic(http.ErrAbortHandler)
}

type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if ct != "text/event-stream" {
		return nil
	}
	p.mu.Lock()
	buffer := p.faults.BufferEventStream
	p.mu.Unlock()
	if buffer {
		resp.Body = &holdingBody{rc: resp.Body, limit: 64 << 10}
	}
	return nil
}

// holdingBody gives nothing to its reader until limit bytes have arrived or the body ends.
type holdingBody struct {
	rc      io.ReadCloser
	limit   int
	held    []byte
	release bool
	err     error
}

func (h *holdingBody) Read(b []byte) (int, error) {
	for !h.release {
		buf := make([]byte, 4096)
		n, err := h.rc.Read(buf)
		h.held = append(h.held, buf[:n]...)
		if err != nil {
			h.err, h.release = err, true
		} else if len(h.held) >= h.limit {
			h.release = true
		}
	}
	if len(h.held) > 0 {
		n := copy(b, h.held)
		h.held = h.held[n:]
		return n, nil
	}
	if h.err != nil {
		return 0, h.err
	}
	return h.rc.Read(b)
}

func (h *holdingBody) Close() error { return h.rc.Close() }

func (p *Proxy) control(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/__faultproxy/faults" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var f Faults
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			http.Error(w, `{"error":"bad faults: `+strconv.Quote(err.Error())+`"}`, http.StatusBadRequest)
			return
		}
		p.Set(f)
		json.NewEncoder(w).Encode(p.Faults())
	case r.URL.Path == "/__faultproxy/faults" && r.Method == http.MethodGet:
		json.NewEncoder(w).Encode(p.Faults())
	case r.URL.Path == "/__faultproxy/stats" && r.Method == http.MethodGet:
		json.NewEncoder(w).Encode(p.Stats())
	default:
		http.Error(w, `{"error":"no such control"}`, http.StatusNotFound)
	}
}
