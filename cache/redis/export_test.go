package redis

import "context"

// Test hooks: the names a stream uses, the keep-alive on demand, and counts for the benchmarks.

// KeysOf returns the stream's meta, log and idempotency keys.
func (s *Store) KeysOf(stream string) []string {
	k := s.keysOf(stream)
	return []string{k.meta, k.log, k.idem}
}

// ChannelOf returns the stream's pub/sub channel.
func (s *Store) ChannelOf(stream string) string { return s.keysOf(stream).channel }

// Touch runs the keep-alive of watched streams now.
func (s *Store) Touch(ctx context.Context) error {
	s.hub.mu.RLock()
	var streams []string
	for _, t := range s.hub.topics {
		if t.refs > 0 {
			streams = append(streams, t.stream)
		}
	}
	s.hub.mu.RUnlock()
	return s.touch(ctx, streams)
}

// Notifications returns how many pub/sub notifications this store has received.
func (s *Store) Notifications() int64 { return s.hub.notes.Load() }
