package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWakeSeriesFindsTheStall puts a stall of one window among quick ones: worstWindow names it,
// and the typical window stays quick.
func TestWakeSeriesFindsTheStall(t *testing.T) {
	var w wakeSeries
	w.acked = make([]atomic.Int64, 1000)
	if _, _, _, _, ok := w.worstWindow(wakeWindow); ok {
		t.Fatal("an empty series has a worst window")
	}
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).UnixNano()
	var wg sync.WaitGroup
	for i := range 1000 { // 1 ms apart: 50 windows of 20, recorded from many goroutines
		wg.Go(func() {
			d := time.Millisecond
			if i >= 600 && i < 620 {
				d = 12 * time.Millisecond // the window at +600 ms stalls
			}
			at := base + int64(i)*int64(time.Millisecond)
			w.add(at, d, i)
			if i < 610 { // the second half of the stall had its publishes answered late too
				w.published(i, at+int64(time.Millisecond))
			} else if i < 620 {
				w.published(i, at+int64(12*time.Millisecond))
			}
		})
	}
	wg.Wait()
	off, n, worst, typical, ok := w.worstWindow(wakeWindow)
	if !ok || off != 600*time.Millisecond || n != 20 || worst != 12*time.Millisecond || typical != time.Millisecond {
		t.Fatalf("worst window at +%v with %d wake-ups, median %v; typical %v (ok %v); want +600ms, 20, 12ms, 1ms", off, n, worst, typical, ok)
	}

	if late, publishLate := w.lateSplit(5 * time.Millisecond); late != 20 || publishLate != 10 {
		t.Fatalf("%d late wake-ups, %d with their publish answered late; want 20 and 10", late, publishLate)
	}

	path := filepath.Join(t.TempDir(), "wake.csv")
	if err := w.writeCSV(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 1001 || lines[0] != "publish_unix_ns,latency_ns,publish_answered_ns" {
		t.Fatalf("%d lines, header %q; want a header and 1000 lines", len(lines), lines[0])
	}
	for i, l := range lines[1:] { // in publish order whatever order they were added in
		want, answered := time.Millisecond, time.Millisecond
		if i >= 600 && i < 620 {
			want = 12 * time.Millisecond
		}
		if i >= 610 && i < 620 {
			answered = 12 * time.Millisecond
		} else if i >= 620 {
			answered = -1
		}
		wantLine := fmt.Sprintf("%d,%d,%d", base+int64(i)*int64(time.Millisecond), want, answered)
		if l != wantLine {
			t.Fatalf("line %d: %q, want %q", i+1, l, wantLine)
		}
	}
}
