package memory

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bridged/bridged/cache"
)

var _ cache.Claimer = (*Store)(nil)

// claims holds one-time claims until they expire. Claims are rare (one per ticket redeemed), so
// one mutex is enough; expired ones leave through a deadline heap on the janitor's tick.
type claims struct {
	mu   sync.Mutex
	keys map[string]int64 // key -> expiry, unix nanoseconds
	due  claimHeap
}

// Claim implements cache.Claimer.
func (s *Store) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if key == "" || len(key) > cache.MaxKeyLen {
		return false, fmt.Errorf("%w: claim key must be 1 to %d bytes", cache.ErrInvalid, cache.MaxKeyLen)
	}
	now := s.now()
	c := &s.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.keys[key]; ok && exp > now {
		return false, nil
	}
	if c.keys == nil {
		c.keys = make(map[string]int64)
	}
	exp := now + int64(ttl)
	c.keys[key] = exp
	heap.Push(&c.due, claimRec{key: key, exp: exp})
	return true, nil
}

// expireClaims drops the claims that have expired by now.
func (c *claims) expire(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.due) > 0 && c.due[0].exp <= now {
		r := heap.Pop(&c.due).(claimRec)
		if c.keys[r.key] == r.exp { // not claimed again since
			delete(c.keys, r.key)
		}
	}
}

type claimRec struct {
	key string
	exp int64
}

type claimHeap []claimRec

func (h claimHeap) Len() int           { return len(h) }
func (h claimHeap) Less(i, j int) bool { return h[i].exp < h[j].exp }
func (h claimHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *claimHeap) Push(x any)        { *h = append(*h, x.(claimRec)) }
func (h *claimHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}
