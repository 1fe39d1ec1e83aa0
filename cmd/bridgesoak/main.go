// Command bridgesoak soaks a real bridged with thousands of SSE and long-poll clients that drop
// and resume at random while messages flow and a flood pushes the memory cap, and says whether
// anything was lost, duplicated, reordered or leaked. Run it with -h for the flags; ledger.go
// holds the bookkeeping rules and docs/benchmarks.md the figures of a long run.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		logf("%v", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // the first signal ends the soak early with a report; a second one kills
	code, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		logf("%v", err)
		code = 2
	}
	stop()
	os.Exit(code)
}
