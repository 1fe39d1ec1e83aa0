#!/usr/bin/env bash
# Compares bridged with Nchan on this machine: installs nginx, Nchan and wrk from Debian when
# missing, builds bridged and the load tool, and runs cmd/bridgebench against both targets,
# interleaved (per workload: bridged, Nchan, bridged, Nchan, bridged, Nchan), reporting medians
# and bridged/Nchan ratios. All traffic stays on 127.0.0.1; every phase is bounded in time.
#
#   bench/run.sh                       # issue 6's sizes, three rounds (about 10 minutes)
#   bench/run.sh -short                # CI size: 500 connections, one round (about a minute)
#   bench/run.sh -workloads sse,publish -rounds 1     # any bridgebench flag passes through
#
# Output goes to $OUT (default bench/out/): table.md, results.json and plot.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"

need=()
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may have started a system nginx on port 80; bridgebench runs its own on a
# free loopback port with bench/nchan/nginx.conf and does not touch any other.

out=${OUT:-bench/out}
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
echo "== building bridged and bridgebench"
go build -o "$bin/bridged" ./cmd/bridged
go build -o "$bin/bridgebench" ./cmd/bridgebench

echo "== bridgebench $*"
"$bin/bridgebench" -bin "$bin/bridged" -nchan-conf bench/nchan/nginx.conf \
  -md "$out/table.md" -json "$out/results.json" -svg "$out/plot.svg" "$@"
echo "== wrote $out/table.md, $out/results.json, $out/plot.svg"
