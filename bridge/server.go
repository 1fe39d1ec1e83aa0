package bridge

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/static"
)

// Options configures a Server. Store, JWTSecret, PublishKey and AdminKey are required; every
// other zero field takes the default noted.
type Options struct {
	Store      cache.Store // where messages are kept; required
	Log        *zap.Logger // nil: no logging
	PublishKey string      // bearer key of POST /v1/publish; required
	AdminKey   string      // bearer key of /v1/admin/; required

	// Keys verify subscriber tokens. When nil, JWTSecret alone does (HS256); one of the two is
	// required. JWTSecret is also what demo mode signs its tokens with.
	Keys        *Keys
	JWTSecret   []byte
	JWTAudience string        // when set, a token's aud must include it
	JWTIssuer   string        // when set, a token's iss must equal it
	JWTLeeway   time.Duration // clock skew allowed on exp and nbf; default 5s

	TicketTTL    time.Duration // how long a ticket from POST /v1/ticket is good for; default 30s
	TicketSecret []byte        // signs tickets; default: derived from PublishKey (shared by all nodes)

	MaxConnections        int // open SSE/WS streams and waiting long-polls, all users; default 50000
	MaxConnectionsPerUser int // the same, per user; default 16

	MaxMessageBytes int           // largest data of one message; default 64 KiB
	MaxBatch        int           // most messages in one publish; default 1000
	MaxBodyBytes    int64         // largest publish body; default 16 MiB
	LongPollMax     time.Duration // cap on a long-poll's wait; default 30s
	Heartbeat       time.Duration // SSE ping interval while idle; default 15s
	WriteTimeout    time.Duration // deadline for each SSE write; default 10s
	Retry           time.Duration // SSE reconnect hint ("retry:"); default 2s
	CORSOrigins     []string      // origins allowed cross-origin; "*" allows any; none: same-origin only
	DrainWindow     time.Duration // Drain spreads the ends of open streams over it; zero: all at once

	// Registry receives bridged's metrics, served at /metrics; nil: a registry of its own.
	// cmd/bridged adds the Go and process collectors to the one it passes.
	Registry *prometheus.Registry

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
	if o.JWTLeeway <= 0 {
		o.JWTLeeway = 5 * time.Second
	}
	if o.TicketTTL <= 0 {
		o.TicketTTL = 30 * time.Second
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = 50000
	}
	if o.MaxConnectionsPerUser <= 0 {
		o.MaxConnectionsPerUser = 16
	}
}

// Server serves bridged's HTTP API (see the package doc). It is an http.Handler and is safe for
// concurrent use. Create it with New; call Drain when shutting down.
type Server struct {
	opts       Options
	store      cache.Store
	claimer    cache.Claimer // the store's, or nil: then there are no tickets
	log        *zap.Logger
	jwt        *jwt.Parser
	keys       *Keys
	ticketKey  []byte
	publishKey secretKey
	adminKey   secretKey
	conns      *connLimiter
	metrics    *metrics
	handlers   [3]http.Handler // by Scope

	drain     chan struct{} // closed by Drain
	drainOnce sync.Once
	unready   atomic.Bool  // set by Unready or Drain: /readyz fails
	window    atomic.Int64 // DrainWindow in nanoseconds; SetDrainWindow changes it

	faults      *faults // demo mode's fault switchboard; nil otherwise
	wsOrigins   []string
	wsAnyOrigin bool
	wsConns     sync.WaitGroup // WebSocket handlers, which net/http stops tracking once hijacked
	parked      parkedSet      // SSE streams and long-polls taken over from net/http (park.go)
	answers     *answerOffers  // long-polls and streams offered to publishers (answer.go); nil unless the store is in memory
}

// New returns a Server for o, or an error naming the missing required option.
func New(o Options) (*Server, error) {
	var missing []error
	if o.Store == nil {
		missing = append(missing, errors.New("bridge: Options.Store is required"))
	}
	if o.Keys == nil && len(o.JWTSecret) == 0 {
		missing = append(missing, errors.New("bridge: Options.Keys or Options.JWTSecret is required"))
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
	keys := o.Keys
	if keys == nil {
		var err error
		if keys, err = LoadKeys(KeySource{HMACSecret: o.JWTSecret}); err != nil {
			return nil, err
		}
	}
	parse := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithLeeway(o.JWTLeeway)}
	if o.JWTAudience != "" {
		parse = append(parse, jwt.WithAudience(o.JWTAudience))
	}
	if o.JWTIssuer != "" {
		parse = append(parse, jwt.WithIssuer(o.JWTIssuer))
	}
	s := &Server{
		opts:       o,
		store:      o.Store,
		log:        o.Log,
		keys:       keys,
		jwt:        jwt.NewParser(parse...),
		ticketKey:  ticketKey(o.TicketSecret, o.PublishKey),
		publishKey: newSecretKey(o.PublishKey),
		adminKey:   newSecretKey(o.AdminKey),
		conns:      newConnLimiter(o.MaxConnections, o.MaxConnectionsPerUser),
		drain:      make(chan struct{}),
	}
	s.window.Store(int64(o.DrainWindow))
	s.wsOrigins, s.wsAnyOrigin = wsOriginPatterns(o.CORSOrigins)
	if o.Demo != nil {
		s.faults = newFaults()
	}
	s.claimer, _ = o.Store.(cache.Claimer)
	if _, ok := o.Store.(cache.InMemory); ok {
		s.answers = &answerOffers{}
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s.metrics = newMetrics(o.Registry, o.Store, s.conns, &s.parked)
	for _, scope := range []Scope{All, Public, Internal} {
		s.handlers[scope] = s.routes(scope)
	}
	return s, nil
}

// Scope selects the endpoints a listener serves.
type Scope int

const (
	// All serves every endpoint on one listener; publishing and the operator endpoints are
	// protected by their keys.
	All Scope = iota
	// Public serves what browsers use: the read transports, tickets, the demo, health probes.
	Public
	// Internal serves what the app and operators use: publishing, the operator endpoints and
	// health probes, for a listener that is not exposed to the internet (BRIDGE_INTERNAL_ADDR).
	Internal
)

// Handler returns the handler for a listener serving scope.
func (s *Server) Handler(scope Scope) http.Handler { return s.handlers[scope] }

// ServeHTTP implements http.Handler with every endpoint (scope All).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handlers[All].ServeHTTP(w, r) }

// Drain starts shutting the server down: /readyz fails, SSE streams get "event: close" with reason
// shutdown and end, each at a random moment within the drain window so their reconnects spread
// over the other nodes, pending long-polls answer at once, and new streams are refused with 503.
// It is idempotent and returns at once; http.Server.Shutdown then waits for the handlers.
func (s *Server) Drain() {
	s.unready.Store(true)
	s.drainOnce.Do(func() {
		close(s.drain)
		s.parked.pokeAll()
	})
}

// SetDrainWindow changes the window Drain spreads stream ends over (an interactive Ctrl-C wants
// none). Call it before Drain.
func (s *Server) SetDrainWindow(d time.Duration) { s.window.Store(int64(d)) }

// drainDelay picks when, within the drain window, one stream ends.
func (s *Server) drainDelay() time.Duration {
	if w := s.window.Load(); w > 0 {
		return time.Duration(rand.Int64N(w))
	}
	return 0
}

// Wait blocks until every WebSocket handler and every parked SSE stream and long-poll has
// ended, or ctx ends. Call it after Drain and http.Server.Shutdown, which does not wait for
// hijacked connections, so their close frames and answers go out before the process exits.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wsConns.Wait(); s.parked.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err() // the goroutine above ends when the last handler does
	}
}

// Unready makes /readyz fail while everything else keeps working: the first step of a rolling
// restart, so load balancers stop sending new clients before Drain moves the open ones.
func (s *Server) Unready() { s.unready.Store(true) }

func (s *Server) isDraining() bool {
	select {
	case <-s.drain:
		return true
	default:
		return false
	}
}

func (s *Server) routes(scope Scope) http.Handler {
	mux := http.NewServeMux()
	public, internal := scope != Internal, scope != Public
	handle := func(method, path string, h apiFunc) {
		mux.Handle(method+" "+path, s.api(h))
		mux.Handle(path, s.api(methodNotAllowed(method)))
	}
	if internal {
		handle("POST", "/v1/publish", s.keyOnly(&s.publishKey, "BRIDGE_PUBLISH_KEY", s.publish))
		handle("GET", "/v1/admin/messages", s.keyOnly(&s.adminKey, "BRIDGE_ADMIN_KEY", s.adminMessages))
		handle("GET", "/v1/admin/stats", s.keyOnly(&s.adminKey, "BRIDGE_ADMIN_KEY", s.adminStats))
		// On its own internal listener /metrics is open to the scraper; sharing the public one,
		// it needs the admin key like everything else there (Prometheus: authorization: credentials).
		metrics := func(w http.ResponseWriter, r *http.Request) error { s.metricsHandler().ServeHTTP(w, r); return nil }
		if scope == All {
			metrics = s.keyOnly(&s.adminKey, "BRIDGE_ADMIN_KEY", metrics)
		}
		handle("GET", "/metrics", metrics)
	}
	if public {
		handle("GET", "/v1/poll", s.subscriberOnly(tokenOnly, s.poll))
		handle("GET", "/v1/sse", s.subscriberOnly(tokenOrTicket, s.sse))
		handle("GET", "/v1/ws", s.subscriberOnly(tokenOrTicket, s.ws))
		handle("POST", "/v1/client-events", s.subscriberOnly(tokenOnly, s.clientEvent))
		handle("POST", "/v1/ticket", s.subscriberOnly(tokenHeaderOnly, s.issueTicket))
		mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static.FS)))
		if s.opts.Demo != nil {
			mux.Handle("GET /{$}", http.HandlerFunc(s.demoPage))
			mux.Handle("GET /demo/token", s.api(s.demoToken))
			mux.Handle("GET /demo/info", s.api(s.demoInfo))
			mux.Handle("GET /demo/faults", s.api(s.demoFaults))
			mux.Handle("POST /demo/faults", s.api(s.demoFaults))
		}
	}
	handle("GET", "/healthz", s.healthz)
	handle("GET", "/readyz", s.readyz)
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
	if s.unready.Load() {
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
