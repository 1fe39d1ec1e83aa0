// Command wsapp is an example app server with a WebSocket of its own, the usual top rung of the
// ladder, and the publisher package beside it: every message it sends is published to bridged
// first, and the frame it sends on the user's socket carries the id bridged returned, so the
// browser client keeps one cursor whichever way a message reaches it.
//
//	wsapp -bridged http://127.0.0.1:8080 [-listen 127.0.0.1:9090] [-heartbeat 15s]
//	      (BRIDGE_PUBLISH_KEY and BRIDGE_JWT_SECRET from the environment)
//
// Endpoints:
//
//	GET  /ws?token=JWT   the user's socket: {"type":"hello"}, then {"type":"message","id","event","data"}
//	                     per message and {"type":"ping"} every heartbeat; closed with 4001 when the
//	                     token expires, as bridged's /v1/ws does
//	POST /send           {"user","event"?,"data"}: publish to bridged, then send on the user's sockets;
//	                     answers {"id"}
//
// The browser tests use it as "the app's socket". It prints {"msg":"listening","addr"} on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/bridged/bridged/publisher"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wsapp:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:9090", "address to listen on")
	bridged := flag.String("bridged", "http://127.0.0.1:8080", "bridged's base URL")
	heartbeat := flag.Duration("heartbeat", 15*time.Second, "interval of the socket's ping frames")
	flag.Parse()
	key, secret := os.Getenv("BRIDGE_PUBLISH_KEY"), os.Getenv("BRIDGE_JWT_SECRET")
	if key == "" || secret == "" {
		return errors.New("BRIDGE_PUBLISH_KEY and BRIDGE_JWT_SECRET must be set")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pub, err := publisher.New(publisher.Options{URL: *bridged, Key: key})
	if err != nil {
		return err
	}
	app := newApp(pub, []byte(secret), *heartbeat)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	line, _ := json.Marshal(map[string]string{"msg": "listening", "addr": ln.Addr().String()})
	fmt.Println(string(line))

	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		app.shutdown()
		err = srv.Shutdown(sctx)
		<-errc
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, pub.Close(cctx), app.wait(cctx))
}

// app is the example server: a hub of sockets by user, and the publisher.
type app struct {
	pub       *publisher.Publisher
	secret    []byte
	heartbeat time.Duration
	mux       *http.ServeMux
	parser    *jwt.Parser

	mu      sync.Mutex
	sockets map[string]map[*socket]struct{}
	done    chan struct{} // closed by shutdown
	conns   sync.WaitGroup
}

// socket is one user's connection. Its writer goroutine is the only one writing to conn.
type socket struct {
	out chan []byte // frames to send; a full channel means a slow reader, who is cut off
}

func newApp(pub *publisher.Publisher, secret []byte, heartbeat time.Duration) *app {
	a := &app{
		pub: pub, secret: secret, heartbeat: heartbeat,
		sockets: map[string]map[*socket]struct{}{},
		done:    make(chan struct{}),
		parser:  jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()),
	}
	a.mux = http.NewServeMux()
	a.mux.HandleFunc("GET /ws", a.ws)
	a.mux.HandleFunc("POST /send", a.send)
	return a
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *app) shutdown() { close(a.done) }

func (a *app) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.conns.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send publishes one message to bridged, then puts it on the user's sockets with its id.
func (a *app) send(w http.ResponseWriter, r *http.Request) {
	var in struct {
		User  string          `json:"user"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&in); err != nil || in.User == "" || in.Data == nil {
		http.Error(w, `{"error":"want {\"user\",\"event\"?,\"data\"}"}`, http.StatusBadRequest)
		return
	}
	if in.Event == "" {
		in.Event = "message"
	}
	id, err := a.pub.Publish(r.Context(), publisher.Message{User: in.User, Event: in.Event, Data: in.Data})
	if err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadGateway)
		return
	}
	frame, _ := json.Marshal(map[string]any{"type": "message", "id": id, "event": in.Event, "data": in.Data})
	a.mu.Lock()
	for s := range a.sockets[in.User] {
		select {
		case s.out <- frame:
		default: // too slow: its writer sees the channel closed and hangs up; the client resumes
			close(s.out)
			delete(a.sockets[in.User], s)
		}
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":%q}`, id)
}

// ws serves a user's socket until the client leaves, the token expires or the app stops.
func (a *app) ws(w http.ResponseWriter, r *http.Request) {
	var claims jwt.RegisteredClaims
	if _, err := a.parser.ParseWithClaims(r.URL.Query().Get("token"), &claims, func(*jwt.Token) (any, error) { return a.secret, nil }); err != nil || claims.Subject == "" {
		http.Error(w, `{"error":"a valid token is required"}`, http.StatusUnauthorized)
		return
	}
	conn, err := websocket.Accept(w, r, nil) // same origin only: the page and the socket share a host
	if err != nil {
		return
	}
	a.conns.Add(1)
	defer a.conns.Done()
	defer conn.CloseNow()
	ctx := conn.CloseRead(r.Context())

	s := &socket{out: make(chan []byte, 256)}
	a.mu.Lock()
	if a.sockets[claims.Subject] == nil {
		a.sockets[claims.Subject] = map[*socket]struct{}{}
	}
	a.sockets[claims.Subject][s] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.sockets[claims.Subject], s)
		a.mu.Unlock()
	}()

	write := func(b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return conn.Write(wctx, websocket.MessageText, b)
	}
	if write([]byte(`{"type":"hello"}`)) != nil {
		return
	}
	ping := time.NewTicker(a.heartbeat)
	defer ping.Stop()
	expiry := time.NewTimer(time.Until(claims.ExpiresAt.Time))
	defer expiry.Stop()
	for {
		select {
		case frame, ok := <-s.out:
			if !ok {
				conn.Close(4008, "too slow")
				return
			}
			if write(frame) != nil {
				return
			}
		case <-ping.C:
			if write([]byte(`{"type":"ping"}`)) != nil {
				return
			}
		case <-expiry.C:
			conn.Close(4001, "token_expired")
			return
		case <-a.done:
			conn.Close(websocket.StatusGoingAway, "shutdown")
			return
		case <-ctx.Done():
			return
		}
	}
}
