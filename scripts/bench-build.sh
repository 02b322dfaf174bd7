#!/usr/bin/env bash
# Measures what compiling the xtask costs a contributor and writes docs/build-times.md:
#   - fully cold `cargo build -p xtask` (empty target dir, dependencies already downloaded),
#   - the rebuild after editing one source file,
#   - the warm no-op `cargo xtask --help` (median of 15 runs).
# Usage: scripts/bench-build.sh [RUNS_COLD (default 2)]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
cargo fetch --quiet
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" -v k="${3:-1}" 'BEGIN { printf "%.3f", (b - a) * k }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
target=$(mktemp -d)
cp xtask/src/main.rs "$target.main.rs"
trap 'cp "$target.main.rs" xtask/src/main.rs; rm -rf "$target" "$target.main.rs"' EXIT
export CARGO_TARGET_DIR=$target

cold=()
for _ in $(seq 1 "$runs"); do
    rm -rf "$target"/*
    t0=$(now); cargo build --quiet -p xtask; t1=$(now)
    cold+=("$(elapsed "$t0" "$t1")")
done
rebuild=()
for _ in 1 2 3; do
    # A real edit (cargo may compare content, so a bare touch could rebuild nothing).
    cp "$target.main.rs" xtask/src/main.rs
    echo "// bench edit $RANDOM$RANDOM" >>xtask/src/main.rs
    t0=$(now); cargo build --quiet -p xtask; t1=$(now)
    rebuild+=("$(elapsed "$t0" "$t1")")
done
cp "$target.main.rs" xtask/src/main.rs
cargo build --quiet -p xtask
help=()
for _ in $(seq 1 15); do
    t0=$(now); cargo xtask --help >/dev/null; t1=$(now)
    help+=("$(elapsed "$t0" "$t1" 1000)")
done
cold_m=$(printf '%s\n' "${cold[@]}" | median)
rebuild_m=$(printf '%s\n' "${rebuild[@]}" | median)
help_m=$(printf '%s\n' "${help[@]}" | median)
deps=$(cargo tree -p xtask --edges normal --prefix none | sort -u | wc -l)
cat >docs/build-times.md <<MD
# Build times

Measured by \`scripts/bench-build.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(rustc --version).
Targets (foundation issue): cold build at most 25 s, rebuild at most 2 s, warm \`cargo xtask --help\` at most 150 ms.

| what | median | runs | target |
| --- | --- | --- | --- |
| fully cold \`cargo build -p xtask\` (empty target dir, crates downloaded) | $(printf '%.1f' "$cold_m") s | ${cold[*]} | 25 s |
| rebuild after an edit to \`xtask/src/main.rs\` | $(printf '%.2f' "$rebuild_m") s | ${rebuild[*]} | 2 s |
| warm no-op \`cargo xtask --help\` | $(printf '%.0f' "$help_m") ms | 15 | 150 ms |

Crates in the dependency graph (normal edges, including xtask): $deps.
MD
cat docs/build-times.md
