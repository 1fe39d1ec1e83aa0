package bridge

import (
	"encoding/json"
	"net/http"
)

// Clients report their ladder moves (POST /v1/client-events) so operators can see where
// networks push them: which rung they leave, for which one, and why. The labels come from fixed
// sets, so the counters (bridged_client_rung_changes_total) stay bounded whatever a client sends.

// Rungs of the client's ladder, top first.
var clientRungs = [...]string{"ws", "sse", "longpoll", "poll"}

// Reasons for a move. "probe_delivered" is the only reason to step up: a higher rung, probed
// in the background, delivered a message or a heartbeat.
var clientReasons = [...]string{
	"connect_failed",    // the rung could not connect at all
	"repeated_failures", // it connected but kept failing
	"silent",            // it stayed silent past twice its heartbeat (a buffering proxy)
	"cut",               // requests died early at an intermediary, below the useful long-poll wait
	"unsupported",       // the browser or the server lacks the rung
	"probe_delivered",
}

const reasonProbeDelivered = len(clientReasons) - 1

func indexOf[T ~string](list []string, v T) int {
	for i, s := range list {
		if s == string(v) {
			return i
		}
	}
	return -1
}

// clientEvent handles POST /v1/client-events: {"change":"down"|"up","from":rung,"to":rung,
// "reason":reason} from a subscriber's client. A step down goes to a lower rung for any reason
// but probe_delivered; a step up goes to a higher rung for probe_delivered. 204 when counted.
func (s *Server) clientEvent(w http.ResponseWriter, r *http.Request, _ subscriber) error {
	var ev struct {
		Change string `json:"change"`
		From   string `json:"from"`
		To     string `json:"to"`
		Reason string `json:"reason"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 512))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return badRequest("bad_json", `want {"change","from","to","reason"}`)
	}
	from, to := indexOf(clientRungs[:], ev.From), indexOf(clientRungs[:], ev.To)
	reason := indexOf(clientReasons[:], ev.Reason)
	if from < 0 || to < 0 || reason < 0 {
		return badRequest("bad_event", "from and to must be ws, sse, longpoll or poll, and reason one of the documented reasons")
	}
	switch {
	case ev.Change == "down" && to > from && reason != reasonProbeDelivered:
	case ev.Change == "up" && to < from && reason == reasonProbeDelivered:
	default:
		return badRequest("bad_event", "a step down goes to a lower rung, a step up to a higher one for probe_delivered")
	}
	s.metrics.rungChanges.WithLabelValues(ev.Change, ev.From, ev.To, ev.Reason).Inc() // labels checked above
	w.WriteHeader(http.StatusNoContent)
	return nil
}
