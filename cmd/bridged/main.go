// Command bridged is the WebSocket-fallback bridge: it keeps an expiring per-user cache of the
// messages an app publishes and serves it over SSE, long-poll and poll. See README.md.
//
//	bridged               run the daemon, configured by BRIDGE_* variables
//	bridged healthcheck   exit 0 if the daemon configured by the same variables answers /healthz
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: bridged [healthcheck]
  bridged              run the daemon, configured by BRIDGE_* environment variables (see README.md)
  bridged healthcheck  exit 0 if the daemon at BRIDGE_ADDR answers /healthz (for container HEALTHCHECKs)`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			if err := healthcheck(os.Getenv("BRIDGE_ADDR")); err != nil {
				fmt.Fprintln(os.Stderr, "bridged healthcheck:", err)
				os.Exit(1)
			}
			return
		case "-h", "-help", "--help", "help":
			fmt.Println(usage)
			return
		default:
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
	}
	if env := keepStacksEnv(os.Environ()); env != nil {
		reexec(env) // returns only if it failed
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { // lives as long as the process
		if sig := <-sigs; sig == os.Interrupt {
			cancel(ErrInterrupted)
		} else {
			cancel(ErrTerminated)
		}
		// A second signal while draining means "now": a person pressing Ctrl-C again.
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "bridged: %v during shutdown; exiting now\n", sig)
		os.Exit(1)
	}()
	if err := run(ctx, os.Environ(), os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bridged:", err)
		os.Exit(1)
	}
}
