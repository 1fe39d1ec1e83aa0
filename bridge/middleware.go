package bridge

import (
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"
)

// beneath finds the ResponseWriter of type T under w's wrappers, following Unwrap as
// http.ResponseController does: the access log's loggingWriter, a kept connection's keptResponse.
func beneath[T http.ResponseWriter](w http.ResponseWriter) (T, bool) {
	for {
		if v, ok := w.(T); ok {
			return v, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			var none T
			return none, false
		}
		w = u.Unwrap()
	}
}

// setTransport names the transport a request used (sse, longpoll, poll) for the access log.
func setTransport(w http.ResponseWriter, transport string) {
	if lw, ok := beneath[*loggingWriter](w); ok {
		lw.transport = transport
	}
}

// requestStart is when the access log saw the request begin, or now outside it.
func requestStart(w http.ResponseWriter) time.Time {
	if lw, ok := beneath[*loggingWriter](w); ok {
		return lw.start
	}
	return time.Now()
}

// detach hands r's access log line to the goroutine that now owns its connection (park.go):
// the handler returns long before the response ends. The returned function logs the line. Call
// it after setTransport.
func (s *Server) detach(w http.ResponseWriter, r *http.Request) (logLine func(status int, bytes int64)) {
	lw, ok := beneath[*loggingWriter](w)
	if !ok {
		return func(int, int64) {}
	}
	lw.detached = true
	// Copies, not lw: it holds net/http's response, which a parked connection must not keep alive.
	method, path, remote, start, transport := r.Method, r.URL.Path, r.RemoteAddr, lw.start, lw.transport
	return func(status int, bytes int64) {
		s.logRequest(method, path, remote, status, bytes, start, transport)
	}
}

// logRequest writes the access log line: the path but never the query string, which may hold a
// token or ticket.
func (s *Server) logRequest(method, path, remote string, status int, bytes int64, start time.Time, transport string) {
	ce := s.log.Check(zap.InfoLevel, "request") // nil below the level: no fields built
	if ce == nil {
		return
	}
	d := time.Since(start)
	ce.Write(
		zap.String("method", method),
		zap.String("path", path),
		zap.Int("status", status),
		zap.Int64("bytes", bytes),
		zap.Duration("duration", d),
		zap.String("transport", transport),
		zap.String("remote", remote),
	)
}

// loggingWriter records the status and size of a response, and what the handler tells the
// access log (setTransport, detach). Unwrap lets http.ResponseController reach the connection
// underneath for Flush and write deadlines.
type loggingWriter struct {
	http.ResponseWriter
	status    int
	bytes     int64
	start     time.Time
	transport string
	detached  bool // a parked connection's goroutine logs the request when it really ends
}

func (lw *loggingWriter) WriteHeader(code int) {
	if lw.status == 0 {
		lw.status = code
	}
	lw.ResponseWriter.WriteHeader(code)
}

func (lw *loggingWriter) Write(b []byte) (int, error) {
	if lw.status == 0 {
		lw.status = http.StatusOK
	}
	n, err := lw.ResponseWriter.Write(b)
	lw.bytes += int64(n)
	return n, err
}

func (lw *loggingWriter) Unwrap() http.ResponseWriter { return lw.ResponseWriter }

// accessLog writes one line per request, after it ends, and turns a handler panic into a logged
// 500. The line has the path but never the query string, which may hold a token.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lw := &loggingWriter{ResponseWriter: w, start: time.Now()}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v) // net/http's way to cut a response short; it logs nothing
				}
				s.log.Error("handler panic", zap.String("path", r.URL.Path), zap.Any("panic", v), zap.Stack("stack"))
				if lw.status == 0 {
					s.writeError(lw, r.URL.Path, errInternal)
				}
			}
			if !lw.detached {
				s.logRequest(r.Method, r.URL.Path, r.RemoteAddr, lw.status, lw.bytes, lw.start, lw.transport)
			}
		}()
		next.ServeHTTP(lw, r)
	})
}

var (
	hdrNosniff    = []string{"nosniff"}
	hdrNoReferrer = []string{"no-referrer"}
	hdrDeny       = []string{"DENY"}
	hdrJSON       = []string{"application/json"}
	hdrNoStore    = []string{"no-store"}
)

// headers sets the security headers every answer carries and answers CORS for the configured
// origins (BRIDGE_CORS_ORIGINS), including preflight requests.
func (s *Server) headers(next http.Handler) http.Handler {
	anyOrigin := slices.Contains(s.opts.CORSOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Canonical keys and shared values: no allocation per request. Header.Set and Add replace
		// or append to a value slice, never write into one, so sharing them is safe.
		h["X-Content-Type-Options"] = hdrNosniff
		h["Referrer-Policy"] = hdrNoReferrer // URLs may hold a ticket or token: never pass them on
		h["X-Frame-Options"] = hdrDeny
		origin := r.Header.Get("Origin")
		if origin != "" && !anyOrigin {
			h.Add("Vary", "Origin")
		}
		if origin == "" || !anyOrigin && !slices.Contains(s.opts.CORSOrigins, origin) {
			next.ServeHTTP(w, r)
			return
		}
		if anyOrigin {
			h.Set("Access-Control-Allow-Origin", "*") // credentials are never allowed with *
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true") // EventSource withCredentials, fetch credentials: 'include'
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
