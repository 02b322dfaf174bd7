#!/bin/sh
# Test-bed stand-in for the official redis image's entrypoint (built by scripts/provision.sh):
# /data belongs to user redis and redis-server runs as that user, in /data.
set -eu
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
