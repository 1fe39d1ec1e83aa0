package main

import (
	"encoding/xml"
	"fmt"
	"go/parser"
	"go/token"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses; fields are counted after the last ')'.
	line := "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 100 0 0 0 1234 567 0 0 20 0 1 0 100 1000 10 18446744073709551615\n"
	s, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.ppid != 4241 || s.utime != 1234 || s.stime != 567 {
		t.Errorf("got %+v, want ppid 4241 utime 1234 stime 567", s)
	}
	if _, err := parseStat([]byte("1 (x) S 1")); err == nil {
		t.Error("a short line parsed")
	}
}

func TestOwnProcess(t *testing.T) {
	// Real /proc: this process uses memory and CPU, and its tree includes itself.
	pid := os.Getpid()
	if m := memoryOf([]int{pid}); m.RSS <= 0 || m.PSS <= 0 {
		t.Errorf("memory of this process %+v", m)
	}
	if c := cpuSeconds([]int{pid}); c < 0 {
		t.Errorf("cpu %v", c)
	}
	if tree := procTree(pid); tree[0] != pid {
		t.Errorf("procTree(%d) = %v", pid, tree)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addrs, err := listeningAddrs(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, ln.Addr().String()) {
		t.Errorf("listeningAddrs = %v, want it to include %s", addrs, ln.Addr())
	}
}

func TestParseListening(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F99 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F9A 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 112 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
`
	got := parseListening([]byte(table), map[string]bool{"111": true, "112": true})
	if want := []string{"127.0.0.1:8089"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (established sockets and others' inodes excluded)", got, want)
	}
}

func TestNchanConf(t *testing.T) {
	conf, notes, err := nchanConf("../../bench/nchan/nginx.conf", "127.0.0.1:45678", 3)
	if err != nil {
		t.Fatal(err)
	}
	s := string(conf)
	for _, want := range []string{"listen 127.0.0.1:45678 ", "\nworker_processes 3;", "nchan_message_timeout 2m;",
		"nchan_message_buffer_length 1000;", "nchan_subscriber eventsource;", "nchan_subscriber longpoll;",
		"nchan_subscriber intervalpoll;", "nchan_stub_status;"} {
		if !strings.Contains(s, want) {
			t.Errorf("rewritten config lacks %q", want)
		}
	}
	if strings.Contains(s, nchanConfListen) {
		t.Error("the placeholder address is still there")
	}
	// Loopback only: every listen directive is on 127.0.0.1.
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "listen" && !strings.HasPrefix(f[1], "127.0.0.1:") {
			t.Errorf("non-loopback listen: %q", line)
		}
	}
	if len(notes) == 0 {
		t.Error("no notes on what was set")
	}
	if _, _, err := nchanConf("/nonexistent", "x", 1); err == nil {
		t.Error("a missing config gave no error")
	}
}

func TestProtocols(t *testing.T) {
	b := &bridgedProto{host: "127.0.0.1:1"}
	n := &nchanProto{host: "127.0.0.1:2"}
	p := payload{TS: 99, Seq: 3, User: 7}
	tests := []struct {
		name string
		got  string
		want []string
	}{
		{"bridged sse", string(b.sseRequest(nil, 7)), []string{"GET /v1/sse HTTP/1.1\r\n", "Authorization: Bearer ey", "\r\n\r\n"}},
		{"bridged long-poll", string(b.pollRequest(nil, 7, &pollState{cursor: "k-3"}, true)), []string{"GET /v1/poll?cursor=k-3&wait=30s HTTP/1.1\r\n"}},
		{"bridged poll", string(b.pollRequest(nil, 7, &pollState{}, false)), []string{"GET /v1/poll?cursor= HTTP/1.1\r\n"}},
		{"bridged publish", string(b.publishRequest(nil, 7, p)), []string{"POST /v1/publish HTTP/1.1\r\n", "Bearer " + benchPublishKey,
			"Content-Length: 44\r\n\r\n" + `{"user":"u7","data":{"bt":99,"bs":3,"bu":7}}`}},
		{"bridged batch", string(b.batchRequest(nil, []int{1, 2}, []payload{{User: 1}, {User: 2}})), []string{
			`{"messages":[{"user":"u1","data":{"bt":0,"bs":0,"bu":1}},{"user":"u2","data":{"bt":0,"bs":0,"bu":2}}]}`}},
		{"nchan sse", string(n.sseRequest(nil, 7)), []string{"GET /sse/u7 HTTP/1.1\r\n", "Accept: text/event-stream"}},
		{"nchan first long-poll", string(n.pollRequest(nil, 7, &pollState{}, true)), []string{"GET /lp/u7 HTTP/1.1\r\nHost: 127.0.0.1:2\r\n\r\n"}},
		{"nchan next long-poll", string(n.pollRequest(nil, 7, &pollState{lastModified: "Tue, 24 Nov 2026 16:11:51 GMT", etag: "1"}, true)),
			[]string{"\r\nIf-Modified-Since: Tue, 24 Nov 2026 16:11:51 GMT\r\nIf-None-Match: 1\r\n\r\n"}},
		{"nchan poll", string(n.pollRequest(nil, 7, &pollState{}, false)), []string{"GET /ip/u7 "}},
		{"nchan publish", string(n.publishRequest(nil, 7, p)), []string{"POST /pub/u7 HTTP/1.1\r\n", "\r\n\r\n" + `{"bt":99,"bs":3,"bu":7}`}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(tt.got, w) {
				t.Errorf("%s: %q lacks %q", tt.name, tt.got, w)
			}
		}
		// Every request ends its head, and its Content-Length (if any) counts the body exactly.
		head, body, ok := strings.Cut(tt.got, "\r\n\r\n")
		if !ok {
			t.Errorf("%s: no end of head", tt.name)
		}
		if i := strings.Index(head, "Content-Length: "); i >= 0 {
			var cl int
			if _, err := fmt.Sscan(head[i+16:], &cl); err != nil || cl != len(body) {
				t.Errorf("%s: Content-Length %d, body %d bytes", tt.name, cl, len(body))
			}
		}
	}
	if n.batchRequest(nil, []int{1}, []payload{{}}) != nil {
		t.Error("Nchan has no batch publish")
	}
	if t1, t2 := b.token(7), b.token(7); t1 != t2 {
		t.Error("tokens are minted once per user")
	}
}

func TestPollAnswers(t *testing.T) {
	b := &bridgedProto{}
	st := &pollState{}
	body := []byte(`{"messages":[{"id":"k-1","event":"message","data":{"bt":1,"bs":0,"bu":0},"time":"x"}],"cursor":"k-1","reset":false,"more":false}`)
	if err := b.pollAnswer(respHead{status: 200}, body, st); err != nil || st.cursor != "k-1" || st.resets != 0 {
		t.Errorf("bridged answer: %v, state %+v", err, st)
	}
	if err := b.pollAnswer(respHead{status: 200}, []byte(`{"messages":[],"cursor":"k-9","reset":true,"more":false}`), st); err != nil || st.cursor != "k-9" || st.resets != 1 {
		t.Errorf("bridged reset: %v, state %+v", err, st)
	}
	if err := b.pollAnswer(respHead{status: 401}, []byte(`{"error":{}}`), st); err == nil {
		t.Error("bridged 401 accepted")
	}
	n := &nchanProto{}
	ns := &pollState{}
	if err := n.pollAnswer(respHead{status: 200, lastModified: "LM", etag: "2"}, nil, ns); err != nil || ns.lastModified != "LM" || ns.etag != "2" {
		t.Errorf("nchan answer: %v, state %+v", err, ns)
	}
	for _, st := range []int{304, 408} {
		if err := n.pollAnswer(respHead{status: st}, nil, ns); err != nil || ns.etag != "2" {
			t.Errorf("nchan %d: %v, state %+v (must stay put)", st, err, ns)
		}
	}
	if err := n.pollAnswer(respHead{status: 200}, nil, ns); err == nil {
		t.Error("nchan 200 without cursor headers accepted")
	}
	if !n.publishOK(201) || !n.publishOK(202) || n.publishOK(200) || !b.publishOK(200) || b.publishOK(202) {
		t.Error("publishOK")
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\nBRIDGEBENCH requests=700000 duration_us=10000000 p50_us=800 p90_us=1500 p99_us=4000 max_us=20000 connect=0 read=0 write=0 status=3 timeout=0\n"
	r, err := parseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r["requests"] != 700000 || r["p99_us"] != 4000 || r["status"] != 3 {
		t.Errorf("parsed %v", r)
	}
	if _, err := parseWrk([]byte("unable to connect\n")); err == nil {
		t.Error("output without the line parsed")
	}
}

// testReport is a report over two targets with three rounds each, as a real run leaves it.
func testReport() *report {
	cfg := &config{targets: []string{targetBridged, targetNchan}, rounds: 3, conns: 100, lpConns: 50, rate: 10,
		pollClients: 5, pollRate: 10, pubConns: 8, batch: 10, pubDuration: time.Second}
	r := &report{cfg: cfg, started: time.Unix(0, 0), finished: time.Unix(60, 0), machine: "test"}
	for i, v := range []float64{30, 20, 25} {
		for _, t := range []string{targetBridged, targetNchan} {
			res := newResult()
			res.Workload, res.Target, res.Round = "sse", t, i+1
			h := &Histogram{}
			for k := range 100 {
				h.Record(time.Duration(k+1) * time.Duration(v) * time.Microsecond)
			}
			res.latency("sse", h)
			res.Metrics["mem.sse.kb_per_conn"] = v
			if t == targetNchan {
				res.Metrics["mem.sse.kb_per_conn"] = v / 2
			}
			res.Metrics["pub.single.rps"] = 900
			r.add(res, nil)
		}
		h := newResult()
		h.Workload, h.Target, h.Round = "publish", targetHello, i+1
		h.Metrics["pub.single.rps"] = 1000
		r.add(h, nil)
	}
	return r
}

func TestReportTable(t *testing.T) {
	md := testReport().markdown()
	for _, want := range []string{
		"| RSS per idle SSE connection (100 conns) | KB | lower | 25.0 (20.0–30.0) | 12.5 (10.0–15.0) | 2.00 |",
		"| single publish / hello-world handler | % | higher | 90 | 90 | 1.00 |",
		"hello-world Go handler under the same publish load: 1000 req/s",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "long-poll wake") {
		t.Error("a row nobody measured is in the table")
	}
}

func TestReportSVGIsWellFormed(t *testing.T) {
	r := testReport()
	svg := r.svg()
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("SVG is not well-formed XML: %v", err)
			}
			break
		}
	}
	for _, want := range []string{"SSE delivery latency", "<polyline", "bridged: p50", "RSS per idle SSE connection"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	rows := r.ratioRows()
	for _, rw := range rows {
		if rw.label == "RSS per idle SSE connection (100 conns)" && (rw.better || math.Abs(rw.adv-0.5) > 1e-9) {
			t.Errorf("memory row %+v: bridged uses twice the memory, so advantage 0.5 and not better", rw)
		}
	}
}

func TestPprofOverlayParses(t *testing.T) {
	// The file -profile adds to cmd/bridged must stay valid Go in package main.
	f, err := parser.ParseFile(token.NewFileSet(), "zz_bridgebench_pprof.go", pprofOverlay, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name.Name != "main" {
		t.Errorf("overlay is package %s, want main", f.Name.Name)
	}
}
