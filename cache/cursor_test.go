package cache_test

import (
	"errors"
	"testing"

	"github.com/bridged/bridged/cache"
)

func TestParseCursor(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want cache.Cursor
		bad  bool
	}{
		{name: "empty is zero", in: "", want: cache.Cursor{}},
		{name: "simple", in: "a-1", want: cache.Cursor{Epoch: 10, Seq: 1}},
		{name: "seq zero", in: "z-0", want: cache.Cursor{Epoch: 35, Seq: 0}},
		{name: "max", in: "3w5e11264sgsf-18446744073709551615", want: cache.Cursor{Epoch: 1<<64 - 1, Seq: 1<<64 - 1}},
		{name: "upper case", in: "A-1", bad: true},
		{name: "leading zero epoch", in: "0a-1", bad: true},
		{name: "leading zero seq", in: "a-01", bad: true},
		{name: "zero epoch", in: "0-1", bad: true},
		{name: "no dash", in: "a1", bad: true},
		{name: "two dashes", in: "a-1-2", bad: true},
		{name: "sign", in: "a-+1", bad: true},
		{name: "negative", in: "a--1", bad: true},
		{name: "empty seq", in: "a-", bad: true},
		{name: "empty epoch", in: "-1", bad: true},
		{name: "overflow", in: "a-18446744073709551616", bad: true},
		{name: "epoch overflow", in: "3w5e11264sgsg-1", bad: true},
		{name: "spaces", in: " a-1", bad: true},
		{name: "integer only (browser default)", in: "42", bad: true},
		{name: "too long", in: "a-1000000000000000000000000000000000", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cache.ParseCursor(tt.in)
			if tt.bad {
				if !errors.Is(err, cache.ErrBadCursor) {
					t.Fatalf("ParseCursor(%q) = %v, %v; want ErrBadCursor", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCursor(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Fatalf("String() = %q, want %q", s, tt.in)
			}
		})
	}
}

func TestCursorAppendTextDoesNotAllocate(t *testing.T) {
	c := cache.Cursor{Epoch: 1 << 60, Seq: 123456789}
	buf := make([]byte, 0, cache.MaxCursorLen)
	if n := testing.AllocsPerRun(100, func() { buf = c.AppendText(buf[:0]) }); n != 0 {
		t.Fatalf("AppendText allocated %v times", n)
	}
	if len(c.String()) > cache.MaxCursorLen {
		t.Fatal("MaxCursorLen too small")
	}
}

// FuzzCursor: every text ParseCursor accepts formats back to itself, and every cursor's text
// parses back to the same cursor.
func FuzzCursor(f *testing.F) {
	for _, s := range []string{"", "a-1", "3w5e11264sgsf-18446744073709551615", "0-0", "A-1", "a-01", "42"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := cache.ParseCursor(s)
		if err != nil {
			if !errors.Is(err, cache.ErrBadCursor) {
				t.Fatalf("ParseCursor(%q) error %v does not wrap ErrBadCursor", s, err)
			}
			return
		}
		if got := c.String(); got != s {
			t.Fatalf("ParseCursor(%q).String() = %q", s, got)
		}
		back, err := cache.ParseCursor(c.String())
		if err != nil || back != c {
			t.Fatalf("round trip of %v: %v, %v", c, back, err)
		}
	})
}
