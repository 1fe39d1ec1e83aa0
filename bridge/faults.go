package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Demo-mode fault injection: the demo page's break and heal buttons, so a person can watch the
// browser client step down the ladder and climb back. Server.faults is nil outside demo mode,
// and every method of a nil *faults reports that nothing is broken.

// faultRung names what a fault breaks.
type faultRung int

const (
	faultWS       faultRung = iota // refuse WebSocket upgrades on /v1/ws
	faultSSE                       // hold /v1/sse like a buffering proxy: headers, then never a frame
	faultLongPoll                  // cut any long request (long-poll, SSE, WebSocket) after demoCutAfter
	faultPoll                      // answer every /v1/poll with 503
	numFaults
)

var faultNames = [numFaults]string{"ws", "sse", "longpoll", "poll"}

// demoCutAfter is how long a request may last while the long-poll fault is on: shorter than the
// client's shortest useful long-poll wait, as a gateway with an aggressive timeout would be.
const demoCutAfter = 3 * time.Second

var errDemoCut = &apiError{Status: http.StatusGatewayTimeout, Code: "demo_fault", Message: "cut on purpose by the demo's fault controls, as a gateway timeout would"}

var errDemoFault = &apiError{Status: http.StatusServiceUnavailable, Code: "demo_fault", Message: "broken on purpose by the demo's fault controls", RetryAfter: 1}

// faults is the demo's switchboard. It is safe for concurrent use.
type faults struct {
	mu     sync.Mutex
	on     [numFaults]bool
	broken [numFaults]context.Context // cancelled when the fault is switched on, then replaced
	cancel [numFaults]context.CancelFunc
}

func newFaults() *faults {
	f := &faults{}
	for i := range f.broken {
		f.broken[i], f.cancel[i] = context.WithCancel(context.Background())
	}
	return f
}

func (f *faults) active(r faultRung) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on[r]
}

func (f *faults) holdSSE() bool { return f.active(faultSSE) }

// set switches a fault. Switching one on also ends the connections it would have refused, as
// a proxy that is reconfigured drops what it carried, so the page reacts at once.
func (f *faults) set(r faultRung, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on && !f.on[r] {
		f.cancel[r]()
		f.broken[r], f.cancel[r] = context.WithCancel(context.Background())
	}
	f.on[r] = on
}

func (f *faults) snapshot() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]bool, numFaults)
	for i, name := range faultNames {
		m[name] = f.on[i]
	}
	return m
}

// watch returns a context that ends with ctx, when one of rungs is switched on later, or (when
// faultLongPoll is among them and on now) after demoCutAfter. stop releases it. Outside demo
// mode it returns ctx itself.
func (f *faults) watch(ctx context.Context, rungs ...faultRung) (context.Context, context.CancelFunc) {
	if f == nil {
		return ctx, func() {}
	}
	cut := false
	ctx, cancel := context.WithCancel(ctx)
	stops := make([]func() bool, 0, len(rungs))
	f.mu.Lock()
	for _, r := range rungs {
		stops = append(stops, context.AfterFunc(f.broken[r], cancel))
		cut = cut || r == faultLongPoll && f.on[r]
	}
	f.mu.Unlock()
	var timer *time.Timer
	if cut {
		timer = time.AfterFunc(demoCutAfter, cancel)
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		if timer != nil {
			timer.Stop()
		}
		cancel()
	}
}

// demoFaults handles GET and POST /demo/faults: the switchboard's state, and changes to it as
// {"ws":true,"sse":false,…} (names left out stay as they are).
func (s *Server) demoFaults(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodPost {
		var body map[string]bool
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024))
		if err := dec.Decode(&body); err != nil {
			return badRequest("bad_json", `want {"ws":bool,"sse":bool,"longpoll":bool,"poll":bool}`)
		}
		changes := make(map[faultRung]bool, len(body))
	names:
		for name, on := range body {
			for i, n := range faultNames {
				if n == name {
					changes[faultRung(i)] = on
					continue names
				}
			}
			return badRequest("bad_fault", "unknown fault %q; want ws, sse, longpoll or poll", name)
		}
		for r, on := range changes {
			s.faults.set(r, on)
		}
	}
	body, err := json.Marshal(s.faults.snapshot())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
