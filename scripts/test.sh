#!/usr/bin/env bash
# Runs all the tests: provisions the real Docker test bed where something is missing
# (scripts/provision.sh: engine, Compose v2, local images; quiet and quick when all is there),
# checks formatting and lints (clippy enforces that only xtask/src/engine/process/ spawns),
# then runs `cargo test`: unit tests and the end-to-end tests on the live engine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env

cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast "$@"
