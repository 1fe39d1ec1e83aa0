package bridge

import (
	"hash/maphash"
	"net/http"
	"sync"
	"sync/atomic"
)

// connLimiter counts the connections that hold server resources while they wait (SSE and
// WebSocket streams, waiting long-polls), per user and in all, and refuses those past the caps:
// a user over BRIDGE_MAX_CONNECTIONS_PER_USER gets 429 (its own doing; close a tab), a node over
// BRIDGE_MAX_CONNECTIONS gets 503 (try another node). It is safe for concurrent use.
type connLimiter struct {
	maxTotal, maxPerUser int64
	total                atomic.Int64
	byTransport          [numTransports]atomic.Int64
	seed                 maphash.Seed
	shards               [64]struct {
		sync.Mutex
		users map[string]int64
	}
}

// transport indexes connLimiter.byTransport.
type transport int

const (
	transportSSE transport = iota
	transportLongPoll
	transportWS
	numTransports
)

var transportNames = [numTransports]string{"sse", "longpoll", "ws"}

func newConnLimiter(maxTotal, maxPerUser int) *connLimiter {
	l := &connLimiter{maxTotal: int64(maxTotal), maxPerUser: int64(maxPerUser), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].users = make(map[string]int64)
	}
	return l
}

var (
	errUserConnections = &apiError{Status: http.StatusTooManyRequests, Code: "too_many_connections",
		Message: "this user has too many open streams (BRIDGE_MAX_CONNECTIONS_PER_USER); close one, or share one between tabs", RetryAfter: 5}
	errOverloaded = &apiError{Status: http.StatusServiceUnavailable, Code: "overloaded",
		Message: "this node is at its connection cap (BRIDGE_MAX_CONNECTIONS); retry, or use another node", RetryAfter: 2}
)

// acquire takes a connection slot for user on transport t. The caller must call the returned
// release exactly once when the connection ends.
func (l *connLimiter) acquire(user string, t transport) (release func(), err error) {
	if l.total.Add(1) > l.maxTotal {
		l.total.Add(-1)
		return nil, errOverloaded
	}
	sh := &l.shards[maphash.String(l.seed, user)%uint64(len(l.shards))]
	sh.Lock()
	if sh.users[user] >= l.maxPerUser {
		sh.Unlock()
		l.total.Add(-1)
		return nil, errUserConnections
	}
	sh.users[user]++
	sh.Unlock()
	l.byTransport[t].Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			sh.Lock()
			if sh.users[user]--; sh.users[user] == 0 {
				delete(sh.users, user)
			}
			sh.Unlock()
			l.byTransport[t].Add(-1)
			l.total.Add(-1)
		})
	}, nil
}
