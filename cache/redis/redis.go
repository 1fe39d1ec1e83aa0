// Package redis is bridged's Redis engine: a cache.Store that many bridged nodes share through one
// Redis, so a client may publish through any node and read through any other, and move between
// nodes mid-stream without loss or repeats.
//
// # Storage
//
// Each stream is a Redis stream of messages whose entry ids are "<seq>-0", beside a small hash
// holding the stream's epoch, last seq, newest time, retained bytes and live idempotency keys,
// and a list ordering those keys for expiry (keys.go). The three keys share the stream's name as
// their hash tag, so they live in one Redis Cluster slot.
//
// Every change to a stream is one Lua script, run atomically by Redis in one round trip: an
// append expires what is due, creates the stream with a fresh epoch if its hash is gone, checks
// idempotency keys, adds the messages, evicts what the per-stream caps require, refreshes the
// keys' idle expiry and PUBLISHes a notification. A batch across streams is one script per
// stream, sent together in one MULTI/EXEC, so it still costs one round trip, and Redis refuses
// all of it or none when it is out of memory. A read is one read-only script: XRANGE from the
// cursor's seq, O(log n + k).
//
// # Epochs
//
// A stream's epoch is chosen by the node that creates it (Lua's random numbers are not random)
// and kept in the stream's hash. It changes whenever that hash is gone: the stream idled out
// (its keys expire 2×TTL after the last append or the last sign of a reader), Redis evicted it,
// or Redis restarted without the data. A reader holding a cursor from the old life gets a reset,
// never a wait for seqs that will not come, nor a silent skip.
//
// # Notifications
//
// Each node keeps one pub/sub connection (hub.go) and subscribes to a stream's channel only
// while a local reader watches that stream, so its Redis traffic follows its own users. The
// channel is only a wake-up hint: readers always read the messages from the stream after their
// cursor, and a node's readers of one stream at one cursor share those reads (reads.go). After
// the connection is re-established every local reader is woken, because notifications sent
// meanwhile are lost.
//
// # Memory
//
// The memory cap is Redis's own maxmemory with maxmemory-policy noeviction: Redis refuses a
// write script before it runs when the server is over its cap, and the engine answers ErrFull,
// after trying to make room from expired messages: those of the streams it was writing to, then
// (at most once per TTL/8) those of every stream.
// cache.Options.MaxMemory is not used: a Redis shared by many nodes and other users has one cap,
// set where it is enforced.
//
// # Stats
//
// Stats never calls Redis (bridged reads it at every scrape). The scripts report how many
// messages they expired and evicted in their replies, and two background refreshers, stopped by
// Close, keep the rest: INFO memory every few seconds, a count of the prefix's streams and
// messages (SCAN and XLEN) every half minute (stats.go).
package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// messageOverhead is what each message counts against the per-stream byte cap beyond its event
// and data: the memory engine's per-message charge, so that BRIDGE_STREAM_MAX_BYTES keeps the
// same number of messages on either engine.
const messageOverhead = 80

// DefaultPrefix is the key prefix when cache.Options.Prefix is empty.
const DefaultPrefix = "bridged:"

// Config holds the settings only the Redis engine has.
type Config struct {
	// URL locates the server: redis://[user:password@]host:port[/db][?options] or rediss:// for
	// TLS, with go-redis's query options (pool_size, dial_timeout, …). Required.
	URL string

	// Timeout bounds each call to Redis, within the caller's own deadline. Zero means 2s.
	Timeout time.Duration

	// Log receives the engine's own events: pub/sub connection lost and re-established, Stats
	// figures that could not be refreshed. Nil means no logging.
	Log *zap.Logger

	// StatsMemoryEvery is how often the engine reads Redis's INFO memory for Stats.Bytes and
	// Stats.MaxBytes. Zero means 5s; negative turns the reading off (both stay 0).
	StatsMemoryEvery time.Duration

	// StatsCountEvery is how often the engine counts the streams of its prefix and the messages
	// they hold for Stats.Streams and Stats.Messages: a SCAN of the keyspace and an XLEN per
	// stream (docs/redis.md gives the cost). Zero means 30s; negative turns the count off (both
	// stay 0).
	StatsCountEvery time.Duration
}

// Store is the Redis engine. It is safe for concurrent use. Create it with New.
type Store struct {
	opts    cache.Options
	prefix  string
	timeout time.Duration
	ttl     int64  // opts.TTL in microseconds, the unit times are stored in
	idle    string // how long a stream's keys outlive its last activity, in ms, for PEXPIRE
	rdb     *goredis.Client
	log     *zap.Logger
	hub     *hub
	reads   reads

	lastSweep atomic.Int64 // store clock, unix ns, of the last sweep
	sweeping  atomic.Bool

	stats stats

	// bg is the context of the engine's own background work (the Stats refreshers), which
	// outlives every request; Close cancels it and waits for the work in bgWork to end.
	bg     context.Context
	stopBg context.CancelFunc
	bgWork sync.WaitGroup

	closed    atomic.Bool
	closeOnce sync.Once
}

var (
	_ cache.Store   = (*Store)(nil)
	_ cache.Claimer = (*Store)(nil)
	_ cache.Statser = (*Store)(nil)
)

// New returns a Store on the Redis server cfg.URL names, configured by o (zero fields take the
// defaults of cache.Options.Defaulted; o.MaxMemory is not used, see the package comment). It
// does not wait for Redis: a node may start while Redis is down and become ready (Ping) when it
// comes up. Close releases the connections and stops the background work.
func New(o cache.Options, cfg Config) (*Store, error) {
	o = o.Defaulted()
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, errors.New("redis: key prefix must not contain { or }: they would become the Cluster hash tag")
	}
	ropt, err := goredis.ParseURL(cfg.URL)
	if err != nil {
		// The URL may hold a password; say what is wrong without repeating it.
		return nil, errors.New("redis: invalid URL: want redis://[user:password@]host:port[/db] or rediss://…")
	}
	// A retried append may have run the first time (the reply was lost), which would store its
	// messages twice; callers retry with idempotency keys instead.
	ropt.MaxRetries = -1
	ropt.ContextTimeoutEnabled = true
	// CLIENT SETINFO needs Redis 7.2 and costs a round trip per connection; maintenance
	// notifications are for managed clusters and need a handshake 7.0 does not know.
	ropt.DisableIdentity = true
	if ropt.MaintNotificationsConfig == nil {
		ropt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ropt.DialTimeout = min(ropt.DialTimeout, timeout)
	if ropt.DialTimeout <= 0 {
		ropt.DialTimeout = timeout
	}
	ropt.DialerRetries = 1

	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	idle := 2 * o.TTL
	s := &Store{
		opts:    o,
		prefix:  prefix,
		timeout: timeout,
		ttl:     o.TTL.Microseconds(),
		idle:    strconv.FormatInt(max(idle.Milliseconds(), 1), 10),
		rdb:     goredis.NewClient(ropt),
		log:     log,
	}
	s.hub = newHub(s, max(o.TTL/2, 100*time.Millisecond))
	s.bg, s.stopBg = context.WithCancel(context.Background())
	s.startStats(cfg.StatsMemoryEvery, cfg.StatsCountEvery)
	return s, nil
}

// call derives the context of one call to Redis from the caller's.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return cache.ErrClosed
	}
	return ctx.Err()
}

// fail turns an error from Redis into one of the cache errors: the caller's own context error
// when the caller gave up; ErrFull when Redis refused a write for lack of memory; ErrClosed after
// Close; ErrUnavailable for everything else, with Redis's message as text (never go-redis's
// types, which callers must not depend on).
func (s *Store) fail(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("redis %s: %w", op, ctx.Err())
	case s.closed.Load():
		return fmt.Errorf("redis %s: %w", op, cache.ErrClosed)
	case errors.Is(err, cache.ErrFull), isOOM(err):
		return fmt.Errorf("redis %s: %w", op, cache.ErrFull)
	case errors.Is(err, cache.ErrClosed), errors.Is(err, cache.ErrUnavailable):
		return fmt.Errorf("redis %s: %w", op, err)
	}
	return fmt.Errorf("redis %s: %w: %s", op, cache.ErrUnavailable, err.Error())
}

func isOOM(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "OOM ")
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT ")
}

func (s *Store) now() int64 { return s.opts.Now().UnixMicro() }

func newEpoch() string {
	for {
		if e := rand.Uint64(); e != 0 {
			return strconv.FormatUint(e, 36)
		}
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
	case messageOverhead+int64(len(d.Event))+int64(len(d.Data)) > s.opts.StreamMaxBytes:
		return fmt.Errorf("%w: message larger than the stream byte cap %d", cache.ErrTooLarge, s.opts.StreamMaxBytes)
	}
	return nil
}

// Append implements cache.Store. One stream's drafts are one script call; several streams' are
// one MULTI/EXEC of script calls: one round trip either way, and all or nothing when Redis is
// out of memory. Refused for memory, it trims what has expired in those streams and tries once
// more.
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
	// Group by stream in order of first appearance, keeping input order within each.
	var groups [][]int
	if len(drafts) == 1 {
		groups = [][]int{{0}}
	} else {
		at := make(map[string]int)
		for i := range drafts {
			g, ok := at[drafts[i].Stream]
			if !ok {
				g = len(groups)
				at[drafts[i].Stream] = g
				groups = append(groups, nil)
			}
			groups[g] = append(groups[g], i)
		}
	}

	cctx, cancel := s.call(ctx)
	defer cancel()
	ids := make([]cache.Cursor, len(drafts))
	err := s.appendOnce(cctx, drafts, groups, ids)
	if isOOM(err) {
		// Make room from what has expired, as the memory engine does before it refuses: first in
		// the streams at hand, then, at most once per TTL/8 of the store's clock, everywhere.
		streams := make([]string, len(groups))
		for i, g := range groups {
			streams[i] = drafts[g[0]].Stream
		}
		if s.reclaim(cctx, streams) == nil {
			err = s.appendOnce(cctx, drafts, groups, ids)
		}
		if isOOM(err) && s.sweep(cctx) {
			err = s.appendOnce(cctx, drafts, groups, ids)
		}
	}
	if err != nil {
		return nil, s.fail(ctx, "append", err)
	}
	return ids, nil
}

func (s *Store) appendArgs(drafts []cache.Draft, group []int, now string) (keys []string, args []any) {
	k := s.keysOf(drafts[group[0]].Stream)
	args = make([]any, 0, 8+3*len(group))
	args = append(args, now, s.ttl, s.idle, s.opts.StreamMaxMessages, s.opts.StreamMaxBytes,
		messageOverhead, newEpoch(), k.channel)
	for _, i := range group {
		args = append(args, drafts[i].Key, drafts[i].Event, drafts[i].Data)
	}
	return []string{k.meta, k.log, k.idem}, args
}

func (s *Store) appendOnce(ctx context.Context, drafts []cache.Draft, groups [][]int, ids []cache.Cursor) error {
	now := strconv.FormatInt(s.now(), 10)
	if len(groups) == 1 {
		keys, args := s.appendArgs(drafts, groups[0], now)
		res, err := scriptAppend.Run(ctx, s.rdb, keys, args...).Slice()
		if err != nil {
			return err
		}
		return s.takeAppend(res, groups[0], ids)
	}
	cmds, err := s.evalTx(ctx, scriptAppend, len(groups), func(i int) ([]string, []any) {
		return s.appendArgs(drafts, groups[i], now)
	})
	if err != nil {
		return err
	}
	// Every script of the transaction ran, so each one's removals count even if another failed.
	var first error
	for g, cmd := range cmds {
		res, err := cmd.Slice()
		if err == nil {
			err = s.takeAppend(res, groups[g], ids)
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// evalTx runs script n times in one MULTI/EXEC, with the keys and arguments args(i) gives the
// i-th call. If Redis does not have the script cached (it restarted, or SCRIPT FLUSH), no call
// ran (EXEC is atomic and every call uses the same script): it loads it and tries once more.
func (s *Store) evalTx(ctx context.Context, script *goredis.Script, n int, args func(i int) ([]string, []any)) ([]*goredis.Cmd, error) {
	run := func() ([]*goredis.Cmd, error) {
		cmds := make([]*goredis.Cmd, n)
		_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			for i := range n {
				keys, a := args(i)
				cmds[i] = script.EvalSha(ctx, p, keys, a...)
			}
			return nil
		})
		for _, c := range cmds {
			if isOOM(c.Err()) {
				return nil, c.Err()
			}
		}
		return cmds, err
	}
	cmds, err := run()
	if isNoScript(err) {
		if lerr := script.Load(ctx, s.rdb).Err(); lerr != nil {
			return nil, lerr
		}
		cmds, err = run()
	}
	if err != nil {
		return nil, err
	}
	return cmds, nil
}

// takeAppend reads an append script's reply, {epoch, seq per draft, expired, evicted}: the ids
// into ids, and the messages the script removed into the store's counters.
func (s *Store) takeAppend(res []any, group []int, ids []cache.Cursor) error {
	if len(res) != 3+len(group) {
		return fmt.Errorf("append script returned %d values for %d drafts", len(res), len(group))
	}
	expired, ok1 := res[len(res)-2].(int64)
	evicted, ok2 := res[len(res)-1].(int64)
	if !ok1 || !ok2 || expired < 0 || evicted < 0 {
		return fmt.Errorf("append script returned removal counts %v %v", res[len(res)-2], res[len(res)-1])
	}
	s.stats.expired.Add(expired)
	s.stats.evicted.Add(evicted)
	epoch, err := parseEpoch(res[0])
	if err != nil {
		return err
	}
	for j, i := range group {
		seq, ok := res[1+j].(int64)
		if !ok || seq <= 0 {
			return fmt.Errorf("append script returned seq %v", res[1+j])
		}
		ids[i] = cache.Cursor{Epoch: epoch, Seq: uint64(seq)}
	}
	return nil
}

func parseEpoch(v any) (uint64, error) {
	s, _ := v.(string)
	e, err := strconv.ParseUint(s, 36, 64)
	if err != nil || e == 0 {
		return 0, fmt.Errorf("stream has a malformed epoch %q", s)
	}
	return e, nil
}

// reclaim trims what has expired from streams, in one pipelined round trip per 256 streams, and
// counts what it removed in Stats.Expired. The script is allowed to run while Redis is out of
// memory: it only frees.
func (s *Store) reclaim(ctx context.Context, streams []string) error {
	now := strconv.FormatInt(s.now(), 10)
	for part := range slices.Chunk(streams, 256) {
		run := func() error {
			cmds, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for _, name := range part {
					k := s.keysOf(name)
					scriptReclaim.EvalSha(ctx, p, []string{k.meta, k.log, k.idem}, now, s.ttl, messageOverhead)
				}
				return nil
			})
			// A pipeline is not a transaction: the scripts that answered did run.
			var first error
			for _, c := range cmds {
				n, cerr := c.(*goredis.Cmd).Int64()
				if cerr == nil {
					s.stats.expired.Add(n)
				} else if first == nil {
					first = cerr
				}
			}
			if first != nil {
				return first
			}
			return err
		}
		err := run()
		if isNoScript(err) {
			if err := scriptReclaim.Load(ctx, s.rdb).Err(); err != nil {
				return err
			}
			err = run()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sweep reclaims what has expired in every stream of this store, found with SCAN, within ctx's
// deadline. It runs for an append that Redis refused for memory even after its own streams were
// trimmed, at most once per TTL/8 of the store's clock and one at a time per node: expired data
// accrues only as fast as time passes, and a full store must not cost a keyspace scan per
// publish. It reports whether it ran.
func (s *Store) sweep(ctx context.Context) bool {
	now := s.opts.Now().UnixNano()
	if last := s.lastSweep.Load(); last != 0 && now-last < int64(s.opts.TTL/8) {
		return false
	}
	if !s.sweeping.CompareAndSwap(false, true) {
		return false
	}
	defer s.sweeping.Store(false)
	s.lastSweep.Store(now)
	var names []string
	_ = s.eachStream(ctx, func(stream string) error {
		names = append(names, stream)
		if len(names) == 256 {
			err := s.reclaim(ctx, names)
			names = names[:0]
			return err
		}
		return nil
	})
	_ = s.reclaim(ctx, names)
	return true
}

// ReadAfter implements cache.Store: one read-only script call, shared by this node's readers of
// the same stream and cursor that ask at the same time (reads.go).
func (s *Store) ReadAfter(ctx context.Context, name string, c cache.Cursor, limit int) (cache.Batch, error) {
	if err := s.check(ctx); err != nil {
		return cache.Batch{}, err
	}
	if name == "" || len(name) > cache.MaxStreamLen {
		return cache.Batch{}, fmt.Errorf("%w: stream name must be 1 to %d bytes", cache.ErrInvalid, cache.MaxStreamLen)
	}
	limit = max(limit, 0)
	read := func() (cache.Batch, error) {
		return s.reads.do(ctx, readKey{stream: name, c: c, limit: limit}, func(ctx context.Context) (cache.Batch, error) {
			return s.read(ctx, name, c, limit)
		})
	}
	b, err := read()
	if err == nil && b.Cursor.IsZero() {
		// The stream does not exist: create it, so the reader gets a real position to continue
		// from (cache.Store), and read again. Two more round trips, only for missing streams.
		if err = s.ensure(ctx, name); err == nil {
			b, err = read()
		}
	}
	if err != nil {
		return cache.Batch{}, s.fail(ctx, "read", err)
	}
	return b, nil
}

// ensure creates stream name, empty with a fresh epoch, if it does not exist, and refreshes its
// idle expiry.
func (s *Store) ensure(ctx context.Context, name string) error {
	k := s.keysOf(name)
	cctx, cancel := s.call(ctx)
	defer cancel()
	return scriptEnsure.Run(cctx, s.rdb, []string{k.meta, k.log, k.idem}, newEpoch(), s.idle).Err()
}

func (s *Store) read(ctx context.Context, name string, c cache.Cursor, limit int) (cache.Batch, error) {
	epoch := ""
	if !c.IsZero() {
		epoch = strconv.FormatUint(c.Epoch, 36)
	}
	k := s.keysOf(name)
	cctx, cancel := s.call(ctx)
	defer cancel()
	res, err := scriptRead.RunRO(cctx, s.rdb, []string{k.meta, k.log},
		epoch, strconv.FormatUint(c.Seq, 10), s.now(), s.ttl, limit).Slice()
	if err != nil {
		return cache.Batch{}, err
	}
	return parseBatch(res, c)
}

// parseBatch turns the read script's reply into a Batch, by the same rules as the memory engine.
func parseBatch(res []any, c cache.Cursor) (cache.Batch, error) {
	if len(res) == 0 {
		return cache.Batch{Reset: !c.IsZero()}, nil
	}
	if len(res) != 5 {
		return cache.Batch{}, fmt.Errorf("read script returned %d values", len(res))
	}
	epoch, err := parseEpoch(res[0])
	if err != nil {
		return cache.Batch{}, err
	}
	last, _ := res[1].(int64)
	reset, _ := res[2].(int64)
	first, _ := res[3].(int64)
	entries, _ := res[4].([]any)

	b := cache.Batch{Reset: reset == 1}
	if b.Reset {
		b.Start = cache.Cursor{Epoch: epoch, Seq: uint64(first - 1)}
	}
	if len(entries) > 0 {
		b.Messages = make([]cache.Message, len(entries))
		for i, e := range entries {
			m, err := parseEntry(e, epoch)
			if err != nil {
				return cache.Batch{}, err
			}
			b.Messages[i] = m
		}
		b.Cursor = b.Messages[len(entries)-1].ID
	} else if b.Reset || c.IsZero() {
		b.Cursor = cache.Cursor{Epoch: epoch, Seq: uint64(last)}
	} else {
		b.Cursor = c
	}
	return b, nil
}

// parseEntry reads one XRANGE entry: [id, [t, time, e, event, d, data]].
func parseEntry(v any, epoch uint64) (cache.Message, error) {
	e, ok := v.([]any)
	if !ok || len(e) != 2 {
		return cache.Message{}, fmt.Errorf("malformed stream entry %v", v)
	}
	id, _ := e[0].(string)
	seqText, _, _ := strings.Cut(id, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		return cache.Message{}, fmt.Errorf("malformed stream entry id %q", id)
	}
	fields, _ := e[1].([]any)
	m := cache.Message{ID: cache.Cursor{Epoch: epoch, Seq: seq}}
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].(string)
		val, _ := fields[i+1].(string)
		switch name {
		case "t":
			us, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return cache.Message{}, fmt.Errorf("malformed time %q in entry %s", val, id)
			}
			m.Time = time.UnixMicro(us).UTC()
		case "e":
			m.Event = val
		case "d":
			m.Data = []byte(val)
		}
	}
	return m, nil
}

// Subscribe implements cache.Store. It creates the stream if it does not exist (so the reader
// gets a real cursor) and returns once Redis has confirmed this node's SUBSCRIBE to the stream's
// channel, so no append after it goes unnoticed.
func (s *Store) Subscribe(ctx context.Context, name string) (cache.Subscription, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if name == "" || len(name) > cache.MaxStreamLen {
		return nil, fmt.Errorf("%w: stream name must be 1 to %d bytes", cache.ErrInvalid, cache.MaxStreamLen)
	}
	if err := s.ensure(ctx, name); err != nil {
		return nil, s.fail(ctx, "subscribe", err)
	}
	k := s.keysOf(name)
	cctx, cancel := s.call(ctx)
	defer cancel()
	sub, err := s.hub.subscribe(cctx, name, k.channel)
	if err != nil {
		return nil, s.fail(ctx, "subscribe", err)
	}
	return sub, nil
}

// Scan implements cache.Store. For every stream it walks the keyspace with SCAN (matching this
// store's prefix) and reads each stream in pages; it holds nothing while fn runs.
func (s *Store) Scan(ctx context.Context, name string, fn func(stream string, m cache.Message) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if name != "" {
		return s.scanOne(ctx, name, fn)
	}
	return s.eachStream(ctx, func(stream string) error { return s.scanOne(ctx, stream, fn) })
}

// eachStream calls fn with the name of every stream of this store, walking the keyspace with
// SCAN for the streams' meta keys. It stops at fn's first error and returns it.
func (s *Store) eachStream(ctx context.Context, fn func(stream string) error) error {
	match := globEscape(s.prefix) + "{*}" + suffixMeta
	seen := make(map[string]struct{})
	var cursor uint64
	for {
		cctx, cancel := s.call(ctx)
		keys, next, err := s.rdb.ScanType(cctx, cursor, match, 512, "hash").Result()
		cancel()
		if err != nil {
			return s.fail(ctx, "scan", err)
		}
		slices.Sort(keys)
		for _, key := range keys {
			stream, ok := s.streamOfMeta(key)
			if !ok {
				continue
			}
			if _, dup := seen[stream]; dup { // SCAN may return a key twice
				continue
			}
			seen[stream] = struct{}{}
			if err := fn(stream); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// scanOne calls fn for every retained message of one stream, a page at a time.
func (s *Store) scanOne(ctx context.Context, name string, fn func(string, cache.Message) error) error {
	const page = 1000
	c := cache.Cursor{}
	for {
		// read, not ReadAfter: listing must not create a stream freed since SCAN saw it.
		b, err := s.read(ctx, name, c, page)
		if err != nil {
			return s.fail(ctx, "scan", err)
		}
		for _, m := range b.Messages {
			if err := fn(name, m); err != nil {
				return err
			}
		}
		if len(b.Messages) < page {
			return ctx.Err()
		}
		c = b.Cursor
	}
}

// Ping implements cache.Store: Redis answers PING, and this node's pub/sub connection is up (a
// node that cannot hear notifications would leave its long-polls and streams waiting).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	if err := s.rdb.Ping(cctx).Err(); err != nil {
		return s.fail(ctx, "ping", err)
	}
	if !s.hub.isUp() {
		return fmt.Errorf("redis ping: %w: pub/sub connection is down", cache.ErrUnavailable)
	}
	return nil
}

// Claim implements cache.Claimer with one script: the key is claimed if it is absent or its
// claim has expired by the store's clock, and Redis drops it after ttl by its own.
func (s *Store) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if key == "" || len(key) > cache.MaxKeyLen {
		return false, fmt.Errorf("%w: claim key must be 1 to %d bytes", cache.ErrInvalid, cache.MaxKeyLen)
	}
	if ttl <= 0 {
		return false, fmt.Errorf("%w: claim ttl must be positive", cache.ErrInvalid)
	}
	cctx, cancel := s.call(ctx)
	defer cancel()
	n, err := scriptClaim.Run(cctx, s.rdb, []string{s.claimKey(key)},
		s.now(), ttl.Microseconds(), max(ttl.Milliseconds(), 1)).Int64()
	if err != nil {
		return false, s.fail(ctx, "claim", err)
	}
	return n == 1, nil
}

// Close implements cache.Store: it stops the Stats refreshers, the pub/sub connection and the
// keep-alive and waits for them (a call to Redis in flight ends within Config.Timeout), wakes
// every subscriber and closes the connection pool.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stopBg()
		s.bgWork.Wait()
		s.hub.close()
		if cerr := s.rdb.Close(); cerr != nil {
			err = fmt.Errorf("redis close: %s", cerr.Error())
		}
	})
	return err
}

// touch refreshes the idle expiry of streams that local readers watch, so that a stream nobody
// publishes to is not freed (and its epoch lost) under a reader: cache.Store's "while a stream
// has subscribers it is not freed". One pipelined round trip per 256 streams.
func (s *Store) touch(ctx context.Context, streams []string) error {
	for chunk := range slices.Chunk(streams, 256) {
		cctx, cancel := s.call(ctx)
		_, err := s.rdb.Pipelined(cctx, func(p goredis.Pipeliner) error {
			for _, name := range chunk {
				k := s.keysOf(name)
				p.Do(cctx, "PEXPIRE", k.meta, s.idle)
				p.Do(cctx, "PEXPIRE", k.log, s.idle)
				p.Do(cctx, "PEXPIRE", k.idem, s.idle)
			}
			return nil
		})
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// RouteLibraryLog sends go-redis's own log lines (dial failures and pool notices, which it writes
// to stderr by default) to l at debug level; the engine reports what matters itself, through
// Config.Log. go-redis's logger is process-wide, so call this once, from main.
func RouteLibraryLog(l *zap.Logger) { goredis.SetLogger(libraryLog{l}) }

type libraryLog struct{ l *zap.Logger }

func (g libraryLog) Printf(_ context.Context, format string, v ...any) {
	if ce := g.l.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// CheckServer reads the server's settings and describes each one that weakens what bridged
// promises: an eviction policy other than noeviction (Redis would drop streams, and readers get
// resets, instead of refusing publishes), no maxmemory, and persistence that can come back with
// an older state after a crash (RDB snapshots, appendfsync other than always), under which
// acknowledged messages can be lost without their readers being told. It fails when the server
// cannot be reached or refuses CONFIG GET (some managed services do).
func (s *Store) CheckServer(ctx context.Context) ([]string, error) {
	get := func(name string) (string, error) {
		v, err := s.rdb.ConfigGet(ctx, name).Result()
		if err != nil {
			return "", s.fail(ctx, "config get", err)
		}
		return v[name], nil
	}
	var settings [5]string
	for i, name := range []string{"maxmemory-policy", "maxmemory", "appendonly", "appendfsync", "save"} {
		v, err := get(name)
		if err != nil {
			return nil, err
		}
		settings[i] = v
	}
	policy, maxmemory, aof, fsync, save := settings[0], settings[1], settings[2], settings[3], settings[4]
	var out []string
	if policy != "noeviction" {
		out = append(out, fmt.Sprintf("maxmemory-policy is %s: Redis may evict streams (their readers get a reset) instead of refusing publishes; set noeviction", policy))
	}
	if maxmemory == "0" {
		out = append(out, "maxmemory is 0: Redis grows until the machine runs out of memory; set maxmemory, and publishes get 503 store_full at that cap")
	}
	switch {
	case aof == "yes" && fsync != "always":
		out = append(out, fmt.Sprintf("appendfsync is %s: a crash can lose the last acknowledged messages without their readers being told; use appendfsync always, or no persistence (readers then get a reset)", fsync))
	case aof != "yes" && save != "":
		out = append(out, fmt.Sprintf("RDB snapshots are on (save %q) without appendfsync always: a crash restores an older state, losing acknowledged messages without their readers being told; use AOF with appendfsync always, or no persistence", save))
	}
	return out, nil
}
