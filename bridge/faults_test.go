package bridge

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func demoHarness(t *testing.T) *harness {
	return newHarness(t, func(o *Options) { o.Demo = &Demo{Users: []string{"alice"}} })
}

func TestDemoFaultsAreOffOutsideDemoMode(t *testing.T) {
	h := newHarness(t, nil)
	for _, m := range []string{"GET", "POST"} {
		if rec := h.do(m, "/demo/faults", "", `{"ws":true}`); rec.Code != http.StatusNotFound {
			t.Fatalf("%s /demo/faults outside demo mode: %d", m, rec.Code)
		}
	}
	if h.srv.faults != nil {
		t.Fatal("fault switchboard exists outside demo mode")
	}
}

func TestDemoFaultSwitchboard(t *testing.T) {
	h := demoHarness(t)
	rec := h.do("POST", "/demo/faults", "", `{"ws":true,"poll":true}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ws":true`) || !strings.Contains(rec.Body.String(), `"sse":false`) {
		t.Fatalf("set faults: %d %s", rec.Code, rec.Body)
	}
	if rec := h.do("POST", "/demo/faults", "", `{"dns":true}`); rec.Code != http.StatusBadRequest {
		t.Fatalf("unknown fault: %d", rec.Code)
	}
	tok := token(t, "alice", time.Hour)
	if rec := h.do("GET", "/v1/poll", tok, ""); rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != "demo_fault" {
		t.Fatalf("poll while broken: %d %s", rec.Code, rec.Body)
	}
	ts := h.serve()
	if _, resp, err := dialWS(t, ts.URL, "", http.Header{"Authorization": {"Bearer " + tok}}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ws while broken: %v %v", resp, err)
	}
	h.do("POST", "/demo/faults", "", `{"ws":false,"poll":false}`)
	if rec := h.do("GET", "/v1/poll", tok, ""); rec.Code != http.StatusOK {
		t.Fatalf("poll after heal: %d", rec.Code)
	}
	mustDialWS(t, ts.URL, "", tok).expect("hello")
}

func TestDemoFaultBreakingARungDropsItsConnections(t *testing.T) {
	h := demoHarness(t)
	ts := h.serve()
	tok := token(t, "alice", time.Hour)
	c := mustDialWS(t, ts.URL, "", tok)
	c.expect("hello")
	s := openSSE(t, ts.URL, "", tok, nil)
	s.expect("hello")

	h.do("POST", "/demo/faults", "", `{"ws":true,"sse":true}`)
	if _, err := c.read(); err == nil {
		t.Fatal("WebSocket still open after its rung was broken")
	}
	if _, err := io.ReadAll(s.resp.Body); err != nil {
		t.Fatalf("SSE stream did not end cleanly: %v", err)
	}

	// A held stream answers 200 and then never sends a frame; draining ends it empty.
	held := openSSE(t, ts.URL, "", tok, nil)
	if held.resp.StatusCode != http.StatusOK {
		t.Fatalf("held SSE: %d", held.resp.StatusCode)
	}
	h.publish(`{"user":"alice","data":1}`)
	h.srv.Drain()
	if b, err := io.ReadAll(held.resp.Body); err != nil || len(b) != 0 {
		t.Fatalf("held stream sent %q (%v), want nothing", b, err)
	}
}

func TestDemoFaultCutsLongRequests(t *testing.T) {
	h := demoHarness(t)
	ts := h.serve()
	h.do("POST", "/demo/faults", "", `{"longpoll":true}`)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/v1/poll?wait=25s", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "alice", time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("long-poll under the cut fault: %d, want 504 as from a gateway", resp.StatusCode)
	}
}
