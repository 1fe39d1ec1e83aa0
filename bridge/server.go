package bridge

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/static"
)

// Options configures a Server. Store, JWTSecret, PublishKey and AdminKey are required; every
// other zero field takes the default noted.
type Options struct {
	Store      cache.Store // where messages are kept; required
	Log        *zap.Logger // nil: no logging
	JWTSecret  []byte      // HS256 key of subscriber tokens; required
	PublishKey string      // bearer key of POST /v1/publish; required
	AdminKey   string      // bearer key of /v1/admin/; required

	MaxMessageBytes int           // largest data of one message; default 64 KiB
	MaxBatch        int           // most messages in one publish; default 1000
	MaxBodyBytes    int64         // largest publish body; default 16 MiB
	LongPollMax     time.Duration // cap on a long-poll's wait; default 30s
	Heartbeat       time.Duration // SSE ping interval while idle; default 15s
	WriteTimeout    time.Duration // deadline for each SSE write; default 10s
	Retry           time.Duration // SSE reconnect hint ("retry:"); default 2s
	CORSOrigins     []string      // origins allowed cross-origin; "*" allows any; none: same-origin only

	// Demo, when non-nil, serves the demo page at / and mints tokens for it at /demo/token.
	// Never set it on a node that faces real users.
	Demo *Demo
}

// Demo configures the demo endpoints.
type Demo struct {
	Users []string // the users the mock publisher writes to, offered by the page
	// PublishKey is shown on the page for its curl example. Set it only when demo mode minted
	// the key itself; an operator's own key must never be served.
	PublishKey string
}

func (o *Options) setDefaults() {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 10
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 16 << 20
	}
	if o.LongPollMax <= 0 {
		o.LongPollMax = 30 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
}

// Server serves bridged's HTTP API (see the package doc). It is an http.Handler and is safe for
// concurrent use. Create it with New; call Drain when shutting down.
type Server struct {
	opts       Options
	store      cache.Store
	log        *zap.Logger
	jwt        *jwt.Parser
	jwtSecret  []byte
	publishKey secretKey
	adminKey   secretKey
	handler    http.Handler

	drain     chan struct{} // closed by Drain
	drainOnce sync.Once

	faults       *faults // demo mode's fault switchboard; nil otherwise
	wsOrigins    []string
	wsAnyOrigin  bool
	wsConns      sync.WaitGroup // WebSocket handlers, which net/http stops tracking once hijacked
	clientEvents clientEventCounts
}

// New returns a Server for o, or an error naming the missing required option.
func New(o Options) (*Server, error) {
	var missing []error
	if o.Store == nil {
		missing = append(missing, errors.New("bridge: Options.Store is required"))
	}
	if len(o.JWTSecret) == 0 {
		missing = append(missing, errors.New("bridge: Options.JWTSecret is required"))
	}
	if o.PublishKey == "" {
		missing = append(missing, errors.New("bridge: Options.PublishKey is required"))
	}
	if o.AdminKey == "" {
		missing = append(missing, errors.New("bridge: Options.AdminKey is required"))
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	o.setDefaults()
	s := &Server{
		opts:       o,
		store:      o.Store,
		log:        o.Log,
		jwtSecret:  o.JWTSecret,
		publishKey: newSecretKey(o.PublishKey),
		adminKey:   newSecretKey(o.AdminKey),
		drain:      make(chan struct{}),
		jwt: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(5*time.Second),
		),
	}
	s.wsOrigins, s.wsAnyOrigin = wsOriginPatterns(o.CORSOrigins)
	if o.Demo != nil {
		s.faults = newFaults()
	}
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Drain starts shutting the server down: /readyz fails, SSE streams get "event: close" with reason
// shutdown and end, pending long-polls answer at once, and new streams are refused with 503. It
// is idempotent and returns at once; http.Server.Shutdown then waits for the handlers.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.drain) }) }

// Wait blocks until every WebSocket handler has returned, or ctx ends. Call it after Drain and
// http.Server.Shutdown, which does not wait for hijacked connections, so their close frames go
// out before the process exits.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wsConns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err() // the goroutine above ends when the last handler does
	}
}

func (s *Server) isDraining() bool {
	select {
	case <-s.drain:
		return true
	default:
		return false
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	publish := keyOnly(&s.publishKey, "BRIDGE_PUBLISH_KEY", s.publish)
	admin := keyOnly(&s.adminKey, "BRIDGE_ADMIN_KEY", s.adminMessages)

	mux.Handle("POST /v1/publish", s.api(publish))
	mux.Handle("/v1/publish", s.api(methodNotAllowed("POST")))
	mux.Handle("GET /v1/poll", s.api(s.subscriberOnly(s.poll)))
	mux.Handle("/v1/poll", s.api(methodNotAllowed("GET")))
	mux.Handle("GET /v1/sse", s.api(s.subscriberOnly(s.sse)))
	mux.Handle("/v1/sse", s.api(methodNotAllowed("GET")))
	mux.Handle("GET /v1/ws", s.api(s.subscriberOnly(s.ws)))
	mux.Handle("/v1/ws", s.api(methodNotAllowed("GET")))
	mux.Handle("POST /v1/client-events", s.api(s.subscriberOnly(s.clientEvent)))
	mux.Handle("/v1/client-events", s.api(methodNotAllowed("POST")))
	mux.Handle("GET /v1/admin/messages", s.api(admin))
	mux.Handle("/v1/admin/messages", s.api(methodNotAllowed("GET")))
	mux.Handle("GET /healthz", s.api(s.healthz))
	mux.Handle("/healthz", s.api(methodNotAllowed("GET")))
	mux.Handle("GET /readyz", s.api(s.readyz))
	mux.Handle("/readyz", s.api(methodNotAllowed("GET")))

	files, _ := fs.Sub(static.FS, ".")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(files)))
	if s.opts.Demo != nil {
		mux.Handle("GET /{$}", http.HandlerFunc(s.demoPage))
		mux.Handle("GET /demo/token", s.api(s.demoToken))
		mux.Handle("GET /demo/info", s.api(s.demoInfo))
		mux.Handle("GET /demo/faults", s.api(s.demoFaults))
		mux.Handle("POST /demo/faults", s.api(s.demoFaults))
	}
	mux.Handle("/", s.api(notFound)) // JSON 404 for everything else
	return s.accessLog(s.headers(mux))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`+"\n"))
	return nil
}

// readyz fails while the node drains or its store cannot be reached, so a load balancer stops
// sending it new clients.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.isDraining() {
		return errDraining
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("readiness check failed", zap.Error(err))
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`+"\n"))
	return nil
}
