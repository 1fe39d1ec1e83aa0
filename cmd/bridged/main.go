// Command bridged is the WebSocket-fallback bridge: it keeps an expiring per-user cache of the
// messages an app publishes and serves it over SSE, long-poll and poll. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Environ(), os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bridged:", err)
		os.Exit(1)
	}
}
