#!/usr/bin/env bash
# Restore benchmark (a script, not a timed test): this tool vs the plain `docker run ... tar xzf`,
# on 100 MiB and 1 GiB deterministic mixed datasets; medians to docs/benchmarks.md.
#   scripts/bench-restore.sh [--sizes 100,1024] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env
cargo build --quiet -p xtask
exec python3 scripts/bench/backup_bench.py --mode restore "$@"
