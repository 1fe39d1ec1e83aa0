package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridged/bridged/cache"
	"github.com/bridged/bridged/cache/redis"
	"github.com/bridged/bridged/internal/redistest"
)

// Tests of what only the Redis engine promises, or what it must do differently: several nodes on
// one Redis, keys on one Cluster slot, epochs after lost keys, subscriptions that follow local
// readers. Faults (kill -9) are in fault_test.go.

func drafts(stream string, n int, prefix string) []cache.Draft {
	out := make([]cache.Draft, n)
	for i := range out {
		out[i] = cache.Draft{Stream: stream, Event: "message", Data: fmt.Appendf(nil, `"%s%d"`, prefix, i+1)}
	}
	return out
}

func mustAppend(tb testing.TB, s cache.Store, d []cache.Draft) []cache.Cursor {
	tb.Helper()
	ids, err := s.Append(tb.Context(), d)
	if err != nil {
		tb.Fatalf("Append: %v", err)
	}
	return ids
}

func mustRead(tb testing.TB, s cache.Store, stream string, c cache.Cursor) cache.Batch {
	tb.Helper()
	b, err := s.ReadAfter(tb.Context(), stream, c, 0)
	if err != nil {
		tb.Fatalf("ReadAfter(%q, %v): %v", stream, c, err)
	}
	return b
}

func mustSubscribe(tb testing.TB, s cache.Store, stream string) cache.Subscription {
	tb.Helper()
	sub, err := s.Subscribe(tb.Context(), stream)
	if err != nil {
		tb.Fatalf("Subscribe(%q): %v", stream, err)
	}
	tb.Cleanup(sub.Close)
	return sub
}

func waitClosed(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-ch:
	case <-after(readyWait):
		tb.Fatalf("%s: not woken within %s", what, readyWait)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// nodes opens n stores on srv sharing one prefix, as n bridged nodes sharing a Redis would.
func nodes(tb testing.TB, srv *redistest.Server, n int, o cache.Options) []*redis.Store {
	tb.Helper()
	o.Prefix = redistest.UniquePrefix(tb)
	out := make([]*redis.Store, n)
	for i := range out {
		out[i] = open(tb, srv, o)
	}
	return out
}

func TestNodesShareStreams(t *testing.T) {
	srv := redistest.Start(t)
	n := nodes(t, srv, 3, cache.Options{})
	// A reader on node 2 waits; a publish through node 1 wakes it and it reads the message.
	sub := mustSubscribe(t, n[1], "u")
	changed := sub.Changed()
	start := mustRead(t, n[1], "u", cache.Cursor{})
	if start.Cursor.IsZero() || start.Cursor.Seq != 0 {
		t.Fatalf("a subscribed reader of a new stream got cursor %v, want <epoch>-0", start.Cursor)
	}
	ids := mustAppend(t, n[0], drafts("u", 2, "m"))
	waitClosed(t, changed, "reader on node 2")
	b := mustRead(t, n[1], "u", start.Cursor)
	if b.Reset || len(b.Messages) != 2 || b.Messages[1].ID != ids[1] || ids[0].Epoch != start.Cursor.Epoch {
		t.Fatalf("node 2 read %+v after %v; node 1 appended %v", b, start.Cursor, ids)
	}
	// The same cursor means the same thing on node 3.
	if b3 := mustRead(t, n[2], "u", ids[0]); b3.Reset || len(b3.Messages) != 1 || b3.Messages[0].ID != ids[1] {
		t.Fatalf("node 3 read %+v after %v", b3, ids[0])
	}
}

func TestCursorsIncreaseAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	n := nodes(t, srv, 3, cache.Options{StreamMaxMessages: 10_000})
	const each = 60
	var mu sync.Mutex
	var all []cache.Cursor
	var wg sync.WaitGroup
	for i, s := range n {
		wg.Go(func() {
			for j := range each {
				ids, err := s.Append(context.Background(), []cache.Draft{{Stream: "u", Data: fmt.Appendf(nil, `"%d-%d"`, i, j)}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, ids[0])
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b cache.Cursor) int { return int(a.Seq) - int(b.Seq) })
	for i, c := range all {
		if c.Epoch != all[0].Epoch || c.Seq != uint64(i+1) {
			t.Fatalf("ids from 3 nodes: %d-th is %v; want one epoch and seqs 1..%d with no gap or repeat", i, c, len(all))
		}
	}
	b := mustRead(t, n[2], "u", cache.Cursor{})
	if len(b.Messages) != len(all) {
		t.Fatalf("read %d messages, %d acknowledged", len(b.Messages), len(all))
	}
}

func TestSubscriptionsFollowLocalReaders(t *testing.T) {
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{})[0]
	c := client(t, srv)
	channel := s.ChannelOf("u")
	numsub := func() int64 {
		m, err := c.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		return m[channel]
	}
	a := mustSubscribe(t, s, "u")
	if n := numsub(); n != 1 {
		t.Fatalf("after the first local reader: %d subscribers to %s on Redis, want 1", n, channel)
	}
	b := mustSubscribe(t, s, "u")
	if n := numsub(); n != 1 {
		t.Fatalf("a second local reader made %d subscriptions, want the node's one", n)
	}
	a.Close()
	if n := numsub(); n != 1 {
		t.Fatalf("one of two readers left: %d subscriptions, want 1", n)
	}
	b.Close()
	// UNSUBSCRIBE goes out after Close returns; wait for it (a bound that only catches a hang).
	deadline := time.Now().Add(readyWait)
	for numsub() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the last local reader left but the node is still subscribed to %s", channel)
		}
		time.Sleep(pollEvery)
	}
	// And back.
	mustSubscribe(t, s, "u")
	if n := numsub(); n != 1 {
		t.Fatalf("a new reader after unsubscribing: %d subscriptions, want 1", n)
	}
}

func TestEpochChangesWhenKeysAreLost(t *testing.T) {
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{})[0]
	c := client(t, srv)
	tests := []struct {
		name string
		lose func(stream string) []string // keys to delete, as eviction or expiry would
	}{
		{"meta hash", func(u string) []string { return []string{s.KeysOf(u)[0]} }},
		{"all keys", func(u string) []string { return s.KeysOf(u) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := "user-" + strings.ReplaceAll(tt.name, " ", "-")
			old := mustAppend(t, s, drafts(u, 3, "old"))
			if err := c.Del(t.Context(), tt.lose(u)...).Err(); err != nil {
				t.Fatal(err)
			}
			// Until the next append the stream does not exist: a reader with a cursor is told.
			if b := mustRead(t, s, u, old[1]); !b.Reset {
				t.Fatalf("read after the stream's keys were lost: %+v, want a reset", b)
			}
			fresh := mustAppend(t, s, drafts(u, 1, "new"))
			if fresh[0].Epoch == old[0].Epoch {
				t.Fatalf("stream lost its history but kept epoch %x", old[0].Epoch)
			}
			b := mustRead(t, s, u, old[2])
			if !b.Reset || len(b.Messages) != 1 || b.Messages[0].ID != fresh[0] {
				t.Fatalf("read with an old cursor after the loss: %+v, want a reset and the new message", b)
			}
		})
	}
	t.Run("message log only", func(t *testing.T) {
		// The log is gone but the meta hash survives: the epoch stays, and the gap shows as a
		// reset because the seqs after the cursor are not there.
		u := "user-log"
		old := mustAppend(t, s, drafts(u, 3, "old"))
		if err := c.Del(t.Context(), s.KeysOf(u)[1]).Err(); err != nil {
			t.Fatal(err)
		}
		fresh := mustAppend(t, s, drafts(u, 1, "new"))
		if fresh[0].Epoch != old[0].Epoch || fresh[0].Seq != 4 {
			t.Fatalf("after losing the log: %v, want seq 4 in the same epoch", fresh[0])
		}
		if b := mustRead(t, s, u, old[0]); !b.Reset || len(b.Messages) != 1 {
			t.Fatalf("reader behind lost messages: %+v, want a reset", b)
		}
		if b := mustRead(t, s, u, old[2]); b.Reset || len(b.Messages) != 1 {
			t.Fatalf("reader that had seen everything lost: %+v, want the new message, no reset", b)
		}
	})
}

func TestKeysShareOneClusterSlot(t *testing.T) {
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{})[0]
	for _, name := range []string{"alice", "}x", "{a}", "a}b{c", "%7D", "{}", "日本", "a b\tc"} {
		keys := append(s.KeysOf(name), s.ChannelOf(name))
		tag := hashTag(keys[0])
		if tag == keys[0] || tag == "" {
			t.Fatalf("stream %q: key %q has no usable hash tag", name, keys[0])
		}
		for _, k := range keys[1:] {
			if got := hashTag(k); got != tag {
				t.Fatalf("stream %q: key %q hashes on %q, key %q on %q: different slots", name, keys[0], tag, k, got)
			}
		}
		// Distinct names never share keys, and the listing finds the name back.
		mustAppend(t, s, []cache.Draft{{Stream: name, Data: []byte(`1`)}})
	}
	got := map[string]int{}
	if err := s.Scan(t.Context(), "", func(stream string, _ cache.Message) error { got[stream]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 8 {
		t.Fatalf("Scan found streams %v, want the 8 names, once each", got)
	}
	for name, n := range got {
		if n != 1 {
			t.Fatalf("stream %q listed %d messages, want 1", name, n)
		}
	}
}

// hashTag is the part of key Redis Cluster hashes: the text between the first '{' and the first
// '}' after it, if that is not empty; otherwise the whole key.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return key
	}
	return key[i+1 : i+1+j]
}

func TestFullBatchStoresNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--maxmemory-policy", "noeviction"))
	warmUp(t, srv)
	s := nodes(t, srv, 1, cache.Options{})[0]
	capMemory(t, srv, 128<<10)
	payload := make([]byte, 1000)
	for i := range payload {
		payload[i] = 'p'
	}
	var full bool
	for i := range 5000 {
		_, err := s.Append(t.Context(), []cache.Draft{{Stream: fmt.Sprint("s", i%5), Data: payload}})
		if errors.Is(err, cache.ErrFull) {
			full = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("a 128 KiB cap never refused")
	}
	before := map[string]int{}
	for i := range 5 {
		before[fmt.Sprint("s", i)] = len(mustRead(t, s, fmt.Sprint("s", i), cache.Cursor{}).Messages)
	}
	batch := []cache.Draft{{Stream: "s0", Data: payload}, {Stream: "s1", Data: payload}, {Stream: "new", Data: payload}}
	if _, err := s.Append(t.Context(), batch); !errors.Is(err, cache.ErrFull) {
		t.Fatalf("a batch over three streams on a full Redis: %v, want ErrFull", err)
	}
	for name, n := range before {
		if got := len(mustRead(t, s, name, cache.Cursor{}).Messages); got != n {
			t.Fatalf("a refused batch changed stream %s: %d messages, had %d", name, got, n)
		}
	}
	if b := mustRead(t, s, "new", cache.Cursor{}); len(b.Messages) != 0 {
		t.Fatal("a refused batch created a stream")
	}
}

func TestWatchedStreamKeptAlive(t *testing.T) {
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{TTL: time.Hour})[0]
	c := client(t, srv)
	mustSubscribe(t, s, "u")
	meta := s.KeysOf("u")[0]
	// Shorten the key's life as if it had idled almost to its end; the keep-alive must give it
	// back its full idle lifetime while a reader watches.
	if err := c.PExpire(t.Context(), meta, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(t.Context(), meta).Val(); ttl < time.Hour {
		t.Fatalf("watched stream's key lives %s more, want its idle lifetime (2×TTL) again", ttl)
	}
}

func TestCloseEndsBackgroundWork(t *testing.T) {
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{})[0]
	sub := mustSubscribe(t, s, "u")
	ch := sub.Changed()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "subscriber after Close")
	if !isClosed(sub.Changed()) {
		t.Fatal("Changed after Close must be closed")
	}
	for _, err := range []error{
		s.Ping(t.Context()),
		func() error { _, err := s.Subscribe(t.Context(), "u"); return err }(),
		func() error { _, err := s.ReadAfter(t.Context(), "u", cache.Cursor{}, 0); return err }(),
		func() error { _, err := s.Claim(t.Context(), "k", time.Second); return err }(),
	} {
		if !errors.Is(err, cache.ErrClosed) {
			t.Fatalf("call after Close: %v, want ErrClosed", err)
		}
	}
}

func TestCheckServer(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // a word each warning must contain, in order
	}{
		{"as bridged wants it", []string{"--maxmemory", "100mb"}, nil},
		{"no cap", nil, []string{"maxmemory is 0"}},
		{"evicting", []string{"--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"}, []string{"allkeys-lru"}},
		{"everysec", []string{"--maxmemory", "100mb", "--appendonly", "yes", "--appendfsync", "everysec"}, []string{"everysec"}},
		{"snapshots", []string{"--maxmemory", "100mb", "--save", "60 1"}, []string{"RDB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.WithArgs(tt.args...))
			s := nodes(t, srv, 1, cache.Options{})[0]
			got, err := s.CheckServer(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Fatalf("warning %q does not mention %q", got[i], w)
				}
			}
		})
	}
}

func TestScriptCacheFlushed(t *testing.T) {
	// After SCRIPT FLUSH (or a restart) Redis knows none of the scripts: every call must load
	// them again, and a batch over several streams, which runs them inside MULTI/EXEC, must not
	// store anything twice doing so.
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{})[0]
	c := client(t, srv)
	flush := func() {
		if err := c.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	ids := mustAppend(t, s, append(drafts("a", 2, "a"), drafts("b", 1, "b")...))
	flush()
	mustAppend(t, s, drafts("a", 1, "x"))
	flush()
	b := mustRead(t, s, "a", cache.Cursor{})
	if len(b.Messages) != 3 || b.Messages[1].ID != ids[1] {
		t.Fatalf("stream a after script flushes: %+v, want 3 messages", b)
	}
	flush()
	mustSubscribe(t, s, "a")
	flush()
	if ok, err := s.Claim(t.Context(), "k", time.Minute); !ok || err != nil {
		t.Fatalf("Claim after a script flush: %v %v", ok, err)
	}
}

func TestIdleStreamFreed(t *testing.T) {
	// Redis frees a stream's keys 2×TTL after its last activity (real time); its next message
	// starts a new epoch and an old cursor resets.
	srv := redistest.Start(t)
	s := nodes(t, srv, 1, cache.Options{TTL: 100 * time.Millisecond})[0]
	c := client(t, srv)
	old := mustAppend(t, s, drafts("u", 2, "old"))
	deadline := time.Now().Add(readyWait)
	for c.Exists(t.Context(), s.KeysOf("u")...).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("an idle stream's keys still exist after %s", readyWait)
		}
		time.Sleep(pollEvery)
	}
	fresh := mustAppend(t, s, drafts("u", 1, "new"))
	if fresh[0].Epoch == old[0].Epoch || fresh[0].Seq != 1 {
		t.Fatalf("first message after the stream was freed: %v, want seq 1 of a new epoch", fresh[0])
	}
	if b := mustRead(t, s, "u", old[1]); !b.Reset {
		t.Fatalf("read with a cursor from the freed life: %+v, want a reset", b)
	}
}
