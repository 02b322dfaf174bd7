#!/usr/bin/env bash
# Restore downtime benchmark (a script, not a timed test): how long `restore` keeps the users of
# the data stopped, and where those seconds go. The sample stack in its own project with a
# 200 MiB upload (the e2e test's case) and FILES more empty files at the volume's top level (the
# swap's cost per entry), one full backup, then RUNS restores of it; prints each run's phases
# from `restore --json` (stop, swap of volumes and databases, start) and the median.
#   scripts/bench-downtime.sh [RUNS] [FILES]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
files=${2:-0}
bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env
cargo build --quiet -p xtask
export APP_VOLUME_PREFIX=xt-bench-downtime
x=("${CARGO_TARGET_DIR:-target}/debug/xtask" -p xt-bench-downtime)
dir=$(mktemp -d)
cleanup() {
    "${x[@]}" clean-all --confirm "DELETE EVERYTHING" --output-dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
"${x[@]}" up db backend >/dev/null 2>&1
docker exec xt-bench-downtime-backend-1 sh -c 'head -c 209715200 /dev/urandom > /app/media/big.bin'
if [ "$files" -gt 0 ]; then
    docker exec xt-bench-downtime-backend-1 sh -c "cd /app/media && seq 1 $files | sed 's/^/f/' | xargs touch"
fi
archive=$("${x[@]}" backup --output-dir "$dir" --json --level 1 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    "${x[@]}" restore "$archive" --yes --json --no-safety-backup --output-dir "$dir" 2>/dev/null |
        python3 -c '
import json, sys
start = float(sys.argv[1]); d = json.load(sys.stdin)["downtime"]
print("%.2f %.2f %.2f %.2f %.2f %.2f" % (d["running_again"] - d["stop_began"], d["swap_began"] - d["stop_began"],
      d["swap_ended"] - d["swap_began"], d["running_again"] - d["swap_ended"], d["stop_began"] - start,
      d["healthy_again"] - d["stop_began"]))' "$start"
done | python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin]
print("run  stopped  stop  swap  start  (staging before the stop)  healthy after")
for i, r in enumerate(rows, 1):
    print("%3d  %6.2f s  %.2f  %.2f  %.2f  (%.2f s)  %.2f s" % (i, *r))
print("median stopped: %.2f s, healthy again after %.2f s, of %d runs"
      % (statistics.median(r[0] for r in rows), statistics.median(r[5] for r in rows), len(rows)))'
