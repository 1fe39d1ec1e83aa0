package bridge

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strconv"

	"go.uber.org/zap"

	"github.com/bridged/bridged/cache"
)

var errAdminLimit = errors.New("admin listing limit reached")

// adminMessages handles GET /v1/admin/messages[?user=U][&limit=N]: every retained message, or
// one user's, for operators (the seed design's GetAll, without its delete). The answer is
// streamed as it is scanned, so its size does not sit in memory:
// {"messages":[{"user","id","event","data","time"},…],"count":N,"truncated":bool}.
func (s *Server) adminMessages(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	user := q.Get("user")
	if user != "" {
		if err := validUser(user); err != nil {
			return err
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return badRequest("bad_limit", "limit must be a positive integer")
		}
		limit = n
	}

	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.WriteString(`{"messages":[`)
	count := 0
	var buf []byte
	err := s.store.Scan(r.Context(), user, func(stream string, m cache.Message) error {
		if limit > 0 && count == limit {
			return errAdminLimit
		}
		buf = buf[:0]
		if count > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"user":`...)
		buf = appendJSONString(buf, stream)
		buf = append(buf, ',')
		buf = appendMessageFields(buf, &m)
		count++
		_, err := bw.Write(buf)
		return err
	})
	truncated := errors.Is(err, errAdminLimit)
	if err != nil && !truncated {
		if count == 0 && !errors.Is(err, r.Context().Err()) {
			return err // nothing sent yet: a proper error answer
		}
		// Half a listing must not look like a whole one: abort the response.
		s.log.Warn("admin listing aborted", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	bw.WriteString(`],"count":`)
	bw.WriteString(strconv.Itoa(count))
	bw.WriteString(`,"truncated":`)
	bw.WriteString(strconv.FormatBool(truncated))
	bw.WriteString("}\n")
	return bw.Flush()
}

// adminStats handles GET /v1/admin/stats: what this node holds right now, for operators and the
// soak tool. Connections count open SSE and WebSocket streams and waiting long-polls.
func (s *Server) adminStats(w http.ResponseWriter, r *http.Request) error {
	type conns struct {
		SSE      int64 `json:"sse"`
		LongPoll int64 `json:"longpoll"`
		WS       int64 `json:"ws"`
		Total    int64 `json:"total"`
	}
	out := struct {
		Goroutines  int          `json:"goroutines"`
		Connections conns        `json:"connections"`
		Store       *cache.Stats `json:"store,omitempty"`
		Draining    bool         `json:"draining"`
	}{
		Goroutines: runtime.NumGoroutine(),
		Connections: conns{
			SSE:      s.conns.byTransport[transportSSE].Load(),
			LongPoll: s.conns.byTransport[transportLongPoll].Load(),
			WS:       s.conns.byTransport[transportWS].Load(),
			Total:    s.conns.total.Load(),
		},
		Draining: s.isDraining(),
	}
	if st, ok := s.store.(cache.Statser); ok {
		stats := st.Stats()
		out.Store = &stats
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, append(b, '\n'))
	return nil
}
