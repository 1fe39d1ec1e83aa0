package redis

import (
	"fmt"
	"strings"
)

// Key layout. Every key of one stream carries the stream's name as its Redis Cluster hash tag,
// "{name}", so a stream's keys live in one slot and one script may touch them all:
//
//	<prefix>{<name>}:h   hash: e (epoch, base 36), n (last seq), t (newest time, µs), b (bytes
//	                     retained, as counted against the per-stream byte cap), and one field
//	                     k:<key> -> seq per live idempotency key
//	<prefix>{<name>}:m   stream of messages; entry id <seq>-0, fields t (µs), e (event), d (data)
//	<prefix>{<name>}:q   list of "<time µs> <key>" in the order keys were stored, for their expiry
//	<prefix>{<name>}:n   the pub/sub channel announcing appends (a channel, not a key)
//	<prefix>claim:{<key>} a claim (cache.Claimer): its expiry time, µs
//
// Names are escaped (escapeTag) so that no name can end the tag early or leave it empty: with a
// bare name "}x" the tag would be empty and Redis would hash each whole key on its own, putting
// the stream's keys in different slots.
const (
	suffixMeta    = ":h"
	suffixLog     = ":m"
	suffixKeys    = ":q"
	suffixChannel = ":n"
)

// keys are the names one stream uses.
type keys struct {
	meta, log, idem, channel string
}

func (s *Store) keysOf(stream string) keys {
	base := s.prefix + "{" + escapeTag(stream) + "}"
	return keys{meta: base + suffixMeta, log: base + suffixLog, idem: base + suffixKeys, channel: base + suffixChannel}
}

func (s *Store) claimKey(key string) string { return s.prefix + "claim:{" + escapeTag(key) + "}" }

// streamOfMeta returns the stream name a meta key belongs to, or false for a key of another shape.
func (s *Store) streamOfMeta(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.prefix+"{")
	if !ok {
		return "", false
	}
	tag, ok := strings.CutSuffix(rest, "}"+suffixMeta)
	if !ok || strings.ContainsAny(tag, "{}") {
		return "", false
	}
	name, err := unescapeTag(tag)
	return name, err == nil
}

// escapeTag makes s safe inside a hash tag: '%', '{' and '}' become %25, %7B and %7D. Any other
// byte stays, so ordinary names read as themselves in redis-cli. The result is never empty for a
// non-empty s.
func escapeTag(s string) string {
	if !strings.ContainsAny(s, "%{}") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', '{', '}':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescapeTag(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+3 > len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		switch s[i+1 : i+3] {
		case "25":
			b.WriteByte('%')
		case "7B":
			b.WriteByte('{')
		case "7D":
			b.WriteByte('}')
		default:
			return "", fmt.Errorf("bad escape in %q", s)
		}
		i += 2
	}
	return b.String(), nil
}

// globEscape escapes the characters SCAN's MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
