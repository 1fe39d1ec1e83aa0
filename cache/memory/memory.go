// Package memory is bridged's in-memory cache.Store: one process, no setup.
//
// Streams live in 128 shards chosen by a hash of their name, each with its own RWMutex, so
// publishers and readers of different streams rarely meet on a lock and reads of one stream share
// it. A stream's retained messages are contiguous in seq (only the oldest are ever removed), so
// the engine stores no seq per message and finds the message after any cursor by arithmetic.
//
// Expiry follows a per-shard min-heap of streams ordered by the next time something in them is
// due (the oldest message's expiry, an idempotency key's expiry, or the moment an idle stream may
// be freed). A janitor pops what is due, so the cost follows what expires, never a scan of
// everything; reads also skip expired messages on their own, so expiry is exact to the
// nanosecond whatever the janitor's period.
//
// Waiting uses one channel per stream that Append closes and replaces: one close wakes every
// waiter, and the publisher never loops over them.
package memory

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bridged/bridged/cache"
)

const numShards = 128

// Accounting: the bytes charged against Options.MaxMemory for each thing held, beyond the
// variable-length payload. They cover the Go structures (record, ring slack, allocation size
// classes, map entries) and must not be less than what BenchmarkMemoryPerMessage measures
// (71 B per 100-byte message), so the cap bounds the real heap.
const (
	recordOverhead = 80
	keyOverhead    = 80
	streamOverhead = 320
)

// Store is the in-memory engine. It is safe for concurrent use. Create it with New.
type Store struct {
	opts   cache.Options
	ttl    int64 // opts.TTL in nanoseconds
	seed   maphash.Seed
	shards [numShards]shard

	bytes    atomic.Int64 // accounted bytes, compared with opts.MaxMemory
	messages atomic.Int64
	streams  atomic.Int64
	expired  atomic.Int64
	evicted  atomic.Int64

	claims  claims
	events  sync.Map // event name -> the one copy every record of it shares
	nevents atomic.Int64

	closed   atomic.Bool
	done     chan struct{} // closed by Close: stops the janitor, wakes subscribers
	janitor  sync.WaitGroup
	closeOne sync.Once
}

var (
	_ cache.Store    = (*Store)(nil)
	_ cache.Statser  = (*Store)(nil)
	_ cache.InMemory = (*Store)(nil)
)

type shard struct {
	mu      sync.RWMutex
	streams map[string]*stream
	due     dueHeap // streams with a deadline, soonest first
	_       [40]byte
}

// stream is one message log. Every field but sig is guarded by its shard's mutex.
type stream struct {
	name  string
	epoch uint64
	last  uint64 // seq of the newest message ever stored; 0 before the first
	msgs  ring   // retained messages, oldest first; the i-th has seq last-len+1+i
	bytes int64  // accounted bytes of msgs (the per-stream byte cap applies to it)
	keys  map[string]uint64
	keyq  []keyRec // keys in the order they were stored, for expiry
	at    int64    // newest stored time, so times never go backwards within a stream

	watchers   int   // open Subscriptions
	emptySince int64 // when the stream last became idle; 0 while it is not
	deadline   int64 // next time the janitor must look at the stream
	heapIdx    int   // index in shard.due, or -1

	sig cache.Signal // wakes the stream's Subscriptions
}

type keyRec struct {
	key string
	at  int64
}

// New returns an empty Store configured by o (zero fields take the defaults of
// cache.Options.Defaulted) and starts its janitor; Close stops it.
func New(o cache.Options) *Store {
	o = o.Defaulted()
	s := &Store{opts: o, ttl: int64(o.TTL), seed: maphash.MakeSeed(), done: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].streams = make(map[string]*stream)
	}
	period := min(max(o.TTL/8, 10*time.Millisecond), time.Second)
	s.janitor.Go(func() { s.runJanitor(period) })
	return s
}

func (s *Store) runJanitor(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.reclaim()
		}
	}
}

// reclaim removes everything that is due in every shard, one shard lock at a time.
func (s *Store) reclaim() {
	now := s.now()
	s.claims.expire(now)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.expireDue(sh, now)
		sh.mu.Unlock()
	}
}

func (s *Store) now() int64 { return s.opts.Now().UnixNano() }

func (s *Store) shardOf(name string) int {
	return int(maphash.String(s.seed, name) % numShards)
}

// Append implements cache.Store.
func (s *Store) Append(ctx context.Context, drafts []cache.Draft) ([]cache.Cursor, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(drafts) == 0 {
		return nil, nil
	}
	for i := range drafts {
		if err := s.validate(&drafts[i]); err != nil {
			return nil, fmt.Errorf("draft %d: %w", i, err)
		}
	}

	// Order the work by shard, then stream, keeping input order within a stream, so the shard
	// locks are taken in one global order and each stream's drafts form one run.
	order := make([]int, len(drafts))
	shardOf := make([]int, len(drafts))
	for i := range drafts {
		order[i] = i
		shardOf[i] = s.shardOf(drafts[i].Stream)
	}
	if len(drafts) > 1 {
		slices.SortStableFunc(order, func(a, b int) int {
			if shardOf[a] != shardOf[b] {
				return shardOf[a] - shardOf[b]
			}
			return strings.Compare(drafts[a].Stream, drafts[b].Stream)
		})
	}

	ids := make([]cache.Cursor, len(drafts))
	for attempt := 0; ; attempt++ {
		woken, err := s.appendLocked(drafts, order, shardOf, ids)
		if err == nil {
			for _, st := range woken {
				st.sig.Wake()
			}
			return ids, nil
		}
		if attempt > 0 || err != cache.ErrFull {
			return nil, err
		}
		// Full: reclaim what has expired everywhere, then try once more.
		s.reclaim()
	}
}

// appendLocked locks the shards the drafts touch, plans the whole append to learn its net cost,
// reserves that against MaxMemory and only then applies it, so a refused append changes nothing.
// It returns the streams to wake once the locks are released.
func (s *Store) appendLocked(drafts []cache.Draft, order, shardOf []int, ids []cache.Cursor) ([]*stream, error) {
	var locked []int
	for _, i := range order {
		if n := len(locked); n == 0 || locked[n-1] != shardOf[i] {
			locked = append(locked, shardOf[i])
			s.shards[shardOf[i]].mu.Lock()
		}
	}
	defer func() {
		for _, sh := range locked {
			s.shards[sh].mu.Unlock()
		}
	}()

	now := s.now()
	var delta int64
	forEachRun(drafts, order, func(run []int) {
		sh := &s.shards[shardOf[run[0]]]
		st := sh.streams[drafts[run[0]].Stream]
		if st != nil {
			s.expire(st, now)
		}
		delta += s.plan(st, drafts, run)
	})
	if delta > 0 && s.bytes.Add(delta) > s.opts.MaxMemory {
		s.bytes.Add(-delta)
		return nil, cache.ErrFull
	} else if delta <= 0 {
		s.bytes.Add(delta)
	}

	var woken []*stream
	forEachRun(drafts, order, func(run []int) {
		sh := &s.shards[shardOf[run[0]]]
		name := drafts[run[0]].Stream
		st := sh.streams[name]
		if st == nil {
			st = s.newStream(sh, name)
		}
		if s.apply(st, drafts, run, now, ids) {
			woken = append(woken, st)
		}
		s.schedule(sh, st)
	})
	return woken, nil
}

// forEachRun calls fn with each run of indexes in order that share a stream.
func forEachRun(drafts []cache.Draft, order []int, fn func(run []int)) {
	for start := 0; start < len(order); {
		end := start + 1
		for end < len(order) && drafts[order[end]].Stream == drafts[order[start]].Stream {
			end++
		}
		fn(order[start:end])
		start = end
	}
}

func (s *Store) validate(d *cache.Draft) error {
	switch {
	case d.Stream == "" || len(d.Stream) > cache.MaxStreamLen:
		return fmt.Errorf("%w: stream name must be 1 to %d bytes", cache.ErrInvalid, cache.MaxStreamLen)
	case len(d.Key) > cache.MaxKeyLen:
		return fmt.Errorf("%w: key longer than %d bytes", cache.ErrInvalid, cache.MaxKeyLen)
	case len(d.Data) > s.opts.MaxMessageBytes:
		return fmt.Errorf("%w: %d bytes of data, limit %d", cache.ErrTooLarge, len(d.Data), s.opts.MaxMessageBytes)
	case recordCost(d.Event, d.Data) > s.opts.StreamMaxBytes:
		return fmt.Errorf("%w: message larger than the stream byte cap %d", cache.ErrTooLarge, s.opts.StreamMaxBytes)
	}
	return nil
}

// maxInterned bounds how many distinct event names are shared; names beyond it (an app that
// makes them up per message) are kept per message, as they came.
const maxInterned = 4096

// intern returns the store's copy of event, so a million messages of one event name hold one
// string rather than a million (the publish path allocates a fresh one per message).
func (s *Store) intern(event string) string {
	if v, ok := s.events.Load(event); ok {
		return v.(string)
	}
	if s.nevents.Load() >= maxInterned {
		return event
	}
	v, loaded := s.events.LoadOrStore(event, event)
	if !loaded {
		s.nevents.Add(1)
	}
	return v.(string)
}

func recordCost[D string | []byte](event string, data D) int64 {
	return recordOverhead + int64(len(event)) + int64(len(data))
}

func keyCost(key string) int64 { return keyOverhead + int64(len(key)) }

// plan returns the net change in accounted bytes that apply would make for the drafts of run on
// st (nil for a stream that does not exist yet), without changing anything.
func (s *Store) plan(st *stream, drafts []cache.Draft, run []int) int64 {
	var delta, count, bytes int64
	var old *ring
	if st == nil {
		delta += streamOverhead + int64(len(drafts[run[0]].Stream))
		old = &ring{}
	} else {
		old, count, bytes = &st.msgs, int64(st.msgs.len()), st.bytes
	}
	var fresh []int64 // costs of the drafts that will be stored
	var seen map[string]struct{}
	for _, i := range run {
		d := &drafts[i]
		if d.Key != "" {
			if st != nil && st.hasKey(d.Key) {
				continue
			}
			if _, dup := seen[d.Key]; dup {
				continue
			}
			if seen == nil {
				seen = make(map[string]struct{})
			}
			seen[d.Key] = struct{}{}
			delta += keyCost(d.Key)
		}
		c := recordCost(d.Event, d.Data)
		fresh = append(fresh, c)
		delta += c
		count++
		bytes += c
	}
	// Evict from the oldest, old records first, then fresh ones, as apply will.
	for i := 0; count > int64(s.opts.StreamMaxMessages) || bytes > s.opts.StreamMaxBytes; i++ {
		var c int64
		if i < old.len() {
			c = recordCost(old.at(i).event, old.at(i).data)
		} else {
			c = fresh[i-old.len()]
		}
		delta -= c
		bytes -= c
		count--
	}
	return delta
}

// apply stores the drafts of run on st, writes their cursors to ids and evicts what the
// per-stream caps require. It reports whether anything new was stored.
func (s *Store) apply(st *stream, drafts []cache.Draft, run []int, now int64, ids []cache.Cursor) bool {
	now = max(now, st.at)
	st.at = now
	stored := false
	for _, i := range run {
		d := &drafts[i]
		if d.Key != "" {
			if seq, ok := st.keys[d.Key]; ok {
				ids[i] = cache.Cursor{Epoch: st.epoch, Seq: seq}
				continue
			}
		}
		st.last++
		event := s.intern(d.Event)
		st.msgs.push(newRecord(now, event, d.Data))
		st.bytes += recordCost(event, d.Data)
		s.messages.Add(1)
		ids[i] = cache.Cursor{Epoch: st.epoch, Seq: st.last}
		stored = true
		if d.Key != "" {
			if st.keys == nil {
				st.keys = make(map[string]uint64)
			}
			st.keys[d.Key] = st.last
			st.keyq = append(st.keyq, keyRec{key: d.Key, at: now})
		}
	}
	if stored {
		st.emptySince = 0
	}
	for st.msgs.len() > s.opts.StreamMaxMessages || st.bytes > s.opts.StreamMaxBytes {
		s.dropOldest(st)
		s.evicted.Add(1)
	}
	return stored
}

func (st *stream) hasKey(key string) bool {
	_, ok := st.keys[key]
	return ok
}

// dropOldest removes the oldest retained message of st. The accounted bytes it frees are given
// back to the store by the caller's plan (for evictions) or here (for expiry, via expire).
func (s *Store) dropOldest(st *stream) int64 {
	rec := st.msgs.pop()
	c := recordCost(rec.event, rec.data)
	st.bytes -= c
	s.messages.Add(-1)
	return c
}

// expire removes the messages and keys of st that are due at now and gives the accounted bytes
// they held back to the store. A stream it leaves idle counts as idle from the moment its last
// item expired, not from when the janitor happened to notice.
func (s *Store) expire(st *stream, now int64) {
	var freed, gone int64
	for st.msgs.len() > 0 && st.msgs.at(0).at+s.ttl <= now {
		gone = st.msgs.at(0).at + s.ttl
		freed += s.dropOldest(st)
		s.expired.Add(1)
	}
	n := 0
	for n < len(st.keyq) && st.keyq[n].at+s.ttl <= now {
		k := st.keyq[n].key
		delete(st.keys, k)
		freed += keyCost(k)
		gone = max(gone, st.keyq[n].at+s.ttl)
		n++
	}
	if n > 0 {
		clear(st.keyq[:n])
		st.keyq = st.keyq[n:]
		if len(st.keyq) == 0 {
			st.keyq, st.keys = nil, nil
		}
	}
	if freed > 0 {
		s.bytes.Add(-freed)
	}
	if st.emptySince == 0 && st.idle() {
		st.emptySince = cmp.Or(gone, now)
	}
}

func (st *stream) idle() bool { return st.msgs.len() == 0 && len(st.keyq) == 0 }

// expireDue processes every stream of sh whose deadline has passed: expiring what is due and
// freeing streams that have been idle and unwatched for a TTL.
func (s *Store) expireDue(sh *shard, now int64) {
	for len(sh.due) > 0 && sh.due[0].deadline <= now {
		st := sh.due[0]
		s.expire(st, now)
		if st.idle() && st.watchers == 0 && st.emptySince+s.ttl <= now {
			heap.Remove(&sh.due, st.heapIdx)
			delete(sh.streams, st.name)
			s.bytes.Add(-(streamOverhead + int64(len(st.name))))
			s.streams.Add(-1)
			continue
		}
		s.schedule(sh, st)
	}
}

// schedule sets st's deadline from its contents and places it in, or removes it from, the heap.
func (s *Store) schedule(sh *shard, st *stream) {
	var d int64
	switch {
	case st.msgs.len() > 0 && len(st.keyq) > 0:
		d = min(st.msgs.at(0).at, st.keyq[0].at) + s.ttl
	case st.msgs.len() > 0:
		d = st.msgs.at(0).at + s.ttl
	case len(st.keyq) > 0:
		d = st.keyq[0].at + s.ttl
	case st.watchers == 0:
		d = st.emptySince + s.ttl
	}
	switch {
	case d == 0 && st.heapIdx >= 0:
		heap.Remove(&sh.due, st.heapIdx)
	case d == 0:
	case st.heapIdx >= 0:
		st.deadline = d
		heap.Fix(&sh.due, st.heapIdx)
	default:
		st.deadline = d
		heap.Push(&sh.due, st)
	}
}

func (s *Store) newStream(sh *shard, name string) *stream {
	st := &stream{name: name, epoch: newEpoch(), heapIdx: -1}
	sh.streams[name] = st
	s.streams.Add(1)
	return st
}

func newEpoch() uint64 {
	for {
		if e := rand.Uint64(); e != 0 {
			return e
		}
	}
}

// ReadAfter implements cache.Store.
func (s *Store) ReadAfter(ctx context.Context, name string, c cache.Cursor, limit int) (cache.Batch, error) {
	if err := s.check(ctx); err != nil {
		return cache.Batch{}, err
	}
	if err := validName(name); err != nil {
		return cache.Batch{}, err
	}
	sh := &s.shards[s.shardOf(name)]
	for {
		sh.mu.RLock()
		if st := sh.streams[name]; st != nil {
			b := s.read(st, c, limit)
			sh.mu.RUnlock()
			return b, nil
		}
		sh.mu.RUnlock()
		// A missing stream is created, so the reader gets a real position (cache.Store); it is
		// freed a TTL later unless something arrives. Then read it under the shared lock again.
		sh.mu.Lock()
		_, err := s.getOrCreate(sh, name)
		sh.mu.Unlock()
		if err != nil {
			return cache.Batch{}, err
		}
	}
}

// getOrCreate returns stream name, creating it empty if it does not exist. The caller holds sh's
// write lock.
func (s *Store) getOrCreate(sh *shard, name string) (*stream, error) {
	if st := sh.streams[name]; st != nil {
		return st, nil
	}
	cost := streamOverhead + int64(len(name))
	if s.bytes.Add(cost) > s.opts.MaxMemory {
		s.bytes.Add(-cost)
		return nil, cache.ErrFull
	}
	st := s.newStream(sh, name)
	st.emptySince = s.now()
	s.schedule(sh, st)
	return st, nil
}

func validName(name string) error {
	if name == "" || len(name) > cache.MaxStreamLen {
		return fmt.Errorf("%w: stream name must be 1 to %d bytes", cache.ErrInvalid, cache.MaxStreamLen)
	}
	return nil
}

// read answers a read of st after c. The caller holds st's shard lock, for reading at least.
func (s *Store) read(st *stream, c cache.Cursor, limit int) cache.Batch {
	// Skip expired messages without removing them (readers share the lock). Times never
	// decrease along a stream, so the live ones are a suffix: find it by binary search.
	now := s.now()
	n := st.msgs.len()
	lo := sort.Search(n, func(i int) bool { return st.msgs.at(i).at+s.ttl > now })
	first := st.last - uint64(n-lo) + 1 // seq of the oldest live message, or last+1 when none

	var b cache.Batch
	var from uint64 // seq of the first message to return
	switch {
	case c.IsZero():
		from = first
	case c.Epoch != st.epoch || c.Seq > st.last || c.Seq+1 < first:
		b.Reset = true
		b.Start = cache.Cursor{Epoch: st.epoch, Seq: first - 1}
		from = first
	default:
		from = c.Seq + 1
	}
	start := lo + int(from-first)
	count := n - start
	if limit > 0 && count > limit {
		count = limit
	}
	if count > 0 {
		b.Messages = make([]cache.Message, count)
		for i := range b.Messages {
			rec := st.msgs.at(start + i)
			b.Messages[i] = cache.Message{
				ID:    cache.Cursor{Epoch: st.epoch, Seq: from + uint64(i)},
				Event: rec.event,
				Data:  rec.bytes(),
				Time:  time.Unix(0, rec.at).UTC(),
			}
		}
		b.Cursor = b.Messages[count-1].ID
	} else if b.Reset || c.IsZero() {
		b.Cursor = cache.Cursor{Epoch: st.epoch, Seq: st.last}
	} else {
		b.Cursor = c
	}
	return b
}

// Subscribe implements cache.Store.
func (s *Store) Subscribe(ctx context.Context, name string) (cache.Subscription, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := validName(name); err != nil {
		return nil, err
	}
	sh := &s.shards[s.shardOf(name)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// A watched stream exists, so that its first reader gets a real cursor (epoch-0).
	st, err := s.getOrCreate(sh, name)
	if err != nil {
		return nil, err
	}
	st.watchers++
	s.schedule(sh, st)
	return &subscription{SignalSub: cache.NewSignalSub(&st.sig, &s.closed), s: s, sh: sh, st: st}, nil
}

type subscription struct {
	cache.SignalSub
	s  *Store
	sh *shard
	st *stream
}

func (sub *subscription) Close() {
	if !sub.End() {
		return
	}
	sub.sh.mu.Lock()
	defer sub.sh.mu.Unlock()
	st := sub.st
	st.watchers--
	if st.watchers == 0 && st.idle() {
		st.emptySince = sub.s.now()
	}
	sub.s.schedule(sub.sh, st)
}

// Scan implements cache.Store. It copies one stream's messages at a time under its shard's read
// lock and calls fn after releasing it.
func (s *Store) Scan(ctx context.Context, name string, fn func(stream string, m cache.Message) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	scanOne := func(name string) error {
		sh := &s.shards[s.shardOf(name)]
		sh.mu.RLock()
		var b cache.Batch
		if st := sh.streams[name]; st != nil {
			b = s.read(st, cache.Cursor{}, 0)
		}
		sh.mu.RUnlock()
		for _, m := range b.Messages {
			if err := fn(name, m); err != nil {
				return err
			}
		}
		return ctx.Err()
	}
	if name != "" {
		return scanOne(name)
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		names := make([]string, 0, len(sh.streams))
		for n, st := range sh.streams {
			if st.msgs.len() > 0 {
				names = append(names, n)
			}
		}
		sh.mu.RUnlock()
		slices.Sort(names)
		for _, n := range names {
			if err := scanOne(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ping implements cache.Store: the memory engine is available until it is closed.
func (s *Store) Ping(ctx context.Context) error { return s.check(ctx) }

// InMemory implements cache.InMemory: reads are served from the shards, under their locks.
func (*Store) InMemory() {}

// Stats implements cache.Statser.
func (s *Store) Stats() cache.Stats {
	return cache.Stats{
		Streams: s.streams.Load(), Messages: s.messages.Load(), Bytes: s.bytes.Load(),
		Expired: s.expired.Load(), Evicted: s.evicted.Load(), MaxBytes: s.opts.MaxMemory,
	}
}

// Close implements cache.Store: it stops the janitor and wakes every subscriber.
func (s *Store) Close() error {
	s.closeOne.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.janitor.Wait()
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			for _, st := range sh.streams {
				st.sig.Wake()
			}
			sh.mu.Unlock()
		}
	})
	return nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return cache.ErrClosed
	}
	return ctx.Err()
}

// dueHeap orders streams by deadline for container/heap.
type dueHeap []*stream

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}
func (h *dueHeap) Push(x any) {
	st := x.(*stream)
	st.heapIdx = len(*h)
	*h = append(*h, st)
}
func (h *dueHeap) Pop() any {
	old := *h
	st := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	st.heapIdx = -1
	return st
}
