// Command bridgebench is bridged's load tool: it starts the real daemon (and, for comparison,
// nginx with Nchan, and a hello-world Go handler), drives each with the same workloads over
// 127.0.0.1, and prints a table of medians with ratios plus an SVG plot.
//
// Workloads (each bounded in time; each target process is started fresh for each one):
//
//	memory-sse       RSS before and with N idle SSE streams: bytes per connection
//	memory-longpoll  the same with N parked long-polls
//	sse              N streams, messages at a fixed total rate: delivery latency, lost, duplicated
//	longpoll         N waiters woken at once (wake latency), then a re-poll loop with messages
//	                 flowing: lost, duplicated, server CPU per delivery
//	poll             plain polls at a fixed rate: answer latency
//	publish          single and batch publish throughput from K connections (wrk when installed),
//	                 with the hello-world handler measured the same way as the reference
//
// Usage:
//
//	bridgebench [flags]                 run (see -h)
//	bridgebench hello [-addr A]         serve the hello-world handler (started by the tool itself)
//
// bench/run.sh installs nginx, Nchan and wrk from Debian and runs the comparison.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "hello" {
		os.Exit(helloMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bridgebench:", err)
		os.Exit(1)
	}
}

// config is everything a run is told by its flags.
type config struct {
	targets   []string
	workloads []string
	rounds    int

	conns    int           // SSE streams (memory-sse, sse)
	lpConns  int           // long-poll waiters (memory-longpoll, longpoll)
	rate     float64       // messages/s in sse and the long-poll loop
	duration time.Duration // of sse's publishing and the long-poll loop

	pollClients  int
	pollRate     float64
	pollMsgRate  float64
	pollDuration time.Duration

	publishers  int // paced publisher connections
	pubConns    int // publish workload concurrency
	pubDuration time.Duration
	batch       int
	wrk         string // wrk's path, or "" for the Go clients
	wrkThreads  int

	dialConcurrency int
	connectWithin   time.Duration
	grace           time.Duration
	settle          time.Duration

	start      startOpts
	profileDir string // -profile: where bridged's pprof profiles go
	wakeLogDir string // -wake-log: where each long-poll run's wake-up latencies go
}

var allWorkloads = []string{"memory-sse", "memory-longpoll", "sse", "longpoll", "poll", "publish"}

var workloadFuncs = map[string]func(context.Context, *config, *proc, *progress) (*result, error){
	"memory-sse":      runMemorySSE,
	"memory-longpoll": runMemoryLongPoll,
	"sse":             runSSE,
	"longpoll":        runLongPoll,
	"poll":            runPoll,
	"publish":         runPublish,
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bridgebench", flag.ContinueOnError)
	var cfg config
	targets := fs.String("targets", "bridged,nchan", "comma-separated targets: bridged, nchan (hello joins the publish workload by itself)")
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated workloads")
	fs.IntVar(&cfg.rounds, "rounds", 3, "runs of each workload per target, interleaved (medians are reported)")
	short := fs.Bool("short", false, "small sizes for CI: 500 connections, short phases, one round")
	strict := fs.Bool("strict", false, "exit non-zero when any run lost, duplicated or left behind anything (CI)")
	fs.IntVar(&cfg.conns, "conns", 10000, "SSE connections (memory-sse, sse), one user each")
	fs.IntVar(&cfg.lpConns, "lp-conns", 5000, "long-poll waiters (memory-longpoll, longpoll), one user each")
	fs.Float64Var(&cfg.rate, "rate", 2000, "total messages/s in sse and the long-poll loop")
	fs.DurationVar(&cfg.duration, "duration", 20*time.Second, "publishing time of sse and of the long-poll loop")
	fs.IntVar(&cfg.pollClients, "poll-clients", 1000, "plain-poll clients")
	fs.Float64Var(&cfg.pollRate, "poll-rate", 2000, "total plain polls/s")
	fs.Float64Var(&cfg.pollMsgRate, "poll-msg-rate", 200, "messages/s published during the poll workload")
	fs.DurationVar(&cfg.pollDuration, "poll-duration", 10*time.Second, "poll workload time")
	fs.IntVar(&cfg.publishers, "publishers", 16, "publisher connections of the paced workloads")
	fs.IntVar(&cfg.pubConns, "pub-conns", 64, "concurrent connections of the publish workload")
	fs.DurationVar(&cfg.pubDuration, "pub-duration", 10*time.Second, "time of each publish measurement")
	fs.IntVar(&cfg.batch, "batch", 100, "messages per batch publish")
	wrkMode := fs.String("wrk", "auto", "publish load generator: auto (wrk if on PATH), on, off (Go clients)")
	fs.IntVar(&cfg.wrkThreads, "wrk-threads", 2, "wrk threads")
	fs.IntVar(&cfg.dialConcurrency, "dial-concurrency", 128, "connections being set up at once")
	fs.DurationVar(&cfg.connectWithin, "connect-within", 90*time.Second, "limit for opening all connections or delivering a wake-up")
	fs.DurationVar(&cfg.grace, "grace", 5*time.Second, "after publishing stops, how long to wait for the last deliveries")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "memory: wait before sampling RSS (then until it is stable)")
	fs.StringVar(&cfg.start.bridgedBin, "bin", "", "bridged binary (default: go build ./cmd/bridged into a temp dir)")
	var bridgedEnv multiFlag
	fs.Var(&bridgedEnv, "bridged-env", "extra KEY=VALUE for bridged's environment (repeatable), e.g. GOGC=50")
	fs.StringVar(&cfg.start.nchanConf, "nchan-conf", "bench/nchan/nginx.conf", "Nchan's nginx.conf (listen "+nchanConfListen+" is replaced by a free port)")
	fs.StringVar(&cfg.start.nginxBin, "nginx", "nginx", "nginx binary (with libnginx-mod-nchan)")
	mdOut := fs.String("md", "", "also write the table (markdown) to this file")
	svgOut := fs.String("svg", "bridgebench.svg", "write the plot here (empty: no plot)")
	jsonOut := fs.String("json", "", "write every run's figures here as JSON")
	timeout := fs.Duration("timeout", 60*time.Minute, "upper bound on the whole run")
	selfProfile := fs.String("self-cpuprofile", "", "write bridgebench's own CPU profile here (to check the tool's overhead)")
	fs.StringVar(&cfg.profileDir, "profile", "", "build bridged with net/http/pprof (go build -overlay; the repository is unchanged) and save heap, goroutine and CPU profiles here")
	fs.StringVar(&cfg.wakeLogDir, "wake-log", "", "write each long-poll run's wake-up latencies here, one CSV per run (publish time, latency, and when the publish itself was answered, in ns; one line per message)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.wakeLogDir != "" {
		if err := os.MkdirAll(cfg.wakeLogDir, 0o755); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *short {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("conns", func() { cfg.conns = 500 })
		def("lp-conns", func() { cfg.lpConns = 500 })
		def("rate", func() { cfg.rate = 500 })
		def("duration", func() { cfg.duration = 4 * time.Second })
		def("poll-clients", func() { cfg.pollClients = 100 })
		def("poll-rate", func() { cfg.pollRate = 500 })
		def("poll-msg-rate", func() { cfg.pollMsgRate = 50 })
		def("poll-duration", func() { cfg.pollDuration = 3 * time.Second })
		def("pub-duration", func() { cfg.pubDuration = 3 * time.Second })
		def("rounds", func() { cfg.rounds = 1 })
		def("settle", func() { cfg.settle = time.Second })
		def("grace", func() { cfg.grace = 3 * time.Second })
	}
	cfg.start.bridgedEnv = bridgedEnv
	cfg.start.readyWithin = 30 * time.Second
	cfg.targets = splitList(*targets)
	cfg.workloads = splitList(*workloads)
	for _, t := range cfg.targets {
		if t != targetBridged && t != targetNchan {
			return fmt.Errorf("-targets: unknown target %q (bridged, nchan)", t)
		}
	}
	for _, w := range cfg.workloads {
		if workloadFuncs[w] == nil {
			return fmt.Errorf("-workloads: unknown workload %q (%s)", w, strings.Join(allWorkloads, ", "))
		}
	}
	if cfg.rounds < 1 || cfg.conns < 1 || cfg.lpConns < 1 || cfg.pollClients < 1 || cfg.rate <= 0 || cfg.pollRate <= 0 ||
		cfg.pollMsgRate <= 0 || cfg.publishers < 1 || cfg.pubConns < 1 || cfg.batch < 1 || cfg.dialConcurrency < 1 {
		return errors.New("sizes, rates and counts must be positive")
	}
	switch *wrkMode {
	case "auto", "on":
		if p, err := exec.LookPath("wrk"); err == nil {
			cfg.wrk = p
		} else if *wrkMode == "on" {
			return errors.New("-wrk=on: wrk is not on PATH (apt-get install wrk)")
		}
	case "off":
	default:
		return fmt.Errorf("-wrk: want auto, on or off")
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *selfProfile != "" {
		f, err := os.Create(*selfProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	nofile, err := raiseNoFile(cfg.conns + cfg.lpConns + cfg.pubConns + 4096)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.start.selfBin = self
	if cfg.profileDir != "" && slices.Contains(cfg.targets, targetBridged) {
		if set["bin"] {
			return errors.New("-profile builds its own bridged (with pprof); drop -bin")
		}
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "bridgebench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "building bridged with pprof (overlay) for -profile")
		if cfg.start.bridgedBin, err = buildProfiled(ctx, dir); err != nil {
			return err
		}
		cfg.start.pprof = true
	}
	if cfg.start.bridgedBin == "" && slices.Contains(cfg.targets, targetBridged) {
		dir, err := os.MkdirTemp("", "bridgebench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.start.bridgedBin = filepath.Join(dir, "bridged")
		fmt.Fprintln(os.Stderr, "building bridged:", cfg.start.bridgedBin)
		b := exec.CommandContext(ctx, "go", "build", "-o", cfg.start.bridgedBin, "github.com/bridged/bridged/cmd/bridged")
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("build bridged: %w", err)
		}
	}
	if slices.Contains(cfg.targets, targetNchan) {
		if _, err := os.Stat(cfg.start.nchanConf); err != nil {
			return fmt.Errorf("-nchan-conf: %w (run from the repository root, or pass the path)", err)
		}
	}

	pr := newProgress(os.Stderr)
	defer pr.close()
	rep := &report{cfg: &cfg, started: time.Now(), nofile: nofile, machine: machine(), loadStart: loadAvg()}
	for _, w := range cfg.workloads {
		targets := cfg.targets
		if w == "publish" {
			targets = append([]string{targetHello}, targets...)
		}
		for r := 1; r <= cfg.rounds; r++ {
			for _, t := range targets {
				if ctx.Err() != nil {
					return fmt.Errorf("stopped: %w", context.Cause(ctx))
				}
				res, notes, err := runOne(ctx, &cfg, w, t, r, pr)
				if err != nil {
					pr.logf("%s on %s, round %d: FAILED: %v", w, t, r, err)
					rep.failures = append(rep.failures, fmt.Sprintf("%s on %s, round %d: %v", w, t, r, err))
					continue
				}
				res.Workload, res.Target, res.Round = w, t, r
				rep.add(res, notes)
				pr.logf("%s on %s, round %d: %s", w, t, r, res.headline())
			}
		}
	}
	pr.close()
	rep.finished, rep.loadEnd = time.Now(), loadAvg()
	table := rep.markdown()
	fmt.Println(table)
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, []byte(table), 0o644); err != nil {
			return err
		}
	}
	if *svgOut != "" {
		if err := os.WriteFile(*svgOut, rep.svg(), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "plot:", *svgOut)
	}
	if *jsonOut != "" {
		if err := rep.writeJSON(*jsonOut); err != nil {
			return err
		}
	}
	if *strict {
		for _, f := range rep.violations() {
			pr.logf("STRICT: %s", f)
			rep.failures = append(rep.failures, f)
		}
	}
	if len(rep.failures) > 0 {
		return fmt.Errorf("%d runs failed", len(rep.failures))
	}
	return nil
}

// runOne starts a fresh target, runs one workload on it and stops it.
func runOne(ctx context.Context, cfg *config, w, t string, round int, pr *progress) (res *result, notes []string, err error) {
	pr.phase(fmt.Sprintf("%s: starting %s", w, t), 0)
	p, err := start(ctx, cfg.start, t)
	if err != nil {
		return nil, nil, err
	}
	if p.pprof != "" {
		p.prof = &profiler{dir: cfg.profileDir, addr: p.pprof, label: fmt.Sprintf("%s-%s-r%d", t, w, round)}
	}
	if cfg.wakeLogDir != "" {
		p.wakeLog = filepath.Join(cfg.wakeLogDir, fmt.Sprintf("%s-r%d-wake.csv", t, round))
	}
	defer func() {
		p.prof.wait()
		if serr := p.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	tool0, srv0, t0, load0 := selfCPU(), cpuSeconds(p.pids()), time.Now(), loadAvg()
	res, err = workloadFuncs[w](ctx, cfg, p, pr)
	if err != nil {
		return nil, nil, fmt.Errorf("%w\n--- %s output (tail) ---\n%s", err, t, p.tail())
	}
	// What the load cost on each side: the tool must stay well below the server.
	wall := time.Since(t0).Seconds()
	tool, srv := selfCPU()-tool0, cpuSeconds(p.pids())-srv0
	res.Metrics["cpu.tool_s"], res.Metrics["cpu.server_s"] = tool, srv
	res.note("cpu over %.1fs: server %.2f s (%.0f%% of a core), bridgebench %.2f s (%.0f%%); machine load average %s at the start, %s at the end",
		wall, srv, 100*srv/wall, tool, 100*tool/wall, load0, loadAvg())
	return res, p.notes, nil
}

// selfCPU is the load tool's own user+system CPU time so far, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// raiseNoFile raises RLIMIT_NOFILE to at least want (root may raise the hard limit too); the
// targets inherit it.
func raiseNoFile(want int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	w := uint64(max(want, 65536))
	if lim.Cur >= w {
		return lim.Cur, nil
	}
	nl := syscall.Rlimit{Cur: w, Max: max(lim.Max, w)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		nl = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
			return 0, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
		if lim.Max < uint64(want) {
			return 0, fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this run needs", lim.Max, want)
		}
	}
	return nl.Cur, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// machine describes where the run happened, for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := procKB("/proc/meminfo", "MemTotal:")
	return fmt.Sprintf("%d CPUs (%s), %.0f GiB, %s %s/%s, GOMAXPROCS %d",
		runtime.NumCPU(), model, float64(mem)/(1<<20), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
}

// loadAvg is the machine's 1, 5 and 15 minute load averages: on a shared machine, how much else
// was running (2 means both cores busy).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
