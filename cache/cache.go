package cache

import (
	"context"
	"errors"
	"time"
)

// Store is a set of per-stream, expiring, append-only message logs (see the package comment for
// the model). Implementations are safe for concurrent use. Every method honours ctx and returns
// the errors below wrapped with %w, never an engine's own error types.
type Store interface {
	// Append stores each draft on its stream and returns the cursors in input order. Drafts of one
	// stream keep their input order. A draft whose Key was already used on its stream within the
	// TTL (also earlier in the same call) is not stored again; it gets the first message's cursor.
	//
	// It fails with ErrTooLarge if a draft's Data is longer than Options.MaxMessageBytes or could
	// never fit its stream, with ErrInvalid for an empty stream name or a key that is too long,
	// and with ErrFull if the drafts would pass Options.MaxMemory even after expired data is
	// reclaimed. Those errors store nothing. The drafts of one stream are stored all or none;
	// an engine that spans machines may have stored other streams' drafts before an
	// ErrUnavailable, which is why publishers that retry should set Key.
	Append(ctx context.Context, drafts []Draft) ([]Cursor, error)

	// ReadAfter returns up to limit retained messages of stream after c, oldest first (limit <= 0
	// means no limit). See Batch for Reset and the cursor to continue from.
	//
	// Batch.Cursor is always a real position, never the zero Cursor: reading a stream that does
	// not exist creates it, empty, with a fresh epoch, and answers "<epoch>-0" (Reset when c is
	// not zero). A reader holding the zero Cursor after a read could not be told about later
	// losses, since the zero Cursor reads from the oldest retained message and never resets.
	ReadAfter(ctx context.Context, stream string, c Cursor, limit int) (Batch, error)

	// Subscribe registers interest in new messages on stream until the Subscription is closed.
	// While a stream has subscribers it is not freed, however idle.
	Subscribe(ctx context.Context, stream string) (Subscription, error)

	// Scan calls fn for every retained message of stream, or of every stream when stream is "",
	// oldest first within a stream and streams in no particular order. It is for operators and
	// may be slow; it stops at the first error fn returns and returns it. Engines do not hold
	// locks while fn runs, so fn may be slow (it writes to a network). Scan creates nothing.
	Scan(ctx context.Context, stream string, fn func(stream string, m Message) error) error

	// Ping reports whether the store can serve requests; it returns ErrUnavailable otherwise.
	Ping(ctx context.Context) error

	// Close releases the store's resources and stops its background work. Open Subscriptions
	// wake up; later calls fail with ErrClosed.
	Close() error
}

// Subscription is a reader's interest in one stream, from Store.Subscribe. It is safe for
// concurrent use.
type Subscription interface {
	// Changed returns a channel that is closed after a message is appended to the stream
	// later than this call. Take it before ReadAfter (see the package comment). Spurious
	// closes are allowed: after a reconnect to its backend an engine wakes every reader.
	Changed() <-chan struct{}

	// Notify arranges for fn to be called after every later append to the stream, with the same
	// spurious calls as Changed, until Close; once the Subscription or its Store is closed it is
	// called once more (at once, when already closed). It is the goroutine-free alternative to
	// Changed: fn runs in the appender's goroutine, under an engine lock, so it must be quick, must
	// not block and must not call the Store. Call Notify at most once per Subscription, before
	// the first ReadAfter it is to cover.
	Notify(fn func())

	// Close ends the subscription. It is idempotent; once it returns, fn is not called again.
	Close()
}

// Draft is a message to be appended.
type Draft struct {
	Stream string // required
	Event  string // the message's type; the store keeps it as given
	Data   []byte // the payload; the store keeps it as given and never modifies it
	Key    string // optional idempotency key, unique per stream within the TTL
}

// Message is a retained message. Data is shared with the store and must not be modified.
type Message struct {
	ID    Cursor
	Event string
	Data  []byte
	Time  time.Time // when it was appended, by the store's clock
}

// Batch is the result of a read.
type Batch struct {
	// Messages are the retained messages after the read's cursor, oldest first.
	Messages []Message

	// Reset is true when messages after the read's cursor are gone (expired, evicted, or the
	// cursor is from another epoch or beyond the stream's end). Messages then start at the oldest
	// retained one. The reader must be told: something was lost.
	Reset bool

	// Cursor is where to read next: the ID of the last message in Messages; or, when there are
	// none, the read's own cursor if it is still valid and otherwise the stream's current end,
	// so a reader that was told about a reset does not get told again. It is never zero.
	Cursor Cursor

	// Start is the cursor just before Messages[0] when Reset is true (Cursor when there are no
	// messages): the position a reset moves the reader to. Readers that carry cursors in band
	// (SSE ids) send it with the reset notice.
	Start Cursor
}

// Options configures a Store. The zero value of each field selects the default noted.
type Options struct {
	TTL               time.Duration    // how long a message is retained; default 2m
	StreamMaxMessages int              // per-stream count cap, oldest evicted first; default 1000
	StreamMaxBytes    int64            // per-stream cap on stored bytes, oldest evicted first; default 1 MiB
	MaxMessageBytes   int              // largest Data accepted; default 64 KiB
	MaxMemory         int64            // cap on the whole store's accounted bytes; default 256 MiB
	Now               func() time.Time // the clock; default time.Now (tests inject a fake one)
	Prefix            string           // key namespace for engines with shared backends
}

// Defaulted returns o with every zero field set to its default.
func (o Options) Defaulted() Options {
	if o.TTL <= 0 {
		o.TTL = 2 * time.Minute
	}
	if o.StreamMaxMessages <= 0 {
		o.StreamMaxMessages = 1000
	}
	if o.StreamMaxBytes <= 0 {
		o.StreamMaxBytes = 1 << 20
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 10
	}
	if o.MaxMemory <= 0 {
		o.MaxMemory = 256 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// MaxStreamLen and MaxKeyLen bound the names a store accepts, so a hostile name cannot grow
// memory or keys without limit.
const (
	MaxStreamLen = 256
	MaxKeyLen    = 256
)

// Stats is a snapshot of a store's size. The memory engine's figures are exact; an engine whose
// backend is shared by several nodes reports the backend's sizes as of its last look, the same
// on every node, and counts in Expired and Evicted only what this store removed (see the
// engine's Stats).
type Stats struct {
	Streams  int64 `json:"streams"`   // streams held, including empty ones kept for their cursor
	Messages int64 `json:"messages"`  // retained messages
	Bytes    int64 `json:"bytes"`     // bytes held against MaxBytes (memory engine: accounted bytes)
	Expired  int64 `json:"expired"`   // messages removed for outliving the TTL, since the store opened
	Evicted  int64 `json:"evicted"`   // messages removed early by a per-stream cap, since the store opened
	MaxBytes int64 `json:"max_bytes"` // the cap Bytes is held under (memory engine: Options.MaxMemory); 0: none
}

// Claimer is implemented by stores that can hand out one-time claims, shared by every node that
// uses the same backend. bridged uses it to make tickets single-use across nodes.
type Claimer interface {
	// Claim reports whether key was unclaimed, claiming it for ttl: it returns true for the
	// first call with key within ttl and false for every later one. Keys are at most MaxKeyLen
	// bytes (ErrInvalid otherwise).
	Claim(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// Statser is implemented by stores that can report their size cheaply. Stats must not block
// (bridged calls it at every metrics scrape): an engine that has to ask a server keeps figures
// fetched in the background.
type Statser interface {
	Stats() Stats
}

// InMemory is implemented by stores that hold their messages in the process's memory and read
// them without I/O: a ReadAfter costs a lock and a copy and never waits on a network. A caller
// may then read on other readers' behalf in a goroutine that must not wait (bridge answers a
// parked long-poll, or writes a parked SSE stream's frames, from the goroutine whose publish
// woke it).
type InMemory interface {
	InMemory()
}

// Errors returned, wrapped, by Store implementations.
var (
	ErrFull        = errors.New("cache: memory cap reached")
	ErrTooLarge    = errors.New("cache: message too large")
	ErrBadCursor   = errors.New("cache: malformed cursor")
	ErrInvalid     = errors.New("cache: invalid stream or key")
	ErrUnavailable = errors.New("cache: store unavailable")
	ErrClosed      = errors.New("cache: store closed")
)
