#!/usr/bin/env bash
# What a hub's routes cost the mesh, measured on Istio's own pilot (testkit/oracle):
# for 1,000 and 10,000 user routes, the routes and clusters an ingress gateway pod gets, the
# clusters and endpoints a sidecar in another namespace (and one in the hub's) gets, and the
# objects one server start writes with the pushes they cause; ours with the default exportTo,
# ours exported everywhere, and the Go proxy's objects for the same routes.
#
# Usage (from anywhere):   bench/mesh.sh [ROUTES...]     (default: 1000 10000)
#
# Knobs (environment):
#   BENCH_SKIP_BUILD   1 = do not run `cargo build --release`  (default 0)
#
# Builds testkit's `mesh-figures` (release) and the oracle (Go, on first use), prints a
# Markdown table and writes it to bench/results/mesh-latest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p testkit --bin mesh-figures
fi
mkdir -p bench/results
"$target/release/mesh-figures" "$@" | tee bench/results/mesh-latest.md
