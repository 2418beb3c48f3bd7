#!/usr/bin/env bash
# Benchmark jupyterhub-istio-proxy's CHP-compatible REST API against
# configurable-http-proxy (CHP) itself, on this machine, over loopback only.
#
# Usage (from anywhere):   bench/run.sh
#
# Knobs (environment):
#   BENCH_DURATION   seconds per wrk measurement            (default 10)
#   BENCH_ROUNDS     rounds; servers alternate each round    (default 3)
#   BENCH_SKIP_BUILD 1 = do not run `cargo build --release`  (default 0)
#   BENCH_OURS_BIN   our server binary (default target/release/jupyterhub-istio-proxy)
#   BENCH_STRICT     1 = exit 3 when any target is missed    (default 0)
#
# Per round and per server, each started fresh on 127.0.0.1:
#   1. new-route POSTs/s: wrk 2 threads, 8 connections, every request a POST of a
#      never-seen route (bench/post_new_routes.lua); every answer must be 201.
#   2. restart fresh, load exactly 10,000 routes (bench/benchtool.py load), verify the
#      count, then `GET /api/routes` median latency: wrk 1 thread, 1 connection, --latency.
#   3. `GET /api/routes/<one existing route>` req/s: wrk 2 threads, 8 connections.
#   4. VmRSS (MiB) of the server with those 10,000 routes stored.
#   5. after 1., in the same process: every route it added deleted (benchtool.py delete-all,
#      every answer 204), then exactly 10,000 routes loaded: VmRSS (MiB) after that churn.
# The report (medians over rounds, ours ÷ CHP, PASS/FAIL per target) is printed and
# written to bench/results/latest.md; raw figures, wrk output and server logs go to
# bench/results/run-<timestamp>/.
#
# Noise: the machine has 2 cores shared by wrk and the server under test. A calibration
# run with CHP on both sides (3 rounds x 10 s) gave "ours ÷ CHP" between 0.89 and 1.52,
# so only ratios well beyond that band mean anything.
#
# To try the script without our binary, point BENCH_OURS_BIN at a wrapper (kept outside
# bench/) that turns `--listen 127.0.0.1:PORT` into CHP's `--api-ip/--api-port` and execs CHP.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
OURS_BIN=${BENCH_OURS_BIN:-target/release/jupyterhub-istio-proxy}
STRICT=${BENCH_STRICT:-0}
ROUTES=10000 # exactly, by definition of the list-latency metric
CHP_BIN=bench/node_modules/.bin/configurable-http-proxy
TOOL=(python3 "$BENCH_DIR/benchtool.py")

LOG_TAG=bench
# shellcheck source=bench/common.sh
source "$BENCH_DIR/common.sh"

check_range BENCH_DURATION "$DURATION" 1 300 " seconds"
check_range BENCH_ROUNDS "$ROUNDS" 1 20
# Bound on any one wrk run, however it misbehaves.
WRK_LIMIT=$((DURATION + 60))
COMMAND=$(command_line "$0" "$@")

# ---------------------------------------------------------------- install / build
ensure_wrk

want_chp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["configurable-http-proxy"])' bench/package.json)
have_chp=$(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["version"])
except OSError: print("none")' bench/node_modules/configurable-http-proxy/package.json)
if [[ ! -x $CHP_BIN || $have_chp != "$want_chp" ]]; then
  log "installing configurable-http-proxy $want_chp (npm ci --prefix bench)"
  npm ci --prefix bench
fi
[[ -x $CHP_BIN ]] || die "$CHP_BIN is missing after npm ci"

if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release -p jhub-proxy-bin"
  cargo build --release -p jhub-proxy-bin
fi
[[ -x $OURS_BIN ]] || die "our binary $OURS_BIN is missing or not executable (build it, or set BENCH_OURS_BIN)"

# ---------------------------------------------------------------- run state
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=bench/results
RUN_DIR=$RESULTS/run-$STAMP
mkdir -p "$RUN_DIR"
RAW=$RUN_DIR/raw.tsv
printf 'round\tserver\tmetric\tvalue\n' >"$RAW"
NOTES=""


SERVER_PID=""
SERVER_LOG=""
API_PORT=""

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID i
  SERVER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start_server ours|chp TAG: start fresh, wait until its API answers 200.
start_server() {
  local kind=$1 tag=$2 ports
  SERVER_LOG=$RUN_DIR/$tag.log
  ports=$("${TOOL[@]}" freeports 2)
  read -r p1 p2 <<<"$ports"
  case $kind in
  ours)
    API_PORT=$p1
    CONFIGPROXY_AUTH_TOKEN=$TOKEN "$OURS_BIN" --store memory --listen "127.0.0.1:$API_PORT" >"$SERVER_LOG" 2>&1 &
    ;;
  chp)
    API_PORT=$p2
    CONFIGPROXY_AUTH_TOKEN=$TOKEN "$CHP_BIN" --ip 127.0.0.1 --port "$p1" \
      --api-ip 127.0.0.1 --api-port "$API_PORT" >"$SERVER_LOG" 2>&1 &
    ;;
  esac
  SERVER_PID=$!
  if ! tool wait-ready "$API_PORT" /api/routes 60; then
    tail -n 20 "$SERVER_LOG" >&2 || true
    die "$kind did not become ready on 127.0.0.1:$API_PORT"
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || die "$kind exited right after start (see $SERVER_LOG)"
  if [[ $kind == ours && -z ${PING_CHECKED:-} ]]; then
    PING_CHECKED=1
    local ping
    ping=$(tool ping "$API_PORT")
    if [[ $ping != '200 {"message":"pong"}' ]]; then
      log "warning: ours answered GET /ping with: $ping"
      NOTES+="ours answered unauthenticated GET /ping with \`$ping\`, expected 200 {\"message\":\"pong\"}|"
    fi
  fi
}

# 1. new-route POSTs per second
measure_post() {
  local kind=$1 round=$2 tag="r$2-$1-post" stored
  start_server "$kind" "$tag"
  log "round $round, $kind: new-route POSTs, ${DURATION}s, 2 threads, 8 connections"
  run_wrk "$RUN_DIR/$tag.wrk" -t2 -c8 -d"${DURATION}s" -s bench/post_new_routes.lua "http://127.0.0.1:$API_PORT"
  [[ -n ${W[non201]:-} ]] || die "post_new_routes.lua printed no summary ($RUN_DIR/$tag.wrk)"
  ((W[non201] == 0)) || die "$kind answered ${W[non201]} new-route POSTs with a status other than 201 ($RUN_DIR/$tag.wrk)"
  ((W[lua_responses] > 0)) || die "$kind answered no POST"
  stored=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((stored >= W[requests])) || die "$kind stored $stored routes after ${W[requests]} POSTs answered 201"
  record "$round" "$kind" post_rps "${W[rps]}"
  record "$round" "$kind" post_requests "${W[requests]}"
  record "$round" "$kind" post_stored "$stored"
  log "  $kind: ${W[rps]} POST/s (${W[requests]} answered 201, $stored stored)"
  measure_churn "$kind" "$round" "$stored"
  stop_server
}

# 5. memory after churn, in the POST run's process: every route it added deleted, then
#    exactly 10,000 routes loaded, as a hub does after a day of servers started and stopped.
measure_churn() {
  local kind=$1 round=$2 stored=$3 deleted count rss
  log "round $round, $kind: deleting the $stored routes the POST run added"
  deleted=$(tool delete-all "$API_PORT" 8 32) || die "deleting the routes of $kind failed"
  ((deleted == stored)) || die "$kind listed $deleted routes to delete, having stored $stored"
  count=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((count == 0)) || die "$kind lists $count routes after deleting them all"
  tool load "$API_PORT" "$ROUTES" 4 >/dev/null || die "loading $ROUTES routes into $kind failed"
  count=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((count == ROUTES)) || die "$kind lists $count routes after the churn, expected exactly $ROUTES"
  rss=$(tool rss "$SERVER_PID") || die "cannot read VmRSS of $kind (pid $SERVER_PID)"
  record "$round" "$kind" churn_deletes "$deleted"
  record "$round" "$kind" rss_churn_mib "$rss"
  log "  $kind: VmRSS $rss MiB with $count routes, after $stored added and deleted"
}

# 2-4. list latency, single-route GETs, memory, with exactly 10,000 routes
measure_10k() {
  local kind=$1 round=$2 tag="r$2-$1-10k" secs count spec rss
  start_server "$kind" "$tag"
  log "round $round, $kind: loading $ROUTES routes"
  secs=$(tool load "$API_PORT" "$ROUTES" 4) || die "loading $ROUTES routes into $kind failed"
  count=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((count == ROUTES)) || die "$kind lists $count routes, expected exactly $ROUTES"
  record "$round" "$kind" load_secs "$secs"

  log "round $round, $kind: GET /api/routes ($count routes), ${DURATION}s, 1 thread, 1 connection"
  run_wrk "$RUN_DIR/$tag-list.wrk" -t1 -c1 -d"${DURATION}s" --latency -s bench/get_with_token.lua \
    "http://127.0.0.1:$API_PORT/api/routes"
  [[ -n ${W[p50_ms]:-} ]] || die "no median latency in $RUN_DIR/$tag-list.wrk"
  record "$round" "$kind" list_p50_ms "${W[p50_ms]}"
  record "$round" "$kind" list_p99_ms "${W[p99_ms]}"
  log "  $kind: median ${W[p50_ms]} ms, p99 ${W[p99_ms]} ms (${W[requests]} lists)"

  spec=/user/load-05000
  tool has "$API_PORT" "$spec" || die "$kind does not have route $spec"
  log "round $round, $kind: GET /api/routes$spec, ${DURATION}s, 2 threads, 8 connections"
  run_wrk "$RUN_DIR/$tag-get.wrk" -t2 -c8 -d"${DURATION}s" -s bench/get_with_token.lua \
    "http://127.0.0.1:$API_PORT/api/routes$spec"
  record "$round" "$kind" get_rps "${W[rps]}"
  log "  $kind: ${W[rps]} GET/s"

  count=$(tool count "$API_PORT") || die "cannot list routes of $kind"
  ((count == ROUTES)) || die "$kind lists $count routes after the GET runs, expected $ROUTES"
  rss=$(tool rss "$SERVER_PID") || die "cannot read VmRSS of $kind (pid $SERVER_PID)"
  record "$round" "$kind" rss_mib "$rss"
  log "  $kind: VmRSS $rss MiB with $count routes"
  stop_server
}

# ---------------------------------------------------------------- the run
log "results in $RUN_DIR; $ROUNDS round(s) of ${DURATION}s measurements"
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2 == 1)); then order=(ours chp); else order=(chp ours); fi
  for kind in "${order[@]}"; do
    measure_post "$kind" "$round"
    measure_10k "$kind" "$round"
  done
done

# ---------------------------------------------------------------- report
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo "(no commit yet)")
if [[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]]; then git_rev+=" + uncommitted changes"; fi
if [[ $OURS_BIN != target/release/jupyterhub-istio-proxy ]]; then
  NOTES+="ours was BENCH_OURS_BIN=$OURS_BIN, not the default target/release/jupyterhub-istio-proxy|"
fi
if [[ $SKIP_BUILD == 1 ]]; then NOTES+="BENCH_SKIP_BUILD=1: the binary was not rebuilt for this run|"; fi
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "command=$COMMAND"
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
  echo "ours_bin=$OURS_BIN"
  echo "git=$git_rev"
  echo "chp_version=$(python3 -c 'import json; print(json.load(open("bench/node_modules/configurable-http-proxy/package.json"))["version"])' 2>/dev/null || echo '?')"
  echo "node_version=$(node --version)"
  echo "wrk_version=$(wrk --version 2>&1 | head -n 1 | awk '{print $2}')"
  echo "duration=$DURATION"
  echo "rounds=$ROUNDS"
  echo "notes=$NOTES"
} >"$RUN_DIR/meta.env"

set +e
"${TOOL[@]}" report "$RAW" "$RUN_DIR/meta.env" "$RUN_DIR/summary.md"
report_rc=$?
set -e
((report_rc == 0 || report_rc == 3)) || die "report failed"
cp "$RUN_DIR/summary.md" "$RESULTS/latest.md"
log "wrote $RESULTS/latest.md (raw data, wrk output and server logs in $RUN_DIR)"

# Keep the five newest run directories only.
mapfile -t old < <(ls -1d "$RESULTS"/run-* 2>/dev/null | sort -r | tail -n +6)
for d in "${old[@]}"; do rm -rf -- "$d"; done

if [[ $STRICT == 1 && $report_rc == 3 ]]; then exit 3; fi
exit 0
