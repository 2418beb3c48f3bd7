#!/usr/bin/env bash
# The spawn-storm benchmark: a class whose servers start at once, as new-route POSTs
# from concurrent clients, against ours with the Kubernetes store on testkit's real API server,
# beside the bare object writes a route needs (a plain client on the same server: the physical
# limit here) and configurable-http-proxy taking the same POSTs, all in one run, over loopback.
#
# Usage (from anywhere):   bench/storm.sh
#
# Knobs (environment):
#   BENCH_ROUTES      routes per storm, under /jhub/, pod-IP targets   (default 300)
#   BENCH_CLIENTS     concurrent clients, comma-separated             (default 8,64)
#   BENCH_ROUNDS      rounds; every server started fresh each round   (default 3)
#   BENCH_SKIP_BUILD  1 = do not run `cargo build --release`         (default 0)
#
# testkit/src/bin/spawn-storm.rs does the work and says what each figure means; this script
# builds, installs CHP (npm ci --prefix bench), runs it, and writes the table of medians to
# bench/results/storm-latest.md (raw figures beside it). It exits 1 when the run itself fails:
# a POST answered other than 201, or objects lost or duplicated on the API server.
# Noise: 2 cores shared by the clients, the API server (with etcd) and the server under test;
# read the ratios from one run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
LOG_TAG=storm-bench
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

ROUTES=${BENCH_ROUTES:-300}
CLIENTS=${BENCH_CLIENTS:-8,64}
ROUNDS=${BENCH_ROUNDS:-3}
check_range BENCH_ROUTES "$ROUTES" 1 100000
check_range BENCH_ROUNDS "$ROUNDS" 1 20
[[ $CLIENTS =~ ^[0-9]+(,[0-9]+)*$ ]] || die "BENCH_CLIENTS must be numbers separated by commas"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release --bin jupyterhub-istio-proxy --bin spawn-storm"
  cargo build --release --locked -p jhub-proxy-bin -p testkit --bin jupyterhub-istio-proxy --bin spawn-storm
fi
if [[ ! -x bench/node_modules/.bin/configurable-http-proxy ]]; then
  log "installing configurable-http-proxy (npm ci --prefix bench)"
  npm ci --prefix bench --no-audit --no-fund >&2
fi

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=bench/results/storm-run-$stamp.tsv
summary=bench/results/storm-latest.md
log "$ROUNDS round(s) of $ROUTES routes at $CLIENTS clients; raw figures in $raw"
{
  printf '# Spawn storm, %s\n\nCommand: `BENCH_ROUTES=%s BENCH_CLIENTS=%s BENCH_ROUNDS=%s bench/storm.sh` at %s\n' \
    "$stamp" "$ROUTES" "$CLIENTS" "$ROUNDS" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$TARGET/release/spawn-storm" --ours "$TARGET/release/jupyterhub-istio-proxy" \
    --chp bench/node_modules/.bin/configurable-http-proxy \
    --routes "$ROUTES" --clients "$CLIENTS" --rounds "$ROUNDS" 2>&1 >"$raw" | grep -v '^20[0-9][0-9]-' || true
} | tee "$summary"
grep -q '^| ' "$summary" || die "the storm failed; see above"
log "wrote $summary"
