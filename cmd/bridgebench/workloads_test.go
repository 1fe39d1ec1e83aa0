package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWakeSeriesFindsTheStall puts a stall of one window among quick ones: worstWindow names it,
// and the typical window stays quick.
func TestWakeSeriesFindsTheStall(t *testing.T) {
	var w wakeSeries
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
			w.add(base+int64(i)*int64(time.Millisecond), d)
		})
	}
	wg.Wait()
	off, n, worst, typical, ok := w.worstWindow(wakeWindow)
	if !ok || off != 600*time.Millisecond || n != 20 || worst != 12*time.Millisecond || typical != time.Millisecond {
		t.Fatalf("worst window at +%v with %d wake-ups, median %v; typical %v (ok %v); want +600ms, 20, 12ms, 1ms", off, n, worst, typical, ok)
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
	if len(lines) != 1001 || lines[0] != "publish_unix_ns,latency_ns" {
		t.Fatalf("%d lines, header %q; want a header and 1000 lines", len(lines), lines[0])
	}
	for i, l := range lines[1:] { // in publish order whatever order they were added in
		at, lat, _ := strings.Cut(l, ",")
		want := time.Millisecond
		if i >= 600 && i < 620 {
			want = 12 * time.Millisecond
		}
		if at != strconv.FormatInt(base+int64(i)*int64(time.Millisecond), 10) || lat != strconv.FormatInt(int64(want), 10) {
			t.Fatalf("line %d: %q, want publish %d and latency %d", i+1, l, base+int64(i)*int64(time.Millisecond), want)
		}
	}
}
