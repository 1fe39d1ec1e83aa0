// Package e2e tests bridged end to end: the real binary, built once with -race, started per test
// on a free port with a clean environment, and driven over HTTP the way apps and browsers drive
// it. r3labs/sse's Client and EventStreamReader read the streams, as an SSE parser independent of
// the daemon's own code.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// binPath is the bridged binary TestMain built.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "bridged-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	binPath = filepath.Join(dir, "bridged")
	// go test puts $GOROOT/bin first on PATH, so this is the toolchain running the tests. The
	// package is named by import path, so the working directory does not matter.
	cmd := exec.Command("go", "build", "-race", "-o", binPath, "github.com/bridged/bridged/cmd/bridged")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building bridged:", err)
		return 1
	}
	// Most of these tests wait on real time (TTLs, timeouts, the race runtime's pause at exit)
	// rather than on the CPU, so run more of them at once than -parallel's default of
	// GOMAXPROCS, unless -parallel was given.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(max(runtime.GOMAXPROCS(0), 8)))
	}
	return m.Run()
}
