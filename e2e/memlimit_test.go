package e2e

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memLimit reads the Go runtime's memory limit from d's /metrics.
func (d *daemon) memLimit(tb testing.TB) int64 {
	tb.Helper()
	return int64(d.metric(tb, "go_gc_gomemlimit_bytes"))
}

// metric reads one unlabelled metric from d's /metrics.
func (d *daemon) metric(tb testing.TB, name string) float64 {
	tb.Helper()
	r := d.do(tb, "GET", "/metrics", adminKey, "", nil)
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("%s %q: %v", name, v, err)
			}
			return f
		}
	}
	tb.Fatalf("no %s in /metrics: %s", name, r)
	return 0
}

// TestMemoryLimit checks the soft memory limit bridged gives the runtime, as /metrics reports
// it: fixed by BRIDGE_MEMORY_LIMIT, left alone when GOMEMLIMIT is set, and otherwise derived
// and following the open connections.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	const MiB = 1 << 20
	t.Run("BRIDGE_MEMORY_LIMIT", func(t *testing.T) {
		t.Parallel()
		d := startDaemon(t, map[string]string{"BRIDGE_MEMORY_LIMIT": "300MiB"})
		if got := d.memLimit(t); got != 300*MiB {
			t.Fatalf("limit %d, want 300 MiB", got)
		}
	})
	t.Run("GOMEMLIMIT wins", func(t *testing.T) {
		t.Parallel()
		d := startDaemon(t, map[string]string{"BRIDGE_MEMORY_LIMIT": "300MiB", "GOMEMLIMIT": "400MiB"})
		if got := d.memLimit(t); got != 400*MiB {
			t.Fatalf("limit %d, want GOMEMLIMIT's 400 MiB", got)
		}
		if log := d.log.String(); !strings.Contains(log, `"source":"GOMEMLIMIT"`) || !strings.Contains(log, "BRIDGE_MEMORY_LIMIT is ignored") {
			t.Fatalf("the log does not say GOMEMLIMIT wins:\n%s", d.log.Tail(20))
		}
	})
	t.Run("derived", func(t *testing.T) {
		t.Parallel()
		// The connections below send nothing; give them longer than the test to send headers.
		d := startDaemon(t, map[string]string{"BRIDGE_MAX_MEMORY": "64MiB", "BRIDGE_READ_HEADER_TIMEOUT": "2m"})
		const idle = 96*MiB + 32*MiB // 1.5 × 64 MiB + 32 MiB, and then 32 KiB per open connection
		if got := d.memLimit(t); got < idle || got > idle+8*32<<10 {
			t.Fatalf("limit %d, want 128 MiB and a few connections' 32 KiB", got)
		}
		const n = 50
		addr := strings.TrimPrefix(d.base, "http://")
		var conns []net.Conn
		for range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		waitLimit(t, d, "rise with 50 connections", func(l int64) bool { return l >= idle+n*32<<10 })
		for _, c := range conns {
			c.Close()
		}
		waitLimit(t, d, "fall once they close", func(l int64) bool { return l < idle+n*32<<10 })
	})
}

// waitLimit polls d's memory limit until ok accepts it; the bound only catches a hang.
func waitLimit(t *testing.T, d *daemon, what string, ok func(int64) bool) {
	t.Helper()
	deadline := time.Now().Add(requestTimeout)
	for {
		l := d.memLimit(t)
		if ok(l) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the limit did not %s within %s: %d", what, requestTimeout, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
