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
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/bridged/bridged/bridge"
	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/memory"
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
	log, err := newLogger(cfg.LogLevel, cfg.LogFormat, logOut)
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

	store := memory.New(cache.Options{
		TTL:               cfg.MessageTTL,
		StreamMaxMessages: cfg.StreamMaxMessages,
		StreamMaxBytes:    int64(cfg.StreamMaxBytes),
		MaxMessageBytes:   int(cfg.MaxMessageBytes),
		MaxMemory:         int64(cfg.MaxMemory),
	})
	defer store.Close()

	api, err := bridge.New(bridge.Options{
		Store:           store,
		Log:             log,
		JWTSecret:       []byte(cfg.JWTSecret),
		PublishKey:      cfg.PublishKey,
		AdminKey:        cfg.AdminKey,
		MaxMessageBytes: int(cfg.MaxMessageBytes),
		MaxBatch:        cfg.MaxBatch,
		MaxBodyBytes:    int64(cfg.MaxBodyBytes),
		LongPollMax:     cfg.LongPollMax,
		Heartbeat:       cfg.Heartbeat,
		CORSOrigins:     cfg.CORSOrigins,
		Demo:            demo,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("BRIDGE_ADDR: %w", err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: SSE streams and long-polls live long; the SSE handler sets a deadline
		// per write instead.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       must(zap.NewStdLogAt(log.With(zap.String("component", "net/http")), zapcore.WarnLevel)),
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", zap.String("addr", ln.Addr().String()), zap.String("store", cfg.Store), zap.Bool("demo", cfg.Demo))

	var workers sync.WaitGroup
	workCtx, stopWork := context.WithCancel(ctx)
	defer func() { stopWork(); workers.Wait() }()
	if cfg.Demo {
		workers.Go(func() { mockPublisher(workCtx, store, log) })
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	stopWork()
	workers.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Drain first: /readyz fails and new streams get 503 while the listener still answers, SSE
	// streams end with "event: close" and long-polls answer; then Shutdown stops accepting and
	// waits for the handlers.
	api.Drain()
	err = srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		srv.Close()
		err = fmt.Errorf("connections still open after BRIDGE_SHUTDOWN_TIMEOUT (%s): closed them", cfg.ShutdownTimeout)
	}
	<-serveErr // http.ErrServerClosed
	if werr := api.Wait(sctx); werr != nil {
		err = errors.Join(err, fmt.Errorf("WebSocket connections still open after BRIDGE_SHUTDOWN_TIMEOUT (%s)", cfg.ShutdownTimeout))
	}
	err = errors.Join(err, store.Close())
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// newLogger builds the zap logger: JSON (sampled, ISO-8601 times) by default, or the console
// encoder for people reading a terminal.
func newLogger(level zapcore.Level, format string, out io.Writer) (*zap.Logger, error) {
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
		core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
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
