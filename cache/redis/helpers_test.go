package redis_test

import "time"

// Generous bounds that only catch hangs; no test asserts how fast anything is.
const (
	readyWait = 30 * time.Second
	pollEvery = 10 * time.Millisecond
)

func after(d time.Duration) <-chan time.Time { return time.After(d) }
