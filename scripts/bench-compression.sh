#!/usr/bin/env bash
# Compression benchmark (a script, not a timed test): the tool's own compressors and reader on
# the tar of a deterministic mixed dataset (shared/bench/make-dataset.py), side by side in one
# run, each configuration RUNS times in alternating order (medians); the table goes into
# docs/benchmarks.md between the `compression` markers.
#   gzip:6 on 1 and 2 threads  the parallel gzip archives were written with (archive/pgz.rs)
#   zstd:1 / zstd:3 with 0, 1, 2 workers  (0: single-threaded, compressing in the caller's thread)
# Each output is then read back by the restore's reader (archive/inflate.rs). Wall and CPU
# (user+sys, /usr/bin/time) are both recorded: on a shared machine CPU is the steadier figure.
# Usage: scripts/bench-compression.sh [SIZE_MIB (default 1024)] [RUNS (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
runs=${2:-3}
root=$(pwd)
work=${XTASK_BENCH_DIR:-${TMPDIR:-/tmp}/xtask-bench-compression}
mkdir -p "$work"
maker=$root/../shared/bench/make-dataset.py
[ -r "$maker" ] || { echo "bench-compression: $maker is missing" >&2; exit 1; }
if [ ! -s "$work/data-$size.tar" ]; then
    rm -rf "$work/data-$size"
    python3 "$maker" --size-mib "$size" --seed 42 "$work/data-$size" >&2
    tar -cf "$work/data-$size.tar" -C "$work/data-$size" .
    rm -rf "$work/data-$size"
fi
input=$work/data-$size.tar
cargo build --quiet -p xtask --example compress
bin=${CARGO_TARGET_DIR:-$root/target}/debug/examples/compress
configs=("gzip:6 1" "gzip:6 2" "zstd:1 0" "zstd:1 1" "zstd:1 2" "zstd:3 0" "zstd:3 1" "zstd:3 2")
results=$work/results.txt
: >"$results"
timed() { # LABEL CMD...: appends "LABEL wall cpu output" to $results
    local label=$1 out
    shift
    out=$(/usr/bin/time -f '%e %U %S' -o "$work/time" "$@")
    awk -v l="$label" -v o="$out" '{ printf "%s %s %.2f %s\n", l, $1, $2 + $3, o }' "$work/time" >>"$results"
}
cat "$input" >/dev/null # into the page cache
for r in $(seq 1 "$runs"); do
    # Alternate the order between runs, so a neighbour's load falls on every configuration.
    order=("${configs[@]}")
    if [ $((r % 2)) -eq 0 ]; then mapfile -t order < <(printf '%s\n' "${configs[@]}" | tac); fi
    for c in "${order[@]}"; do
        read -r spec threads <<<"$c"
        ext=$([ "${spec%%:*}" = zstd ] && echo .tar.zst || echo .tar.gz)
        out=$work/out-${spec/:/-}-$threads$ext
        timed "encode $spec $threads" "$bin" encode "$spec" "$threads" "$input" "$out"
        timed "decode $spec $threads" "$bin" decode "$out"
        rm -f "$out"
    done
done
python3 - "$results" "$input" "$size" "$runs" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import os, statistics, sys, datetime
results, tar, size, runs, cores, load = sys.argv[1:]
rows = {}
for line in open(results):
    op, spec, threads, wall, cpu, out = line.split()
    rows.setdefault((spec, threads), {}).setdefault(op, []).append((float(wall), float(cpu), int(out)))
tar_bytes = os.path.getsize(tar)
med = lambda xs, i: statistics.median(x[i] for x in xs)
base = med(rows[("gzip:6", "2")]["encode"], 2)
base_wall = med(rows[("gzip:6", "2")]["encode"], 0)
lines = [
    f"Measured by `scripts/bench-compression.sh {size} {runs}` on {datetime.date.today()}, {cores} cores shared with "
    f"other builds (load average at the end: {load}), medians of {runs}; input: the tar of `make-dataset.py "
    f"--size-mib {size} --seed 42`, {tar_bytes / 2**20:.0f} MiB, from the page cache; output to a file (fsync).",
    "Threads: gzip's block workers; zstd's own workers (0: compressing in the caller's thread).",
    "",
    "| compression | threads | wall | MB/s | CPU (user+sys) | size | size vs gzip:6 | wall vs gzip:6 (2 threads) | read back: wall / CPU |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
for (spec, threads), ops in rows.items():
    e, d = ops["encode"], ops["decode"]
    wall, cpu, out = med(e, 0), med(e, 1), med(e, 2)
    lines.append(
        f"| {spec} | {threads} | {wall:.1f} s | {tar_bytes / wall / 1e6:.0f} | {cpu:.1f} s | {out / 2**20:.1f} MiB | "
        f"{out / base:.3f}x | {wall / base_wall:.2f}x | {med(d, 0):.1f} s / {med(d, 1):.1f} s |"
    )
lines.append("")
lines.append("Runs (encode wall seconds): " + "; ".join(
    f"{s} {t}: {[w for w, _, _ in ops['encode']]}" for (s, t), ops in rows.items()))
table = "\n".join(lines) + "\n"
print(table)
path = "docs/benchmarks.md"
doc = open(path).read()
start, end = "<!-- compression -->\n", "<!-- /compression -->"
if start in doc:
    a = doc.index(start) + len(start)
    doc = doc[:a] + table + doc[doc.index(end):]
else:
    doc = doc.replace("## Restore\n", "## Compression\n\n" + start + table + end + "\n\n## Restore\n", 1)
open(path, "w").write(doc)
PY
