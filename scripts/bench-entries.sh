#!/usr/bin/env bash
# Memory of verify and restore against the number of entries (a script, not a timed test): a
# genuine archive of the sample stack with N empty directories added to one volume (SHA256SUMS
# needs no change: directories carry no data), then `xtask verify` and `xtask restore` of it;
# prints the peak RSS of each (/usr/bin/time's maximum resident set) and the bytes per entry.
#   scripts/bench-entries.sh [N...]        (default: 100000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100000 1000000)
bash scripts/provision.sh
# shellcheck source=scripts/testbed.env
source scripts/testbed.env
cargo build --quiet -p xtask
export APP_VOLUME_PREFIX=xt-bench-entries
x=("${CARGO_TARGET_DIR:-target}/debug/xtask" -p xt-bench-entries)
dir=$(mktemp -d)
cleanup() {
    "${x[@]}" clean-all --confirm "DELETE EVERYTHING" --output-dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
"${x[@]}" up backend >/dev/null 2>&1
docker exec xt-bench-entries-backend-1 sh -c 'echo hello > /app/media/a.txt'
genuine=$("${x[@]}" backup --output-dir "$dir" --volume app-backend-media --compression gzip --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
echo "entries  verify peak RSS (MiB)  bytes/entry over the genuine archive's  restore peak RSS (MiB)"
peak() { /usr/bin/time -f '%M' -o "$dir/rss" "${x[@]}" verify --output-dir "$dir" "$1" >/dev/null 2>&1; tail -n 1 "$dir/rss"; }
base=$(peak "$genuine")
echo "0  $((base / 1024))"
for n in "${counts[@]}"; do
    big="$dir/full_backup_20200101_00000${#n}.tar.gz"
    python3 - "$genuine" "$big" "$n" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
# Written as format version 3 (no index: its lines would have to name every added entry), which
# verify and restore read by the same one pass.
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tarfile.open(src, "r:gz") as a, gzip.open(dst, "wb", compresslevel=1) as raw:
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.GNU_FORMAT) as out:
        members = [(m, a.extractfile(m).read() if m.isfile() else None) for m in a.getmembers()]
        prefix = next(m.name for m, _ in members if m.name.startswith("volumes/") and m.isdir()).rstrip("/") + "/"
        sums = []
        for m, data in members:
            if m.name == "index.jsonl":
                continue
            if m.name == "metadata.json":
                meta = json.loads(data)
                meta["format_version"] = 3
                data = json.dumps(meta, indent=2).encode()
                m.size = len(data)
            if m.name == "SHA256SUMS":
                data = "".join(sums).encode()
                m.size = len(data)
                top = tarfile.TarInfo(f"{prefix}many/")
                top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, m.mtime
                out.addfile(top)
                for i in range(n):
                    d = tarfile.TarInfo(f"{prefix}many/{i:07d}/")
                    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, m.mtime
                    out.addfile(d)
            elif m.isfile():
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {m.name}\n")
            out.addfile(m, io.BytesIO(data) if m.isfile() else None)
PY
    rss=$(peak "$big")
    "${x[@]}" verify --output-dir "$dir" "$big" >/dev/null 2>"$dir/err" || { echo "verify of the $n-entry archive failed:"; tail -n 3 "$dir/err"; }
    /usr/bin/time -f '%M' -o "$dir/rss" "${x[@]}" restore --yes --no-safety-backup --output-dir "$dir" "$big" >/dev/null 2>&1 ||
        echo "restore of the $n-entry archive failed"
    restored=$(tail -n 1 "$dir/rss")
    echo "$n  $((rss / 1024))  $(( (rss - base) * 1024 / n ))  $((restored / 1024))"
    rm -f "$big"
done
