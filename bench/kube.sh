#!/usr/bin/env bash
# Benchmark jupyterhub-istio-proxy's Kubernetes store with 10,000 routes in the API
# server: ours (a label-selected watch cache) against a list-per-request baseline (the Go
# proxy's design), both on the same API server, on this machine, over loopback only.
#
# Usage (from anywhere):   bench/kube.sh
#
# Knobs (environment):
#   BENCH_DURATION     seconds per wrk measurement            (default 10)
#   BENCH_ROUNDS       rounds; servers alternate each round    (default 3)
#   BENCH_READY_TRIES  timed starts of ours per round          (default 5)
#   BENCH_SKIP_BUILD   1 = do not run `cargo build --release`  (default 0)
#   BENCH_STRICT       1 = exit 3 when any target is missed    (default 0)
#   BENCH_ROUTING      istio | gateway-api: what ours reads     (default istio)
#
# With BENCH_ROUTING=gateway-api the fake also holds the same 10,000 routes as HTTPRoutes, and
# ours runs `--routing gateway-api`; the baseline still lists the VirtualServices,
# the same number of objects of about the same size.
#
# The API server is testkit's fake (target/release/fake-kube-server), started once with
# 10,000 VirtualServices in namespace `hub`, as ours writes them. Per round:
#   1. time to ready: BENCH_READY_TRIES times, start ours
#      (`--store kubernetes --k8s-namespace hub`, KUBECONFIG pointing at the fake), poll
#      GET /readyz every ~10 ms, and take the milliseconds from spawn to the first 200
#      (bench/benchtool.py time-ready); the round's figure is the median;
#   2. ours, started fresh: verify GET /api/routes lists exactly 10,000 routes, then its median
#      latency with wrk (1 thread, 1 connection, --latency), then VmRSS (MiB);
#   3. the baseline (target/release/list-per-request), which LISTs the VirtualServices from
#      the API server on every GET /api/routes: the same count check and wrk run (wrk's
#      --timeout 30s covers its slow answers), and its VmRSS for information;
#   4. the API server's share: the same paginated LIST fetched without decoding (5 times).
# The report (medians over rounds, list-per-request ÷ ours, time to ready, RSS, PASS/FAIL) is
# printed and written to bench/results/kube-latest.md; raw figures, wrk output and logs go to
# bench/results/kube-run-<timestamp>/.
#
# Targets: list-per-request ÷ ours ≥ 100; time to ready < 3,000 ms; ours' VmRSS < 64 MiB.
# Noise: 2 cores shared by wrk, the fake API server and the server under test; read the
# ratio from one run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
READY_TRIES=${BENCH_READY_TRIES:-5}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
STRICT=${BENCH_STRICT:-0}
ROUTING=${BENCH_ROUTING:-istio}
case $ROUTING in
istio) OURS_ROUTING=() FAKE_KINDS=() ;;
gateway-api) OURS_ROUTING=(--routing gateway-api --parent-ref istio-system/jupyterhub-gateway) FAKE_KINDS=(--http-routes) ;;
*) echo "BENCH_ROUTING must be istio or gateway-api, not $ROUTING" >&2; exit 2 ;;
esac
ROUTES=10000 # exactly, by definition of the benchmark
OURS_BIN=target/release/jupyterhub-istio-proxy
FAKE_BIN=target/release/fake-kube-server
BASE_BIN=target/release/list-per-request
TOOL=(python3 "$BENCH_DIR/benchtool.py")

LOG_TAG=kube-bench
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

check_range BENCH_DURATION "$DURATION" 1 300 " seconds"
check_range BENCH_ROUNDS "$ROUNDS" 1 20
check_range BENCH_READY_TRIES "$READY_TRIES" 1 50
# Bound on any one wrk run, however it misbehaves.
WRK_LIMIT=$((DURATION + 60))
COMMAND=$(command_line "$0" "$@")

# ---------------------------------------------------------------- install / build
ensure_wrk

if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release -p jhub-proxy-bin -p testkit --bins"
  cargo build --release -p jhub-proxy-bin -p testkit --bins
fi
for bin in "$OURS_BIN" "$FAKE_BIN" "$BASE_BIN"; do
  [[ -x $bin ]] || die "$bin is missing or not executable (run: cargo build --release -p jhub-proxy-bin -p testkit --bins)"
done

# ---------------------------------------------------------------- run state
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=bench/results
RUN_DIR=$RESULTS/kube-run-$STAMP
mkdir -p "$RUN_DIR"
RAW=$RUN_DIR/raw.tsv
printf 'round\tserver\tmetric\tvalue\n' >"$RAW"
KUBECONFIG_FILE=$RUN_DIR/kubeconfig
NOTES=""


FAKE_PID=""
SERVER_PID=""
API_PORT=""

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=""
  stop_pid "$pid"
}
cleanup() {
  stop_server
  local pid=$FAKE_PID
  FAKE_PID=""
  stop_pid "$pid"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- the fake API server
log "starting the fake API server with $ROUTES VirtualServices"
: >"$RUN_DIR/fake.out"
"$FAKE_BIN" --routes "$ROUTES" "${FAKE_KINDS[@]}" --kubeconfig "$KUBECONFIG_FILE" >"$RUN_DIR/fake.out" 2>"$RUN_DIR/fake.log" &
FAKE_PID=$!
FAKE_URL=""
for ((i = 0; i < 1200; i++)); do # 120 s at most
  if read -r word url <"$RUN_DIR/fake.out" && [[ $word == ready ]]; then
    FAKE_URL=$url
    break
  fi
  kill -0 "$FAKE_PID" 2>/dev/null || {
    cat "$RUN_DIR/fake.log" >&2
    die "fake-kube-server exited before it was ready"
  }
  sleep 0.1
done
[[ -n $FAKE_URL ]] || die "fake-kube-server did not say ready within 120 s"
[[ $FAKE_URL =~ ^http://127\.0\.0\.1:[0-9]+$ ]] || die "fake-kube-server is not on loopback: $FAKE_URL"
log "fake API server at $FAKE_URL ($(cat "$RUN_DIR/fake.log"))"
export KUBECONFIG=$KUBECONFIG_FILE
export CONFIGPROXY_AUTH_TOKEN=$TOKEN

# start_server ours|baseline TAG: start fresh, wait until it answers.
start_server() {
  local kind=$1 tag=$2 log_file=$RUN_DIR/$2.log
  API_PORT=$("${TOOL[@]}" freeports 1)
  case $kind in
  ours)
    "$OURS_BIN" --store kubernetes --k8s-namespace hub "${OURS_ROUTING[@]}" --listen "127.0.0.1:$API_PORT" >"$log_file" 2>&1 &
    SERVER_PID=$!
    tool wait-ready "$API_PORT" /readyz 60 || {
      tail -n 20 "$log_file" >&2
      die "ours did not become ready"
    }
    ;;
  baseline)
    "$BASE_BIN" --listen "127.0.0.1:$API_PORT" --k8s-namespace hub >"$log_file" 2>&1 &
    SERVER_PID=$!
    tool wait-ready "$API_PORT" /ping 60 || {
      tail -n 20 "$log_file" >&2
      die "list-per-request did not start"
    }
    ;;
  esac
  kill -0 "$SERVER_PID" 2>/dev/null || die "$kind exited right after start (see $log_file)"
}

# time_ready ROUND: BENCH_READY_TRIES timed starts of ours.
time_ready() {
  local round=$1 t port ms
  for ((t = 1; t <= READY_TRIES; t++)); do
    port=$("${TOOL[@]}" freeports 1)
    ms=$("${TOOL[@]}" time-ready "$port" 60 "$RUN_DIR/r$round-ready-$t.log" -- \
      "$OURS_BIN" --store kubernetes --k8s-namespace hub "${OURS_ROUTING[@]}" --listen "127.0.0.1:$port") ||
      die "timed start $t of round $round failed"
    record "$round" ours ready_ms "$ms"
    log "round $round: start $t ready after $ms ms"
  done
}

# measure_list ours|baseline ROUND: count, wrk list latency, VmRSS.
measure_list() {
  local kind=$1 round=$2 tag="r$2-$1" count rss
  start_server "$kind" "$tag"
  count=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((count == ROUTES)) || die "$kind lists $count routes, expected $ROUTES"
  log "round $round, $kind: GET /api/routes ($count routes), ${DURATION}s, 1 thread, 1 connection"
  run_wrk "$RUN_DIR/$tag-list.wrk" -t1 -c1 -d"${DURATION}s" --latency -s bench/get_with_token.lua \
    "http://127.0.0.1:$API_PORT/api/routes"
  [[ -n ${W[p50_ms]:-} ]] || die "no median latency in $RUN_DIR/$tag-list.wrk"
  record "$round" "$kind" list_p50_ms "${W[p50_ms]}"
  record "$round" "$kind" list_p99_ms "${W[p99_ms]}"
  record "$round" "$kind" list_requests "${W[requests]}"
  rss=$(tool rss "$SERVER_PID") || die "cannot read VmRSS of $kind (pid $SERVER_PID)"
  record "$round" "$kind" rss_mib "$rss"
  log "  $kind: median ${W[p50_ms]} ms, p99 ${W[p99_ms]} ms (${W[requests]} lists), VmRSS $rss MiB"
  stop_server
}

# ---------------------------------------------------------------- the run
log "results in $RUN_DIR; $ROUNDS round(s) of ${DURATION}s measurements, $READY_TRIES timed starts each"
for ((round = 1; round <= ROUNDS; round++)); do
  time_ready "$round"
  if ((round % 2 == 1)); then order=(ours baseline); else order=(baseline ours); fi
  for kind in "${order[@]}"; do
    measure_list "$kind" "$round"
  done
  fetch=$("${TOOL[@]}" kube-list "$FAKE_URL" 5) || die "cannot LIST from the fake API server"
  record "$round" fake fetch_ms "$fetch"
  log "round $round: the fake API server serves the paginated LIST in $fetch ms (fetch only)"
done

# ---------------------------------------------------------------- report
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo "(no commit yet)")
if [[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]]; then git_rev+=" + uncommitted changes"; fi
if [[ $SKIP_BUILD == 1 ]]; then NOTES+="BENCH_SKIP_BUILD=1: the binaries were not rebuilt for this run|"; fi
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command=$COMMAND"
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "git=$git_rev"
  echo "wrk_version=$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"
  echo "duration=$DURATION"
  echo "rounds=$ROUNDS"
  echo "ready_tries=$READY_TRIES"
  echo "routes=$ROUTES"
  echo "routing=$ROUTING"
  echo "notes=$NOTES"
} >"$RUN_DIR/meta.env"

set +e
"${TOOL[@]}" kube-report "$RAW" "$RUN_DIR/meta.env" "$RUN_DIR/summary.md"
report_rc=$?
set -e
((report_rc == 0 || report_rc == 3)) || die "report failed"
cp "$RUN_DIR/summary.md" "$RESULTS/kube-latest.md"
log "wrote $RESULTS/kube-latest.md (raw data, wrk output and logs in $RUN_DIR)"

# Keep the five newest run directories only.
mapfile -t old < <(ls -1d "$RESULTS"/kube-run-* 2>/dev/null | sort -r | tail -n +6)
for d in "${old[@]}"; do rm -rf -- "$d"; done

if [[ $STRICT == 1 && $report_rc == 3 ]]; then exit 3; fi
exit 0
