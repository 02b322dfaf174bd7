#!/usr/bin/env bash
# Pre-migration hook: snapshot the databases, then run the migration given as arguments.
#   scripts/pre-migration.sh <migration command...>
# e.g. scripts/pre-migration.sh docker compose -f compose/compose.yaml exec -T backend python manage.py migrate
# The snapshot is `cargo xtask backup-db --tag pre-migration`; if it fails the migration does not
# run. The archive path is printed first, so a failed migration can be undone with
# `cargo xtask restore <that path>`. Set XTASK to run another xtask binary (tests do).
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 <migration command...>" >&2
    exit 2
fi
read -r -a xtask <<<"${XTASK:-cargo xtask}"
archive=$("${xtask[@]}" --quiet backup-db --tag pre-migration)
echo "pre-migration snapshot: $archive" >&2
exec "$@"
