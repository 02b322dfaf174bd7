#!/usr/bin/env bash
# Browsing benchmark (a script, not a timed test): ls, cat, restore --path --to and diff of 1 GiB
# archives by their index, locally and from SeaweedFS, beside a gzip archive read whole.
#   scripts/bench-browse.sh [--runs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env
cargo build --quiet -p xtask
exec python3 scripts/bench/browse_bench.py "$@"
