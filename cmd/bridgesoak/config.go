package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// config is what a soak does; flags set it (see usage).
type config struct {
	short bool
	bin   string
	race  bool
	log   string
	svg   string
	csv   string
	env   envFlags

	sse, longpoll, users int
	duration, ramp       time.Duration
	dropMean             time.Duration
	offlineMean          time.Duration
	sleepy               float64
	rate                 float64
	msgBytes             int
	publishers           int

	floodStart, floodEnd float64
	floodRate            size // bytes per second
	floodSize            size
	floodUsers           int
	floodWorkers         int

	maxMemory size
	ttl       time.Duration
	heartbeat time.Duration
	lpWait    time.Duration
	streamMax int

	perConn        size
	rssBase        size
	goroutineSlack int
	settle         time.Duration
	drain          time.Duration
	progress       time.Duration
	seed           uint64
}

const usage = `bridgesoak runs a soak test against the real bridged: thousands of SSE and long-poll clients
that drop and resume at random while a steady publisher stamps each user's messages with a
sequence number and a flood publisher drives the store into BRIDGE_MAX_MEMORY. It builds and
starts bridged itself (127.0.0.1, fresh secrets), samples its RSS, goroutines and connections
every second, prints a progress line, and ends with a table, the series, an optional SVG plot and
a verdict: the exit status is 1 when any client lost, duplicated or reordered a message, when
bridged's goroutines do not return to their baseline once every client has left, when its peak RSS
passes BRIDGE_MAX_MEMORY + clients × -per-conn + -rss-base, when the flood never reached the
memory cap, or when bridged does not exit cleanly. The bookkeeping is in ledger.go.

  go run ./cmd/bridgesoak -short            # CI: a few hundred clients, about 40 s
  go run ./cmd/bridgesoak -svg soak.svg     # the long run: 4,000 clients, 5 minutes

Flags:
`

// shortPreset is what -short changes; flags given explicitly win.
var shortPreset = map[string]string{
	"sse":          "300",
	"longpoll":     "100",
	"users":        "100",
	"duration":     "30s",
	"ramp":         "3s",
	"drop-mean":    "5s",
	"offline-mean": "200ms",
	"sleepy":       "0.02",
	"rate":         "100",
	"ttl":          "8s",
	"flood-start":  "0.2",
	"flood-end":    "0.45",
	"lp-wait":      "10s",
	"settle":       "20s",
	"drain":        "30s",
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bridgesoak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		fs.PrintDefaults()
	}
	c.floodSize, c.maxMemory = 32<<10, 64<<20
	c.perConn, c.rssBase = defaultPerConn, defaultRSSBase

	fs.BoolVar(&c.short, "short", false, "the CI soak: "+presetText())
	fs.StringVar(&c.bin, "bin", "", "bridged binary to run (default: build ./cmd/bridged into a temp dir)")
	fs.BoolVar(&c.race, "race", false, "build bridged with -race (RSS is then reported, not judged)")
	fs.StringVar(&c.log, "log", "", "write bridged's log here (default: a temp file, removed unless the verdict fails)")
	fs.StringVar(&c.svg, "svg", "", "write a plot of RSS, store size, goroutines and connections over time here")
	fs.StringVar(&c.csv, "csv", "", "write every per-second sample here as CSV")
	fs.Var(&c.env, "env", "extra `BRIDGE_X=value` for bridged, or GOGC, GOMEMLIMIT, GODEBUG (repeatable; wins over the tool's settings)")

	fs.IntVar(&c.sse, "sse", 3000, "SSE clients")
	fs.IntVar(&c.longpoll, "longpoll", 1000, "long-poll clients")
	fs.IntVar(&c.users, "users", 1000, "users the clients and the steady publisher spread over")
	fs.DurationVar(&c.duration, "duration", 5*time.Minute, "how long messages flow, from the first client's start")
	fs.DurationVar(&c.ramp, "ramp", 20*time.Second, "spread the clients' first connections over this long")
	fs.DurationVar(&c.dropMean, "drop-mean", 30*time.Second, "mean time between a client's random disconnects (exponential)")
	fs.DurationVar(&c.offlineMean, "offline-mean", 500*time.Millisecond, "mean time a client stays away after a disconnect (exponential)")
	fs.Float64Var(&c.sleepy, "sleepy", 0.01, "fraction of disconnects that stay away longer than the TTL, so resets happen")
	fs.Float64Var(&c.rate, "rate", 300, "steady messages per second, over all users")
	fs.IntVar(&c.msgBytes, "msg-bytes", 100, "padding in each steady message")
	fs.IntVar(&c.publishers, "publishers", 16, "steady publisher goroutines (each owns users i mod N)")

	fs.Float64Var(&c.floodStart, "flood-start", 0.3, "the flood starts at this fraction of -duration")
	fs.Float64Var(&c.floodEnd, "flood-end", 0.55, "and ends at this fraction, or later if the store has refused nothing yet (equal to -flood-start: no flood)")
	fs.Var(&c.floodRate, "flood-rate", "flood bytes per second, e.g. 16MiB (default: as fast as the flood workers go, so the cap is reached early on any machine)")
	fs.Var(&c.floodSize, "flood-size", "data size of one flood message")
	fs.IntVar(&c.floodUsers, "flood-users", 128, "users the flood writes to (none of them has a client)")
	fs.IntVar(&c.floodWorkers, "flood-workers", 4, "concurrent flood publishers")

	fs.Var(&c.maxMemory, "max-memory", "BRIDGE_MAX_MEMORY")
	fs.DurationVar(&c.ttl, "ttl", time.Minute, "BRIDGE_MESSAGE_TTL")
	fs.DurationVar(&c.heartbeat, "heartbeat", 5*time.Second, "BRIDGE_HEARTBEAT")
	fs.DurationVar(&c.lpWait, "lp-wait", 20*time.Second, "long-poll wait= (BRIDGE_LONGPOLL_MAX is set above it)")
	fs.IntVar(&c.streamMax, "stream-max-messages", 1000, "BRIDGE_STREAM_MAX_MESSAGES")

	fs.Var(&c.perConn, "per-conn", "RSS allowed per client connection in the bound (measured: see docs/benchmarks.md)")
	fs.Var(&c.rssBase, "rss-base", "fixed RSS allowed in the bound beyond BRIDGE_MAX_MEMORY and the connections")
	fs.IntVar(&c.goroutineSlack, "goroutine-slack", 5, "goroutines allowed above the baseline once every client has left")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "how long bridged may take to get back to its baseline after the clients leave")
	fs.DurationVar(&c.drain, "drain", 90*time.Second, "how long clients may take to catch up after publishing stops")
	fs.DurationVar(&c.progress, "progress", 5*time.Second, "progress line interval")
	fs.Uint64Var(&c.seed, "seed", 0, "random seed (0: from the clock); the run is still shaped by the scheduler")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.short {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range shortPreset {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return c, err
				}
			}
		}
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return c, c.validate()
}

func presetText() string {
	var parts []string
	for _, k := range []string{"sse", "longpoll", "users", "duration", "drop-mean", "sleepy", "rate", "ttl", "flood-start", "flood-end"} {
		parts = append(parts, "-"+k+"="+shortPreset[k])
	}
	return strings.Join(parts, " ")
}

func (c *config) validate() error {
	var errs []string
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, msg)
		}
	}
	check(c.sse >= 0 && c.longpoll >= 0 && c.sse+c.longpoll > 0, "-sse and -longpoll: want at least one client")
	check(c.users > 0, "-users must be positive")
	check(c.duration > 0 && c.ramp >= 0 && c.ramp < c.duration, "-ramp must be shorter than -duration")
	check(c.dropMean > 0 && c.offlineMean >= 0, "-drop-mean must be positive")
	check(c.sleepy >= 0 && c.sleepy <= 1, "-sleepy is a fraction")
	check(c.rate > 0, "-rate must be positive")
	check(c.publishers > 0, "-publishers must be positive")
	check(c.msgBytes >= 0 && c.msgBytes <= 16<<10, "-msg-bytes: 0 to 16384")
	check(c.floodStart >= 0 && c.floodEnd >= c.floodStart && c.floodEnd <= 1, "-flood-start and -flood-end: fractions, start <= end")
	check(c.floodRate >= 0 && c.floodSize >= floodMinSize && c.floodSize <= 64<<10, "-flood-rate not negative, -flood-size 64 B to 64 KiB")
	check(c.floodUsers > 0 && c.floodWorkers > 0, "-flood-users and -flood-workers must be positive")
	check(int64(c.floodUsers)<<20 >= int64(c.maxMemory), "-flood-users × 1 MiB (BRIDGE_STREAM_MAX_BYTES) must reach -max-memory, or the flood cannot fill the store")
	check(c.maxMemory >= 1<<20, "-max-memory: at least 1 MiB")
	check(c.ttl >= 2*time.Second, "-ttl: at least 2s")
	check(c.heartbeat > 0 && c.lpWait > 0 && c.streamMax > 0, "-heartbeat, -lp-wait and -stream-max-messages must be positive")
	check(c.settle > 0 && c.drain > 0 && c.progress > 0, "-settle, -drain and -progress must be positive")
	check(c.goroutineSlack >= 0, "-goroutine-slack must not be negative")
	for _, kv := range c.env {
		k, _, ok := strings.Cut(kv, "=")
		check(ok && (strings.HasPrefix(k, "BRIDGE_") || k == "GOGC" || k == "GOMEMLIMIT" || k == "GODEBUG"),
			"-env "+strconv.Quote(kv)+": want BRIDGE_X=value (or GOGC, GOMEMLIMIT, GODEBUG for bridged's runtime)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// clients is how many client connections the soak holds at most.
func (c *config) clients() int { return c.sse + c.longpoll }

// daemonEnv is the BRIDGE_ environment the tool starts bridged with (secrets are added by
// startDaemon).
func (c *config) daemonEnv() map[string]string {
	env := map[string]string{
		"BRIDGE_ADDR":                     "127.0.0.1:0",
		"BRIDGE_MAX_MEMORY":               strconv.FormatInt(int64(c.maxMemory), 10) + "B",
		"BRIDGE_MESSAGE_TTL":              c.ttl.String(),
		"BRIDGE_HEARTBEAT":                c.heartbeat.String(),
		"BRIDGE_LONGPOLL_MAX":             (c.lpWait + time.Second).String(),
		"BRIDGE_STREAM_MAX_MESSAGES":      strconv.Itoa(c.streamMax),
		"BRIDGE_MAX_CONNECTIONS":          strconv.Itoa(2*c.clients() + 1000),
		"BRIDGE_MAX_CONNECTIONS_PER_USER": strconv.Itoa(2*(c.clients()/c.users+1) + 16),
		"BRIDGE_MAX_MESSAGE_BYTES":        "64KiB",
		"BRIDGE_LOG_LEVEL":                "info",
	}
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// size is a byte count flag: "64MiB", "32KiB", "1GiB", "100KB" or plain bytes.
type size int64

func (s *size) String() string { return formatBytes(int64(*s)) }

func (s *size) Set(v string) error {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size such as 64MiB", v)
	}
	*s = size(n * float64(mult))
	return nil
}

// formatBytes writes n in KiB, MiB or GiB with one decimal.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + "GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + "KiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

type envFlags []string

func (e *envFlags) String() string     { return strings.Join(*e, ",") }
func (e *envFlags) Set(v string) error { *e = append(*e, v); return nil }
