# What bench/run.sh and bench/kube.sh share: logging, knob checks, the command line for the
# report, and wrk. Source it after setting LOG_TAG.

log() { printf '[%s %s] %s\n' "${LOG_TAG:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# check_range NAME VALUE MIN MAX UNIT: a whole number within bounds, or the run stops.
check_range() {
  [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3 && $2 <= $4)) || die "$1 must be $3..$4${5:-}"
}

# command_line "$0" "$@": the command as run, with the knobs set in the environment, for the report.
command_line() {
  local line="" v
  for v in BENCH_DURATION BENCH_ROUNDS BENCH_READY_TRIES BENCH_SKIP_BUILD BENCH_OURS_BIN BENCH_STRICT; do
    if [[ -n ${!v+x} ]]; then line+="$v=${!v} "; fi
  done
  line+="$1"
  shift
  local a
  for a in "$@"; do line+=" $a"; done
  printf '%s' "$line"
}

# wrk from Debian, installed when missing.
ensure_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    log "wrk not found: installing the Debian package"
    apt-get update && apt-get install -y wrk
  fi
  command -v wrk >/dev/null 2>&1 || die "wrk is still missing"
}

# run_wrk OUTFILE WRK-ARGS...: run wrk, bounded by WRK_LIMIT seconds, with BENCH_TOKEN=$TOKEN
# for the Lua scripts; parse its output (benchtool.py, the TOOL array) into W[], and stop the
# run on any non-2xx answer or socket error.
declare -A W
run_wrk() {
  local out=$1
  shift
  if ! BENCH_TOKEN=$TOKEN timeout -k 5 "$WRK_LIMIT" wrk --timeout 30s "$@" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed: wrk $*"
  fi
  "${TOOL[@]}" wrk-parse "$out" >"$out.parsed" || die "cannot parse $out"
  W=()
  local k v
  while IFS='=' read -r k v; do W[$k]=$v; done <"$out.parsed"
  if ((W[non2xx] != 0 || W[sockerr] != 0)); then
    cat "$out" >&2
    die "wrk saw ${W[non2xx]} non-2xx answers and ${W[sockerr]} socket errors ($out)"
  fi
  # A server slower than the run is long completes nothing, and has no latency to report.
  ((${W[requests]:-0} > 0)) || die "wrk completed no request ($out): raise BENCH_DURATION"
}

# tool ARGS...: benchtool.py (the TOOL array) with the run's token in BENCH_TOKEN.
tool() { BENCH_TOKEN=$TOKEN "${TOOL[@]}" "$@"; }

# record ROUND SERVER METRIC VALUE: one figure into the run's raw.tsv (RAW).
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }
