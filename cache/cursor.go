package cache

import (
	"fmt"
	"strconv"
	"strings"
)

// Cursor is a position in a stream: the id of a message, or the point just before one.
// The zero Cursor means "before everything retained". Its text form is "<epoch>-<seq>" with the
// epoch in lower-case base 36 and the seq in decimal, both without leading zeros, for example
// "1x3k9q0f2m-17". Cursors of one stream and epoch compare by Seq.
type Cursor struct {
	Epoch uint64 // never 0 in a valid non-zero cursor
	Seq   uint64 // 0 is "before the first message" of the epoch
}

// MaxCursorLen is the longest text form of a Cursor: 13 base-36 digits, '-', 20 decimal digits.
const MaxCursorLen = 13 + 1 + 20

// IsZero reports whether c is the zero Cursor.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// String returns the text form of c, or "" for the zero Cursor.
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	var b [MaxCursorLen]byte
	return string(c.AppendText(b[:0]))
}

// AppendText appends the text form of c to b and returns the extended slice. It appends nothing
// for the zero Cursor and does not allocate when b has room.
func (c Cursor) AppendText(b []byte) []byte {
	if c.IsZero() {
		return b
	}
	b = strconv.AppendUint(b, c.Epoch, 36)
	b = append(b, '-')
	return strconv.AppendUint(b, c.Seq, 10)
}

// MarshalText implements encoding.TextMarshaler.
func (c Cursor) MarshalText() ([]byte, error) { return c.AppendText(nil), nil }

// UnmarshalText implements encoding.TextUnmarshaler with the rules of ParseCursor.
func (c *Cursor) UnmarshalText(b []byte) error {
	p, err := ParseCursor(string(b))
	if err != nil {
		return err
	}
	*c = p
	return nil
}

// ParseCursor parses the text form of a Cursor. The empty string is the zero Cursor. Anything that
// String would not have produced, such as upper case, leading zeros, a zero epoch or a number out
// of range, is an error wrapping ErrBadCursor, so every accepted text round-trips exactly.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	if len(s) > MaxCursorLen {
		return Cursor{}, fmt.Errorf("%w: longer than %d bytes", ErrBadCursor, MaxCursorLen)
	}
	e, q, ok := strings.Cut(s, "-")
	if !ok {
		return Cursor{}, fmt.Errorf("%w: want <epoch>-<seq>", ErrBadCursor)
	}
	epoch, ok := parseCanonical(e, 36)
	if !ok || epoch == 0 {
		return Cursor{}, fmt.Errorf("%w: bad epoch", ErrBadCursor)
	}
	seq, ok := parseCanonical(q, 10)
	if !ok {
		return Cursor{}, fmt.Errorf("%w: bad seq", ErrBadCursor)
	}
	return Cursor{Epoch: epoch, Seq: seq}, nil
}

// parseCanonical parses s in base and accepts it only in the exact form strconv.AppendUint
// produces: lower-case digits, no sign, no leading zeros.
func parseCanonical(s string, base int) (uint64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || base == 36 && 'a' <= c && c <= 'z') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, base, 64)
	return v, err == nil
}
