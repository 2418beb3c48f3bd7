#!/usr/bin/env bash
# How soon a route is live: from a new route's 201 to the first request through a real gateway
# answered by the new server. Ours writes HTTPRoutes (--routing gateway-api) to testkit's real
# API server; Traefik (testkit/traefik, built from Go modules) routes them to echo servers in a
# pod network (a network namespace the run makes: run as root, with iproute2).
#
# Usage (from anywhere):   bench/route-live.sh
#
# Knobs (environment):
#   BENCH_SINGLES     routes added one at a time, each once the one before is live   (default 20)
#   BENCH_ROUTES      routes of the storm, added at once                              (default 300)
#   BENCH_CLIENTS     concurrent clients of the storm                                 (default 64)
#   BENCH_THROTTLE_MS Traefik's providersThrottleDuration in ms (its default is 2000) (default 2000)
#   BENCH_SKIP_BUILD  1 = do not run `cargo build --release`                          (default 0)
#
# testkit/src/bin/route-live.rs does the work and says what each figure means; each case runs
# without and with warm-up (--wait-for-warmup --warmup-url at Traefik). The table goes to
# bench/results/route-live-latest.md. Noise: 2 cores shared by the clients, the API server,
# Traefik and the server under test; quote medians.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
LOG_TAG=route-live
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

SINGLES=${BENCH_SINGLES:-20}
ROUTES=${BENCH_ROUTES:-300}
CLIENTS=${BENCH_CLIENTS:-64}
THROTTLE=${BENCH_THROTTLE_MS:-2000}
check_range BENCH_SINGLES "$SINGLES" 1 1000
check_range BENCH_ROUTES "$ROUTES" 1 5000
check_range BENCH_CLIENTS "$CLIENTS" 1 1000
check_range BENCH_THROTTLE_MS "$THROTTLE" 0 60000

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release --bin jupyterhub-istio-proxy --bin route-live"
  cargo build --release --locked -p jhub-proxy-bin -p testkit --bin jupyterhub-istio-proxy --bin route-live
fi

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=bench/results/route-live-run-$stamp.tsv
summary=bench/results/route-live-latest.md
log "$SINGLES single adds and a storm of $ROUTES routes from $CLIENTS clients, Traefik throttle ${THROTTLE} ms"
{
  printf '# Route live, %s\n\nCommand: `BENCH_SINGLES=%s BENCH_ROUTES=%s BENCH_CLIENTS=%s BENCH_THROTTLE_MS=%s bench/route-live.sh` at %s\n' \
    "$stamp" "$SINGLES" "$ROUTES" "$CLIENTS" "$THROTTLE" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$TARGET/release/route-live" --ours "$TARGET/release/jupyterhub-istio-proxy" --singles "$SINGLES" \
    --routes "$ROUTES" --clients "$CLIENTS" --throttle-ms "$THROTTLE" 2>&1 >"$raw" | grep -v '^20[0-9][0-9]-' || true
} | tee "$summary"
grep -q '^| ' "$summary" || die "the run failed; see above"
log "wrote $summary"
