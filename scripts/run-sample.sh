#!/usr/bin/env bash
# The main job against the sample stack (compose/): brings the stack up where needed, lists its
# persistent data, backs it up into backups/ and verifies the archive. On a machine without Docker (Debian) it provisions the test
# bed first; the stack then runs on the locally built stand-in images (scripts/testbed.env).
# Set XTASK_OFFICIAL_IMAGES=1 to run the official images instead (needs Docker Hub).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${XTASK_OFFICIAL_IMAGES:-0}" != 1 ]; then
    bash scripts/provision.sh
    # shellcheck source=scripts/testbed.env
    source scripts/testbed.env
fi
cargo xtask up
cargo xtask volumes
cargo xtask backup
cargo xtask verify --latest
cargo xtask backups
