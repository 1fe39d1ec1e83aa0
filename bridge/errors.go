package bridge

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

// apiError is an error a client is meant to see: an HTTP status, a stable machine-readable code
// and a human-readable message. It is written as {"error":{"code","message"}}.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; sent as Retry-After when > 0
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, a ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

func badRequest(code, format string, a ...any) *apiError {
	return errorf(http.StatusBadRequest, code, format, a...)
}

var (
	errNotFound    = errorf(http.StatusNotFound, "not_found", "no such endpoint")
	errDraining    = &apiError{Status: http.StatusServiceUnavailable, Code: "draining", Message: "this node is shutting down; retry on another", RetryAfter: 1}
	errStoreFull   = &apiError{Status: http.StatusServiceUnavailable, Code: "store_full", Message: "the message store is at its memory cap (BRIDGE_MAX_MEMORY); retry later", RetryAfter: 1}
	errUnavailable = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the message store is unavailable; retry later", RetryAfter: 1}
	errInternal    = errorf(http.StatusInternalServerError, "internal", "internal error")
)

// toAPIError maps any error to what the client sees, in one place: store errors by kind, API
// errors as they are, anything else as a 500 that the caller logs.
func toAPIError(err error) (e *apiError, internal bool) {
	switch {
	case errors.Is(err, cache.ErrFull):
		return errStoreFull, false
	case errors.Is(err, cache.ErrUnavailable), errors.Is(err, cache.ErrClosed):
		return errUnavailable, false
	case errors.Is(err, cache.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "message exceeds BRIDGE_MAX_MESSAGE_BYTES or the stream's byte cap"), false
	case errors.Is(err, cache.ErrBadCursor):
		return badRequest("bad_cursor", "cursor is malformed"), false
	case errors.Is(err, cache.ErrInvalid):
		return badRequest("bad_request", "invalid user or key"), false
	}
	if e, ok := errors.AsType[*apiError](err); ok {
		return e, false
	}
	return errInternal, true
}

// writeError writes err as the JSON error body. Internal errors are logged here and only here.
func (s *Server) writeError(w http.ResponseWriter, path string, err error) {
	e, internal := toAPIError(err)
	if internal {
		s.log.Error("internal error", zap.String("path", path), zap.Error(err))
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="bridged"`)
	}
	w.WriteHeader(e.Status)
	b := make([]byte, 0, 64+len(e.Code)+len(e.Message))
	b = append(b, `{"error":{"code":`...)
	b = appendJSONString(b, e.Code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.Message)
	b = append(b, "}}\n"...)
	w.Write(b)
}

// apiFunc is a handler that returns its error for api to write.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) api(fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			if r.Context().Err() != nil {
				return // the client left (or the server is closing it): nobody to answer, nothing wrong
			}
			s.writeError(w, r.URL.Path, err)
		}
	})
}

func notFound(http.ResponseWriter, *http.Request) error { return errNotFound }

// methodNotAllowed answers a known path with the wrong method. Without these catch-alls ServeMux
// would answer 405 in plain text, or fall through to the JSON 404.
func methodNotAllowed(allow string) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Allow", allow)
		return errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; use %s", r.Method, allow)
	}
}
