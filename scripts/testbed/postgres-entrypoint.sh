#!/bin/sh
# Test-bed stand-in for the official postgres image's entrypoint (built by scripts/provision.sh).
# Like the official one: an empty $PGDATA is initialised with POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB (and POSTGRES_INITDB_ARGS, and the *_FILE forms), /docker-entrypoint-initdb.d/*.sql|*.sh run once, local
# socket connections are trusted, TCP ones need the password; the server runs as user postgres.
set -eu
# POSTGRES_USER_FILE / POSTGRES_PASSWORD_FILE (Compose secrets), like the official image.
for var in POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB; do
    eval "file=\${${var}_FILE:-}"
    if [ -n "$file" ]; then
        export "$var=$(cat "$file")"
    fi
done
if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    chmod 2777 /var/run/postgresql
    as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
            echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
            exit 1
        fi
        user=${POSTGRES_USER:-postgres}
        db=${POSTGRES_DB:-$user}
        pwfile=$(mktemp)
        printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
        chown postgres "$pwfile"
        # shellcheck disable=SC2086
        as_pg initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --auth-local=trust \
            --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
        rm -f "$pwfile"
        echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
        echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
        as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        if [ "$db" != postgres ]; then
            echo 'CREATE DATABASE :"db";' | as_pg psql -q -v ON_ERROR_STOP=1 -v db="$db" -U "$user" -d postgres
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sql) as_pg psql -q -v ON_ERROR_STOP=1 -U "$user" -d "$db" -f "$f" ;;
                *.sh) . "$f" ;;
            esac
        done
        as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
        echo "PostgreSQL init process complete; ready for start up."
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
