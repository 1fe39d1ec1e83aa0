package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/bridged/bridged/bridge"
	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/memory"
	"github.com/bridged/bridged/cache/redis"
)

// demoUsers are the users the demo's mock publisher writes to.
var demoUsers = []string{"alice", "bob", "carol"}

// run is bridged's whole life: load the configuration from environ, serve until ctx ends, then
// shut down gracefully. Logs go to logOut. It returns nil after a clean shutdown.
func run(ctx context.Context, environ []string, logOut io.Writer) error {
	cfg, err := Load(environ)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	logDropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bridged_log_entries_dropped_total", Help: "Log entries dropped by sampling under load."})
	registry.MustRegister(logDropped)
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, logOut, logDropped.Inc)
	if err != nil {
		return err
	}
	defer log.Sync()

	var demo *bridge.Demo
	if cfg.Demo {
		demo = &bridge.Demo{Users: demoUsers}
		if cfg.JWTSecret == "" {
			cfg.JWTSecret = randomSecret()
		}
		if cfg.PublishKey == "" {
			cfg.PublishKey = randomSecret()
			demo.PublishKey = cfg.PublishKey // minted here, so safe to show on the demo page
		}
		if cfg.AdminKey == "" {
			cfg.AdminKey = randomSecret()
		}
		why := "BRIDGE_DEMO=true"
		if cfg.demoByDefault {
			why = "no BRIDGE_ variable is set"
		}
		log.Warn("DEMO MODE: serving the demo page, minting tokens for anyone and publishing mock messages; do not expose this node",
			zap.String("why", why), zap.Strings("demo_users", demoUsers))
	}

	// Before the store and the listeners, so that the first bytes they take are under it.
	conns := new(atomic.Int64) // open connections on every listener
	plan := planMemoryLimit(cfg, environ)
	plan.ceiling = cgroupMemoryMax(cgroupRoot)
	memLimit := newMemoryLimiter(plan, conns)
	memLimit.start(log)
	procs := planProcs(cfg, environ, log)
	logStacks(environ, log)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	keys, err := bridge.LoadKeys(bridge.KeySource{
		HMACSecret:    []byte(cfg.JWTSecret),
		PublicKeyFile: cfg.JWTPublicKeyFile,
		JWKSFile:      cfg.JWTJWKSFile,
	})
	if err != nil {
		return fmt.Errorf("BRIDGE_JWT_SECRET/BRIDGE_JWT_PUBLIC_KEY_FILE/BRIDGE_JWT_JWKS_FILE: %w", err)
	}
	api, err := bridge.New(bridge.Options{
		Store:                 store,
		Log:                   log,
		Keys:                  keys,
		JWTSecret:             []byte(cfg.JWTSecret),
		JWTAudience:           cfg.JWTAudience,
		JWTIssuer:             cfg.JWTIssuer,
		JWTLeeway:             cfg.JWTLeeway,
		TicketTTL:             cfg.TicketTTL,
		PublishKey:            cfg.PublishKey,
		AdminKey:              cfg.AdminKey,
		MaxMessageBytes:       int(cfg.MaxMessageBytes),
		MaxBatch:              cfg.MaxBatch,
		MaxBodyBytes:          int64(cfg.MaxBodyBytes),
		LongPollMax:           cfg.LongPollMax,
		Heartbeat:             cfg.Heartbeat,
		WriteTimeout:          cfg.WriteTimeout,
		MaxConnections:        cfg.MaxConnections,
		MaxConnectionsPerUser: cfg.MaxConnsPerUser,
		CORSOrigins:           cfg.CORSOrigins,
		DrainWindow:           cfg.DrainWindow,
		Registry:              registry,
		Demo:                  demo,
	})
	if err != nil {
		return err
	}

	// One listener serves everything; with BRIDGE_INTERNAL_ADDR, publishing and the operator
	// endpoints move to a second one that need not face the internet.
	type listener struct {
		name  string // the variable that sets it, for errors and logs
		addr  string
		scope bridge.Scope
		srv   *http.Server
		ln    net.Listener
	}
	listeners := []*listener{{name: "BRIDGE_ADDR", addr: cfg.Addr, scope: bridge.All}}
	if cfg.InternalAddr != "" {
		listeners[0].scope = bridge.Public
		listeners = append(listeners, &listener{name: "BRIDGE_INTERNAL_ADDR", addr: cfg.InternalAddr, scope: bridge.Internal})
	}
	for _, l := range listeners {
		if l.ln, err = net.Listen("tcp", l.addr); err != nil {
			for _, open := range listeners {
				if open.ln != nil {
					open.ln.Close()
				}
			}
			return fmt.Errorf("%s: %w", l.name, err)
		}
		l.ln = countListener{Listener: l.ln, open: conns}
		l.srv = &http.Server{
			Handler:           api.Handler(l.scope),
			ReadHeaderTimeout: cfg.ReadHeaderTimeout, // slowloris: headers must arrive in time
			// No ReadTimeout or WriteTimeout: they would cut SSE streams and long-polls. Publish
			// bodies get a read deadline and every stream write a write deadline instead.
			IdleTimeout:    cfg.IdleTimeout,
			MaxHeaderBytes: 64 << 10,
			ErrorLog:       must(zap.NewStdLogAt(log.With(zap.String("component", "net/http"), zap.String("listener", l.name)), zapcore.WarnLevel)),
		}
	}

	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		ln := api.Listener(l.ln, l.srv) // polls and publishes skip net/http's per-connection cost
		go func() { serveErr <- l.srv.Serve(ln) }()
		log.Info("listening", zap.String("listener", l.name), zap.String("addr", l.ln.Addr().String()),
			zap.String("store", cfg.Store), zap.Bool("demo", cfg.Demo))
	}

	var workers sync.WaitGroup
	workCtx, stopWork := context.WithCancel(ctx)
	defer func() { stopWork(); workers.Wait() }()
	workers.Go(func() { keys.Watch(workCtx, 5*time.Second, log) })
	workers.Go(func() { memLimit.follow(workCtx, time.Second) })
	if procs != nil {
		workers.Go(func() { procs.follow(workCtx) })
	}
	if cfg.Demo {
		workers.Go(func() { mockPublisher(workCtx, store, log) })
	}

	pending := len(listeners)
	select {
	case err := <-serveErr:
		pending--
		stopWork()
		for _, l := range listeners {
			l.srv.Close()
		}
		for ; pending > 0; pending-- {
			<-serveErr
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// A rolling restart, in order: stop being ready and keep serving for BRIDGE_DRAIN_DELAY so
	// load balancers send new clients elsewhere; then drain: streams end with "event: close"
	// spread over BRIDGE_DRAIN_WINDOW (so their reconnects do not land on the other nodes at
	// once) and long-polls answer; then stop accepting and wait for the handlers. Ctrl-C at a
	// terminal (SIGINT) skips the waiting.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	delay := cfg.DrainDelay
	if errors.Is(context.Cause(ctx), ErrInterrupted) {
		delay = 0
		api.SetDrainWindow(0)
	}
	log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout), zap.Duration("drain_delay", delay))
	api.Unready()
	select {
	case <-time.After(delay):
	case err := <-serveErr:
		pending--
		log.Error("listener failed while draining", zap.Error(err))
	}
	stopWork()
	workers.Wait()
	api.Drain()
	var errs []error
	for _, l := range listeners {
		if err := l.srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
			l.srv.Close()
			errs = append(errs, fmt.Errorf("%s: connections still open after BRIDGE_SHUTDOWN_TIMEOUT (%s): closed them", l.name, cfg.ShutdownTimeout))
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	for ; pending > 0; pending-- {
		<-serveErr // http.ErrServerClosed
	}
	if err := api.Wait(sctx); err != nil { // WebSockets, which Shutdown does not track
		errs = append(errs, fmt.Errorf("WebSocket connections still open after BRIDGE_SHUTDOWN_TIMEOUT (%s)", cfg.ShutdownTimeout))
	}
	err = errors.Join(append(errs, store.Close())...)
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// openStore builds the engine BRIDGE_STORE names.
func openStore(ctx context.Context, cfg Config, log *zap.Logger) (cache.Store, error) {
	o := cache.Options{
		TTL:               cfg.MessageTTL,
		StreamMaxMessages: cfg.StreamMaxMessages,
		StreamMaxBytes:    int64(cfg.StreamMaxBytes),
		MaxMessageBytes:   int(cfg.MaxMessageBytes),
		MaxMemory:         int64(cfg.MaxMemory),
	}
	if cfg.Store != "redis" {
		return memory.New(o), nil
	}
	o.Prefix = cfg.RedisPrefix
	redis.RouteLibraryLog(log.With(zap.String("component", "go-redis")))
	s, err := redis.New(o, redis.Config{URL: cfg.RedisURL, Timeout: cfg.RedisTimeout, Log: log.With(zap.String("component", "redis"))})
	if err != nil {
		return nil, fmt.Errorf("BRIDGE_REDIS_URL: %w", err)
	}
	// Say what in the server's settings breaks bridged's promises; Redis may also be down still,
	// which /readyz reports until it is up.
	cctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	defer cancel()
	if warnings, err := s.CheckServer(cctx); err != nil {
		log.Warn("could not read the Redis server's settings; check them by hand (docs/redis.md)", zap.Error(err))
	} else {
		for _, w := range warnings {
			log.Warn("redis setting", zap.String("problem", w))
		}
	}
	return s, nil
}

// ErrInterrupted and ErrTerminated are the causes main gives run's context for SIGINT and SIGTERM.
var (
	ErrInterrupted = errors.New("interrupted (SIGINT)")
	ErrTerminated  = errors.New("terminated (SIGTERM)")
)

// newLogger builds the zap logger: JSON (sampled, ISO-8601 times) by default, or the console
// encoder for people reading a terminal.
func newLogger(level zapcore.Level, format string, out io.Writer, dropped func()) (*zap.Logger, error) {
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "console" {
		cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		enc = zapcore.NewJSONEncoder(cfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(out)), zap.NewAtomicLevelAt(level))
	if format != "console" {
		// As zap's production config: per message and second, the first 100 then every 100th.
		core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100, zapcore.SamplerHook(func(_ zapcore.Entry, d zapcore.SamplingDecision) {
			if d&zapcore.LogDropped != 0 {
				dropped()
			}
		}))
	}
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(out)))), nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func randomSecret() string {
	return rand.Text() + rand.Text()
}
