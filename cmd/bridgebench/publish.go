package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// wrkScript drives wrk for the publish rows. Each thread pre-builds a ring of requests to its own
// 1000 users (per-request Lua would cost more than the server's work), and done() prints one
// machine-readable line. Arguments: mode (bridged: POST /v1/publish with the key, also used for
// the hello server; nchan: POST /pub/<user>), batch size, publish key, and the users each thread
// spreads batches over (so that the whole run stays within bridged's default store cap: at most
// 1000 users of 1000 retained messages, well under BRIDGE_MAX_MEMORY's 256 MiB).
const wrkScript = `-- bridgebench publish load; written by cmd/bridgebench
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local reqs, ring, i = {}, 1000, 0

local function msg(u, n)
  return '{"bt":0,"bs":' .. n .. ',"bu":' .. u .. '}'
end

function init(args)
  local mode, batch, key, busers = args[1], tonumber(args[2]), args[3], tonumber(args[4])
  local base = tid * ring
  if batch > 1 then ring = 100 end
  for k = 1, ring do
    local u = base + k
    if mode == "nchan" then
      reqs[k] = wrk.format("POST", "/pub/u" .. u, {["Content-Type"] = "application/json"}, msg(u, k))
    else
      local body
      if batch > 1 then
        local parts = {}
        for j = 1, batch do
          local v = base + (k * batch + j) % busers
          parts[j] = '{"user":"u' .. v .. '","data":' .. msg(v, k) .. '}'
        end
        body = '{"messages":[' .. table.concat(parts, ",") .. ']}'
      else
        body = '{"user":"u' .. u .. '","data":' .. msg(u, k) .. '}'
      end
      reqs[k] = wrk.format("POST", "/v1/publish",
        {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
    end
  end
end

function request()
  i = i % ring + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BRIDGEBENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
`

// wrkResult is the BRIDGEBENCH line of wrkScript's done().
type wrkResult map[string]float64

func parseWrk(out []byte) (wrkResult, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "BRIDGEBENCH ")
		if !ok {
			continue
		}
		r := wrkResult{}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("wrk: bad %q", kv)
			}
			r[k] = f
		}
		return r, nil
	}
	return nil, fmt.Errorf("wrk printed no BRIDGEBENCH line:\n%s", out)
}

// runPublish measures publish throughput: single-message requests from cfg.pubConns concurrent
// keep-alive connections for cfg.pubDuration, then batch requests of cfg.batch messages (on
// targets that have batch publish). With wrk installed, wrk generates the load (a C event loop
// costs the shared cores less than Go clients would); otherwise the tool's own closed-loop
// clients do. The hello target is measured the same way, in the same run, as the reference.
func runPublish(ctx context.Context, cfg *config, p *proc, pr *progress) (*result, error) {
	res := newResult()
	mode := "bridged"
	if p.kind == targetNchan {
		mode = "nchan"
	}
	kinds := []struct {
		name  string
		batch int
	}{{"single", 1}, {"batch", cfg.batch}}
	for _, k := range kinds {
		if k.batch > 1 && p.kind == targetNchan {
			res.note("publish: Nchan has no batch publish; batch row not measured")
			continue
		}
		pr.phase(fmt.Sprintf("publish %s %s: %d connections", k.name, p.kind, cfg.pubConns), cfg.pubDuration)
		p.prof.cpu(ctx, k.name, cfg.pubDuration)
		cpu0 := cpuSeconds(p.pids())
		var rps, p50, p99, accepted float64
		var errs float64
		if cfg.wrk != "" {
			r, err := runWrk(ctx, cfg, p, mode, k.batch)
			if err != nil {
				return nil, err
			}
			// wrk counts every answer; a refused publish (non-2xx) must not count as throughput.
			secs := r["duration_us"] / 1e6
			accepted = r["requests"] - r["status"]
			rps = accepted / secs
			p50, p99 = r["p50_us"]/1e3, r["p99_us"]/1e3
			errs = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
			pr.sent.Store(int64(r["requests"]))
			res.note("publish %s: wrk -t%d -c%d -d%s: %.0f requests, errors connect %.0f read %.0f write %.0f status %.0f timeout %.0f",
				k.name, cfg.wrkThreads, cfg.pubConns, cfg.pubDuration, r["requests"], r["connect"], r["read"], r["write"], r["status"], r["timeout"])
		} else {
			var h Histogram
			n, failed, took := goPublishLoad(ctx, cfg, p, k.batch, &h, pr)
			accepted = float64(n)
			rps = accepted / took.Seconds()
			p50, p99 = float64(h.Quantile(0.5))/1e6, float64(h.Quantile(0.99))/1e6
			errs = float64(failed)
			res.note("publish %s: Go clients, %d connections for %s: %d requests, %d failed", k.name, cfg.pubConns, cfg.pubDuration, n, failed)
		}
		prefix := "pub." + k.name
		if accepted > 0 {
			// Server CPU per accepted request, including the load of many connections: what a
			// publish costs when it is part of the long-poll loop's figure too.
			res.Metrics[prefix+".cpu_us_per_req"] = (cpuSeconds(p.pids()) - cpu0) / accepted * 1e6
		}
		res.Metrics[prefix+".rps"] = rps
		res.Metrics[prefix+".p50_ms"] = p50
		res.Metrics[prefix+".p99_ms"] = p99
		res.Metrics[prefix+".errors"] = errs
		if k.batch > 1 {
			res.Metrics[prefix+".msgs_per_s"] = rps * float64(k.batch)
		}
	}
	return res, nil
}

func runWrk(ctx context.Context, cfg *config, p *proc, mode string, batch int) (wrkResult, error) {
	dir, err := os.MkdirTemp("", "bridgebench-wrk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "publish.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, err
	}
	secs := max(1, int(cfg.pubDuration.Seconds()))
	ctx, cancel := context.WithTimeout(ctx, cfg.pubDuration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.wrk, "-t"+strconv.Itoa(cfg.wrkThreads), "-c"+strconv.Itoa(cfg.pubConns),
		"-d"+strconv.Itoa(secs)+"s", "--timeout", "10s", "-s", script, "http://"+p.addr+"/", "--", mode, strconv.Itoa(batch), benchPublishKey, strconv.Itoa(max(1, 1000/cfg.wrkThreads)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(out)
}

// goPublishLoad is the fallback when wrk is missing: cfg.pubConns goroutines, each a closed loop
// of publishes on its own keep-alive connection, for cfg.pubDuration.
func goPublishLoad(ctx context.Context, cfg *config, p *proc, batch int, h *Histogram, pr *progress) (n, failed int64, took time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, cfg.pubDuration)
	defer cancel()
	var ok, bad atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.pubConns {
		wg.Go(func() {
			// A ring of requests to this connection's own 1000 users, built before the clock starts.
			reqs := make([][]byte, 1000)
			for k := range reqs {
				u := w*1000 + k
				if batch > 1 {
					users := make([]int, batch)
					ps := make([]payload, batch)
					for j := range users {
						users[j] = (w*batch + k*batch + j) % 1000 // 1000 users in all: within the store cap
						ps[j] = payload{Seq: uint32(k), User: users[j]}
					}
					reqs[k] = p.proto.batchRequest(nil, users, ps)
				} else {
					reqs[k] = p.proto.publishRequest(nil, u, payload{Seq: uint32(k), User: u})
				}
			}
			var c *conn
			var body []byte
			for k := 0; ctx.Err() == nil; k++ {
				if c == nil {
					var err error
					if c, err = dial(ctx, p.addr, 4096); err != nil {
						bad.Add(1)
						sleepCtx(ctx, 10*time.Millisecond)
						continue
					}
				}
				hd, b, d, err := c.roundTrip(reqs[k%len(reqs)], body)
				body = b
				if err != nil {
					if ctx.Err() == nil {
						bad.Add(1)
					}
					c.close()
					c = nil
					continue
				}
				if p.proto.publishOK(hd.status) || p.kind == targetHello && hd.status == 200 {
					ok.Add(1)
					pr.sent.Add(1)
					h.Record(d)
				} else {
					bad.Add(1)
				}
				if hd.close {
					c.close()
					c = nil
				}
			}
			if c != nil {
				c.close()
			}
		})
	}
	wg.Wait()
	return ok.Load(), bad.Load(), time.Since(start)
}
