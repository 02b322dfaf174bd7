#!/usr/bin/env bash
# Measures what compiling the xtask costs a contributor, side by side in one run, and writes
# docs/build-times.md:
#   - fully cold `cargo build -p xtask` (empty target dir, crates downloaded) of a BEFORE commit
#     (a git worktree) and of this tree, alternating, RUNS times each (medians), wall and CPU
#     (user+sys of the whole build, /usr/bin/time: the steadier figure when the 2 cores are shared);
#   - the floor: the same dependencies with the same profile and an empty library, i.e. what no
#     change to our own code can go below;
#   - the rebuild after editing one source file, and the warm no-op `cargo xtask --help`.
# Usage: scripts/bench-build.sh [BEFORE (default 88ca8bc, main before the reshaping)] [RUNS (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-88ca8bc}
runs=${2:-3}
root=$(pwd)
work=$(mktemp -d)
cp xtask/src/main.rs "$work/main.rs.orig"
cleanup() {
    cp "$work/main.rs.orig" "$root/xtask/src/main.rs"
    git -C "$root" worktree remove --force "$work/before" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach "$work/before" "$before" >/dev/null 2>&1

# The floor: this tree's [dependencies] and profile, our code replaced by an empty library.
mkdir -p "$work/floor/src"
: >"$work/floor/src/lib.rs"
{
    printf '[package]\nname = "floor"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
    sed -n '/^\[dependencies\]/,/^\[/p' xtask/Cargo.toml | grep -v '^\[' | grep -v '^dumpscan'
    printf 'dumpscan = { path = "%s/xtask/dumpscan" }\n\n' "$root"
    sed -n '/^\[profile/,$p' Cargo.toml
} >"$work/floor/Cargo.toml"
cp Cargo.lock "$work/floor/Cargo.lock"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" -v k="${3:-1}" 'BEGIN { printf "%.3f", (b - a) * k }'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
cold() { # DIR TARGET [cargo args...]: "WALL CPU" seconds of a cold build
    local dir=$1 target=$2
    shift 2
    rm -rf "$target"
    (cd "$dir" && cargo fetch --quiet)
    (cd "$dir" && CARGO_TARGET_DIR=$target /usr/bin/time -f '%e %U %S' -o "$work/time" cargo build --quiet "$@")
    awk '{ printf "%.3f %.1f", $1, $2 + $3 }' "$work/time"
}

b=() a=() f=() bc=() ac=() fc=()
for _ in $(seq 1 "$runs"); do
    read -r wall cpu <<<"$(cold "$work/before" "$work/t-before" -p xtask)"
    b+=("$wall") bc+=("$cpu")
    read -r wall cpu <<<"$(cold "$root" "$work/t-after" -p xtask)"
    a+=("$wall") ac+=("$cpu")
    read -r wall cpu <<<"$(cold "$work/floor" "$work/t-floor")"
    f+=("$wall") fc+=("$cpu")
done

export CARGO_TARGET_DIR=$work/t-after
rebuild=()
for _ in 1 2 3; do
    # A real edit (cargo may compare content, so a bare touch could rebuild nothing).
    cp "$work/main.rs.orig" xtask/src/main.rs
    echo "// bench edit $RANDOM$RANDOM" >>xtask/src/main.rs
    t0=$(now); cargo build --quiet -p xtask; t1=$(now)
    rebuild+=("$(elapsed "$t0" "$t1")")
done
cp "$work/main.rs.orig" xtask/src/main.rs
cargo build --quiet -p xtask
help=()
for _ in $(seq 1 15); do
    t0=$(now); cargo xtask --help >/dev/null; t1=$(now)
    help+=("$(elapsed "$t0" "$t1" 1000)")
done
b_m=$(printf '%s\n' "${b[@]}" | median)
a_m=$(printf '%s\n' "${a[@]}" | median)
f_m=$(printf '%s\n' "${f[@]}" | median)
rebuild_m=$(printf '%s\n' "${rebuild[@]}" | median)
help_m=$(printf '%s\n' "${help[@]}" | median)
bc_m=$(printf '%s\n' "${bc[@]}" | median)
ac_m=$(printf '%s\n' "${ac[@]}" | median)
fc_m=$(printf '%s\n' "${fc[@]}" | median)
ratio=$(awk -v a="$a_m" -v b="$b_m" 'BEGIN { printf "%.2f", a / b }')
cpu_ratio=$(awk -v a="$ac_m" -v b="$bc_m" 'BEGIN { printf "%.2f", a / b }')
load=$(cut -d' ' -f1-3 /proc/loadavg)
floor_ratio=$(awk -v a="$f_m" -v b="$b_m" 'BEGIN { printf "%.2f", a / b }')
deps=$(cargo tree -p xtask --edges normal --prefix none | sort -u | wc -l)
cat >"$work/table.md" <<MD
Measured by \`scripts/bench-build.sh $before $runs\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(rustc --version),
before and after alternating in one run (medians of $runs; load average at the end: $load).

| what | median | runs | CPU (user+sys) median | CPU runs | target |
| --- | --- | --- | --- | --- | --- |
| fully cold \`cargo build -p xtask\`, before ($before) | $(printf '%.1f' "$b_m") s | ${b[*]} | $(printf '%.1f' "$bc_m") s | ${bc[*]} | |
| fully cold \`cargo build -p xtask\`, this tree | $(printf '%.1f' "$a_m") s (${ratio}x) | ${a[*]} | $(printf '%.1f' "$ac_m") s (${cpu_ratio}x) | ${ac[*]} | 0.65x of before; 25 s |
| the floor: the same dependencies and profile, an empty library | $(printf '%.1f' "$f_m") s (${floor_ratio}x) | ${f[*]} | $(printf '%.1f' "$fc_m") s | ${fc[*]} | |
| rebuild after an edit to \`xtask/src/main.rs\` | $(printf '%.2f' "$rebuild_m") s | ${rebuild[*]} | | | 2 s |
| warm no-op \`cargo xtask --help\` | $(printf '%.0f' "$help_m") ms | 15 | | | 150 ms |

Crates in the dependency graph (normal edges, including xtask): $deps.
MD
cat "$work/table.md"
# Replace the measured table in docs/build-times.md, keep the analysis below it.
python3 - "$work/table.md" <<'PY'
import sys
table = open(sys.argv[1]).read()
path = "docs/build-times.md"
doc = open(path).read()
start = doc.index("<!-- measured -->") + len("<!-- measured -->\n")
end = doc.index("<!-- /measured -->")
open(path, "w").write(doc[:start] + table + doc[end:])
PY
