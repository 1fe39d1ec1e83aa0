package bridge

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bridged/bridged/cache"
)

// metrics are bridged's Prometheus metrics. Every label has a fixed, small set of values (no user
// ids, no paths from clients), so the series count does not grow with traffic.
type metrics struct {
	registry *prometheus.Registry

	connectionsTotal  resolvedCounterVec // transport
	connectionRefused resolvedCounterVec // reason: user_limit, node_limit
	published         prometheus.Counter
	publishRequests   resolvedCounterVec // outcome
	publishDuration   prometheus.Histogram
	delivered         *prometheus.CounterVec // transport
	deliveryLatency   *prometheus.HistogramVec
	resets            *prometheus.CounterVec // transport
	refused           resolvedCounterVec     // reason
	longPollOutcomes  resolvedCounterVec     // outcome
	authFailures      resolvedCounterVec     // reason
	streamEnds        *prometheus.CounterVec // transport, reason
	rungChanges       *prometheus.CounterVec // direction, from, to, reason

	deliveries map[string]*deliveryMetrics // by transport, poll included; see countDelivered
}

// resolvedCounterVec is a one-label CounterVec whose series for the label's bounded values are
// resolved once, when newMetrics creates them. Its WithLabelValues answers those values from a
// read-only map: the vector's own hashes the value and takes the vector's lock on every call,
// which the per-request paths (publish, poll, auth) should not pay. Other values go to the
// vector as before.
type resolvedCounterVec struct {
	*prometheus.CounterVec
	known map[string]prometheus.Counter
}

func resolveCounters(vec *prometheus.CounterVec, values ...[]string) resolvedCounterVec {
	r := resolvedCounterVec{CounterVec: vec, known: map[string]prometheus.Counter{}}
	for _, vs := range values {
		for _, v := range vs {
			r.known[v] = vec.WithLabelValues(v)
		}
	}
	return r
}

// WithLabelValues returns the series for lvs, like prometheus.CounterVec's.
func (r resolvedCounterVec) WithLabelValues(lvs ...string) prometheus.Counter {
	if len(lvs) == 1 {
		if c, ok := r.known[lvs[0]]; ok {
			return c
		}
	}
	return r.CounterVec.WithLabelValues(lvs...)
}

// deliveryMetrics are one transport's series of the delivery metrics.
type deliveryMetrics struct {
	delivered prometheus.Counter
	latency   prometheus.Observer
	resets    prometheus.Counter
}

// Bounded label values.
var (
	publishOutcomes  = []string{"ok", "bad_request", "too_large", "store_full", "unavailable", "draining", "internal"}
	longPollOutcomes = []string{"message", "reset", "timeout", "shutdown", "client_gone"}
	authReasons      = []string{"token_missing", "token_invalid", "token_expired", "ticket_invalid", "ticket_expired", "ticket_used", "key_missing", "key_invalid"}
	refusedReasons   = []string{"store_full", "too_large", "invalid", "draining", "unavailable"}
	streamEndReasons = []string{"client_gone", "write_failed", "shutdown", "token_expired", "unavailable"}
)

func newMetrics(reg *prometheus.Registry, store cache.Store, conns *connLimiter, parked *parkedSet) *metrics {
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{registry: reg}

	connectionsTotalVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_connections_total", Help: "Streams and waiting long-polls accepted, by transport."}, []string{"transport"})
	connectionRefusedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_connections_refused_total", Help: "Streams and long-polls refused by the connection caps (429 user_limit, 503 node_limit)."}, []string{"reason"})
	m.published = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bridged_published_messages_total", Help: "Messages acknowledged by POST /v1/publish (idempotent repeats included)."})
	publishRequestsVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_publish_requests_total", Help: "POST /v1/publish requests by outcome."}, []string{"outcome"})
	m.publishDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "bridged_publish_duration_seconds", Help: "Time to handle a publish request, decode to answer.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_delivered_messages_total", Help: "Messages written to clients, by transport."}, []string{"transport"})
	m.deliveryLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "bridged_delivery_latency_seconds", Help: "From a message being stored to it being written to a client, by transport. Replays of old messages land in the top buckets.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"transport"})
	m.resets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_resets_total", Help: "Reset notices sent: a client was told messages after its cursor are gone."}, []string{"transport"})
	refusedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_messages_refused_total", Help: "Messages refused at publish, by reason."}, []string{"reason"})
	longPollOutcomesVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_longpoll_outcomes_total", Help: "How waiting long-polls ended."}, []string{"outcome"})
	authFailuresVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_auth_failures_total", Help: "Requests refused for their credentials, by reason."}, []string{"reason"})
	m.streamEnds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_stream_ends_total", Help: "Why SSE and WebSocket streams ended."}, []string{"transport", "reason"})
	m.rungChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridged_client_rung_changes_total", Help: "Client ladder moves the browser client reported, by direction, rungs and reason."},
		[]string{"direction", "from", "to", "reason"})

	for _, c := range []prometheus.Collector{connectionsTotalVec, connectionRefusedVec, m.published, publishRequestsVec,
		m.publishDuration, m.delivered, m.deliveryLatency, m.resets, refusedVec, longPollOutcomesVec, authFailuresVec,
		m.streamEnds, m.rungChanges} {
		f(c)
	}
	// Create the bounded series up front, so dashboards and alerts see zeros, not gaps, and
	// resolve the ones the per-request paths count.
	for _, t := range transportNames {
		for _, r := range streamEndReasons {
			if t != "longpoll" {
				m.streamEnds.WithLabelValues(t, r)
			}
		}
	}
	m.connectionsTotal = resolveCounters(connectionsTotalVec, transportNames[:])
	m.connectionRefused = resolveCounters(connectionRefusedVec, []string{"user_limit", "node_limit"})
	m.publishRequests = resolveCounters(publishRequestsVec, publishOutcomes)
	m.longPollOutcomes = resolveCounters(longPollOutcomesVec, longPollOutcomes)
	m.authFailures = resolveCounters(authFailuresVec, authReasons)
	m.refused = resolveCounters(refusedVec, refusedReasons)
	m.deliveries = map[string]*deliveryMetrics{}
	for _, t := range []string{"sse", "longpoll", "ws", "poll"} {
		m.deliveries[t] = &deliveryMetrics{
			delivered: m.delivered.WithLabelValues(t),
			latency:   m.deliveryLatency.WithLabelValues(t),
			resets:    m.resets.WithLabelValues(t),
		}
	}

	// Gauges read at scrape time from where the truth lives.
	connGauge := prometheus.NewDesc("bridged_connections", "Open SSE/WebSocket streams and waiting long-polls, by transport.", []string{"transport"}, nil)
	f(collectorFunc{descs: []*prometheus.Desc{connGauge}, collect: func(ch chan<- prometheus.Metric) {
		for i, t := range transportNames {
			ch <- prometheus.MustNewConstMetric(connGauge, prometheus.GaugeValue, float64(conns.byTransport[i].Load()), t)
		}
	}})
	// Writes made by publishing requests on parked connections (answer.go, stream.go): whole, or
	// begun with the rest left to the connection's goroutine (a client slower than the publisher).
	pubWrites := prometheus.NewDesc("bridged_publisher_writes_total", "Long-poll answers and SSE frames written by the publishing request instead of the connection's goroutine (memory engine), whole or begun with the rest left to the connection's goroutine.", []string{"transport", "result"}, nil)
	f(collectorFunc{descs: []*prometheus.Desc{pubWrites}, collect: func(ch chan<- prometheus.Metric) {
		for _, w := range []struct {
			transport, result string
			n                 *atomic.Uint64
		}{
			{"longpoll", "whole", &parked.answeredByPublisher}, {"longpoll", "partial", &parked.answeredInPart},
			{"sse", "whole", &parked.streamWritesByPublisher}, {"sse", "partial", &parked.streamWritesInPart},
		} {
			ch <- prometheus.MustNewConstMetric(pubWrites, prometheus.CounterValue, float64(w.n.Load()), w.transport, w.result)
		}
	}})
	if st, ok := store.(cache.Statser); ok {
		// With the Redis engine the gauges describe the shared Redis, the same on every node (take
		// max, not sum, across nodes), and the counters this node's share (sum them).
		msgs := prometheus.NewDesc("bridged_store_messages", "Messages retained. Redis: counted every 30s, the same on every node.", nil, nil)
		bytes := prometheus.NewDesc("bridged_store_bytes", "Bytes held against bridged_store_max_bytes: memory engine, accounted bytes; Redis, its used_memory (the same on every node).", nil, nil)
		streams := prometheus.NewDesc("bridged_store_streams", "Streams held, empty ones kept for their cursor included. Redis: counted every 30s, the same on every node.", nil, nil)
		maxBytes := prometheus.NewDesc("bridged_store_max_bytes", "The cap on bridged_store_bytes: BRIDGE_MAX_MEMORY, or Redis's maxmemory (0 when Redis has none).", nil, nil)
		expired := prometheus.NewDesc("bridged_messages_expired_total", "Messages this node removed because they outlived BRIDGE_MESSAGE_TTL (Redis: sum over nodes for the cluster).", nil, nil)
		evicted := prometheus.NewDesc("bridged_messages_evicted_total", "Messages this node removed early by a per-stream cap; readers behind them get a reset (Redis: sum over nodes for the cluster).", nil, nil)
		f(collectorFunc{descs: []*prometheus.Desc{msgs, bytes, streams, maxBytes, expired, evicted}, collect: func(ch chan<- prometheus.Metric) {
			s := st.Stats()
			ch <- prometheus.MustNewConstMetric(msgs, prometheus.GaugeValue, float64(s.Messages))
			ch <- prometheus.MustNewConstMetric(bytes, prometheus.GaugeValue, float64(s.Bytes))
			ch <- prometheus.MustNewConstMetric(streams, prometheus.GaugeValue, float64(s.Streams))
			ch <- prometheus.MustNewConstMetric(maxBytes, prometheus.GaugeValue, float64(s.MaxBytes))
			ch <- prometheus.MustNewConstMetric(expired, prometheus.CounterValue, float64(s.Expired))
			ch <- prometheus.MustNewConstMetric(evicted, prometheus.CounterValue, float64(s.Evicted))
		}})
	}
	return m
}

// collectorFunc is a prometheus.Collector from a function, for values read at scrape time.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{ErrorLog: zapErrorLog{s}})
}

type zapErrorLog struct{ s *Server }

func (z zapErrorLog) Println(v ...any) {
	z.s.log.Sugar().Warnw("metrics scrape error", "error", v)
}

// acquire takes a connection slot through the limiter and counts the outcome.
func (s *Server) acquire(user string, t transport) (func(), error) {
	release, err := s.conns.acquire(user, t)
	switch err {
	case nil:
		s.metrics.connectionsTotal.WithLabelValues(transportNames[t]).Inc()
	case errUserConnections:
		s.metrics.connectionRefused.WithLabelValues("user_limit").Inc()
	case errOverloaded:
		s.metrics.connectionRefused.WithLabelValues("node_limit").Inc()
	}
	return release, err
}

// countAuthFailure counts a refused credential by its error code.
func (s *Server) countAuthFailure(err error) {
	if e, ok := err.(*apiError); ok && e.Status == http.StatusUnauthorized {
		s.metrics.authFailures.WithLabelValues(e.Code).Inc() // codes come from a fixed set in auth.go and ticket.go
	}
}

// countDelivered counts messages written on transport and how long after being stored.
func (s *Server) countDelivered(transport string, b *cache.Batch, now time.Time) {
	if len(b.Messages) == 0 && !b.Reset {
		return
	}
	d := s.metrics.deliveries[transport]
	if d == nil { // not one of transportNames or poll: a new transport's series are made here
		d = &deliveryMetrics{s.metrics.delivered.WithLabelValues(transport), s.metrics.deliveryLatency.WithLabelValues(transport), s.metrics.resets.WithLabelValues(transport)}
	}
	d.delivered.Add(float64(len(b.Messages)))
	for i := range b.Messages {
		d.latency.Observe(now.Sub(b.Messages[i].Time).Seconds())
	}
	if b.Reset {
		d.resets.Inc()
	}
}
