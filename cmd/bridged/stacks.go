package main

import (
	"strings"

	"go.uber.org/zap"
)

// Goroutine stacks. A kept connection's goroutine (bridge/keepalive.go) serves a request on a
// stack grown to about 8 KiB, then waits for the next one using a quarter of it or less. At every
// collection the runtime halves such stacks, and the next request grows them again: two stack
// copies per connection per collection, about 8 % of bridged's CPU time in the long-poll loop of
// docs/benchmarks.md. So bridged runs with GODEBUG=gcshrinkstackoff=1 unless GODEBUG names
// gcshrinkstackoff already (gcshrinkstackoff=0 restores the runtime's default). The runtime reads
// that setting only at start, so bridged re-executes itself with it (reexec, Unix only).
//
// The cost is memory a connection keeps after it was busy: its stack stays as large as the
// largest request it served (8 KiB), where the collector would have halved it while idle. A
// connection that parked once and waits, the common case, never grew its stack and costs the same.

// stackSetting is the GODEBUG setting bridged adds.
const stackSetting = "gcshrinkstackoff=1"

// keepStacksEnv returns environ with stackSetting added to GODEBUG, or nil when GODEBUG names
// gcshrinkstackoff already (set by the operator, or by an earlier reexec).
func keepStacksEnv(environ []string) []string {
	godebug := runtimeEnv(environ, "GODEBUG")
	if _, named := stackShrinkOff(godebug); named {
		return nil
	}
	if godebug != "" {
		godebug += "," + stackSetting
	} else {
		godebug = stackSetting
	}
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return append(env, "GODEBUG="+godebug)
}

// stackShrinkOff reads gcshrinkstackoff in a GODEBUG value as the runtime does (the last
// setting wins): off says the collector does not shrink stacks, named that the value names it.
func stackShrinkOff(godebug string) (off, named bool) {
	for _, s := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(s, "="); ok && k == "gcshrinkstackoff" {
			off, named = v != "0", true
		}
	}
	return off, named
}

// logStacks says whether the collector shrinks goroutine stacks.
func logStacks(environ []string, log *zap.Logger) {
	off, _ := stackShrinkOff(runtimeEnv(environ, "GODEBUG"))
	log.Info("goroutine stacks", zap.Bool("shrunk_by_collector", !off),
		zap.String("rule", "not shrunk unless GODEBUG sets gcshrinkstackoff=0"))
}
