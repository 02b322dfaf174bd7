//! Shared by the end-to-end tests: the live Docker engine check, a guard that gives each test
//! its own compose project and volume names and removes them afterwards (also when the test
//! fails), and a runner for the built `xtask` binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, dead_code)] // tests drive docker and the binary directly

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// True when the engine answers. Without it the test is skipped, except under CI=true
/// where a missing engine is a failure.
pub fn engine() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the Docker engine is not reachable under CI=true: run scripts/test.sh, which provisions it");
        }
        eprintln!("SKIPPED: no Docker engine (run scripts/test.sh to provision one)");
    }
    ok
}

/// The test bed's image overrides (scripts/testbed.env), parsed so tests need no shell.
pub fn testbed_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("scripts/testbed.env")).expect("read scripts/testbed.env");
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("run docker")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// One test's own instance of the sample stack: project `xt-<name>-<pid>-<n>`, volumes named
/// `<project>-postgres-data` etc. Dropping it removes containers, networks and those volumes.
pub struct TestStack {
    pub project: String,
    pub env: Vec<(String, String)>,
    /// Variables removed from the tool's environment (e.g. this machine's AWS_CA_BUNDLE, which
    /// rclone refuses).
    pub unset: Vec<String>,
    pub files: Vec<PathBuf>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A test's own stack from its own compose text, written into its own project directory;
/// `prefix_var` is set to the test's project name (the compose file names its volumes with it).
/// Bind the pair as `let (project, stack)`: locals drop in reverse, so the stack is taken down
/// while its compose file still exists.
pub fn stack_from(name: &str, compose: &str, prefix_var: &str) -> (TempDir, TestStack) {
    let project = TempDir::new(name);
    std::fs::write(project.0.join("compose.yaml"), compose).unwrap();
    let mut stack = TestStack::sample(name);
    stack.files = vec![project.0.join("compose.yaml")];
    stack.env.push((prefix_var.into(), stack.project.clone()));
    (project, stack)
}

impl TestStack {
    pub fn sample(name: &str) -> TestStack {
        let project = format!("xt-{name}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut env = testbed_env();
        env.push(("APP_VOLUME_PREFIX".into(), project.clone()));
        TestStack { project, env, unset: Vec::new(), files: vec![workspace().join("compose/compose.yaml")] }
    }

    /// One test's own instance of the every-engine stack (tests/fixtures/engines): volumes named
    /// `<project>-pg-data` etc., the MariaDB root password a fresh random secret in `secret_dir`.
    pub fn engines(name: &str, secret_dir: &Path) -> TestStack {
        let project = format!("xt-{name}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let secret = secret_dir.join("maria-root-password");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        std::fs::write(&secret, format!("root pw {nanos:x}")).unwrap();
        let mut env = testbed_env();
        env.push(("ENGINES_PREFIX".into(), project.clone()));
        env.push(("ENGINES_SECRET_FILE".into(), secret.to_string_lossy().into_owned()));
        let user_file = secret_dir.join("authdb-user");
        std::fs::write(&user_file, "auth").unwrap();
        env.push(("AUTHDB_USER_FILE".into(), user_file.to_string_lossy().into_owned()));
        let authdb = secret_dir.join("authdb-data");
        std::fs::create_dir_all(&authdb).unwrap();
        env.push(("AUTHDB_DATA".into(), authdb.to_string_lossy().into_owned()));
        TestStack { project, env, unset: Vec::new(), files: vec![fixtures().join("engines/compose.yaml")] }
    }

    pub fn volume(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.project)
    }

    /// Runs the xtask binary against this stack; returns (exit success, stdout, stderr).
    pub fn xtask(&self, args: &[&str]) -> (bool, String, String) {
        let (out, stderr) = self.run(args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    /// The xtask binary with this stack's `-p`, `-f`s and environment, then `args`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.arg("--project-name").arg(&self.project);
        for f in &self.files {
            cmd.arg("--file").arg(f);
        }
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for v in &self.unset {
            cmd.env_remove(v);
        }
        cmd
    }

    /// Runs [`TestStack::command`] to its end; fails the test on a panic in its stderr.
    fn run(&self, args: &[&str]) -> (std::process::Output, String) {
        let mut cmd = self.command(args);
        let out = cmd.output().expect("run xtask");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "xtask panicked: {stderr}");
        (out, stderr)
    }

    /// Runs the xtask binary against this stack; returns (exit code, stdout, stderr).
    pub fn xtask_code(&self, args: &[&str]) -> (i32, String, String) {
        let (out, stderr) = self.run(args);
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    pub fn xtask_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.xtask(args);
        assert!(ok, "xtask {args:?} failed:\n{err}");
        out
    }

    pub fn xtask_json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.xtask_ok(args)).expect("xtask printed valid JSON")
    }
}

impl TestStack {
    /// `docker compose` on this stack directly (not through the tool); must succeed.
    pub fn compose(&self, args: &[&str]) {
        let out = self.compose_cmd().args(args).output().unwrap();
        assert!(out.status.success(), "docker compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `docker compose --project-name P --file F` with this stack's environment, to add to.
    pub fn compose_cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["compose", "--project-name", &self.project, "--file"]).arg(&self.files[0]);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// `docker compose exec -T SERVICE CMD…` with `stdin`; must succeed; returns stdout.
    pub fn exec(&self, service: &str, cmd: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut c = self.compose_cmd();
        c.args(["exec", "-T", service]).args(cmd);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "exec {service} {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts the xtask binary on this stack in the background (stderr piped).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}

/// IDs of the tool's helper containers (running or not) that mount `volume`.
pub fn helpers_on(volume: &str) -> String {
    docker_ok(&["ps", "--all", "--quiet", "--filter", "label=xtask.helper=1", "--filter", &format!("volume={volume}")])
        .trim()
        .to_string()
}

/// `psql -At` as user app in a container; must succeed; returns the trimmed output.
pub fn psql(container: &str, db: &str, sql: &str) -> String {
    docker_ok(&[
        "exec",
        container,
        "psql",
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "app",
        "-d",
        db,
        "-c",
        sql,
    ])
    .trim()
    .to_string()
}

/// A test's own directory under the system temp dir, removed (and unmounted) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("xtask-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn names(&self) -> Vec<String> {
        std::fs::read_dir(&self.0).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let mut cmd = Command::new("docker");
        cmd.args(["compose", "--project-name", &self.project]);
        // An overlay in a test's TempDir may be gone already (dropped first): then Compose finds
        // the project's containers by its label alone.
        if self.files.iter().all(|f| f.exists()) {
            for f in &self.files {
                cmd.arg("--file").arg(f);
            }
        }
        cmd.args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let _ = cmd.output();
        // Anything left under this test's prefix (e.g. created by a helper) goes too; nothing else.
        let left = docker(&["volume", "ls", "--quiet", "--filter", &format!("name=^{}-", self.project)]);
        for v in String::from_utf8_lossy(&left.stdout).lines() {
            if v.starts_with(&format!("{}-", self.project)) {
                let _ = docker(&["volume", "rm", "--force", v]);
            }
        }
    }
}

/// What the sample stack's story preserves, read from the live stack: the media volume's files
/// (checksums, names, a mode and owner), the items table and its columns, the Redis keys.
#[derive(Debug, PartialEq)]
pub struct SampleState {
    pub files: String,
    pub items: String,
    pub schema: String,
    pub redis: Vec<String>,
}

/// How a test helper container mounts a volume.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    Write,
}

/// `sh -c SCRIPT` in a throwaway busybox container with `volume` at `/v`: its stdout (as is).
/// Panics with docker's stderr when it fails.
pub fn on_volume(volume: &str, access: Access, script: &str) -> String {
    let sh = xshell::Shell::new().unwrap();
    let mount = format!("{volume}:/v{}", if access == Access::ReadOnly { ":ro" } else { "" });
    let image = "xtask-test/busybox:local";
    let out =
        xshell::cmd!(sh, "docker run --rm -v {mount} {image} sh -c {script}").quiet().ignore_status().output().unwrap();
    assert!(out.status.success(), "`{script}` on volume {volume} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn sample_state(stack: &TestStack) -> SampleState {
    let db = format!("{}-db-1", stack.project);
    let redis = format!("{}-redis-1", stack.project);
    let media = stack.volume("backend-media");
    let files = on_volume(
        &media,
        Access::ReadOnly,
        "cd /v && find . -type f -exec sha256sum {} + | sort && find . | sort && stat -c '%n %a %u' ./upload.txt",
    );
    SampleState {
        files,
        items: psql(&db, "app", "SELECT md5(string_agg(i::text, ',' ORDER BY id)) FROM items i"),
        schema: psql(&db, "app", "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'items'"),
        redis: (0..5).map(|i| String::from_utf8_lossy(&docker(&["exec", &redis, "redis-cli", "GET", &format!("k{i}")]).stdout).trim().to_string()).collect(),
    }
}

/// Seeds the running sample stack: 500 rows (and a later column), an upload with an odd mode
/// and owner, a binary in a directory with a space, five Redis keys.
pub fn seed_sample(stack: &TestStack) {
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 500) g;");
    psql(&db, "app", "ALTER TABLE items ADD COLUMN migrated_at timestamptz DEFAULT now()");
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "sh", "-c", "echo 'an upload' > /app/media/upload.txt && chmod 0640 /app/media/upload.txt && chown 33:33 /app/media/upload.txt && mkdir -p '/app/media/sub dir' && head -c 100000 /dev/urandom > '/app/media/sub dir/photo.bin'"]);
    for i in 0..5 {
        let redis = format!("{}-redis-1", stack.project);
        docker_ok(&["exec", &redis, "redis-cli", "SET", &format!("k{i}"), &format!("v{i}")]);
    }
}

// --- Archives as a forger edits them ---------------------------------------------------------

/// One entry of an archive, editable.
#[derive(Clone)]
pub struct Entry {
    pub header: tar::Header,
    pub name: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

/// A clear archive's tar stream, decompressed as its first bytes say (zstd or gzip), by the
/// codec's standard decoder.
pub fn decompressed(path: &Path) -> Box<dyn Read> {
    let mut head = [0u8; 4];
    std::fs::File::open(path).unwrap().read_exact(&mut head).unwrap();
    let file = std::fs::File::open(path).unwrap();
    match head {
        [0x28, 0xb5, 0x2f, 0xfd] => Box::new(zstd::stream::read::Decoder::new(file).unwrap()),
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(file)),
        other => panic!("{}: neither zstd nor gzip: {other:02x?}", path.display()),
    }
}

/// A writer compressing as the archive name `path` says: zstd for `….tar.zst`, else gzip.
pub fn compressor(path: &Path) -> Box<dyn std::io::Write> {
    let file = std::fs::File::create(path).unwrap();
    if path.to_string_lossy().ends_with(".tar.zst") {
        Box::new(zstd::stream::write::Encoder::new(file, 1).unwrap().auto_finish())
    } else {
        Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()))
    }
}

pub fn load(path: &Path) -> Vec<Entry> {
    let mut a = tar::Archive::new(decompressed(path));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Entry {
            header: e.header().clone(),
            name: e.path_bytes().into_owned(),
            link: e.link_name_bytes().map(|l| l.into_owned()),
            data,
        });
    }
    out
}

/// Where a forger adds entries: after the last content entry, before the index (format version 4)
/// or `SHA256SUMS`.
pub fn content_end(entries: &[Entry]) -> usize {
    entries.iter().position(|x| x.name == b"index.jsonl" || x.name == b"SHA256SUMS").expect("SHA256SUMS")
}

/// Writes the entries with raw names (up to 100 bytes, so non-canonical names survive) and,
/// like a forger would, a SHA256SUMS that matches the regular files and (format version 4) an
/// index that lists the entries before it as they are.
pub fn save(path: &Path, mut entries: Vec<Entry>, rewrite_sums: bool) {
    if rewrite_sums {
        if let Some(i) = entries.iter().position(|e| e.name == xtask::archive::INDEX.as_bytes()) {
            entries[i].data = index_of(&entries[..i]);
        }
        let mut sums = Vec::new();
        for e in entries.iter().filter(|e| e.header.entry_type() == tar::EntryType::Regular && e.name != b"SHA256SUMS")
        {
            sums.extend_from_slice(format!("{:x}  ", <sha2::Sha256 as sha2::Digest>::digest(&e.data)).as_bytes());
            sums.extend_from_slice(&e.name);
            sums.push(b'\n');
        }
        // In its place: an entry appended after it stays after it.
        entries.iter_mut().find(|e| e.name == b"SHA256SUMS").expect("SHA256SUMS").data = sums;
    }
    let mut b = tar::Builder::new(compressor(path));
    append_all(&mut b, entries);
    // Dropped: the gzip or zstd stream ends (both finish on drop).
    drop(b.into_inner().unwrap());
}

fn append_all<W: std::io::Write>(b: &mut tar::Builder<W>, entries: Vec<Entry>) {
    for e in entries {
        let mut h = e.header.clone();
        if e.name.len() <= 100 && e.link.as_ref().is_none_or(|l| l.len() <= 100) {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name = [0; 100];
            gnu.name[..e.name.len()].copy_from_slice(&e.name);
            if let Some(l) = &e.link {
                gnu.linkname = [0; 100];
                gnu.linkname[..l.len()].copy_from_slice(l);
            }
            h.set_size(e.data.len() as u64);
            h.set_cksum();
            b.append(&h, &e.data[..]).unwrap();
        } else {
            let name = PathBuf::from(String::from_utf8(e.name).unwrap());
            match e.link {
                Some(l) => b.append_link(&mut h, &name, String::from_utf8(l).unwrap()).unwrap(),
                None => b.append_data(&mut h, &name, &e.data[..]).unwrap(),
            }
        }
    }
}

/// The index lines of `entries` as they will stand in the tar stream (written the same way):
/// what `verify` recomputes from the stream (archive/index.rs).
fn index_of(entries: &[Entry]) -> Vec<u8> {
    use xtask::archive::{grammar, index};
    let mut b = tar::Builder::new(Vec::new());
    append_all(&mut b, entries.to_vec());
    let tar = b.into_inner().unwrap();
    let (mut out, mut next_at) = (Vec::new(), 0u64);
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let (h, size) = (e.header().clone(), e.size());
        let Ok(kind) = grammar::kind_of(h.entry_type()) else { continue };
        let raw = e.path_bytes().into_owned();
        let name = grammar::canonical(&raw, kind == grammar::Kind::Dir).map(<[u8]>::to_vec).unwrap_or(raw);
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let sha256 = (kind == grammar::Kind::File).then(|| <sha2::Sha256 as sha2::Digest>::digest(&data).into());
        let (mode, uid, gid, mtime) =
            (h.mode().unwrap_or(0) & 0o7777, h.uid().unwrap_or(0), h.gid().unwrap_or(0), h.mtime().unwrap_or(0));
        let line = index::Entry { name, kind, size, mode, uid, gid, mtime, link, sha256, at: next_at };
        out.extend(index::to_line(&line));
        next_at = e.raw_file_position() + size.div_ceil(512) * 512;
    }
    out
}

/// The sizes of the files with no name that process `pid` holds open on `dir`'s filesystem
/// below `dir` (the dumps it spools: only its descriptor holds them).
pub fn spooled_by(pid: u32, dir: &Path) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?.to_string_lossy().into_owned();
        let ours = target.starts_with(dir.to_str()?) && target.ends_with("(deleted)");
        ours.then(|| std::fs::metadata(fd.path()).ok().map(|m| m.len())).flatten()
    })
    .collect()
}

/// An OpenSSH ed25519 key pair in `dir`: (private key file, public key line).
pub fn ssh_keypair(dir: &TempDir, name: &str) -> (PathBuf, String) {
    let key = dir.0.join(name);
    let ok = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&key).status();
    assert!(ok.unwrap().success());
    (key.clone(), std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string())
}

impl TestStack {
    /// Runs the xtask binary against this stack; returns (exit success, stdout as bytes, stderr).
    pub fn xtask_bytes(&self, args: &[&str]) -> (bool, Vec<u8>, String) {
        let (out, stderr) = self.run(args);
        (out.status.success(), out.stdout, stderr)
    }
}

/// The archive name `name` (`KIND_backup_YYYYMMDD_HHMMSS…`) with its time moved by `secs`.
pub fn shifted(name: &str, secs: i64) -> String {
    let at = name.find(|c: char| c.is_ascii_digit()).unwrap();
    let (prefix, stamp, rest) = (&name[..at], &name[at..at + 15], &name[at + 15..]);
    let when = format!("{} {}:{}:{} UTC {secs:+} seconds", &stamp[..8], &stamp[9..11], &stamp[11..13], &stamp[13..15]);
    let out = Command::new("date").args(["-u", "-d", &when, "+%Y%m%d_%H%M%S"]).output().unwrap();
    format!("{prefix}{}{rest}", String::from_utf8(out.stdout).unwrap().trim())
}
