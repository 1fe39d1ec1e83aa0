// Command faultproxy runs internal/faultproxy on its own, for tests written in other languages
// (the browser tests). It prints one JSON line {"msg":"listening","addr":"…"} to stdout when it
// accepts connections, and stops on SIGTERM or SIGINT.
//
//	faultproxy -target http://127.0.0.1:8080 -route /app/=http://127.0.0.1:9090 [-listen 127.0.0.1:0]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bridged/bridged/internal/faultproxy"
)

type routeFlag map[string]*url.URL

func (r routeFlag) String() string { return fmt.Sprint(map[string]*url.URL(r)) }

func (r routeFlag) Set(v string) error {
	prefix, target, ok := strings.Cut(v, "=")
	u, err := url.Parse(target)
	if !ok || err != nil || u.Host == "" || !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		return errors.New("want /prefix/=http://host:port")
	}
	r[prefix] = u
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "faultproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	target := flag.String("target", "", "default backend, http://host:port (required)")
	routes := routeFlag{}
	flag.Var(routes, "route", "another backend for a path prefix, /prefix/=http://host:port (repeatable)")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return errors.New("-target http://host:port is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: faultproxy.New(u, routes), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	line, _ := json.Marshal(map[string]string{"msg": "listening", "addr": ln.Addr().String()})
	fmt.Println(string(line))

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx) // long requests do not get to finish: this is a test tool
	srv.Close()
	<-errc
	return nil
}
