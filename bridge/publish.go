package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/bridged/bridged/cache"
)

// publishItem is one message of a publish request.
type publishItem struct {
	User  string          `json:"user"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Key   string          `json:"key"`
}

// publishBody is either a single message (the embedded fields) or a batch in Messages.
type publishBody struct {
	publishItem
	Messages []publishItem `json:"messages"`
}

// reservedEvents are the names bridged's own SSE frames use; an app event with one of them would
// be mistaken for a control frame.
var reservedEvents = map[string]bool{"hello": true, "ping": true, "reset": true, "close": true}

// publish handles POST /v1/publish. It decodes and validates the whole request first and stores
// it with one Append, so a bad request changes nothing.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) (err error) {
	start := requestStart(w)
	var drafts []cache.Draft
	defer func() { s.countPublish(err, len(drafts), start) }()
	if s.isDraining() {
		return errDraining
	}
	if drafts, err = s.decodePublish(w, r); err != nil {
		return err
	}
	ids, err := s.appendAndAnswer(r.Context(), drafts)
	if err != nil {
		return fmt.Errorf("append %d messages: %w", len(drafts), err)
	}
	b := make([]byte, 0, 16+len(ids)*(cache.MaxCursorLen+3))
	b = append(b, `{"ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = id.AppendText(b)
		b = append(b, '"')
	}
	b = append(b, "]}\n"...)
	writeJSON(w, http.StatusOK, b)
	return nil
}

// publishBodyTimeout bounds how long a publisher may take to send its body, so a slow sender
// (slowloris on the body) cannot hold a handler; headers have BRIDGE_READ_HEADER_TIMEOUT.
const publishBodyTimeout = 30 * time.Second

// countPublish records a publish request's outcome, duration and messages.
func (s *Server) countPublish(err error, messages int, start time.Time) {
	s.metrics.publishDuration.Observe(time.Since(start).Seconds())
	if err == nil {
		s.metrics.publishRequests.WithLabelValues("ok").Inc()
		s.metrics.published.Add(float64(messages))
		return
	}
	e, _ := toAPIError(err)
	outcome, reason := "internal", ""
	switch {
	case e.Code == "store_full":
		outcome, reason = "store_full", "store_full"
	case e.Code == "unavailable":
		outcome, reason = "unavailable", "unavailable"
	case e.Code == "draining":
		outcome, reason = "draining", "draining"
	case e.Status == http.StatusRequestEntityTooLarge:
		outcome, reason = "too_large", "too_large"
	case e.Status == http.StatusBadRequest:
		outcome, reason = "bad_request", "invalid"
	}
	s.metrics.publishRequests.WithLabelValues(outcome).Inc()
	if reason != "" {
		s.metrics.refused.WithLabelValues(reason).Add(float64(max(messages, 1)))
	}
}

// decodePublish reads the whole body (at most BRIDGE_MAX_BODY_BYTES, within publishBodyTimeout),
// decodes it (decode.go: the usual shapes by hand, anything else by encoding/json, to the same
// result) and validates every message.
func (s *Server) decodePublish(w http.ResponseWriter, r *http.Request) ([]cache.Draft, error) {
	if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(publishBodyTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, fmt.Errorf("set read deadline: %w", err)
	}
	bufp := bodyBufs.Get().(*[]byte)
	in, readErr := readBody(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes), (*bufp)[:0], r.ContentLength)
	defer func() { putBodyBuf(bufp, in) }()
	var body publishBody
	if readErr != nil || !body.parsePublish(in) {
		// encoding/json reads the same bytes, then the same read error (a *http.MaxBytesError
		// past the limit), as it would have straight from the body.
		var rd io.Reader = bytes.NewReader(in)
		if readErr != nil {
			rd = io.MultiReader(rd, errReader{readErr})
		}
		var err error
		if body, err = decodeJSON(rd, s.opts.MaxBodyBytes); err != nil {
			return nil, err
		}
	}

	single := body.User != "" || body.Event != "" || body.Data != nil || body.Key != ""
	items := body.Messages
	switch {
	case single && body.Messages != nil:
		return nil, badRequest("bad_request", "send either one message or a messages array, not both")
	case single:
		items = []publishItem{body.publishItem}
	case body.Messages == nil:
		return nil, badRequest("bad_request", `the body needs "user" and "data", or a "messages" array`)
	case len(items) == 0:
		return nil, badRequest("bad_request", "messages is empty")
	case len(items) > s.opts.MaxBatch:
		return nil, errorf(http.StatusRequestEntityTooLarge, "batch_too_large", "%d messages in one request; BRIDGE_MAX_BATCH is %d", len(items), s.opts.MaxBatch)
	}

	drafts := make([]cache.Draft, len(items))
	for i := range items {
		d, err := s.validateItem(&items[i])
		if err != nil {
			if single {
				return nil, err
			}
			e, _ := toAPIError(err)
			return nil, &apiError{Status: e.Status, Code: e.Code, Message: fmt.Sprintf("messages[%d]: %s", i, e.Message)}
		}
		drafts[i] = d
	}
	return drafts, nil
}

// decodeJSON decodes one publish body from rd with encoding/json: unknown members refused, and
// nothing but whitespace after the object.
func decodeJSON(rd io.Reader, limit int64) (publishBody, error) {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	body := new(publishBody) // on the heap here only: the fast path's stays on the stack
	if err := dec.Decode(body); err != nil {
		return publishBody{}, decodeError(err, limit)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return publishBody{}, decodeError(mbe, limit)
		}
		return publishBody{}, badRequest("bad_json", "the body must hold exactly one JSON object")
	}
	return *body, nil
}

func decodeError(err error, limit int64) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "the request body exceeds %d bytes", limit)
	}
	if errors.Is(err, io.EOF) {
		return badRequest("bad_json", "the body is empty")
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badRequest("bad_json", "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return badRequest("bad_json", "field %q has the wrong type", typ.Field)
	}
	// Unknown fields, truncated input, excessive nesting: the decoder's text names the problem
	// and echoes no more than a field name.
	return badRequest("bad_json", "%s", err.Error())
}

func (s *Server) validateItem(it *publishItem) (cache.Draft, error) {
	if err := validUser(it.User); err != nil {
		return cache.Draft{}, err
	}
	event := it.Event
	if event == "" {
		event = "message"
	}
	if !validEvent(event) {
		return cache.Draft{}, badRequest("bad_event", "event must match [A-Za-z0-9._:-]{1,64}")
	}
	if reservedEvents[event] {
		return cache.Draft{}, badRequest("bad_event", "event %q is reserved for bridged's own frames", event)
	}
	if it.Data == nil {
		return cache.Draft{}, badRequest("bad_data", `"data" is required (any JSON value)`)
	}
	if !utf8.Valid(it.Data) {
		return cache.Draft{}, badRequest("bad_data", "data is not valid UTF-8")
	}
	// Store data compact: whitespace between JSON tokens may hold line breaks, and a message is
	// one SSE data line.
	data := it.Data
	if needsCompact(data) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return cache.Draft{}, badRequest("bad_data", "data is not valid JSON")
		}
		data = buf.Bytes()
	}
	if len(data) > s.opts.MaxMessageBytes {
		return cache.Draft{}, errorf(http.StatusRequestEntityTooLarge, "too_large", "data is %d bytes; BRIDGE_MAX_MESSAGE_BYTES is %d", len(data), s.opts.MaxMessageBytes)
	}
	if len(it.Key) > cache.MaxKeyLen || !utf8.ValidString(it.Key) || hasControl(it.Key) {
		return cache.Draft{}, badRequest("bad_key", "key must be valid UTF-8 without control characters, at most %d bytes", cache.MaxKeyLen)
	}
	return cache.Draft{Stream: it.User, Event: event, Data: data, Key: it.Key}, nil
}

// needsCompact reports whether data holds a line break. Valid JSON can only have one as
// whitespace between tokens (inside strings it must be escaped), so most payloads skip the copy.
func needsCompact(data []byte) bool {
	return bytes.ContainsAny(data, "\r\n")
}

func validUser(u string) error {
	if u == "" || len(u) > cache.MaxStreamLen || !utf8.ValidString(u) || hasControl(u) {
		return badRequest("bad_user", "user must be 1 to %d bytes of UTF-8 without control characters", cache.MaxStreamLen)
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}

// validEvent reports whether e matches ^[A-Za-z0-9._:-]{1,64}$, the names that are safe on an
// SSE event: line and in any client's dispatch table.
func validEvent(e string) bool {
	if len(e) == 0 || len(e) > 64 {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// setWriteDeadline gives the response's next writes until timeout; recorders in tests have no
// deadlines, which is fine.
func setWriteDeadline(w http.ResponseWriter, timeout time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	w.Write(body)
}
