package redis

import (
	"sync/atomic"

	"github.com/bridged/bridged/cache"
)

// Stats. bridged reads Stats at every Prometheus scrape, so it must be cheap and must never wait
// for Redis: it only loads figures that are kept up to date elsewhere.
//
// Expired and Evicted count the messages this node's scripts removed (the append script, and
// reclaim when Redis is full), which report it in their replies: no extra round trip. They are
// this node's share; the cluster's figure is the sum over nodes. Messages that Redis frees with
// an idle stream's keys are not seen by any script, so they are not counted.

// stats holds the figures Stats returns.
type stats struct {
	expired, evicted atomic.Int64 // since New, from the scripts' replies
}

// Stats implements cache.Statser. It never calls Redis: it returns the counters of what this
// node's scripts removed. The sizes are not known yet and read 0.
func (s *Store) Stats() cache.Stats {
	return cache.Stats{
		Expired: s.stats.expired.Load(),
		Evicted: s.stats.evicted.Load(),
	}
}
