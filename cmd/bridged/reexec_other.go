//go:build !unix

package main

// reexec is a no-op where a process cannot replace itself: bridged runs with the runtime's
// default, and GODEBUG=gcshrinkstackoff=1 can be set by hand.
func reexec([]string) {}
