package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bridged/bridged/cache"
)

// pollLimit is the most messages one poll answer carries; "more" says when there are others.
const pollLimit = 1000

// poll handles GET /v1/poll: a plain poll, or a long-poll with wait=. Both answer
// {"messages":[…],"cursor":"…","reset":bool,"more":bool}.
//
// A long-poll follows the one read path (package doc): Subscribe, then Changed → ReadAfter →
// wait for the change, the deadline, the node draining or the client leaving. On HTTP/1.1 it
// waits on a parked connection (park.go), which holds far less memory than net/http's.
func (s *Server) poll(w http.ResponseWriter, r *http.Request, who subscriber) error {
	c, err := cache.ParseCursor(queryValue(r.URL.RawQuery, "cursor"))
	if err != nil {
		return badRequest("bad_cursor", "cursor is malformed; send back an id bridged gave you, or none")
	}
	wait, err := parseWait(queryValue(r.URL.RawQuery, "wait"), s.opts.LongPollMax)
	if err != nil {
		return err
	}
	transport := "poll"
	if wait > 0 {
		transport = "longpoll"
	}
	setTransport(w, transport)
	if s.faults.active(faultPoll) {
		return errDemoFault
	}
	user := who.user

	b, err := s.store.ReadAfter(r.Context(), user, c, pollLimit+1)
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	if wait == 0 || len(b.Messages) > 0 || b.Reset || s.isDraining() {
		s.writeBatch(w, transport, b)
		return nil
	}

	release, err := s.acquire(user, transportLongPoll)
	if err != nil {
		return err
	}
	sub, err := s.store.Subscribe(r.Context(), user)
	if err != nil {
		release()
		return fmt.Errorf("subscribe: %w", err)
	}
	deadline := time.Now().Add(wait)
	if p, pending := s.park(w, r); p != nil {
		h := w.Header() // the answer's headers, so far
		if _, kept := beneath[*keptResponse](w); !kept {
			h = h.Clone() // net/http's response's, not to be kept past the handler
		}
		s.parkLongPoll(p, pending, s.detach(w, r), user, c, deadline, sub, release, h, r.Close || !p.reusable())
		return nil
	}
	defer release()
	defer sub.Close()
	cut, stop := s.faults.watch(r.Context(), faultLongPoll)
	defer stop()
	a := s.longPoll(r.Context(), user, c, deadline, newChanWaiter(cut, sub, s.drain))
	if errors.Is(a.err, context.Canceled) && r.Context().Err() == nil {
		a.err = errDemoCut // as a gateway that times out before the answer says
	}
	if a.err != nil {
		return a.err
	}
	s.writeBatch(w, transport, a.batch)
	return nil
}

// longPollEnd is how a long-poll ends: a batch to send, or an error to answer with; gone says
// the client left (or the demo cut it), so there is nothing, or only that error, to answer.
type longPollEnd struct {
	batch cache.Batch
	err   error
	gone  bool
}

// longPoll is the waiting half of a long-poll, on the handler's goroutine or a parked
// connection's: Changed → ReadAfter → wait for the change, the deadline, the node draining or
// the client leaving. It counts the outcome.
func (s *Server) longPoll(ctx context.Context, user string, c cache.Cursor, deadline time.Time, w waiter) longPollEnd {
	for {
		w.arm()
		b, err := s.store.ReadAfter(ctx, user, c, pollLimit+1)
		if err != nil {
			return longPollEnd{err: fmt.Errorf("read stream: %w", err)}
		}
		if outcome := s.longPollOver(b, deadline); outcome != "" {
			s.metrics.longPollOutcomes.WithLabelValues(outcome).Inc()
			return longPollEnd{batch: b}
		}
		if _, err = w.wait(deadline); err != nil {
			s.metrics.longPollOutcomes.WithLabelValues("client_gone").Inc()
			return longPollEnd{err: err, gone: true}
		}
	}
}

// longPollOver names how a long-poll that has just read b ends (its outcome for the metric):
// with messages, a reset, the node draining or its deadline passed; "" while it waits on.
func (s *Server) longPollOver(b cache.Batch, deadline time.Time) string {
	switch {
	case b.Reset:
		return "reset"
	case len(b.Messages) > 0:
		return "message"
	case s.isDraining():
		return "shutdown"
	case !time.Now().Before(deadline):
		return "timeout"
	}
	return ""
}

// parkLongPoll waits for a long-poll's answer on a parked connection (park.go), writes it, and
// goes on serving the connection's next requests (parkWait), or closes it when the client asked
// to (closeAfter) or it did not come through Listener. With an in-memory store, a publisher
// answers it (answer.go).
func (s *Server) parkLongPoll(p *parked, pending []byte, logLine func(int, int64), user string, c cache.Cursor, deadline time.Time, sub cache.Subscription, release func(), h http.Header, closeAfter bool) {
	lp := &parkedPoll{s: s, offer: offer{p: p}, user: user, cursor: c, deadline: deadline, sub: sub,
		release: release, header: h, logLine: logLine, closeAfter: closeAfter}
	if !closeAfter && len(pending) == 0 {
		lp.rr = s.publisherWriter(p)
	}
	if lp.rr != nil {
		sub.Notify(s.answers.notifier(lp))
		s.parkWait(p, pending, lp.wait)
		return
	}
	ctx := context.Background() // the wait outlives the request; the waiter sees the client leave
	stopCut := func() {}
	if s.faults != nil {
		p.cut, stopCut = s.faults.watch(ctx, faultLongPoll)
		context.AfterFunc(p.cut, p.poke)
	}
	sub.Notify(p.poke)
	s.parkWait(p, pending, func() (closeConn bool) {
		a := s.longPoll(ctx, user, c, deadline, parkedWaiter{p})
		stopCut()
		p.cut = nil
		return lp.finish(a)
	})
}

// writeBatch writes a poll answer under a write deadline, so a client that stops reading cannot
// hold the handler.
func (s *Server) writeBatch(w http.ResponseWriter, transport string, b cache.Batch) {
	setWriteDeadline(w, s.opts.WriteTimeout)
	more := len(b.Messages) > pollLimit
	if more {
		b.Messages = b.Messages[:pollLimit]
		b.Cursor = b.Messages[pollLimit-1].ID
	}
	s.countDelivered(transport, &b, time.Now())
	size := 64
	for i := range b.Messages {
		size += 96 + len(b.Messages[i].Event) + len(b.Messages[i].Data)
	}
	bufp := bodyBufs.Get().(*[]byte)
	buf := slices.Grow((*bufp)[:0], size)
	buf = append(buf, `{"messages":[`...)
	for i := range b.Messages {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendMessage(buf, &b.Messages[i])
	}
	buf = append(buf, `],"cursor":"`...)
	buf = b.Cursor.AppendText(buf)
	buf = append(buf, `","reset":`...)
	buf = strconv.AppendBool(buf, b.Reset)
	buf = append(buf, `,"more":`...)
	buf = strconv.AppendBool(buf, more)
	buf = append(buf, "}\n"...)
	writeJSON(w, http.StatusOK, buf) // a Write copies what it keeps (io.Writer)
	putBodyBuf(bufp, buf)
}

// parseWait reads the wait parameter: a Go duration ("25s", "1500ms") or whole seconds ("25").
// It is capped at max (BRIDGE_LONGPOLL_MAX); empty or zero means a plain poll.
func parseWait(v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	bad := func() error {
		return badRequest("bad_wait", `wait must be a duration such as "25s" or whole seconds, at least 0`)
	}
	if len(v) > 32 {
		return 0, bad()
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, bad()
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, bad()
	}
	return min(d, max), nil
}

// queryValue is r.URL.Query().Get(key) without building the map (a poll reads two keys, often):
// the first value of key in the raw query, or "".
func queryValue(raw, key string) string {
	v, _ := queryLookup(raw, key)
	return v
}

// queryLookup is queryValue that also says whether key is there at all, as url.Values.Has does.
// It follows url.ParseQuery's rules: pairs split on "&", a pair holding ";" skipped, keys and
// values query-unescaped, a pair that does not unescape skipped. A query past net/url's limit on
// parameters is left to net/url, which then yields nothing. FuzzQueryValue checks it against
// url.ParseQuery.
func queryLookup(raw, key string) (string, bool) {
	if strings.Count(raw, "&") >= maxQueryParams {
		u := url.URL{RawQuery: raw}
		q := u.Query()
		return q.Get(key), q.Has(key)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if escaped(k) {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != key {
			continue
		}
		if !escaped(v) {
			return v, true
		}
		if v, err := url.QueryUnescape(v); err == nil {
			return v, true
		}
	}
	return "", false
}

// escaped reports whether s holds a query escape ('%' or '+').
func escaped(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || s[i] == '+' {
			return true
		}
	}
	return false
}

// maxQueryParams: queries with this many "&" go to net/url itself. It is well under net/url's
// default limit (10,000); a GODEBUG urlmaxqueryparams set below it is not followed here.
const maxQueryParams = 1000
