#!/usr/bin/env bash
# Backup benchmark (a script, not a timed test): this tool vs the plain `docker run ... tar czf`,
# on 100 MiB and 1 GiB deterministic mixed datasets; medians to docs/benchmarks.md.
#   scripts/bench-backup.sh [--sizes 100,1024] [--runs 3]
#   scripts/bench-backup.sh --mode mariadb [--runs 3]   (backup-db of a 1 GB MariaDB database vs mariadb-dump | gzip)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env
cargo build --quiet -p xtask
exec python3 scripts/bench/backup_bench.py "$@"
