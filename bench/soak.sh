#!/usr/bin/env bash
# The soak benchmark: many route adds and deletes through one proxy process, first on
# the memory store, then with the Kubernetes store on testkit's real API server, to see whether
# memory, Tokio tasks or sockets (watch streams) grow with the routes written rather than with
# the routes kept.
#
# Usage (from anywhere):   bench/soak.sh
#
# Knobs (environment):
#   BENCH_OPS         writes (adds and deletes) per store                 (default 100000)
#   BENCH_CLIENTS     concurrent clients                                  (default 8)
#   BENCH_LIVE        routes each client keeps; each add beyond deletes   (default 50)
#   BENCH_STORES      stores to soak, comma-separated                     (default memory,kubernetes)
#   BENCH_SKIP_BUILD  1 = do not run `cargo build --release`            (default 0)
#
# testkit/src/bin/soak.rs does the work and says what each figure means; this script builds,
# runs it per store, and writes the summaries to bench/results/soak-latest.md (the samples
# beside it). It exits 1 when a run fails: a write not answered 201/204, or a listing or an API
# server that does not hold exactly the routes kept. On 2 shared cores the Kubernetes store
# runs at what the API server sustains (a few hundred writes per second): about 10 minutes.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
LOG_TAG=soak-bench
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

OPS=${BENCH_OPS:-100000}
CLIENTS=${BENCH_CLIENTS:-8}
LIVE=${BENCH_LIVE:-50}
STORES=${BENCH_STORES:-memory,kubernetes}
check_range BENCH_OPS "$OPS" 100 10000000
check_range BENCH_CLIENTS "$CLIENTS" 1 256
check_range BENCH_LIVE "$LIVE" 1 10000
[[ $STORES =~ ^(memory|kubernetes)(,(memory|kubernetes))*$ ]] || die "BENCH_STORES: memory and/or kubernetes"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release --bin jupyterhub-istio-proxy --bin soak"
  cargo build --release --locked -p jhub-proxy-bin -p testkit --bin jupyterhub-istio-proxy --bin soak
fi

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
summary=bench/results/soak-latest.md
{
  printf '# Soak, %s\n\nCommand: `BENCH_OPS=%s BENCH_CLIENTS=%s BENCH_LIVE=%s BENCH_STORES=%s bench/soak.sh` at %s\n' \
    "$stamp" "$OPS" "$CLIENTS" "$LIVE" "$STORES" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  for store in ${STORES//,/ }; do
    samples=bench/results/soak-$store-$stamp.tsv
    log "$OPS writes on the $store store; samples in $samples"
    printf '\n'
    "$TARGET/release/soak" --ours "$TARGET/release/jupyterhub-istio-proxy" --store "$store" \
      --ops "$OPS" --clients "$CLIENTS" --live "$LIVE" 2>&1 >"$samples" | grep -v '^20[0-9][0-9]-' || true
  done
} | tee "$summary"
[[ $(grep -c '^| open sockets' "$summary") == $(tr ',' '\n' <<<"$STORES" | wc -l) ]] || die "a soak failed; see above"
log "wrote $summary"
