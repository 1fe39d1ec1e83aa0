package main

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The soft memory limit bridged gives the Go runtime (runtime/debug.SetMemoryLimit). Without
// one, the collector's default (GOGC=100) lets the heap grow to about twice what was live after
// the last collection, so a full store and thousands of connections can sit beside as much
// garbage: the long soak peaked at 466 MiB of RSS for 64 MiB of store and 4,000 connections
// (docs/benchmarks.md, "Soak (issue 3)"). The limit keeps GOGC as it is, so a small node is
// not collected more often than Go's default; it only makes the collector work harder near it.
//
// Unless GOMEMLIMIT or BRIDGE_MEMORY_LIMIT fixes it, the limit follows the open connections:
//
//	limit = 1.5 × BRIDGE_MAX_MEMORY (memory store only) + open connections × 32 KiB + 32 MiB
//
// The terms:
//   - The store: its accounted bytes never under-count its heap (docs/benchmarks.md), so
//     BRIDGE_MAX_MEMORY bounds its live data. The other half is the collector's headroom for it,
//     what GOGC=50 would give it: with a full store the collector runs about twice as often as
//     under Go's default, not continually. With Redis the messages live in Redis: no term.
//   - 32 KiB per open TCP connection (streams, long-polls, keep-alive and publisher connections,
//     WebSockets): about twice the RSS each connection added in the long soak with parked
//     connections (~16 KB with traffic and churn; 57–63 KiB before them), goroutine stacks,
//     buffers and the collector's share of them included. Counted, not taken from
//     BRIDGE_MAX_CONNECTIONS: a limit sized for 50,000 connections would bound nothing on a node
//     holding 4,000, and one that ignored connections would sit below their live data.
//   - 32 MiB: an idle node's runtime and heap (10–16 MiB of RSS) and request bodies in flight.
const (
	limitPerConn = 32 << 10
	limitBase    = 32 << 20
)

// limitRule is deriveMemoryLimit in words, for the startup log.
const limitRule = "1.5 × BRIDGE_MAX_MEMORY (memory store) + 32KiB × open connections + 32MiB, updated every second"

// deriveMemoryLimit returns the soft memory limit in bytes for a node configured by cfg holding
// conns open connections.
func deriveMemoryLimit(cfg Config, conns int64) int64 {
	var store int64
	if cfg.Store == "memory" {
		store = int64(cfg.MaxMemory) + int64(cfg.MaxMemory)/2
	}
	return store + max(conns, 0)*limitPerConn + limitBase
}

// memoryLimit says where bridged's soft memory limit comes from.
type memoryLimit struct {
	// source is "GOMEMLIMIT" (the runtime read it at start; bridged leaves it alone),
	// "BRIDGE_MEMORY_LIMIT" (fixed) or "derived" (deriveMemoryLimit, as connections come and go).
	source string
	// goMemLimit is GOMEMLIMIT as set, for the log.
	goMemLimit string
	// ignored is true when BRIDGE_MEMORY_LIMIT is set but GOMEMLIMIT wins.
	ignored bool
	cfg     Config
	// ceiling is the memory limit of bridged's cgroup (a container's), or 0: a derived limit
	// stays at 90 % of it, so the runtime collects harder before the kernel kills the process.
	ceiling int64
}

// cgroupRoot is where a container sees its own cgroup (cgroup namespaces, the default of Docker
// and Kubernetes on cgroup v2).
const cgroupRoot = "/sys/fs/cgroup"

// cgroupMemoryMax returns the memory limit of the cgroup mounted at root: memory.max (cgroup v2)
// or memory/memory.limit_in_bytes (v1). It returns 0 when there is none ("max", v1's huge
// sentinel) or it cannot be read.
func cgroupMemoryMax(root string) int64 {
	for _, name := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0
		}
		return n
	}
	return 0
}

// planMemoryLimit picks the limit's source from cfg and environ (KEY=value pairs). GOMEMLIMIT
// wins when it is set and not empty, as the runtime reads it; "off" then means no limit.
func planMemoryLimit(cfg Config, environ []string) memoryLimit {
	p := memoryLimit{source: "derived", cfg: cfg, goMemLimit: runtimeEnv(environ, "GOMEMLIMIT")}
	switch {
	case p.goMemLimit != "":
		p.source, p.ignored = "GOMEMLIMIT", cfg.MemoryLimit != 0
	case cfg.MemoryLimit != 0:
		p.source = "BRIDGE_MEMORY_LIMIT"
	}
	return p
}

// runtimeEnv returns the value of the runtime's variable key in environ (KEY=value pairs): the
// first, as the runtime reads it.
func runtimeEnv(environ []string, key string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// limit returns the limit to set with conns open connections, and false when bridged leaves the
// runtime's own (GOMEMLIMIT) alone.
func (p memoryLimit) limit(conns int64) (int64, bool) {
	switch p.source {
	case "GOMEMLIMIT":
		return 0, false
	case "BRIDGE_MEMORY_LIMIT":
		return int64(p.cfg.MemoryLimit), true
	}
	limit := deriveMemoryLimit(p.cfg, conns)
	if p.ceiling > 0 {
		limit = min(limit, p.ceiling/10*9)
	}
	return limit, true
}

// memoryLimiter applies a memoryLimit to the runtime. It is not safe for concurrent use: run
// calls start, then follow in one goroutine.
type memoryLimiter struct {
	plan  memoryLimit
	conns *atomic.Int64     // open connections, kept by countListener
	set   func(int64) int64 // debug.SetMemoryLimit; tests record instead
	last  int64             // the limit last set
}

func newMemoryLimiter(plan memoryLimit, conns *atomic.Int64) *memoryLimiter {
	return &memoryLimiter{plan: plan, conns: conns, set: debug.SetMemoryLimit}
}

// start sets the first limit and logs it, in one line.
func (m *memoryLimiter) start(log *zap.Logger) {
	limit, ok := m.plan.limit(m.conns.Load())
	if !ok {
		// math.MaxInt64 when GOMEMLIMIT=off.
		limit := m.set(-1)
		log.Info("memory limit", zap.String("source", "GOMEMLIMIT"), zap.String("GOMEMLIMIT", m.plan.goMemLimit),
			zap.Int64("limit_bytes", limit), zap.String("limit", mib(limit)))
		if m.plan.ignored {
			log.Warn("BRIDGE_MEMORY_LIMIT is ignored: GOMEMLIMIT is set and wins")
		}
		return
	}
	m.set(limit)
	m.last = limit
	fields := []zap.Field{zap.String("source", m.plan.source), zap.Int64("limit_bytes", limit), zap.String("limit", mib(limit))}
	if m.plan.source == "derived" {
		fields = append(fields, zap.String("rule", limitRule))
		if m.plan.ceiling > 0 {
			fields = append(fields, zap.String("cgroup_memory_max", mib(m.plan.ceiling)), zap.String("capped_at", "90% of it"))
		}
	}
	log.Info("memory limit", fields...)
}

// mib writes a limit for people: "416.0MiB", or "off" for none.
func mib(n int64) string {
	if n == math.MaxInt64 {
		return "off"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
}

// follow updates a derived limit every interval as connections open and close, until ctx ends.
// A fixed limit needs no following, and follow returns at once.
func (m *memoryLimiter) follow(ctx context.Context, every time.Duration) {
	if m.plan.source != "derived" {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.update()
		}
	}
}

// update sets the derived limit for the connections open now, when it changed.
func (m *memoryLimiter) update() {
	if limit, ok := m.plan.limit(m.conns.Load()); ok && limit != m.last {
		m.set(limit)
		m.last = limit
	}
}

// countListener counts the connections it accepted that are not closed yet in open. A hijacked
// connection (a WebSocket) stays counted until its new owner closes it.
type countListener struct {
	net.Listener
	open *atomic.Int64
}

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

// countedConn is a connection countListener accepted. It hides the *net.TCPConn from net/http,
// which then serves files without sendfile (bridged serves only small embedded ones) and
// half-closes through CloseWrite below.
type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

// Close closes the connection and, the first time, stops counting it.
func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// SyscallConn hands on the raw descriptor, which bridge's kept connections read requests through
// (awaitRequest).
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite half-closes a TCP connection, as net/http does after refusing a request with a
// body it will not read.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
