package bridge

import (
	"bytes"
	"unicode/utf8"

	"github.com/bridged/bridged/cache"
)

// timeFormat is RFC 3339 in UTC with milliseconds: what JavaScript's Date.parse reads exactly.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// appendMessage appends m as the JSON object every transport carries:
// {"id":"<cursor>","event":"<event>","data":<data>,"time":"<RFC 3339>"}. Data is stored as
// compact, valid JSON by publish (empty data, which only a foreign producer could store, is null).
// It does not allocate when b has room.
func appendMessage(b []byte, m *cache.Message) []byte {
	return appendMessageFields(append(b, '{'), m)
}

// appendMessageFields appends the members of m's object and its closing brace, so callers can
// put members of their own first.
func appendMessageFields(b []byte, m *cache.Message) []byte {
	b = append(b, `"id":"`...)
	b = m.ID.AppendText(b)
	b = append(b, `","event":`...)
	b = appendJSONString(b, m.Event)
	b = append(b, `,"data":`...)
	if len(m.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, m.Data...)
	}
	b = append(b, `,"time":"`...)
	b = m.Time.UTC().AppendFormat(b, timeFormat)
	return append(b, `"}`...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Unlike encoding/json it leaves <, > and & alone
// (nothing here is embedded in HTML). Control characters, U+2028 and U+2029 are escaped and
// invalid UTF-8 becomes U+FFFD, so the result is valid JSON and contains no raw line break.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// SSE framing (WHATWG HTML, "Server-sent events"). A field's value ends at CR, LF or CRLF, so
// nothing written here may contain one except as the field terminator.

// appendSSEField appends "name: value\n" for a value known to hold no CR or LF (cursors, event
// names checked at publish).
func appendSSEField[T ~string | ~[]byte](b []byte, name string, value T) []byte {
	b = append(b, name...)
	b = append(b, ':', ' ')
	b = append(b, value...)
	return append(b, '\n')
}

// appendSSEData appends payload as data lines: one "data: " line per line of payload, split at
// CR, LF and CRLF, which a reader joins back with LF. Our payloads are compact JSON and have no
// line breaks, so this is one line; the split is what makes forging a field impossible whatever
// the payload.
func appendSSEData(b, payload []byte) []byte {
	for {
		i := bytes.IndexAny(payload, "\r\n")
		if i < 0 {
			return appendSSEField(b, "data", payload)
		}
		b = appendSSEField(b, "data", payload[:i])
		if payload[i] == '\r' && i+1 < len(payload) && payload[i+1] == '\n' {
			i++
		}
		payload = payload[i+1:]
	}
}
