package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAdaptiveProcessors checks, on the real binary, that GOMAXPROCS follows the load (procs.go
// in cmd/bridged): an idle node drops to one processor and a busy one gets all of them back; and
// that GOMAXPROCS or BRIDGE_ADAPTIVE_PROCS=false fix the number.
func TestAdaptiveProcessors(t *testing.T) {
	t.Parallel()
	procs := func(d *daemon) int { return int(d.metric(t, "go_sched_gomaxprocs_threads")) }
	// until polls f for up to 60 s: the adapter acts within a second or two, CI machines are slow.
	until := func(what string, f func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !f(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 60 s: %s", what)
			}
		}
	}

	t.Run("follows the load", func(t *testing.T) {
		t.Parallel()
		d := startDaemon(t, nil)
		log := d.log.String() // the processors line comes before the listening line
		if m := regexp.MustCompile(`"msg":"processors","source":"runtime","gomaxprocs":1\b`).FindString(log); m != "" {
			t.Skip("SKIPPED: the machine gives bridged one processor: there is nothing to adapt")
		}
		m := regexp.MustCompile(`"msg":"processors","source":"adaptive","gomaxprocs_max":(\d+)`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("no adaptive processors line in the log; the adapter should be on by default:\n%s", d.log.Tail(20))
		}
		ceiling, _ := strconv.Atoi(m[1])
		until("an idle node still runs on more than one processor", func() bool { return procs(d) == 1 })

		// Many publishers at once make goroutines queue on one processor.
		ctx, stop := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				for ctx.Err() == nil {
					d.tryDo(ctx, "POST", "/v1/publish", publishKey,
						strings.NewReader(`{"user":"busy","data":"x"}`), nil)
				}
			})
		}
		until("a busy node stays on one processor", func() bool { return procs(d) == ceiling })
		stop()
		wg.Wait()
		until("the node did not go back to one processor once idle", func() bool { return procs(d) == 1 })
	})

	for _, c := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"GOMAXPROCS fixes it", map[string]string{"GOMAXPROCS": "3"}, 3},
		{"BRIDGE_ADAPTIVE_PROCS=false fixes it", map[string]string{"BRIDGE_ADAPTIVE_PROCS": "false"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, c.env)
			want := c.want
			if want == 0 {
				m := regexp.MustCompile(`"msg":"processors","source":"runtime","gomaxprocs":(\d+)`).FindStringSubmatch(d.log.String())
				if m == nil {
					t.Fatalf("no fixed processors line in the log:\n%s", d.log.Tail(20))
				}
				want, _ = strconv.Atoi(m[1])
			}
			// Idle for longer than the adapter takes to come down (well within a second here).
			for range 40 {
				if got := procs(d); got != want {
					t.Fatalf("GOMAXPROCS %d, want %d fixed", got, want)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// TestGoroutineStacksAreKept checks that the binary re-executes itself so the collector does not
// shrink goroutine stacks (stacks.go in cmd/bridged), and that GODEBUG=gcshrinkstackoff=0 is left
// as the operator set it.
func TestGoroutineStacksAreKept(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, godebug, want string
		shrunk              bool
	}{
		{"by default", "", "GODEBUG=gcshrinkstackoff=1", false},
		{"other settings kept", "madvdontneed=1", "GODEBUG=madvdontneed=1,gcshrinkstackoff=1", false},
		{"the operator's choice stands", "gcshrinkstackoff=0", "GODEBUG=gcshrinkstackoff=0", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startDaemon(t, map[string]string{"GODEBUG": c.godebug})
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			var godebug []string
			for _, kv := range strings.Split(string(environ), "\x00") {
				if strings.HasPrefix(kv, "GODEBUG=") {
					godebug = append(godebug, kv)
				}
			}
			if len(godebug) != 1 || godebug[0] != c.want {
				t.Fatalf("the running process has %q, want %q", godebug, c.want)
			}
			line := fmt.Sprintf(`"msg":"goroutine stacks","shrunk_by_collector":%v`, c.shrunk)
			if !strings.Contains(d.log.String(), line) {
				t.Fatalf("no %s in the log:\n%s", line, d.log.Tail(20))
			}
		})
	}
}
