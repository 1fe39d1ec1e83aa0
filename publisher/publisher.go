// Package publisher is the app server's side of bridged: it publishes the messages the app
// also sends on its own WebSocket, so a browser whose socket breaks can read them from bridged.
//
//	pub, err := publisher.New(publisher.Options{URL: "http://bridged:8080", Key: os.Getenv("BRIDGE_PUBLISH_KEY")})
//	defer pub.Close(ctx)
//	id, err := pub.Publish(ctx, publisher.Message{User: "alice", Event: "notice", Data: map[string]string{"text": "hi"}})
//	// send {"id": id, "event": "notice", "data": …} on alice's socket: the id is her cursor
//
// Small messages are batched: one goroutine sends what has queued up to MaxBatch messages, or
// after FlushInterval, in one POST /v1/publish, so messages of one user keep their order. Every
// message carries an idempotency key (the caller's, or a random one), so a retry after a lost
// answer returns the first id and stores nothing twice. Network errors, 429 and 503 are retried
// with jittered backoff, honouring Retry-After, until the caller's ctx ends. A full queue is an
// error (ErrQueueFull), never a silent drop.
package publisher

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	// ErrQueueFull is returned by Publish when QueueSize messages are already waiting: bridged
	// is slower than the app publishes, or unreachable. The message was not queued.
	ErrQueueFull = errors.New("publisher: queue full")
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("publisher: closed")
)

// Error is an answer from bridged that retrying cannot fix (a 4xx other than 429), or the last
// retryable one when the caller's ctx ended.
type Error struct {
	Status  int    // HTTP status
	Code    string // bridged's error code, such as "bad_event" or "too_large"
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("publisher: bridged answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Message is one message to publish.
type Message struct {
	User  string // the stream: the subscriber token's sub; required
	Event string // the message's type, [A-Za-z0-9._:-]{1,64}; empty means "message"
	// Data is the payload: json.RawMessage (or []byte) holding JSON is sent as it is; anything
	// else is encoded with encoding/json. Required (use json.RawMessage("null") for none).
	Data any
	// Key is the idempotency key: the same user and key within bridged's TTL get the first id
	// and store nothing new. Empty: a random key, so the publisher's own retries are safe.
	Key string
}

// Options configures a Publisher. URL and Key are required; other zero fields take the
// defaults noted.
type Options struct {
	URL           string        // bridged's base URL, such as http://127.0.0.1:8080
	Key           string        // BRIDGE_PUBLISH_KEY
	HTTPClient    *http.Client  // nil: a client with a 30 s timeout per request
	MaxBatch      int           // most messages in one request; default 100 (keep it <= BRIDGE_MAX_BATCH)
	FlushInterval time.Duration // how long the first queued message waits for others; default 2ms
	QueueSize     int           // most messages waiting; default 10000
	MinBackoff    time.Duration // first retry delay; default 100ms
	MaxBackoff    time.Duration // longest retry delay (a Retry-After may ask for more); default 5s
}

// Publisher publishes messages to bridged in batches. It is safe for concurrent use. Create it
// with New and stop it with Close; it owns one goroutine between the two.
type Publisher struct {
	opts     Options
	endpoint string
	client   *http.Client
	queue    chan *item

	mu      sync.RWMutex // held for reading while enqueuing, for writing by Close
	closed  bool
	closing chan struct{} // closed by Close: send what is queued, then stop
	done    chan struct{} // closed when the goroutine has stopped
}

type item struct {
	ctx  context.Context
	body json.RawMessage // the message as bridged's publish item
	res  chan result     // buffered 1
}

type result struct {
	id  string
	err error
}

// New returns a running Publisher.
func New(o Options) (*Publisher, error) {
	if o.URL == "" || o.Key == "" {
		return nil, errors.New("publisher: Options.URL and Options.Key are required")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 100
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 2 * time.Millisecond
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	p := &Publisher{
		opts:     o,
		endpoint: strings.TrimSuffix(o.URL, "/") + "/v1/publish",
		client:   o.HTTPClient,
		queue:    make(chan *item, o.QueueSize),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	go p.run()
	return p, nil
}

// Publish queues m and waits until bridged has stored it, returning its id (the cursor the app
// stamps on the frame it sends on its own socket). It returns ErrQueueFull at once when the
// queue is full, ctx's error if ctx ends first (the message may still be stored; publishing it
// again with the same Key is safe), or an *Error for a message bridged refuses.
func (p *Publisher) Publish(ctx context.Context, m Message) (string, error) {
	ids, err := p.PublishBatch(ctx, []Message{m})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// PublishBatch is Publish for several messages, queued together and in order; ids come back
// in input order. If the queue cannot take all of them, none is queued and it returns
// ErrQueueFull.
func (p *Publisher) PublishBatch(ctx context.Context, ms []Message) ([]string, error) {
	items := make([]*item, len(ms))
	for i, m := range ms {
		body, err := encode(m)
		if err != nil {
			return nil, err
		}
		items[i] = &item{ctx: ctx, body: body, res: make(chan result, 1)}
	}
	if err := p.enqueue(items); err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	var errs []error
	for i, it := range items {
		select {
		case r := <-it.res:
			ids[i] = r.id
			if r.err != nil {
				errs = append(errs, r.err)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ids, nil
}

func (p *Publisher) enqueue(items []*item) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	// Check room first so a batch is queued whole or not at all. Other publishers may race us
	// for the last places; then the sends below fail part-way, and the rest get ErrQueueFull.
	if cap(p.queue)-len(p.queue) < len(items) {
		return fmt.Errorf("%w: %d messages waiting", ErrQueueFull, len(p.queue))
	}
	for i, it := range items {
		select {
		case p.queue <- it:
		default:
			for _, rest := range items[i:] {
				rest.res <- result{err: ErrQueueFull}
			}
			return nil
		}
	}
	return nil
}

// Len returns how many messages wait in the queue, for the app's monitoring.
func (p *Publisher) Len() int { return len(p.queue) }

// Close stops taking messages, sends those queued (retrying while their callers wait), and
// stops the goroutine. If ctx ends first it returns ctx's error, and the goroutine stops once
// the callers of the messages left have given up (their ctx ended).
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.closing)
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func encode(m Message) (json.RawMessage, error) {
	var data json.RawMessage
	switch d := m.Data.(type) {
	case json.RawMessage:
		data = d
	case []byte:
		data = d
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("publisher: encode data: %w", err)
		}
		data = b
	}
	if m.Data == nil || !json.Valid(data) {
		return nil, errors.New("publisher: Data must be valid JSON")
	}
	key := m.Key
	if key == "" {
		key = "pub-" + crand.Text()
	}
	return json.Marshal(struct {
		User  string          `json:"user"`
		Event string          `json:"event,omitempty"`
		Data  json.RawMessage `json:"data"`
		Key   string          `json:"key"`
	}{m.User, m.Event, data, key})
}

// run is the goroutine: it gathers a batch and sends it, until Close.
func (p *Publisher) run() {
	defer close(p.done)
	batch := make([]*item, 0, p.opts.MaxBatch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch = batch[:0]
		select {
		case it := <-p.queue:
			batch = append(batch, it)
		case <-p.closing:
			select {
			case it := <-p.queue:
				batch = append(batch, it)
			default:
				return // closed and nothing left
			}
		}
		timer.Reset(p.opts.FlushInterval)
	gather:
		for len(batch) < p.opts.MaxBatch {
			select {
			case it := <-p.queue:
				batch = append(batch, it)
			case <-timer.C:
				break gather
			case <-p.closing:
				// send what is queued without waiting out the interval
				select {
				case it := <-p.queue:
					batch = append(batch, it)
				default:
					break gather
				}
			}
		}
		timer.Stop()
		p.send(batch)
	}
}

// send publishes batch, retrying network errors, 429 and 5xx until bridged stores it or every
// caller has given up. A refusal of a multi-message batch is retried message by message, so one
// bad message fails only itself. Retries reuse each message's key, so whatever an attempt whose
// answer was lost stored is not stored again.
func (p *Publisher) send(batch []*item) {
	for attempt := 0; ; attempt++ {
		live := batch[:0:0]
		for _, it := range batch {
			if err := it.ctx.Err(); err != nil {
				it.res <- result{err: err}
			} else {
				live = append(live, it)
			}
		}
		if batch = live; len(batch) == 0 {
			return
		}
		ids, retryAfter, err := p.attempt(batch)
		if err == nil {
			for i, it := range batch {
				it.res <- result{id: ids[i]}
			}
			return
		}
		if apiErr, ok := errors.AsType[*Error](err); ok && apiErr.Status != http.StatusTooManyRequests && apiErr.Status < 500 {
			if len(batch) == 1 {
				batch[0].res <- result{err: err}
				return
			}
			for _, it := range batch {
				p.send([]*item{it})
			}
			return
		}
		p.sleep(batch, p.backoff(attempt, retryAfter))
	}
}

func (p *Publisher) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := p.opts.MinBackoff << min(attempt, 16)
	if d > p.opts.MaxBackoff || d <= 0 {
		d = p.opts.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1) // jitter, so many publishers do not retry in step
	return max(d, retryAfter)
}

// sleep waits d, or less once every caller of batch has given up.
func (p *Publisher) sleep(batch []*item, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, it := range batch {
		select {
		case <-t.C:
			return
		case <-it.ctx.Done():
		}
	}
}

// attempt sends one POST /v1/publish. It returns the ids, or the error and how long bridged
// asked us to wait (Retry-After) before the next try.
func (p *Publisher) attempt(batch []*item) ([]string, time.Duration, error) {
	var body bytes.Buffer
	body.WriteString(`{"messages":[`)
	for i, it := range batch {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(it.body)
	}
	body.WriteString("]}")
	// Not tied to one caller's ctx: the others still wait. The client's timeout bounds it.
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, p.endpoint, &body)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.opts.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("publisher: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("publisher: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.Unmarshal(b, &e)
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return nil, wait, &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.IDs) != len(batch) {
		return nil, 0, fmt.Errorf("publisher: unexpected answer %.200q", b)
	}
	return out.IDs, 0, nil
}
