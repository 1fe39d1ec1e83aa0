package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// user is one steady user: a stream the steady publisher writes and clients read.
type user struct {
	n      int
	name   string
	token  string
	ledger ledger
}

// soak is one run. Its fields are set before the goroutines that read them start.
type soak struct {
	cfg   config
	d     *daemon
	rules rules
	pad   string
	out   io.Writer

	users   []*user
	clients []*client

	dialer      *net.Dialer
	lpClient    *http.Client
	pubClient   *http.Client
	statsClient *http.Client

	start      time.Time
	drainedCtx context.Context // done once publishing has stopped and final is set
	drained    <-chan struct{}
	final      []int // per user, the newest acknowledged n; set before drained closes

	pub  pubStats
	live struct {
		sseOpen, lpOpen, delivered, resets, refused atomic.Int64
	}
	phase atomic.Value // string

	floodBegan, floodEnded atomic.Int64 // since start, when the flood did run; 0 until then

	mu      sync.Mutex
	samples []sample
}

// result is what the report and the verdict are made from.
type result struct {
	baseline     stats
	baselineRSS  int64
	settled      stats
	settledRSS   int64
	settleTook   time.Duration
	settleOK     bool
	drainTook    time.Duration
	pubErr       error
	interrupted  bool
	exitCode     int
	killed       bool
	leakDumped   bool
	logLines     int
	warns        map[string]int
	lastWarns    []string
	race, panics bool
}

// run performs a soak and writes its report to out. It returns the exit status: 0 when the
// verdict passes, 1 when it fails; an error when the soak could not be carried out at all.
func run(ctx context.Context, cfg config, out io.Writer) (int, error) {
	if err := raiseFileLimit(2*cfg.clients() + 1024); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "bridgesoak-")
	if err != nil {
		return 0, err
	}
	keepDir := false
	defer func() {
		if !keepDir {
			os.RemoveAll(dir)
		}
	}()
	bin := cfg.bin
	if bin == "" {
		logf("building bridged%s", map[bool]string{true: " with -race", false: ""}[cfg.race])
		if bin, err = buildDaemon(ctx, dir, cfg.race); err != nil {
			return 0, err
		}
	}
	logPath := cfg.log
	if logPath == "" {
		logPath = filepath.Join(dir, "bridged.log")
	}
	d, err := startDaemon(ctx, bin, cfg.daemonEnv(), logPath)
	if err != nil {
		return 0, err
	}
	defer d.stop(syscall.SIGTERM, 15*time.Second) // on early returns; a no-op once it has exited

	s := newSoak(cfg, d, out)
	res, err := s.run(ctx)
	if err != nil {
		return 0, err
	}
	v := verdict(s.summarize(res))
	s.report(res, v)
	if cfg.svg != "" {
		if err := os.WriteFile(cfg.svg, s.plot(), 0o644); err != nil {
			return 0, err
		}
		fmt.Fprintf(out, "plot: %s\n", cfg.svg)
	}
	if cfg.csv != "" {
		if err := os.WriteFile(cfg.csv, s.csv(), 0o644); err != nil {
			return 0, err
		}
	}
	if len(v) > 0 {
		if cfg.log == "" {
			keepDir = true
		}
		fmt.Fprintf(out, "bridged's log: %s\n", logPath)
		return 1, nil
	}
	return 0, nil
}

func newSoak(cfg config, d *daemon, out io.Writer) *soak {
	s := &soak{
		cfg:    cfg,
		d:      d,
		out:    out,
		rules:  rules{ttl: cfg.ttl, streamMax: cfg.streamMax, slack: time.Second},
		dialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1},
	}
	for range cfg.msgBytes {
		s.pad += "p"
	}
	transport := func(conns int) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext:         s.dialer.DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		}}
	}
	s.lpClient = transport(cfg.longpoll + 16)
	s.pubClient = transport(cfg.publishers + cfg.floodWorkers + 4)
	// One connection for every stats request (the sampler's and the settle's), so the baseline and
	// the final goroutine counts see the same single connection of ours.
	s.statsClient = transport(1)
	s.statsClient.Transport.(*http.Transport).MaxConnsPerHost = 1
	s.statsClient.Timeout = 5 * time.Second
	s.phase.Store("start")
	return s
}

// run is the soak itself: genesis, baseline, clients and publishers for the duration, then the
// drain, the settle and bridged's exit.
func (s *soak) run(ctx context.Context) (result, error) {
	var res result
	cfg := &s.cfg
	exp := time.Now().Add(cfg.duration + cfg.drain + time.Hour)
	for i := range cfg.users {
		u := &user{n: i, name: fmt.Sprintf("soak-%05d", i)}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": u.name, "exp": exp.Unix()}).SignedString(s.d.secret)
		if err != nil {
			return res, err
		}
		u.token = tok
		s.users = append(s.users, u)
	}
	if err := s.genesis(ctx); err != nil {
		return res, err
	}
	// Baseline: bridged with no client connection but the sampler's own.
	s.pubClient.CloseIdleConnections()
	var err error
	if res.baseline, res.baselineRSS, err = s.quiet(ctx, 5*time.Second, -1, 0); err != nil {
		return res, err
	}
	logf("bridged pid %d at %s: baseline %d goroutines, RSS %s", s.d.pid(), s.d.addr, res.baseline.Goroutines, formatBytes(res.baselineRSS))

	rng := rand.New(rand.NewPCG(cfg.seed, 0x50a4))
	for i := range cfg.clients() {
		kind := sseT
		if i >= cfg.sse {
			kind = longPollT
		}
		u := s.users[i%len(s.users)]
		s.clients = append(s.clients, &client{
			n: i, kind: kind, user: u, tally: newTally(&u.ledger), cursor: u.ledger.ids[0].String(),
			rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())),
		})
	}
	rng.Shuffle(len(s.clients), func(i, j int) { s.clients[i], s.clients[j] = s.clients[j], s.clients[i] })

	drainedCtx, markDrained := context.WithCancel(context.Background())
	defer markDrained()
	s.drainedCtx, s.drained = drainedCtx, drainedCtx.Done()
	clientCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	samplerCtx, stopSampler := context.WithCancel(context.Background())

	s.start = time.Now()
	var samplerWG, clientWG, pubWG sync.WaitGroup
	samplerWG.Go(func() { s.sampler(samplerCtx) })
	defer func() { stopSampler(); samplerWG.Wait() }()

	s.phase.Store("ramp")
	clientWG.Go(func() {
		for i, c := range s.clients {
			if !sleepUntil(clientCtx, s.start.Add(time.Duration(int64(cfg.ramp)*int64(i)/int64(len(s.clients))))) {
				return
			}
			if c.kind == sseT {
				clientWG.Go(func() { c.runSSE(clientCtx, s) })
			} else {
				clientWG.Go(func() { c.runLongPoll(clientCtx, s) })
			}
		}
	})
	stopSteady := make(chan struct{})
	pubWG.Go(func() { res.pubErr = s.runSteady(pubCtx, stopSteady) })
	floodFrom := s.start.Add(time.Duration(cfg.floodStart * float64(cfg.duration)))
	floodUntil := s.start.Add(time.Duration(cfg.floodEnd * float64(cfg.duration)))
	if floodUntil.After(floodFrom) {
		pubWG.Go(func() { s.runFlood(pubCtx, floodFrom, floodUntil, s.start.Add(cfg.duration)) })
	}
	pubWG.Go(func() {
		if sleepUntil(pubCtx, s.start.Add(cfg.ramp)) {
			s.phase.CompareAndSwap("ramp", "steady")
		}
	})

	// Messages flow for the duration, or until interrupted.
	end := time.NewTimer(cfg.duration)
	select {
	case <-end.C:
	case <-ctx.Done():
		end.Stop()
		res.interrupted = true
		logf("interrupted: stopping early")
	}

	// From here on an interrupt has been noted; the rest must run to give a report.
	ctx = context.WithoutCancel(ctx)

	// Stop publishing; a message still being refused gets until -drain to be accepted.
	s.phase.Store("drain")
	drainStart := time.Now()
	close(stopSteady)
	if res.interrupted {
		stopPub() // abandon messages being retried: they are not owed, never having been acknowledged
	}
	pubDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubDone) }() // ends with the publishers, which stopPub bounds
	select {
	case <-pubDone:
	case <-time.After(cfg.drain):
		stopPub()
		<-pubDone
	}
	s.final = make([]int, len(s.users))
	for i, u := range s.users {
		s.final[i] = u.ledger.acked()
	}
	markDrained()

	// Clients catch up with the final messages and leave.
	clientsDone := make(chan struct{})
	go func() { clientWG.Wait(); close(clientsDone) }() // ends with the clients, which stopClients bounds
	left := cfg.drain - time.Since(drainStart)
	if res.interrupted {
		left = min(left, 5*time.Second)
	}
	select {
	case <-clientsDone:
	case <-time.After(max(left, 5*time.Second)):
		logf("clients still catching up after %s; stopping them", time.Since(drainStart).Round(time.Second))
		stopClients()
		<-clientsDone
	}
	res.drainTook = time.Since(drainStart)
	stopClients()
	s.lpClient.CloseIdleConnections()
	s.pubClient.CloseIdleConnections()

	// bridged must get back to its baseline: no connection, goroutines within the slack.
	s.phase.Store("settle")
	settleStart := time.Now()
	res.settled, res.settledRSS, err = s.quiet(ctx, cfg.settle, res.baseline.Goroutines+cfg.goroutineSlack, res.baseline.Goroutines)
	res.settleTook = time.Since(settleStart)
	res.settleOK = err == nil
	if err != nil && !errors.Is(err, errNotSettled) {
		return res, err
	}
	stopSampler()
	samplerWG.Wait()

	for _, c := range s.clients {
		c.tally.settle(s.final[c.user.n])
	}
	sig := syscall.SIGTERM
	if !res.settleOK && res.settled.Connections.Total == 0 {
		sig, res.leakDumped = syscall.SIGQUIT, true // the Go runtime prints every goroutine's stack to the log
	}
	res.exitCode, res.killed = s.d.stop(sig, 15*time.Second)
	res.warns, res.lastWarns, res.race, res.panics, res.logLines = s.d.log.summary()
	return res, nil
}

var errNotSettled = errors.New("bridged did not settle")

// quiet waits up to wait for bridged to hold no connection and at most maxGoroutines goroutines,
// then up to 2 s more for it to come down to target (connections it is still closing), and returns
// the lowest figures seen with the RSS; errNotSettled when the first condition was never met.
// With maxGoroutines < 0 it waits instead for the goroutine count to hold still over two samples
// (for a baseline) and takes the last figures if it never does.
func (s *soak) quiet(ctx context.Context, wait time.Duration, maxGoroutines, target int) (stats, int64, error) {
	deadline := time.Now().Add(wait)
	var best stats
	var bestRSS int64
	var metAt time.Time // when maxGoroutines was first met
	prev := -1
	for {
		st, err := s.d.stats(ctx, s.statsClient)
		if err != nil {
			return st, 0, err
		}
		r, err := rss(s.d.pid())
		if err != nil {
			return st, 0, err
		}
		switch {
		case maxGoroutines < 0:
			if st.Connections.Total == 0 && st.Goroutines == prev || time.Now().After(deadline) {
				return st, r, nil
			}
		case st.Connections.Total == 0 && st.Goroutines <= maxGoroutines:
			if metAt.IsZero() || st.Goroutines < best.Goroutines {
				best, bestRSS = st, r
			}
			if metAt.IsZero() {
				metAt = time.Now()
			}
			if best.Goroutines <= target || time.Since(metAt) >= 2*time.Second {
				return best, bestRSS, nil
			}
		case !metAt.IsZero():
			if time.Since(metAt) >= 2*time.Second {
				return best, bestRSS, nil
			}
		case time.Now().After(deadline):
			return st, r, errNotSettled
		}
		prev = st.Goroutines
		if !sleepUntil(ctx, time.Now().Add(250*time.Millisecond)) {
			return st, r, ctx.Err()
		}
	}
}

// raiseFileLimit sets this process's RLIMIT_NOFILE soft limit to the hard limit, which must
// cover what the soak needs. It calls Setrlimit even when the Go runtime has already raised the
// soft limit at start-up: only then does bridged, started after, inherit the raised limit
// rather than the original one.
func raiseFileLimit(need int) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Max < uint64(need) {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d open files this soak needs; lower -sse/-longpoll or raise it (ulimit -Hn)", l.Max, need)
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}
