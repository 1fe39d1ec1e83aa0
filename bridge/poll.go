package bridge

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/bridged/bridged/cache"
)

// pollLimit is the most messages one poll answer carries; "more" says when there are others.
const pollLimit = 1000

// poll handles GET /v1/poll: a plain poll, or a long-poll with wait=. Both answer
// {"messages":[…],"cursor":"…","reset":bool,"more":bool}.
//
// A long-poll follows the one read path (package doc): Subscribe, then Changed → ReadAfter →
// wait for the change, the deadline, the node draining or the client leaving.
func (s *Server) poll(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	c, err := cache.ParseCursor(q.Get("cursor"))
	if err != nil {
		return badRequest("bad_cursor", "cursor is malformed; send back an id bridged gave you, or none")
	}
	wait, err := parseWait(q.Get("wait"), s.opts.LongPollMax)
	if err != nil {
		return err
	}
	transport := "poll"
	if wait > 0 {
		transport = "longpoll"
	}
	setTransport(r, transport)
	if s.faults.active(faultPoll) {
		return errDemoFault
	}
	user := subscriberFrom(r.Context()).user

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
	defer release()
	sub, err := s.store.Subscribe(r.Context(), user)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Close()
	cut, stop := s.faults.watch(r.Context(), faultLongPoll)
	defer stop()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := sub.Changed()
		if b, err = s.store.ReadAfter(r.Context(), user, c, pollLimit+1); err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		if len(b.Messages) > 0 || b.Reset {
			s.metrics.longPollOutcomes.WithLabelValues(map[bool]string{true: "reset", false: "message"}[b.Reset]).Inc()
			s.writeBatch(w, transport, b)
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			s.metrics.longPollOutcomes.WithLabelValues("timeout").Inc()
			s.writeBatch(w, transport, b)
			return nil
		case <-s.drain:
			s.metrics.longPollOutcomes.WithLabelValues("shutdown").Inc()
			s.writeBatch(w, transport, b)
			return nil
		case <-cut.Done():
			if r.Context().Err() == nil {
				return errDemoCut // as a gateway that times out before the answer says
			}
			s.metrics.longPollOutcomes.WithLabelValues("client_gone").Inc()
			return nil // the client left; nothing to answer
		}
	}
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
	buf := make([]byte, 0, size)
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
	writeJSON(w, http.StatusOK, buf)
}

// parseWait reads the wait parameter: a Go duration ("25s", "1500ms") or whole seconds ("25").
// It is capped at max (BRIDGE_LONGPOLL_MAX); empty or zero means a plain poll.
func parseWait(v string, max time.Duration) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	bad := badRequest("bad_wait", `wait must be a duration such as "25s" or whole seconds, at least 0`)
	if len(v) > 32 {
		return 0, bad
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, bad
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, bad
	}
	return min(d, max), nil
}
