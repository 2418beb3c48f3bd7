#!/usr/bin/env bash
# What 10,000 routes cost: one route's GET and POST at 100 routes and at 10,000, and the
# resident memory once 10,000 routes are added through the API and listed, on testkit's real
# API server, for both routing APIs, with healing on (the default).
#
# Usage (from anywhere):   bench/scale.sh
#
# Knobs (environment):
#   BENCH_ROUTES      routes at the large end                           (default 10000)
#   BENCH_SMALL       routes at the small end                           (default 100)
#   BENCH_SAMPLES     GETs and POSTs timed at each end, one at a time    (default 300)
#   BENCH_CLIENTS     concurrent clients adding the routes              (default 16)
#   BENCH_ROUTING     istio | gateway-api | both                        (default both)
#   BENCH_SKIP_BUILD  1 = do not run `cargo build --release`            (default 0)
#
# testkit/src/bin/scale.rs does the work and says what each figure means. The table goes to
# bench/results/scale-latest.md. Targets: GET and POST at 10,000 routes within noise of their
# cost at 100 (ratio near 1); VmRSS at 10,000 routes at most 64 MiB. Noise: 2 cores shared by
# the clients, the API server and the server under test; quote medians.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
LOG_TAG=scale
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

ROUTES=${BENCH_ROUTES:-10000}
SMALL=${BENCH_SMALL:-100}
SAMPLES=${BENCH_SAMPLES:-300}
CLIENTS=${BENCH_CLIENTS:-16}
ROUTING=${BENCH_ROUTING:-both}
check_range BENCH_ROUTES "$ROUTES" 1 100000
check_range BENCH_SMALL "$SMALL" 1 "$ROUTES"
check_range BENCH_SAMPLES "$SAMPLES" 1 100000
check_range BENCH_CLIENTS "$CLIENTS" 1 256
case $ROUTING in istio | gateway-api | both) ;; *) die "BENCH_ROUTING must be istio, gateway-api or both" ;; esac

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release --bin jupyterhub-istio-proxy --bin scale"
  cargo build --release --locked -p jhub-proxy-bin -p testkit --bin jupyterhub-istio-proxy --bin scale
fi

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=bench/results/scale-run-$stamp.tsv
summary=bench/results/scale-latest.md
log "$SMALL and $ROUTES routes, $ROUTING, $SAMPLES samples, $CLIENTS clients"
{
  printf '# Scale, %s\n\nCommand: `BENCH_ROUTES=%s BENCH_SMALL=%s BENCH_SAMPLES=%s BENCH_CLIENTS=%s BENCH_ROUTING=%s bench/scale.sh` at %s\n' \
    "$stamp" "$ROUTES" "$SMALL" "$SAMPLES" "$CLIENTS" "$ROUTING" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$TARGET/release/scale" --ours "$TARGET/release/jupyterhub-istio-proxy" --routes "$ROUTES" --small "$SMALL" \
    --samples "$SAMPLES" --clients "$CLIENTS" --routing "$ROUTING" 2>&1 >"$raw" | grep -v '^20[0-9][0-9]-' || true
} | tee "$summary"
grep -q '^| ' "$summary" || die "the run failed; see above"
log "wrote $summary"
