//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces the process with bridged run again under env (stacks.go). It returns only when
// that fails, after saying so: bridged then runs with the runtime's default.
func reexec(env []string) {
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(os.Stderr, "bridged: could not re-execute with GODEBUG=%s (%v); goroutine stacks will be shrunk by the collector\n", stackSetting, err)
}
