#!/usr/bin/env python3
"""Backup benchmark: this tool vs the plain `docker run ... tar czf` approach, side by side.

    scripts/bench-backup.sh [--sizes 100,1024] [--runs 3]
    scripts/bench-backup.sh --mode mariadb [--runs 3]   # backup-db of a 1 GB MariaDB database
    scripts/bench-backup.sh --mode offsite [--runs 3]   # 1 GiB: local, --push, --push + encryption
    scripts/bench-backup.sh --mode restic               # 1 GiB: the deduplicated tier, 1% changed
    scripts/bench-backup.sh --mode trees                # 1 GiB: its tree form beside plain restic, 1% changed
    scripts/bench-backup.sh --mode photos               # 10 GiB, 60,000 files: the tree form beside plain restic, 0.1% changed

For each size (MiB) a deterministic mixed dataset (../shared/bench/make-dataset.py, or the
fallback copy here) is made once into a Docker volume `xtask-bench-<size>` (cached by label).
Each run times both approaches on the same volume; reported are medians of wall time, MB/s
(dataset bytes / wall), archive size, and the tool's peak RSS (getrusage of the child).
Results go to docs/benchmarks.md (the backup section) and stdout.
"""
import argparse, fcntl, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.environ.get("XTASK_HELPER_IMAGE", "xtask-test/busybox:local")


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, **kw)


def out(*args):
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout.strip()


def dataset_script():
    shared = os.path.join(os.path.dirname(ROOT), "shared", "bench", "make-dataset.py")
    if os.path.exists(shared):
        return shared
    sys.exit("make-dataset.py not found beside the repo (../shared/bench/make-dataset.py)")


def ensure_volume(size):
    name = f"xtask-bench-{size}"
    label = f"xtask.bench.dataset=size{size}-seed42"
    have = subprocess.run(["docker", "volume", "inspect", "-f", "{{index .Labels \"xtask.bench.dataset\"}}", name],
                          capture_output=True, text=True)
    if have.returncode == 0 and have.stdout.strip() == label.split("=", 1)[1]:
        return name
    if have.returncode == 0:
        sh("docker", "volume", "rm", "-f", name, stdout=subprocess.DEVNULL)
    print(f"making the {size} MiB dataset in volume {name} (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        sh(sys.executable, dataset_script(), d, "--size-mib", str(size), "--seed", "42")
        sh("docker", "volume", "create", "--label", label, name, stdout=subprocess.DEVNULL)
        sh("docker", "run", "--rm", "-v", f"{d}:/src:ro", "-v", f"{name}:/data", HELPER,
           "cp", "-a", "/src/.", "/data/")
    return name


def volume_bytes(name):
    line = out("docker", "run", "--rm", "-v", f"{name}:/v:ro", HELPER, "du", "-s", "-k", "/v")
    return int(line.split()[0]) * 1024


def timed(cmd, **kw):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd} failed: {p.stderr}")
    return wall, p.stdout


def run_xtask(args, env=None):
    """Runs the xtask, polling its own peak RSS (VmHWM, not the docker CLIs it starts); its stdout
    goes into a file (a long listing would fill a pipe nobody reads while it runs)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        hwm = 0
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.01)
        wall = time.monotonic() - t0
        stderr = p.stderr.read()
        if p.returncode != 0:
            sys.exit(f"{args} failed: {stderr}")
        out.seek(0)
        return wall, out.read().decode(), hwm


def write_section(title, section):
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    open(path, "w").write(text)
    print(section)


def write_compose(work, volume):
    """A one-service stack whose only volume is the external `volume` (may be ${VAR})."""
    compose = os.path.join(work, "compose.yaml")
    with open(compose, "w") as f:
        f.write(f"name: xtask-bench\nservices:\n  files:\n    image: {HELPER}\n    command: [sleep, infinity]\n"
                f"    volumes: [data:/data]\nvolumes:\n  data:\n    external: true\n    name: {volume}\n")
    return compose


def fifo_floor(volume, tar_path):
    """The floor: the uncompressed tar through the tool's own transport, as cheaply as the kernel
    allows: sendfile into a FIFO (1 MiB pipe buffer, as the tool sets) that the same helper
    command the tool starts, `tar -x --numeric-owner`, reads in its private bind-mounted dir."""
    io_dir = tempfile.mkdtemp(prefix="xtask-bench-io-")
    fifo = os.path.join(io_dir, "stream")
    os.mkfifo(fifo, 0o600)
    t0 = time.monotonic()
    helper = subprocess.Popen(["docker", "run", "--rm", "--network", "none", "--mount", f"type=volume,source={volume},target=/v/0",
                               "--mount", f"type=bind,source={io_dir},target=/xtask-io", HELPER,
                               "tar", "-x", "--numeric-owner", "-f", "/xtask-io/stream", "-C", "/v/0"])
    with open(fifo, "wb") as w, open(tar_path, "rb") as r:
        fcntl.fcntl(w.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        size, sent = os.fstat(r.fileno()).st_size, 0
        while sent < size:
            sent += os.sendfile(w.fileno(), r.fileno(), sent, size - sent)
    if helper.wait() != 0:
        sys.exit("the floor's tar -x failed")
    wall = time.monotonic() - t0
    shutil.rmtree(io_dir)
    return wall


def work_floor(a, compose, archive, volume, tar_path):
    """The floor of the tool's own work: the floor (b) and, at the same time on the other core,
    `xtask verify` of the archive (inflating, the grammar and SHA-256 of every byte: what the
    floor is spared), each once; wall time until both ended."""
    t0 = time.monotonic()
    verify = subprocess.Popen([a.xtask, "--file", compose, "--quiet", "verify", archive],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, BENCH_VOLUME=volume))
    fifo_floor(volume, tar_path)
    if verify.wait() != 0:
        sys.exit(f"verify failed: {verify.stderr.read()}")
    return time.monotonic() - t0


def settle():
    """Before each timed step: no dirty pages of the step before (`sync`), so no step pays for
    another's writeback."""
    sh("sync")


def restore_bench(a):
    """Each timed step extracts into a new empty volume. Every round starts from the same state:
    the last round's volumes removed, then a minute waited out. Removing one right before a step
    would bias it on this test bed: its ext4 has no journal, and there inode allocation skips
    inodes freed in the last minute (`recently_deleted`), one by one: 15,000 files just deleted
    made the next extraction up to 3x slower; and keeping every round's volumes made each round
    slower than the one before (docs/benchmarks.md)."""
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        vol = ensure_volume(size)
        data = volume_bytes(vol)
        work = tempfile.mkdtemp(prefix="xtask-bench-restore-")
        compose = write_compose(work, "${BENCH_VOLUME}")
        env = dict(os.environ, BENCH_VOLUME=vol)
        _, out, _ = run_xtask([a.xtask, "--file", compose, "--quiet", "backup", "--output-dir", os.path.join(work, "a"), "--json"], env)
        archive = json.loads(out)["path"]
        sh("docker", "run", "--rm", "-v", f"{vol}:/source:ro", "-v", f"{work}:/backup", HELPER,
           "tar", "czf", "/backup/x.tar.gz", "-C", "/source", ".")
        # The floor: the same data already uncompressed, only extracted into an empty volume.
        sh("docker", "run", "--rm", "-v", f"{work}:/backup", HELPER, "sh", "-c", "gunzip -c /backup/x.tar.gz > /backup/x.tar")
        created = []

        def clear():
            for v in created:
                subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
            created.clear()
            # Inodes freed before a round (the last round's volumes, or an earlier run's) slow
            # every extraction for a minute once their inode tables are written: wait it out.
            settle()
            time.sleep(61)

        def fresh():
            name = f"xtask-bench-restore-{os.getpid()}-{len(plain)}-{len(created)}"
            sh("docker", "volume", "create", name, stdout=subprocess.DEVNULL)
            created.append(name)
            settle()
            return name

        plain, floor, tool, both = [], [], [], []
        try:
            for _ in range(a.runs):
                clear()
                target = fresh()
                busy = cpu_busy()
                wall, _ = timed(["docker", "run", "--rm", "-v", f"{target}:/data", "-v", f"{work}:/backup", HELPER,
                                 "tar", "xzf", "/backup/x.tar.gz", "-C", "/data"])
                plain.append((wall, cpu_busy() - busy))
                target = fresh()
                busy = cpu_busy()
                wall = fifo_floor(target, os.path.join(work, "x.tar"))
                floor.append((wall, cpu_busy() - busy))
                target = fresh()
                busy = cpu_busy()
                wall = work_floor(a, compose, archive, target, os.path.join(work, "x.tar"))
                both.append((wall, cpu_busy() - busy))
                target = fresh()
                busy = cpu_busy()
                wall, _, hwm = run_xtask([a.xtask, "--file", compose, "--quiet", "restore", archive, "--yes",
                                          "--no-safety-backup", "--output-dir", os.path.join(work, "a")],
                                         dict(os.environ, BENCH_VOLUME=target))
                tool.append((wall, cpu_busy() - busy, hwm))
                restored = volume_bytes(target)
                if abs(restored - data) > data // 100:
                    sys.exit(f"restored volume holds {restored} bytes, the source {data}")
        finally:
            for v in created:
                subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
            subprocess.run(["docker", "run", "--rm", "-v", f"{work}:/w", HELPER, "rm", "-rf", "/w/a", "/w/x.tar.gz", "/w/x.tar"],
                           capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
        med = lambda runs, i=0: statistics.median(r[i] for r in runs)
        row = dict(size=size, data=data, plain=med(plain), floor=med(floor), tool=med(tool), work=med(both), work_cpu=med(both, 1),
                   plain_cpu=med(plain, 1), floor_cpu=med(floor, 1), tool_cpu=med(tool, 1), rss=max(h for _, _, h in tool),
                   plain_runs=[round(r[0], 2) for r in plain], floor_runs=[round(r[0], 2) for r in floor],
                   tool_runs=[round(r[0], 2) for r in tool], work_runs=[round(r[0], 2) for r in both])
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_restore_section(a, rows)


def write_restore_section(a, rows):
    lines = ["## Restore\n",
             f"Measured by `scripts/bench-restore.sh` on {time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, "
             f"medians of {a.runs} runs, side by side in one run, each into a new empty volume after `sync`. (a) plain: "
             "`docker run --rm -v VOL:/data -v DIR:/backup busybox tar xzf /backup/x.tar.gz -C /data`; (b) the floor: "
             "the same data already uncompressed, sent by `sendfile` into the FIFO of the tool's own transport and "
             "extracted by the helper command the tool runs (`tar -x --numeric-owner`); (c) the tool: `restore --yes "
             "--no-safety-backup`, its one pass (read, grammar, SHA-256 of every file, staging) and the swap included. "
             "(d) the floor of the tool's work: (b) and, at the same time, `xtask verify` of the archive (inflating, "
             "the grammar and SHA-256 of every byte, what (b) is spared). CPU: seconds all cores were busy during the step.",
             "Targets: (c) at most 1.2x (b) and at most 0.75x (a), peak RSS at most 64 MiB.\n",
             "| dataset | (a) plain | (b) floor | (c) xtask | (c)/(b) | (c)/(a) | (d) work floor | (c)/(d) | CPU (a) / (b) / (c) / (d) | xtask peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['size']} MiB ({r['data']/2**20:.0f} MiB on disk) | {r['plain']:.1f} s | {r['floor']:.1f} s | "
                     f"{r['tool']:.1f} s | {r['tool']/r['floor']:.2f}x | {r['tool']/r['plain']:.2f}x | "
                     f"{r['work']:.1f} s | {r['tool']/r['work']:.2f}x | "
                     f"{r['plain_cpu']:.1f} / {r['floor_cpu']:.1f} / {r['tool_cpu']:.1f} / {r['work_cpu']:.1f} s | {r['rss']/1024:.1f} MiB |")
    lines.append("\nRuns (wall seconds): " + "; ".join(
        f"{r['size']} MiB plain {r['plain_runs']} floor {r['floor_runs']} xtask {r['tool_runs']} work floor {r['work_runs']}"
        for r in rows))
    write_section("Restore", "\n".join(lines) + "\n")

MARIA_IMAGE = os.environ.get("MARIADB_IMAGE", "xtask-test/mariadb:local")
# A benchmark-only password for a throwaway server; it reaches the containers by environment.
MARIA_PW = "bench-only-root-pw"


def ensure_mariadb(rows):
    """A MariaDB data volume holding database `bench` (table t: `rows` rows, about 190 bytes of
    dump each), made once and cached by label."""
    name = f"xtask-bench-maria-{rows}"
    label = f"rows{rows}-v2"
    have = subprocess.run(["docker", "volume", "inspect", "-f", "{{index .Labels \"xtask.bench.dataset\"}}", name],
                          capture_output=True, text=True)
    if have.returncode == 0 and have.stdout.strip() == label:
        return name
    if have.returncode == 0:
        sh("docker", "volume", "rm", "-f", name, stdout=subprocess.DEVNULL)
    print(f"making a MariaDB database of {rows} rows in volume {name} (once)", file=sys.stderr)
    sh("docker", "volume", "create", "--label", f"xtask.bench.dataset={label}", name, stdout=subprocess.DEVNULL)
    cname = f"xtask-bench-maria-make-{os.getpid()}"
    sh("docker", "run", "-d", "--name", cname, "-e", "MARIADB_ROOT_PASSWORD", "-e", "MARIADB_DATABASE=bench",
       "-v", f"{name}:/var/lib/mysql", MARIA_IMAGE, env={**os.environ, "MARIADB_ROOT_PASSWORD": MARIA_PW},
       stdout=subprocess.DEVNULL)
    try:
        sql = ("CREATE TABLE t (id INT PRIMARY KEY, a CHAR(32), b VARCHAR(200), n DOUBLE, d DATETIME);"
               f"INSERT INTO t SELECT seq, MD5(seq), CONCAT(REPEAT(SUBSTR(MD5(seq), 1, 8), 1 + seq % 12), ' it''s \\\\ row ', seq),"
               f" seq / 7, '2026-01-01' + INTERVAL seq SECOND FROM seq_1_to_{rows};")
        for _ in range(120):
            if subprocess.run(["docker", "exec", "-e", "MYSQL_PWD", cname, "mariadb", "-uroot", "bench", "-e", "SELECT 1"],
                              capture_output=True, env={**os.environ, "MYSQL_PWD": MARIA_PW}).returncode == 0:
                break
            time.sleep(1)
        sh("docker", "exec", "-e", "MYSQL_PWD", cname, "mariadb", "-uroot", "bench", "-e", sql,
           env={**os.environ, "MYSQL_PWD": MARIA_PW})
    finally:
        sh("docker", "rm", "-f", cname, stdout=subprocess.DEVNULL)
    return name


def mariadb_bench(a):
    """`backup-db` of a MariaDB service vs the plain `docker compose exec db mariadb-dump … | gzip`,
    beside two floors: the dump written to /dev/null inside the container (the server and
    mariadb-dump alone), and the same dump carried out by `docker compose exec` and discarded
    (what the daemon's attach stream costs, which the plain approach pays and the tool avoids)."""
    rows_n = 6_000_000
    vol = ensure_mariadb(rows_n)
    work = tempfile.mkdtemp(prefix="xtask-bench-maria-")
    compose = os.path.join(work, "compose.yaml")
    with open(compose, "w") as f:
        f.write(f"name: xtask-bench-maria\nservices:\n  db:\n    image: {MARIA_IMAGE}\n"
                f"    environment: {{MARIADB_ROOT_PASSWORD: {MARIA_PW}}}\n"
                "    volumes: [data:/var/lib/mysql]\n"
                "    healthcheck: {test: [CMD-SHELL, mariadb-admin ping --silent], interval: 1s, retries: 120}\n"
                f"volumes:\n  data:\n    external: true\n    name: {vol}\n")
    dc = ["docker", "compose", "--file", compose]
    env = {**os.environ, "MYSQL_PWD": MARIA_PW}
    sh(*dc, "up", "-d", "--wait", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dump = dc + ["exec", "-T", "-e", "MYSQL_PWD", "db", "mariadb-dump", "-uroot", "--single-transaction",
                 "--routines", "--triggers", "--events", "bench"]
    try:
        floor, attach, plain, tool = [], [], [], []
        inside = dc + ["exec", "-T", "-e", "MYSQL_PWD", "db", "sh", "-c",
                       "mariadb-dump -uroot --single-transaction --routines --triggers --events bench > /dev/null"]
        for run in range(a.runs):
            t0 = time.monotonic()
            sh(*inside, env=env)
            floor.append(time.monotonic() - t0)
            t0 = time.monotonic()
            p = subprocess.run(dump, stdout=subprocess.PIPE, env=env, check=True)
            attach.append(time.monotonic() - t0)
            dump_bytes = len(p.stdout)
            del p
            out_gz = os.path.join(work, f"plain{run}.sql.gz")
            t0 = time.monotonic()
            sh("sh", "-c", " ".join(f"'{x}'" for x in dump) + f" | gzip > '{out_gz}'", env=env)
            plain.append((time.monotonic() - t0, os.path.getsize(out_gz)))
            os.remove(out_gz)
            tdir = os.path.join(work, f"tool{run}")
            wall, stdout, hwm = run_xtask([a.xtask, "--file", compose, "--quiet", "backup-db", "--output-dir", tdir, "--json"])
            tool.append((wall, json.loads(stdout)["bytes"], hwm))
            shutil.rmtree(tdir)
            print(json.dumps(dict(run=run, floor=floor[-1], attach=attach[-1], plain=plain[-1], tool=tool[-1])), flush=True)
    finally:
        sh(*dc, "down", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work)
    fw = statistics.median(floor)
    aw = statistics.median(attach)
    pw = statistics.median(w for w, _ in plain)
    tw = statistics.median(w for w, _, _ in tool)
    ps = statistics.median(s for _, s in plain)
    ts = statistics.median(s for _, s, _ in tool)
    rss = max(r for _, _, r in tool)
    lines = ["## MariaDB dump\n",
             f"Measured by `scripts/bench-backup.sh --mode mariadb` on {time.strftime('%Y-%m-%d', time.gmtime())}, "
             f"{os.cpu_count()} cores, medians of {a.runs} runs; database `bench`: one table of {rows_n:,} rows, "
             f"its dump {dump_bytes / 1e9:.2f} GB (MariaDB {MARIA_IMAGE}).",
             "Plain approach: `docker compose exec -T db mariadb-dump -uroot --single-transaction --routines --triggers "
             "--events bench | gzip > file`. Floor: the same dump written to /dev/null inside the container (the "
             "server and mariadb-dump alone). Attach: the dump carried out by `docker compose exec` and discarded, "
             "the transport the plain approach pays; the tool reads the dump from a helper beside the service "
             "(its network namespace) through a FIFO instead.",
             "Targets: the tool's `backup-db` at most 0.8x the plain approach's wall time, peak RSS at most 64 MiB.\n",
             "| | wall | MB/s of dump | output | ratio to plain | peak RSS |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| floor (dump inside the container) | {fw:.1f} s | {dump_bytes / 1e6 / fw:.0f} | - | {fw / pw:.2f}x | - |",
             f"| attach (dump through `compose exec`) | {aw:.1f} s | {dump_bytes / 1e6 / aw:.0f} | - | {aw / pw:.2f}x | - |",
             f"| plain (dump \\| gzip) | {pw:.1f} s | {dump_bytes / 1e6 / pw:.0f} | {ps / 2**20:.0f} MiB | 1.00x | - |",
             f"| xtask backup-db | {tw:.1f} s | {dump_bytes / 1e6 / tw:.0f} | {ts / 2**20:.0f} MiB | {tw / pw:.2f}x | {rss / 1024:.1f} MiB |",
             "\nRuns (wall seconds): floor " + str([round(x, 1) for x in floor]) + ", attach "
             + str([round(x, 1) for x in attach]) + ", plain "
             + str([round(w, 1) for w, _ in plain]) + ", xtask " + str([round(w, 1) for w, _, _ in tool])]
    write_section("MariaDB dump", "\n".join(lines) + "\n")


def weed_binary():
    found = shutil.which("weed")
    if found:
        return found
    cache = os.environ.get("XTASK_TESTBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "xtask-testbed")
    path = os.path.join(cache, "seaweedfs-4.48", "weed")
    if not os.path.exists(path):
        sys.exit("SeaweedFS (weed) not found: run scripts/provision.sh")
    return path


def start_s3(work):
    """SeaweedFS `weed mini` on 127.0.0.1 (every port explicit, a test key): (process, endpoint)."""
    import socket
    socks = [socket.socket() for _ in range(15)]
    for s_ in socks:
        s_.bind(("127.0.0.1", 0))
    ports = [s_.getsockname()[1] for s_ in socks]
    for s_ in socks:
        s_.close()
    flags = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public", "filer.port",
             "filer.port.grpc", "filer.port.public", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
             "admin.port", "admin.port.grpc", "debug.port"]
    os.makedirs(os.path.join(work, "s3data"))
    with open(os.path.join(work, "s3.json"), "w") as f:
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                   "actions": ["Admin", "Read", "Write", "List"]}]}, f)
    args = [weed_binary(), "mini", f"-dir={work}/s3data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", f"-s3.config={work}/s3.json", "-bucket=bench"] + [f"-{f}={p}" for f, p in zip(flags, ports)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{ports[8]}"
    remote = f":s3,provider=Other,env_auth=true,endpoint='{endpoint}',region=us-east-1:bench"
    for _ in range(240):
        if subprocess.run(["rclone", "lsjson", remote], capture_output=True, env=s3_env()).returncode == 0:
            return proc, endpoint, remote
        time.sleep(0.25)
    proc.kill()
    sys.exit("SeaweedFS did not come up in 60 s")


S3_KEY, S3_SECRET = "BENCHKEY", "bench-secret-0123456789"


def s3_env():
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    return env


def cpu_busy():
    """Seconds of CPU time all cores spent busy so far (/proc/stat, idle and iowait excluded)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system) of one process so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run_watched(args, env, names=("rclone", "age")):
    """Runs a command; returns wall time, stdout, its own peak RSS and the largest peak RSS of
    each named descendant (polled from /proc)."""
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    hwm = {"self": 0, **{n: 0 for n in names}}
    while p.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
            except OSError:
                continue
            name, kib = st.get("Name", "").strip(), int(st.get("VmHWM", "0 kB").split()[0] or 0)
            if int(pid) == p.pid:
                hwm["self"] = max(hwm["self"], kib)
            elif name in names:
                hwm[name] = max(hwm[name], kib)
        time.sleep(0.05)
    stdout, stderr = p.communicate()
    if p.returncode != 0:
        sys.exit(f"{args} failed: {stderr}")
    return time.monotonic() - t0, stdout, hwm


def offsite_bench(a):
    """1 GiB: local backup alone; backup --push to a local SeaweedFS; the same with age
    encryption; and the floor of the push: `rclone rcat` of an archive-sized file alone."""
    size = 1024
    vol = ensure_volume(size)
    work = tempfile.mkdtemp(prefix="xtask-bench-offsite-")
    proc, endpoint, remote = start_s3(work)
    try:
        sh("age-keygen", "-o", os.path.join(work, "key.txt"), stderr=subprocess.DEVNULL)
        recipient = out("age-keygen", "-y", os.path.join(work, "key.txt"))
        base = write_compose(work, vol)
        text = open(base).read() + (f"x-xtask:\n  remotes:\n    bench: {{url: \"s3://bench/b\", endpoint: \"{endpoint}\", "
                                    "region: us-east-1}\n")
        open(base, "w").write(text)
        sealed = os.path.join(work, "sealed.yaml")
        open(sealed, "w").write(text + f"  encrypt: {{recipients: [\"{recipient}\"]}}\n")
        env = s3_env()
        runs = {"local": [], "push": [], "push+age": [], "rcat": []}
        for run in range(a.runs):
            for label, compose, extra in (("local", base, []), ("push", base, ["--push", "bench"]),
                                          ("push+age", sealed, ["--push", "bench"])):
                d = os.path.join(work, f"{label}{run}")
                busy0, server0 = cpu_busy(), proc_cpu(proc.pid)
                wall, stdout, hwm = run_watched([a.xtask, "--file", compose, "--quiet", "backup", "--output-dir", d,
                                                 "--json"] + extra, env)
                hwm["busy"], hwm["server"] = cpu_busy() - busy0, proc_cpu(proc.pid) - server0
                path = json.loads(stdout.splitlines()[0] if stdout.startswith("/") else stdout)["path"]
                runs[label].append((wall, os.path.getsize(path), hwm))
                if label == "local":
                    t0, busy0, server0 = time.monotonic(), cpu_busy(), proc_cpu(proc.pid)
                    with open(path, "rb") as f:
                        subprocess.run(["rclone", "rcat", "-q", "--s3-chunk-size", "8Mi", f"{remote}/floor/{run}"],
                                       stdin=f, check=True, env=env)
                    floor = {"busy": cpu_busy() - busy0, "server": proc_cpu(proc.pid) - server0}
                    runs["rcat"].append((time.monotonic() - t0, os.path.getsize(path), floor))
                shutil.rmtree(d)
            print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    finally:
        proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    write_offsite_section(a, runs)


def write_offsite_section(a, runs):
    med = {k: statistics.median(w for w, _, _ in v) for k, v in runs.items()}
    peak = lambda k, n: max(h.get(n, 0) for _, _, h in runs[k]) / 1024
    lines = ["## Off-site and encrypted\n",
             f"Measured by `scripts/bench-backup.sh --mode offsite` on {time.strftime('%Y-%m-%d', time.gmtime())}, "
             f"{os.cpu_count()} cores, medians of {a.runs} runs, side by side in one run: the 1 GiB dataset backed up "
             "locally; with `--push` to SeaweedFS (`weed mini`) on 127.0.0.1; the same with age encryption; and the "
             "floor of the push, `rclone rcat` of the local archive alone.",
             "Targets: push adds at most 25% to the local backup's wall time, encryption at most 10%; peak RSS of the "
             "tool at most 64 MiB, of rclone at most 128 MiB.\n",
             "| | wall | vs local | archive | CPU busy (all cores) | of it the S3 server | xtask peak RSS | rclone peak RSS | age peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cpu = lambda k, n: statistics.median(h.get(n, 0) for _, _, h in runs[k])
    for k in ("local", "push", "push+age", "rcat"):
        size = statistics.median(s for _, s, _ in runs[k])
        lines.append(f"| {k if k != 'rcat' else 'floor: rclone rcat of the archive'} | {med[k]:.1f} s | "
                     f"{med[k] / med['local']:.2f}x | {size / 2**20:.0f} MiB | {cpu(k, 'busy'):.1f} s | {cpu(k, 'server'):.1f} s | "
                     f"{peak(k, 'self'):.1f} MiB | {peak(k, 'rclone'):.1f} MiB | {peak(k, 'age'):.1f} MiB |")
    lines.append("\nRuns (wall seconds): " + "; ".join(f"{k} {[round(w, 1) for w, _, _ in v]}" for k, v in runs.items()))
    write_section("Off-site and encrypted", "\n".join(lines) + "\n")


def restic_stats(env):
    """The repository's stored bytes (restic's `stats --mode raw-data`)."""
    p = subprocess.run(["restic", "stats", "--mode", "raw-data", "--json", "--no-lock"], env=env,
                       check=True, capture_output=True, text=True)
    return json.loads(p.stdout)["total_size"]


CHANGE_ONE_PERCENT = ("cd \"$1\" && find . -type f | sort | awk 'NR % 100 == 0' | while read -r f; do "
                      "n=$(stat -c %s \"$f\"); head -c \"$n\" /dev/urandom > \"$f\"; done; "
                      "find . -type f | sort | awk 'NR % 100 == 0' | wc -l")


def restic_floors(renv, work):
    """restic alone, on the newest snapshot's tar stream: `dump` of it to /dev/null (the floor of
    a restore's read), `backup --stdin` of it again from a file (unchanged: the floor of a second
    push's pass), and the `tag` that marks a push complete."""
    snaps = json.loads(subprocess.run(["restic", "snapshots", "--json", "--no-lock"], env=renv, check=True,
                                      capture_output=True, text=True).stdout)
    snap = max(snaps, key=lambda s: s["time"])
    dump = ["restic", "dump", "--no-lock", snap["id"], snap["paths"][0]]
    dump_s = timed(["sh", "-c", '"$@" > /dev/null', "sh", *dump], env=renv)[0]
    stream = os.path.join(work, "stream.tar")
    sh("sh", "-c", '"$@" > "$0"', stream, *dump, env=renv)
    again_s = timed(["sh", "-c", 'exec "$@" < "$0"', stream, "restic", "backup", "-q", "--stdin",
                     "--stdin-filename", "floor.tar", "--host", "floor"], env=renv)[0]
    tag_s = timed(["restic", "tag", "--host", "floor", "--add", "floor=1"], env=renv)[0]
    os.remove(stream)
    return dict(dump_floor=dump_s, stdin_floor=again_s, tag_floor=tag_s)


def restic_bench(a):
    """1 GiB: local backup; first `backup --push vault` into a new restic repository, keeping the
    local archive, and `--no-keep-local` into another (no local file: the tar stream goes only into
    restic); 1% of the files rewritten (every 100th, same size, new random bytes); the second push
    of each and the bytes it added (restic's raw data before/after); restore from the repository
    vs from the local archive; and the floor: plain `restic backup` of the same files in a
    directory, twice."""
    vol = ensure_volume(1024)
    data = volume_bytes(vol)
    work = tempfile.mkdtemp(prefix="xtask-bench-restic-")
    wvol, targets = f"xtask-bench-restic-{os.getpid()}", []
    try:
        sh("docker", "volume", "create", wvol, stdout=subprocess.DEVNULL)
        sh("docker", "run", "--rm", "-v", f"{vol}:/src:ro", "-v", f"{wvol}:/data", HELPER, "cp", "-a", "/src/.", "/data/")
        pw = os.path.join(work, "pw")
        open(pw, "w").write("bench repository password\n")
        compose = write_compose(work, "${BENCH_VOLUME}")
        open(compose, "a").write(f"x-xtask:\n  remotes:\n    vault: {{url: \"restic:{work}/repo\", password_file: \"{pw}\"}}\n"
                                 f"    vault2: {{url: \"restic:{work}/repo2\", password_file: \"{pw}\"}}\n")
        env = dict(os.environ, BENCH_VOLUME=wvol)
        renv = dict(os.environ, RESTIC_REPOSITORY=f"{work}/repo", RESTIC_PASSWORD_FILE=pw)
        renv2 = dict(renv, RESTIC_REPOSITORY=f"{work}/repo2")
        only = ("--no-keep-local",)
        x = lambda *args: [a.xtask, "--file", compose, "--quiet"] + list(args)
        local = run_watched(x("backup", "--output-dir", f"{work}/l", "--json"), env, ("restic",))
        push1 = run_watched(x("backup", "--push", "vault", "--yes", "--output-dir", f"{work}/p1", "--json"), env, ("restic",))
        raw1 = restic_stats(renv)
        settle()
        only1 = run_watched(x("backup", "--push", "vault2", *only, "--yes", "--output-dir", f"{work}/n1", "--json"), env, ("restic",))
        oraw1 = restic_stats(renv2)
        changed = out("docker", "run", "--rm", "-v", f"{wvol}:/data", HELPER, "sh", "-c", CHANGE_ONE_PERCENT, "sh", "/data")
        settle()
        push2 = run_watched(x("backup", "--push", "vault", "--output-dir", f"{work}/p2", "--json"), env, ("restic",))
        raw2 = restic_stats(renv)
        settle()
        only2 = run_watched(x("backup", "--push", "vault2", *only, "--output-dir", f"{work}/n2", "--json"), env, ("restic",))
        oraw2 = restic_stats(renv2)
        archive = json.loads(push2[1])["path"]

        def restore(extra, base=None):
            target = f"xtask-bench-restic-r{os.getpid()}-{len(targets)}"
            sh("docker", "volume", "create", target, stdout=subprocess.DEVNULL)
            targets.append(target)
            settle()
            return run_watched(x("restore", *extra, "--yes", "--no-safety-backup", "--output-dir", f"{work}/r"),
                               dict(base or os.environ, BENCH_VOLUME=target), ("restic",))
        # Three of each, alternating: a restore's own spread is a second or more.
        pairs = [(restore([archive]), restore(["--remote", "vault", "--latest"])) for _ in range(3)]
        from_local, from_repo = ((statistics.median(p[i][0] for p in pairs), None,
                                  {k: max(p[i][2].get(k, 0) for p in pairs) for k in ("self", "restic")})
                                 for i in (0, 1))
        floors = restic_floors(renv, work)
        # The same with Debian trixie's restic (0.17 and later load a file's blobs in parallel in
        # `dump`), first on PATH: does a newer restic move the restore?
        nxt = out("bash", os.path.join(ROOT, "scripts", "provision.sh"), "--restic-next").splitlines()[-1]
        nenv = dict(renv, PATH=f"{os.path.dirname(nxt)}:{os.environ['PATH']}")
        next_restores = [restore(["--remote", "vault", "--latest"], nenv)[0] for _ in range(3)]
        floors.update(next_version=subprocess.run([nxt, "version"], capture_output=True, text=True).stdout.split()[1],
                      next_restore=statistics.median(next_restores),
                      next_dump_floor=restic_floors(nenv, work)["dump_floor"])
        # The floor: restic itself on the same files in a directory (the first dataset, then 1% changed).
        files = os.path.join(work, "files")
        os.makedirs(files)
        sh("docker", "run", "--rm", "-v", f"{vol}:/src:ro", "-v", f"{files}:/dst", HELPER, "cp", "-a", "/src/.", "/dst/")
        fenv = dict(os.environ, RESTIC_REPOSITORY=f"{work}/floor", RESTIC_PASSWORD_FILE=pw)
        sh("restic", "init", "-q", env=fenv)
        f1 = timed(["restic", "backup", "-q", files], env=fenv)[0]
        fraw1 = restic_stats(fenv)
        sh("sh", "-c", CHANGE_ONE_PERCENT, "sh", files, stdout=subprocess.DEVNULL)
        f2 = timed(["restic", "backup", "-q", files], env=fenv)[0]
        fraw2 = restic_stats(fenv)
    finally:
        for v in [wvol] + targets:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{work}:/w", HELPER, "sh", "-c", "rm -rf /w/*"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = dict(data=data, changed=int(changed.split()[-1]), local=local[0], push1=push1[0], push2=push2[0],
                raw1=raw1, added=raw2 - raw1, only1=only1[0], only2=only2[0], oraw1=oraw1, oadded=oraw2 - oraw1,
                from_local=from_local[0], from_repo=from_repo[0],
                rss=max(r[2]["self"] for r in (local, push1, push2, only1, only2, from_local, from_repo)),
                restic_rss=max(r[2]["restic"] for r in (push1, push2, only1, only2, from_repo)), floor1=f1, floor2=f2,
                floor_raw1=fraw1, floor_added=fraw2 - fraw1, **floors)
    print(json.dumps(rows), flush=True)
    write_restic_section(rows)


def write_restic_section(r):
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    section = "\n".join([
        "## The deduplicated tier (restic)", "",
        f"Measured by `scripts/bench-backup.sh --mode restic` on {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{os.cpu_count()} cores, restic {out('restic', 'version').split()[1]}, one run (restores: medians of 3, "
        "alternating): the 1 GiB mixed data set "
        f"({mib(r['data'])} on disk), then {r['changed']} files (every 100th, 1%) rewritten with new bytes of the "
        "same size. The repository is a local directory (the network would add the same to both runs).", "",
        "| what | measured | target |", "| --- | --- | --- |",
        f"| local-only `backup` | {r['local']:.1f} s | |",
        f"| first `backup --push vault` (new repository) | {r['push1']:.1f} s; repository {mib(r['raw1'])} | |",
        f"| second `backup --push vault`, 1% changed | {r['push2']:.1f} s ({r['push2'] / r['push1']:.2f}x the first); "
        f"added {mib(r['added'])} ({100 * r['added'] / r['raw1']:.1f}% of the first) | 0.35x; 3% |",
        f"| first `backup --push vault --no-keep-local` (new repository, no local file) | {r['only1']:.1f} s; "
        f"repository {mib(r['oraw1'])} | |",
        f"| second, `--no-keep-local`, 1% changed | {r['only2']:.1f} s ({r['only2'] / r['only1']:.2f}x the first); "
        f"added {mib(r['oadded'])} ({100 * r['oadded'] / r['oraw1']:.1f}% of the first) | 0.35x; 3% |",
        f"| restore from the repository vs from the local archive | {r['from_repo']:.1f} s vs {r['from_local']:.1f} s "
        f"({r['from_repo'] / r['from_local']:.2f}x) | 1.5x |",
        f"| peak RSS: xtask / restic | {r['rss'] / 1024:.1f} / {r['restic_rss'] / 1024:.1f} MiB | 64 MiB (xtask) |",
        f"| the floor: plain `restic backup` of the same files in a directory, first / second | {r['floor1']:.1f} s / "
        f"{r['floor2']:.1f} s; {mib(r['floor_raw1'])}, then added {mib(r['floor_added'])} | |",
        f"| restic alone on the stream: `backup --stdin` of it again (unchanged) / the completion `tag` / `dump` of "
        f"it | {r['stdin_floor']:.1f} s / {r['tag_floor']:.1f} s / {r['dump_floor']:.1f} s | |",
        f"| with restic {r['next_version']} (Debian trixie): restore from the repository / `dump` of the stream | "
        f"{r['next_restore']:.1f} s ({r['next_restore'] / r['from_local']:.2f}x) / {r['next_dump_floor']:.1f} s | 1.5x |",
        "",
        "`backup --push vault` hands the archive's tar stream to `restic backup --stdin` as it is written (restic "
        "chunks, compresses and encrypts; only the changed chunks are new), beside the local gzip archive; with "
        "`--no-keep-local` there is no gzip and no local file. The floor's second run skips unchanged files by "
        "their metadata without reading them, which a stream cannot do: that is the difference between the "
        "second runs.", ""])
    write_section("The deduplicated tier (restic)", section)


def trees_bench(a):
    """1 GiB, the restic tier's tree form (`backup --push vault --no-keep-local`: the volume read by
    restic at its mountpoint) beside plain `restic backup` of the same files in a directory: the
    first push, 1% of the files rewritten, the second; the bytes each added; one restore from the
    repository vs one from a local archive. One run each, short: the machine is shared."""
    vol = ensure_volume(1024)
    data = volume_bytes(vol)
    work = tempfile.mkdtemp(prefix="xtask-bench-trees-")
    wvol, targets = f"xtask-bench-trees-{os.getpid()}", []
    try:
        sh("docker", "volume", "create", wvol, stdout=subprocess.DEVNULL)
        sh("docker", "run", "--rm", "-v", f"{vol}:/src:ro", "-v", f"{wvol}:/data", HELPER, "cp", "-a", "/src/.", "/data/")
        files = os.path.join(work, "files")
        os.makedirs(files)
        sh("docker", "run", "--rm", "-v", f"{vol}:/src:ro", "-v", f"{files}:/dst", HELPER, "cp", "-a", "/src/.", "/dst/")
        pw = os.path.join(work, "pw")
        open(pw, "w").write("bench repository password\n")
        compose = write_compose(work, "${BENCH_VOLUME}")
        open(compose, "a").write(f"x-xtask:\n  remotes:\n    vault: {{url: \"restic:{work}/repo\", password_file: \"{pw}\"}}\n")
        env = dict(os.environ, BENCH_VOLUME=wvol)
        renv = dict(os.environ, RESTIC_REPOSITORY=f"{work}/repo", RESTIC_PASSWORD_FILE=pw)
        fenv = dict(renv, RESTIC_REPOSITORY=f"{work}/floor")
        x = lambda *args: [a.xtask, "--file", compose, "--quiet"] + list(args)
        load = [os.getloadavg()[0]]
        settle()
        push1 = run_watched(x("backup", "--push", "vault", "--no-keep-local", "--yes", "--output-dir", f"{work}/n1", "--json"),
                            env, ("restic",))
        raw1 = restic_stats(renv)
        sh("restic", "init", "-q", env=fenv)
        settle()
        f1 = timed(["restic", "backup", "-q", "--host", "floor", files], env=fenv)[0]
        fraw1 = restic_stats(fenv)
        changed = out("docker", "run", "--rm", "-v", f"{wvol}:/data", HELPER, "sh", "-c", CHANGE_ONE_PERCENT, "sh", "/data")
        sh("sh", "-c", CHANGE_ONE_PERCENT, "sh", files, stdout=subprocess.DEVNULL)
        load.append(os.getloadavg()[0])
        settle()
        push2 = run_watched(x("backup", "--push", "vault", "--no-keep-local", "--output-dir", f"{work}/n2", "--json"),
                            env, ("restic",))
        raw2 = restic_stats(renv)
        settle()
        f2 = timed(["restic", "backup", "-q", "--host", "floor", files], env=fenv)[0]
        fraw2 = restic_stats(fenv)
        local = run_watched(x("backup", "--output-dir", f"{work}/l", "--json"), env, ("restic",))
        archive = json.loads(local[1])["path"]

        def restore(extra):
            target = f"xtask-bench-trees-r{os.getpid()}-{len(targets)}"
            sh("docker", "volume", "create", target, stdout=subprocess.DEVNULL)
            targets.append(target)
            settle()
            return run_watched(x("restore", *extra, "--yes", "--no-safety-backup", "--output-dir", f"{work}/r"),
                               dict(os.environ, BENCH_VOLUME=target), ("restic",))
        from_local = restore([archive])
        from_repo = restore(["--remote", "vault", "--latest"])
        load.append(os.getloadavg()[0])
    finally:
        for v in [wvol] + targets:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{work}:/w", HELPER, "sh", "-c", "rm -rf /w/*"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = dict(data=data, changed=int(changed.split()[-1]), push1=push1[0], push2=push2[0], raw1=raw1,
                added=raw2 - raw1, floor1=f1, floor2=f2, floor_raw1=fraw1, floor_added=fraw2 - fraw1,
                from_local=from_local[0], from_repo=from_repo[0], load=load,
                rss=max(r[2]["self"] for r in (push1, push2, from_repo)),
                rss_each=[r[2]["self"] for r in (push1, push2, from_repo, from_local)],
                restic_rss=max(r[2]["restic"] for r in (push1, push2, from_repo)))
    print(json.dumps(rows), flush=True)
    write_trees_section(rows)


def write_trees_section(r):
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    section = "\n".join([
        "## The restic tier's tree form", "",
        f"Measured by `scripts/bench-backup.sh --mode trees` on {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{os.cpu_count()} cores shared with other work (load average {', '.join(f'{l:.1f}' for l in r['load'])} "
        f"at the start, before the second pushes and after the restores), restic {out('restic', 'version').split()[1]}, "
        f"one run each: the 1 GiB mixed data set ({mib(r['data'])} on disk), then {r['changed']} files (every 100th, "
        "1%) rewritten with new bytes of the same size, in the volume and in a directory copy of it. The repository is "
        "a local directory.", "",
        "| what | `backup --push vault --no-keep-local` (tree form) | plain `restic backup` of the files | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| first | {r['push1']:.1f} s; {mib(r['raw1'])} | {r['floor1']:.1f} s; {mib(r['floor_raw1'])} | "
        f"{r['push1'] / r['floor1']:.2f}x | 1.2x |",
        f"| second, 1% changed | {r['push2']:.1f} s ({r['push2'] / r['push1']:.2f}x the first); added {mib(r['added'])} | "
        f"{r['floor2']:.1f} s; added {mib(r['floor_added'])} | {r['push2'] / r['floor2']:.2f}x; "
        f"{r['added'] / max(r['floor_added'], 1):.2f}x | 1.2x; 1.2x |",
        f"| restore from the repository vs from a local archive | {r['from_repo']:.1f} s | {r['from_local']:.1f} s (local) | "
        f"{r['from_repo'] / r['from_local']:.2f}x | 1.3x |",
        f"| peak RSS: xtask / restic | {r['rss'] / 1024:.1f} / {r['restic_rss'] / 1024:.1f} MiB (xtask: first push, "
        f"second, restore; the restore from a local archive: {' / '.join(f'{k / 1024:.1f}' for k in r['rss_each'])} MiB)"
        " | | | 64 MiB (xtask) |",
        ""])
    write_section("The restic tier's tree form", section)


PHOTO_FILES = 60000


def photo_library(root):
    """About 10 GiB in the shape of a photo library: 60,000 files of 100 to 199 KiB in folders of
    500 (an album a folder), and every 200th one 5 MiB; random bytes (photos do not compress).
    Returns the bytes written."""
    total = 0
    for i in range(PHOTO_FILES):
        d = os.path.join(root, f"album-{i // 500:03d}")
        if i % 500 == 0:
            os.makedirs(d, exist_ok=True)
        size = (5 << 20) if i % 200 == 199 else (100 + (i * 7919) % 100) << 10
        with open(os.path.join(d, f"IMG_{i:05d}.jpg"), "wb") as f:
            f.write(os.urandom(size))
        total += size
    return total


def photos_bench(a):
    """The photo library (10 GiB, 60,000 files) in a volume: `backup --push vault --no-keep-local`
    in the tree form, first and after 0.1% of the files were rewritten (every 1000th), beside plain
    `restic backup` of the same directory (the volume's mountpoint) into a repository of its own."""
    work = tempfile.mkdtemp(prefix="xtask-bench-photos-")
    wvol = f"xtask-bench-photos-{os.getpid()}"
    try:
        sh("docker", "volume", "create", wvol, stdout=subprocess.DEVNULL)
        root = out("docker", "volume", "inspect", "-f", "{{.Mountpoint}}", wvol).strip()
        data = photo_library(root)
        pw = os.path.join(work, "pw")
        open(pw, "w").write("bench repository password\n")
        compose = write_compose(work, "${BENCH_VOLUME}")
        open(compose, "a").write(f"x-xtask:\n  remotes:\n    vault: {{url: \"restic:{work}/repo\", password_file: \"{pw}\"}}\n")
        env = dict(os.environ, BENCH_VOLUME=wvol)
        renv = dict(os.environ, RESTIC_REPOSITORY=f"{work}/repo", RESTIC_PASSWORD_FILE=pw)
        fenv = dict(renv, RESTIC_REPOSITORY=f"{work}/floor")
        x = lambda *args: [a.xtask, "--file", compose, "--quiet"] + list(args)
        push = lambda n: run_watched(x("backup", "--push", "vault", "--no-keep-local", "--yes", "--output-dir",
                                       f"{work}/n{n}", "--json"), env, ("restic",))
        load = [os.getloadavg()[0]]
        settle()
        push1 = push(1)
        raw1 = restic_stats(renv)
        sh("restic", "init", "-q", env=fenv)
        settle()
        f1 = timed(["restic", "backup", "-q", "--host", "floor", root], env=fenv)[0]
        fraw1 = restic_stats(fenv)
        changed = 0
        for i in range(0, PHOTO_FILES, 1000):
            path = os.path.join(root, f"album-{i // 500:03d}", f"IMG_{i:05d}.jpg")
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            changed += 1
        load.append(os.getloadavg()[0])
        settle()
        push2 = push(2)
        raw2 = restic_stats(renv)
        settle()
        f2 = timed(["restic", "backup", "-q", "--host", "floor", root], env=fenv)[0]
        fraw2 = restic_stats(fenv)
        load.append(os.getloadavg()[0])
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", wvol], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = dict(data=data, files=PHOTO_FILES, changed=changed, push1=push1[0], push2=push2[0], raw1=raw1,
                added=raw2 - raw1, floor1=f1, floor2=f2, floor_raw1=fraw1, floor_added=fraw2 - fraw1, load=load,
                rss=max(push1[2]["self"], push2[2]["self"]),
                restic_rss=max(push1[2]["restic"], push2[2]["restic"]))
    print(json.dumps(rows), flush=True)
    write_photos_section(rows)


def write_photos_section(r):
    mib = lambda b: f"{b / 1048576:.1f} MiB"
    section = "\n".join([
        "## The tree form on a photo library (10 GiB, 60,000 files)", "",
        f"Measured by `scripts/bench-backup.sh --mode photos` on {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{os.cpu_count()} cores (load average {', '.join(f'{l:.1f}' for l in r['load'])} at the start, before the "
        f"second pushes, at the end), restic {out('restic', 'version').split()[1]}, one run: {r['files']} files "
        f"({mib(r['data'])}; 100 to 199 KiB, every 200th 5 MiB, random bytes) in a volume, then {r['changed']} of "
        "them (every 1000th, 0.1%) rewritten with new bytes of the same size. Plain restic reads the same "
        "directory (the volume's mountpoint) into a repository of its own. Both repositories are local "
        "directories.", "",
        "| what | `backup --push vault --no-keep-local` (tree form) | plain `restic backup` of the files | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        f"| first | {r['push1']:.1f} s; {mib(r['raw1'])} | {r['floor1']:.1f} s; {mib(r['floor_raw1'])} | "
        f"{r['push1'] / r['floor1']:.2f}x | 1.2x |",
        f"| second, 0.1% changed | {r['push2']:.1f} s (**{r['push2'] / r['push1']:.3f}x the first**); added "
        f"{mib(r['added'])} | {r['floor2']:.1f} s; added {mib(r['floor_added'])} | {r['push2'] / r['floor2']:.2f}x; "
        f"{r['added'] / max(r['floor_added'], 1):.2f}x | 0.05x the first; 1.2x |",
        f"| peak RSS: xtask / restic | {r['rss'] / 1024:.1f} / {r['restic_rss'] / 1024:.1f} MiB | | | 64 MiB (xtask) |",
        ""])
    write_section("The tree form on a photo library (10 GiB, 60,000 files)", section)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=["backup", "restore", "mariadb", "offsite", "restic", "trees", "photos"], default="backup")
    ap.add_argument("--xtask", default=os.path.join(ROOT, "target", "debug", "xtask"))
    a = ap.parse_args()
    if a.mode == "restore":
        return restore_bench(a)
    if a.mode == "mariadb":
        return mariadb_bench(a)
    if a.mode == "offsite":
        return offsite_bench(a)
    if a.mode == "restic":
        return restic_bench(a)
    if a.mode == "trees":
        return trees_bench(a)
    if a.mode == "photos":
        return photos_bench(a)
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        vol = ensure_volume(size)
        data = volume_bytes(vol)
        work = tempfile.mkdtemp(prefix="xtask-bench-")
        compose = write_compose(work, vol)
        plain, tool = [], []
        for run in range(a.runs):
            pdir = os.path.join(work, f"plain{run}")
            os.makedirs(pdir)
            wall, _ = timed(["docker", "run", "--rm", "-v", f"{vol}:/source:ro", "-v", f"{pdir}:/backup", HELPER,
                                   "tar", "czf", "/backup/x.tar.gz", "-C", "/source", "."])
            plain.append((wall, os.path.getsize(os.path.join(pdir, "x.tar.gz"))))
            shutil.rmtree(pdir)
            tdir = os.path.join(work, f"tool{run}")
            wall, stdout, hwm = run_xtask([a.xtask, "--file", compose, "--quiet", "backup", "--output-dir", tdir, "--json"])
            tool.append((wall, json.loads(stdout)["bytes"], hwm))
            shutil.rmtree(tdir)
        shutil.rmtree(work)
        pw = statistics.median(w for w, _ in plain)
        ps = statistics.median(s for _, s in plain)
        tw = statistics.median(w for w, _, _ in tool)
        ts = statistics.median(s for _, s, _ in tool)
        rss = max(r for _, _, r in tool)
        rows.append(dict(size=size, data=data, runs=a.runs, plain_wall=pw, plain_size=ps, tool_wall=tw, tool_size=ts,
                         rss_kib=rss, plain_runs=[round(w, 2) for w, _ in plain], tool_runs=[round(w, 2) for w, _, _ in tool]))
        print(json.dumps(rows[-1]), flush=True)
    mb = lambda b, s: b / 1e6 / s
    lines = ["## Backup\n",
             f"Measured by `scripts/bench-backup.sh` on {time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, "
             f"warm page cache, medians of {a.runs} runs; dataset: `make-dataset.py --seed 42` in a volume.",
             "Plain approach: `docker run --rm -v VOL:/source:ro -v DIR:/backup busybox tar czf /backup/x.tar.gz -C /source .`.",
             "Targets: wall time at most 0.4x the plain approach, archive at most 5% larger, peak RSS at most 64 MiB "
             "and the same for 100 MiB and 1 GiB.\n",
             "| dataset | plain wall | plain MB/s | plain size | xtask wall | xtask MB/s | xtask size | time ratio | size ratio | xtask peak RSS |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['size']} MiB ({r['data']/2**20:.0f} MiB on disk) | {r['plain_wall']:.1f} s | {mb(r['data'], r['plain_wall']):.0f} | "
                     f"{r['plain_size']/2**20:.1f} MiB | {r['tool_wall']:.1f} s | {mb(r['data'], r['tool_wall']):.0f} | "
                     f"{r['tool_size']/2**20:.1f} MiB | {r['tool_wall']/r['plain_wall']:.2f}x | {r['tool_size']/r['plain_size']:.3f}x | "
                     f"{r['rss_kib']/1024:.1f} MiB |")
    lines.append("\nRuns (wall seconds): " + "; ".join(f"{r['size']} MiB plain {r['plain_runs']} xtask {r['tool_runs']}" for r in rows))
    write_section("Backup", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
