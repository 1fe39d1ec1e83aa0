package main

import (
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// mustLoad loads a configuration from the secrets plus env, failing the test on an error.
func mustLoad(tb testing.TB, env ...string) Config {
	tb.Helper()
	cfg, err := Load(append(env, secrets...))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func TestDeriveMemoryLimit(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name  string
		env   []string
		conns int64
		want  int64
	}{
		{"defaults, idle", nil, 0, 256*MiB*3/2 + 32*MiB}, // 416 MiB
		{"defaults, 10000 connections", nil, 10_000, 416*MiB + 10_000*32<<10},
		// The long soak: 96 + 250 + 32 = 378 MiB, under its RSS bound of 410 MiB.
		{"the long soak", []string{"BRIDGE_MAX_MEMORY=64MiB"}, 4000, 96*MiB + 4000*32<<10 + 32*MiB},
		{"odd store size", []string{"BRIDGE_MAX_MEMORY=3MiB"}, 1, 3*MiB + 3*MiB/2 + 32<<10 + 32*MiB},
		{"redis holds the messages", []string{"BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=redis://h:1"}, 100, 100*32<<10 + 32*MiB},
		{"a miscount never lowers it below the rest", nil, -3, 416 * MiB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := deriveMemoryLimit(mustLoad(t, tt.env...), tt.conns); got != tt.want {
				t.Fatalf("deriveMemoryLimit = %d (%.1f MiB), want %d (%.1f MiB)", got, float64(got)/MiB, tt.want, float64(tt.want)/MiB)
			}
		})
	}
}

func TestPlanMemoryLimit(t *testing.T) {
	derived := deriveMemoryLimit(mustLoad(t), 0)
	tests := []struct {
		name    string
		env     []string
		source  string
		limit   int64 // with no connection open
		applied bool  // bridged sets it, rather than leave the runtime's GOMEMLIMIT
		ignored bool
	}{
		{name: "nothing set", source: "derived", limit: derived, applied: true},
		{name: "BRIDGE_MEMORY_LIMIT", env: []string{"BRIDGE_MEMORY_LIMIT=1GiB"}, source: "BRIDGE_MEMORY_LIMIT", limit: 1 << 30, applied: true},
		{name: "BRIDGE_MEMORY_LIMIT=0 derives", env: []string{"BRIDGE_MEMORY_LIMIT=0"}, source: "derived", limit: derived, applied: true},
		{name: "GOMEMLIMIT", env: []string{"GOMEMLIMIT=346MiB"}, source: "GOMEMLIMIT"},
		{name: "GOMEMLIMIT=off", env: []string{"GOMEMLIMIT=off"}, source: "GOMEMLIMIT"},
		// The runtime reads an empty GOMEMLIMIT as unset.
		{name: "GOMEMLIMIT empty", env: []string{"GOMEMLIMIT="}, source: "derived", limit: derived, applied: true},
		{name: "GOMEMLIMIT wins", env: []string{"BRIDGE_MEMORY_LIMIT=1GiB", "GOMEMLIMIT=2GiB"}, source: "GOMEMLIMIT", ignored: true},
		{name: "a look-alike is not GOMEMLIMIT", env: []string{"XGOMEMLIMIT=1GiB", "GOMEMLIMITX=1GiB"}, source: "derived", limit: derived, applied: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planMemoryLimit(mustLoad(t, tt.env...), append(tt.env, "PATH=/bin"))
			limit, applied := p.limit(0)
			if p.source != tt.source || limit != tt.limit || applied != tt.applied || p.ignored != tt.ignored {
				t.Fatalf("source %q, limit %d, applied %v, ignored %v; want %q, %d, %v, %v",
					p.source, limit, applied, p.ignored, tt.source, tt.limit, tt.applied, tt.ignored)
			}
		})
	}
}

func TestLoadMemoryLimit(t *testing.T) {
	if cfg := mustLoad(t, "BRIDGE_MEMORY_LIMIT=1GiB"); cfg.MemoryLimit != 1<<30 {
		t.Fatalf("BRIDGE_MEMORY_LIMIT=1GiB read as %d", cfg.MemoryLimit)
	}
	if cfg := mustLoad(t); cfg.MemoryLimit != 0 {
		t.Fatalf("unset BRIDGE_MEMORY_LIMIT read as %d, want 0 (derived)", cfg.MemoryLimit)
	}
	// With Redis, BRIDGE_MAX_MEMORY is not used, so a small limit is fine.
	mustLoad(t, "BRIDGE_MEMORY_LIMIT=64MiB", "BRIDGE_STORE=redis", "BRIDGE_REDIS_URL=redis://h:1")
}

// recorder stands in for debug.SetMemoryLimit.
type recorder struct{ calls []int64 }

func (r *recorder) set(n int64) int64 {
	r.calls = append(r.calls, n)
	return 123 // what the runtime would report for -1
}

func TestMemoryLimiterFollowsConnections(t *testing.T) {
	cfg := mustLoad(t, "BRIDGE_MAX_MEMORY=64MiB")
	conns := new(atomic.Int64)
	m := newMemoryLimiter(planMemoryLimit(cfg, nil), conns)
	var r recorder
	m.set = r.set
	core, logs := observer.New(zapcore.InfoLevel)
	m.start(zap.New(core))

	base := int64(96<<20 + 32<<20)
	conns.Store(10)
	m.update()
	m.update() // unchanged: not set again
	conns.Store(2)
	m.update()
	want := []int64{base, base + 10*32<<10, base + 2*32<<10}
	if len(r.calls) != len(want) || r.calls[0] != want[0] || r.calls[1] != want[1] || r.calls[2] != want[2] {
		t.Fatalf("limits set %v, want %v", r.calls, want)
	}
	lines := logs.FilterMessage("memory limit").All()
	if len(lines) != 1 || logs.Len() != 1 {
		t.Fatalf("want one log line, got %d: %v", logs.Len(), logs.All())
	}
	if f := lines[0].ContextMap(); f["source"] != "derived" || f["limit_bytes"] != base || f["limit"] != "128.0MiB" || f["rule"] != limitRule {
		t.Fatalf("log fields %v", f)
	}
}

func TestMemoryLimiterLeavesGOMEMLIMIT(t *testing.T) {
	cfg := mustLoad(t, "BRIDGE_MEMORY_LIMIT=1GiB")
	m := newMemoryLimiter(planMemoryLimit(cfg, []string{"GOMEMLIMIT=346MiB"}), new(atomic.Int64))
	var r recorder
	m.set = r.set
	core, logs := observer.New(zapcore.InfoLevel)
	m.start(zap.New(core))
	m.update()
	m.follow(t.Context(), time.Millisecond) // returns at once: nothing to follow
	if len(r.calls) != 1 || r.calls[0] != -1 {
		t.Fatalf("SetMemoryLimit calls %v; want only a read (-1)", r.calls)
	}
	info := logs.FilterMessage("memory limit").All()
	if len(info) != 1 || info[0].ContextMap()["source"] != "GOMEMLIMIT" || info[0].ContextMap()["GOMEMLIMIT"] != "346MiB" ||
		info[0].ContextMap()["limit_bytes"] != int64(123) {
		t.Fatalf("log %v", logs.All())
	}
	if logs.FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Fatalf("BRIDGE_MEMORY_LIMIT ignored without a warning: %v", logs.All())
	}
}

func TestMemoryLimiterFixed(t *testing.T) {
	m := newMemoryLimiter(planMemoryLimit(mustLoad(t, "BRIDGE_MEMORY_LIMIT=1GiB"), nil), new(atomic.Int64))
	var r recorder
	m.set = r.set
	m.start(zap.NewNop())
	m.conns.Store(1000)
	m.update()
	m.follow(t.Context(), time.Millisecond) // returns at once: nothing to follow
	if len(r.calls) != 1 || r.calls[0] != 1<<30 {
		t.Fatalf("SetMemoryLimit calls %v; want one, 1GiB", r.calls)
	}
}

func TestMiB(t *testing.T) {
	for n, want := range map[int64]string{416 << 20: "416.0MiB", 378<<20 + 512<<10: "378.5MiB", math.MaxInt64: "off"} {
		if got := mib(n); got != want {
			t.Errorf("mib(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCountListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := new(atomic.Int64)
	cl := countListener{Listener: ln, open: open}
	defer cl.Close()
	accept := func() (server, client net.Conn) {
		t.Helper()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		c, err := cl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, client
	}
	a, aClient := accept()
	b, _ := accept()
	if n := open.Load(); n != 2 {
		t.Fatalf("%d open after two accepts", n)
	}
	// net/http half-closes through CloseWrite; it must reach the TCP connection.
	if err := a.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	aClient.SetReadDeadline(time.Now().Add(10 * time.Second)) // only catches a hang
	if _, err := aClient.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after CloseWrite: %v, want EOF", err)
	}
	a.Close()
	a.Close() // closing twice counts once
	if n := open.Load(); n != 1 {
		t.Fatalf("%d open after closing one of two, twice", n)
	}
	b.Close()
	if n := open.Load(); n != 0 {
		t.Fatalf("%d open after closing both", n)
	}
}

func TestCgroupMemoryMax(t *testing.T) {
	write := func(t *testing.T, root, name, content string) {
		t.Helper()
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, file, content string
		want                int64
	}{
		{"v2 limit", "memory.max", "536870912\n", 512 << 20},
		{"v2 unlimited", "memory.max", "max\n", 0},
		{"v1 limit", "memory/memory.limit_in_bytes", "1073741824\n", 1 << 30},
		{"v1 unlimited sentinel", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0},
		{"garbage", "memory.max", "lots\n", 0},
		{"no cgroup files", "other", "1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, tt.file, tt.content)
			if got := cgroupMemoryMax(root); got != tt.want {
				t.Fatalf("cgroupMemoryMax = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestDerivedLimitStaysUnderTheCgroup(t *testing.T) {
	cfg := mustLoad(t, "BRIDGE_MAX_MEMORY=256MiB")
	p := planMemoryLimit(cfg, nil)
	p.ceiling = 400 << 20 // a container smaller than the rule's 416 MiB for an idle node
	if got, _ := p.limit(0); got != 400<<20/10*9 {
		t.Fatalf("limit %d with a 400 MiB cgroup, want 90 %% of it", got)
	}
	p.ceiling = 4 << 30 // a roomy container leaves the rule alone
	if got, _ := p.limit(100); got != deriveMemoryLimit(cfg, 100) {
		t.Fatalf("limit %d with a 4 GiB cgroup, want the rule's %d", got, deriveMemoryLimit(cfg, 100))
	}
	fixed := planMemoryLimit(mustLoad(t, "BRIDGE_MEMORY_LIMIT=1GiB"), nil)
	fixed.ceiling = 400 << 20 // an operator's fixed limit is theirs
	if got, _ := fixed.limit(0); got != 1<<30 {
		t.Fatalf("fixed limit %d under a cgroup, want 1 GiB", got)
	}
}
