package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// With -profile DIR, bridged is built with one extra file, given to the compiler through
// go build -overlay and never written into the repository: it serves net/http/pprof on a
// loopback port of its own when BRIDGEBENCH_PPROF_ADDR is set. The workloads then save heap and
// goroutine profiles with every connection open, and CPU profiles over their busy phases, to DIR
// for go tool pprof. The server's own code is unchanged; the profiles describe the same binary
// the figures come from, plus one idle listener.
const pprofOverlay = `package main

// Added by cmd/bridgebench -profile through go build -overlay; not part of the repository.

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("BRIDGEBENCH_PPROF_ADDR")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, http.DefaultServeMux)
}
`

// buildProfiled builds bridged with the pprof overlay into dir.
func buildProfiled(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", "github.com/bridged/bridged/cmd/bridged").Output()
	if err != nil {
		return "", fmt.Errorf("locate cmd/bridged: %w", err)
	}
	pkg := strings.TrimSpace(string(out))
	src := filepath.Join(dir, "zz_bridgebench_pprof.go")
	if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
		return "", err
	}
	ov, err := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(pkg, "zz_bridgebench_pprof.go"): src}})
	if err != nil {
		return "", err
	}
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bridged-pprof")
	b := exec.CommandContext(ctx, "go", "build", "-overlay", ovPath, "-o", bin, "github.com/bridged/bridged/cmd/bridged")
	b.Stdout, b.Stderr = os.Stderr, os.Stderr
	if err := b.Run(); err != nil {
		return "", fmt.Errorf("build bridged with pprof: %w", err)
	}
	return bin, nil
}

// profiler saves profiles of one target process; its zero value (no -profile) does nothing.
type profiler struct {
	dir   string // where profiles go; "" disables
	addr  string // the process's pprof listener
	label string // target, workload and round, for file names
	wg    sync.WaitGroup
}

// snapshot saves the heap and goroutine profiles now, named after what.
func (pf *profiler) snapshot(ctx context.Context, what string) {
	if pf == nil || pf.dir == "" {
		return
	}
	pf.save(ctx, "heap", "/debug/pprof/heap?gc=1", what)
	pf.save(ctx, "goroutine", "/debug/pprof/goroutine", what)
	pf.save(ctx, "memstats.txt", "/debug/pprof/heap?debug=1", what) // ends with runtime.MemStats: stacks, GC overhead
}

// cpu starts a CPU profile of d in the background; wait joins it.
func (pf *profiler) cpu(ctx context.Context, what string, d time.Duration) {
	if pf == nil || pf.dir == "" {
		return
	}
	pf.wg.Wait() // one CPU profile at a time
	secs := max(1, int(d.Seconds()))
	pf.wg.Go(func() { pf.save(ctx, "cpu", "/debug/pprof/profile?seconds="+strconv.Itoa(secs), what) })
}

func (pf *profiler) wait() {
	if pf != nil {
		pf.wg.Wait()
	}
}

func (pf *profiler) save(ctx context.Context, kind, path, what string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+pf.addr+path, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile %s %s: %v\n", kind, what, err)
		return
	}
	defer resp.Body.Close()
	name := filepath.Join(pf.dir, fmt.Sprintf("%s-%s-%s", pf.label, what, kind))
	if !strings.HasSuffix(kind, ".txt") {
		name += ".pb.gz"
	}
	f, err := os.Create(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "profile: %v\n", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}
