#!/bin/sh
# Test-bed stand-in for the official mariadb image's entrypoint (built by scripts/provision.sh from
# Debian's mariadb-server). Like the official one: an empty /var/lib/mysql is initialised with
# MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER and MARIADB_PASSWORD (the MYSQL_* names and
# the *_FILE forms too); /docker-entrypoint-initdb.d/*.sql|*.sh run once; the server runs as user
# mysql and listens on every address.
set -eu
# VAR or the content of the file VAR_FILE names, for NAME in MARIADB_* then MYSQL_*.
env_or_file() {
    for prefix in MARIADB MYSQL; do
        eval "v=\${${prefix}_$1:-}"; eval "f=\${${prefix}_$1_FILE:-}"
        if [ -n "$v" ]; then printf '%s' "$v"; return; fi
        if [ -n "$f" ]; then cat "$f"; return; fi
    done
}
# SQL string literal: quotes and backslashes escaped.
sql_str() { printf "'%s'" "$(printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g")"; }

if [ "${1:-}" = mariadbd ] && [ "$(id -u)" = 0 ]; then
    mkdir -p /var/lib/mysql /run/mysqld
    chown mysql:mysql /var/lib/mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        root_pw=$(env_or_file ROOT_PASSWORD)
        if [ -z "$root_pw" ] && [ -z "$(env_or_file ALLOW_EMPTY_ROOT_PASSWORD)" ]; then
            echo "error: database is uninitialized and MARIADB_ROOT_PASSWORD is not set" >&2
            exit 1
        fi
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql --auth-root-authentication-method=normal \
            --skip-test-db >/dev/null
        mariadbd --user=mysql --skip-networking --socket=/run/mysqld/init.sock &
        pid=$!
        for _ in $(seq 1 60); do mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1 && break; sleep 0.5; done
        db=$(env_or_file DATABASE); user=$(env_or_file USER); pw=$(env_or_file PASSWORD)
        {
            echo "DELETE FROM mysql.user WHERE user = '';"
            # Like the official image: root only at localhost and '%' (a password-less
            # root@127.0.0.1 would shadow root@'%' for TCP logins from the same host).
            echo "DROP USER IF EXISTS 'root'@$(sql_str "$(hostname)"), 'root'@'127.0.0.1', 'root'@'::1';"
            echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $(sql_str "$root_pw");"
            echo "CREATE USER 'root'@'%' IDENTIFIED BY $(sql_str "$root_pw");"
            echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            [ -n "$db" ] && echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
            if [ -n "$user" ]; then
                echo "CREATE USER $(sql_str "$user")@'%' IDENTIFIED BY $(sql_str "$pw");"
                [ -n "$db" ] && echo "GRANT ALL ON \`$db\`.* TO $(sql_str "$user")@'%';"
            fi
            echo "FLUSH PRIVILEGES;"
        } | mariadb --socket=/run/mysqld/init.sock -uroot
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sql) MYSQL_PWD=$root_pw mariadb --socket=/run/mysqld/init.sock -uroot ${db:+"$db"} <"$f" ;;
                *.sh) . "$f" ;;
            esac
        done
        kill "$pid"; wait "$pid" || true
        echo "MariaDB init process complete; ready for start up."
    fi
    exec "$@" --user=mysql --bind-address=0.0.0.0 --skip-name-resolve
fi
exec "$@"
