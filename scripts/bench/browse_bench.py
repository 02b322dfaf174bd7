#!/usr/bin/env python3
"""Browsing benchmark: `ls`, `cat`, `restore --path --to`, `diff` of 1 GiB archives, by their
index (seekable zstd, format version 4), locally and from SeaweedFS on 127.0.0.1, beside the same
commands on the gzip archives of the same data (read sequentially: the old way).

    scripts/bench-browse.sh [--runs 5]

Medians of wall time and the tool's peak RSS (VmHWM); results to docs/benchmarks.md
("Browsing") and stdout.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backup_bench as bb  # noqa: E402


def one_mib_file(a, compose, archive, env):
    """A regular file of 0.9 to 1.1 MiB in the archive (as `ls` names it), and the volume."""
    _, stdout, _ = bb.run_xtask([a.xtask, "--file", compose, "--quiet", "ls", archive, "--json"], env)
    entries = json.loads(stdout)["entries"]
    files = [e for e in entries if e["type"] == "file"]
    if not files:
        sys.exit("no file in the dataset")
    closest = min(files, key=lambda e: abs(e["size"] - (1 << 20)))
    return closest["name"], closest["size"], len(entries)


def median_of(a, make_args, env, prepare=None):
    walls, hwms = [], []
    for i in range(a.runs):
        if prepare:
            prepare(i)
        wall, _, hwm = bb.run_xtask(make_args(i), env)
        walls.append(wall)
        hwms.append(hwm)
    return statistics.median(walls), max(hwms) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--xtask", default=os.path.join(bb.ROOT, "target", "debug", "xtask"))
    a = ap.parse_args()
    vol = bb.ensure_volume(1024)
    work = tempfile.mkdtemp(prefix="xtask-bench-browse-")
    proc, endpoint, _remote = bb.start_s3(work)
    try:
        compose = bb.write_compose(work, vol)
        with open(compose, "a") as f:
            f.write(f"x-xtask:\n  remotes:\n    bench: {{url: \"s3://bench/b\", endpoint: \"{endpoint}\", region: us-east-1}}\n")
        env = bb.s3_env()
        archives = {}
        for label, extra in (("zstd", []), ("zstd-b", []), ("gzip", ["--compression", "gzip"])):
            d = os.path.join(work, label)
            push = ["--push", "bench"] if label == "zstd" else []
            _, stdout, _ = bb.run_xtask([a.xtask, "--file", compose, "--quiet", "backup", "--output-dir", d, "--json"]
                               + extra + push, env)
            archives[label] = json.loads(stdout)["path"]
        name, name_size, entries = one_mib_file(a, compose, archives["zstd"], env)
        rows = []
        x = [a.xtask, "--file", compose, "--quiet"]
        for label, archive, remote in (("local, by its index", archives["zstd"], None),
                                       ("SeaweedFS, by its index", os.path.basename(archives["zstd"]), "bench"),
                                       ("local gzip, sequential", archives["gzip"], None)):
            where = ["--remote", remote] if remote else []
            to = os.path.join(work, "to")

            def clear(_run):
                shutil.rmtree(to, ignore_errors=True)
            ls = median_of(a, lambda _r: x + ["ls"] + where + [archive], env)
            cat = median_of(a, lambda _r: x + ["cat"] + where + [archive, name], env)
            rp = median_of(a, lambda _r: x + ["restore"] + where + [archive, "--path", name, "--to", to], env, clear)
            rows.append((label, ls, cat, rp))
            print(json.dumps(rows[-1]), flush=True)
        diff = median_of(a, lambda _r: x + ["diff", archives["zstd"], archives["zstd-b"]], env)
        diff_gz = median_of(a, lambda _r: x + ["diff", archives["gzip"], archives["zstd-b"]], env)
        size = os.path.getsize(archives["zstd"])
    finally:
        proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    lines = [
        "## Browsing\n",
        f"Measured by `scripts/bench-browse.sh` on {time.strftime('%Y-%m-%d', time.gmtime())}, 2 cores, load average "
        f"{load:.1f} at the end, medians of {a.runs} runs (each command a new process: its start included); the 1 GiB "
        f"dataset backed up once as zstd ({size / 2**20:.0f} MiB, {entries} entries, pushed to SeaweedFS `weed mini` on "
        f"127.0.0.1) and once as gzip (read sequentially, the only way before the index); the file: {name} "
        f"({name_size / 2**20:.2f} MiB, the one closest to 1 MiB).",
        "Targets: one 1 MiB file restored from a 1 GiB local archive in 0.5 s, from the remote in 1 s; `ls` in 0.2 s; "
        "`diff` of two 1 GiB archives in 0.5 s; peak RSS 64 MiB.\n",
        "| archive | ls | cat one file | restore --path --to | peak RSS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, ls, cat, rp in rows:
        lines.append(f"| {label} | {ls[0]:.2f} s | {cat[0]:.2f} s | {rp[0]:.2f} s | {max(ls[1], cat[1], rp[1]):.1f} MiB |")
    lines.append(f"\n`diff` of two 1 GiB zstd archives (both by their index): {diff[0]:.2f} s, peak RSS {diff[1]:.1f} MiB; "
                 f"with one of them gzip (read whole): {diff_gz[0]:.2f} s.\n")
    bb.write_section("Browsing", "\n".join(lines))


if __name__ == "__main__":
    main()
