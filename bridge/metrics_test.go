package bridge

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads /metrics through the internal scope and returns name{labels} -> value.
func (h *harness) scrape() map[string]float64 {
	h.t.Helper()
	req, _ := http.NewRequest("GET", "/metrics", nil)
	rec := newRecorder()
	h.srv.Handler(Internal).ServeHTTP(rec, req)
	if rec.Code != 200 {
		h.t.Fatalf("/metrics: %d", rec.Code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		h.t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.Metric {
			key := name
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.LongPollMax = 20 * time.Millisecond })
	ts := h.serve()
	before := h.scrape()
	for _, name := range []string{"bridged_published_messages_total", "bridged_store_messages", "bridged_connections{transport=sse}",
		"bridged_auth_failures_total{reason=token_expired}", "bridged_longpoll_outcomes_total{outcome=timeout}"} {
		if _, ok := before[name]; !ok {
			t.Fatalf("series %s missing before any traffic", name)
		}
	}

	ids := h.publish(`{"messages":[{"user":"u","data":1},{"user":"u","data":2}]}`)
	h.do("POST", "/v1/publish", testPublishKey, `{"user":"u","event":"reset","data":1}`) // refused: invalid
	h.do("GET", "/v1/poll", token(t, "u", -time.Hour), "")                               // expired token
	h.poll("u", "")                                                                      // 2 delivered by poll
	h.poll("u", "?wait=1s&cursor="+ids[1])                                               // times out
	s := openSSE(t, ts.URL, "", token(t, "u", time.Hour), nil)
	s.expect("hello")
	s.expect("message")
	s.expect("message")

	after := h.scrape()
	moved := map[string]float64{
		"bridged_published_messages_total":                    2,
		"bridged_publish_requests_total{outcome=ok}":          1,
		"bridged_publish_requests_total{outcome=bad_request}": 1,
		"bridged_messages_refused_total{reason=invalid}":      1,
		"bridged_auth_failures_total{reason=token_expired}":   1,
		"bridged_delivered_messages_total{transport=poll}":    2,
		"bridged_longpoll_outcomes_total{outcome=timeout}":    1,
		"bridged_connections_total{transport=sse}":            1,
		"bridged_connections_total{transport=longpoll}":       1,
		"bridged_connections{transport=sse}":                  1,
		"bridged_store_messages":                              2,
		"bridged_publish_duration_seconds":                    2,
		"bridged_delivery_latency_seconds{transport=poll}":    2,
	}
	for name, want := range moved {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	for name := range after {
		if strings.Contains(name, "user=") || strings.Contains(name, "=u,") || strings.HasSuffix(name, "=u}") {
			t.Errorf("a series is labelled by user: %s", name)
		}
	}
}

func TestMetricsNeedTheAdminKeyOnASharedListener(t *testing.T) {
	h := newHarness(t, nil)
	if rec := h.do("GET", "/metrics", "", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("/metrics without a key on the shared listener: %d", rec.Code)
	}
	if rec := h.do("GET", "/metrics", testAdminKey, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "bridged_store_bytes") {
		t.Fatalf("/metrics with the admin key: %d", rec.Code)
	}
	req, _ := http.NewRequest("GET", "/metrics", nil)
	rec := newRecorder()
	h.srv.Handler(Public).ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("/metrics on the public listener: %d", rec.Code)
	}
}

// TestDocsNameRealMetrics: every bridged_* metric the operator docs and the Grafana dashboard
// mention is one the server exports, so neither drifts from the code.
func TestDocsNameRealMetrics(t *testing.T) {
	h := newHarness(t, nil)
	exported := map[string]bool{"bridged_log_entries_dropped_total": true} // registered by cmd/bridged
	for key := range h.scrape() {
		name, _, _ := strings.Cut(key, "{")
		exported[name] = true
	}
	// Vectors whose label values come from clients have no series until one is reported.
	descs := make(chan *prometheus.Desc, 1)
	go func() { h.srv.metrics.rungChanges.Describe(descs); close(descs) }()
	for d := range descs {
		name, _, _ := strings.Cut(strings.TrimPrefix(d.String(), `Desc{fqName: "`), `"`)
		exported[name] = true
	}
	for _, doc := range []string{"../docs/operations.md", "../docs/grafana/bridged.json"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`bridged_[a-z_]+[a-z]`).FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !exported[base] {
				t.Errorf("%s mentions %s, which the server does not export", doc, name)
			}
		}
	}
}

func TestResolvedCountersAreTheVectorsOwn(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"l"})
	r := resolveCounters(vec, []string{"known"})
	r.WithLabelValues("known").Inc()
	r.WithLabelValues("other").Add(2)
	for label, want := range map[string]float64{"known": 1, "other": 2} {
		var m dto.Metric
		if err := vec.WithLabelValues(label).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.Counter.GetValue(); got != want {
			t.Errorf("l=%s: %v, want %v", label, got, want)
		}
	}
}
