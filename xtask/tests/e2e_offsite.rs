//! Off-site and encrypted, end to end: a real S3 server (SeaweedFS `weed mini` on 127.0.0.1,
//! with a test key so every request's signature is checked) and the sample stack on the live
//! engine. Push, push again (skipped), list, prune, `verify --remote --deep`, and `restore
//! --remote` after clean-all with the local archives gone: every file, table and key equal.
//! Encrypted: the round trip; no key, a wrong key and a flipped byte in the object (its sidecar
//! rewritten to match) refused with nothing changed. Wrong credentials and an unreachable
//! endpoint: clear errors, the local archive kept; an upload killed half-way leaves nothing
//! listed as good and the next push completes. The deduplicated tier: a restic repository in the
//! same bucket round-trips a backup after clean-all.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "XTASKTESTKEY";
const SECRET_KEY: &str = "xtask-test-secret-0123456789";
const BUCKET: &str = "xtask";

/// The `weed` binary: $XTASK_WEED, else on PATH, else where scripts/provision.sh puts it.
fn weed() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XTASK_WEED") {
        return Some(p.into());
    }
    let on_path = Command::new("sh").args(["-c", "command -v weed"]).output().ok()?;
    if on_path.status.success() {
        return Some(String::from_utf8_lossy(&on_path.stdout).trim().into());
    }
    let cache = std::env::var_os("XTASK_TESTBED_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache"));
        base.join("xtask-testbed")
    });
    let p = cache.join("seaweedfs-4.48/weed");
    p.is_file().then_some(p)
}

/// Everything the off-site tests need, or a skip (a failure under CI=true).
fn ready() -> bool {
    if !engine() {
        return false;
    }
    let tools = ["rclone", "age", "age-keygen"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    if tools && weed().is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("rclone, age or SeaweedFS missing under CI=true: run scripts/provision.sh");
    }
    eprintln!("SKIPPED: rclone, age or SeaweedFS missing (run scripts/provision.sh)");
    false
}

/// A SeaweedFS S3 server on 127.0.0.1 with one bucket and one key; stopped when dropped.
struct S3 {
    child: Child,
    port: u16,
    _dir: TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl S3 {
    fn start(name: &str) -> S3 {
        let dir = TempDir::new(&format!("s3-{name}"));
        let config = format!(
            r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.0.join("s3.json"), config).unwrap();
        std::fs::create_dir_all(dir.0.join("data")).unwrap();
        let p = free_ports(15);
        let flags = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "volume.port.public",
            "filer.port",
            "filer.port.grpc",
            "filer.port.public",
            "s3.port",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
        ];
        let mut args: Vec<String> = vec!["mini".into(), format!("-dir={}/data", dir.s())];
        args.extend(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false", "-admin.ui=false"].map(String::from));
        args.push(format!("-s3.config={}/s3.json", dir.s()));
        args.push(format!("-bucket={BUCKET}"));
        args.extend(flags.iter().zip(&p).map(|(f, port)| format!("-{f}={port}")));
        let log = std::fs::File::create(dir.0.join("weed.log")).unwrap();
        let child = Command::new(weed().unwrap())
            .args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start weed mini");
        let s3 = S3 { child, port: p[8], _dir: dir };
        s3.wait_ready();
        s3
    }

    /// Up when an unsigned request is answered (403) and the bucket exists for our key.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if rclone(self, &["lsjson", &self.root_remote()]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("SeaweedFS did not come up in 60 s");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket in rclone's on-the-fly syntax, for the test's own reads and writes.
    fn root_remote(&self) -> String {
        format!(":s3,provider=Other,env_auth=true,endpoint='{}',region=us-east-1:{BUCKET}", self.endpoint())
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rclone as the test runs it (the test key in its environment, AWS_CA_BUNDLE unset).
fn rclone(_s3: &S3, args: &[&str]) -> std::process::Output {
    Command::new("rclone")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap()
}

/// The sample stack with an overlay naming the server as remote `offsite` (and `dead`, an
/// endpoint nothing listens on), with `encrypt` recipients when given.
fn stack_with_remote(name: &str, s3: &S3, dir: &TempDir, recipient: Option<&str>) -> TestStack {
    stack_with_settings(name, s3, dir, recipient, "")
}

/// [`stack_with_remote`], with `more` (lines of the `x-xtask` block) added.
fn stack_with_settings(name: &str, s3: &S3, dir: &TempDir, recipient: Option<&str>, more: &str) -> TestStack {
    let mut stack = TestStack::sample(name);
    let encrypt = recipient.map(|r| format!("  encrypt: {{recipients: [\"{r}\"]}}\n")).unwrap_or_default() + more;
    let overlay = format!(
        "x-xtask:\n  remotes:\n    offsite: {{url: \"s3://{BUCKET}/backups\", endpoint: \"{}\", region: us-east-1}}\n    \
         dead: {{url: \"s3://{BUCKET}/backups\", endpoint: \"http://127.0.0.1:1\", region: us-east-1}}\n{encrypt}",
        s3.endpoint()
    );
    let path = dir.0.join("xtask-overlay.yaml");
    std::fs::write(&path, overlay).unwrap();
    stack.files.push(path);
    stack.env.push(("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()));
    stack.env.push(("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()));
    stack.unset.push("AWS_CA_BUNDLE".into());
    stack.unset.push("XTASK_AGE_IDENTITY".into());
    stack
}

/// The project's objects in the remote: name -> size.
fn objects(s3: &S3, project: &str) -> Vec<(String, u64)> {
    let out = rclone(s3, &["lsjson", "--files-only", &format!("{}/backups/{project}", s3.root_remote())]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]));
    v.as_array()
        .map(|a| a.iter().map(|o| (o["Name"].as_str().unwrap().to_string(), o["Size"].as_u64().unwrap())).collect())
        .unwrap_or_default()
}

fn remote_list(stack: &TestStack) -> Vec<serde_json::Value> {
    stack.xtask_json(&["backups", "--remote", "offsite", "--json"]).as_array().unwrap().clone()
}

fn sha256_file(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn push_list_prune_verify_and_restore_from_the_remote_after_losing_the_machine() {
    if !ready() {
        return;
    }
    let s3 = S3::start("story");
    let dir = TempDir::new("offsite-story");
    let backups = dir.0.join("backups");
    let b = backups.to_str().unwrap();
    let stack = stack_with_remote("offsite", &s3, &dir, None);
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let original = sample_state(&stack);

    // Backup --push: the archive is kept locally and lands in the remote with its sidecar.
    let first = stack.xtask_json(&["backup", "--output-dir", b, "--push", "offsite", "--json"]);
    let first_path = PathBuf::from(first["path"].as_str().unwrap());
    let first_name = first_path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(first_path.is_file(), "the local copy is kept by default");
    let objs = objects(&s3, &stack.project);
    let size = std::fs::metadata(&first_path).unwrap().len();
    assert!(objs.contains(&(first_name.clone(), size)), "{objs:?}");
    let sidecar = rclone(&s3, &["cat", &format!("{}/backups/{}/{first_name}.sha256", s3.root_remote(), stack.project)]);
    assert_eq!(String::from_utf8_lossy(&sidecar.stdout), format!("{}  {first_name}\n", sha256_file(&first_path)));

    // Push again: nothing uploaded (same size and SHA-256).
    let out = stack.xtask_ok(&["push", "--latest", "--to", "offsite", "--output-dir", b]);
    assert!(out.contains("uploaded 0, skipped 1"), "{out}");

    // A second full backup, pushed afterwards; prune keeps the newest one only.
    std::thread::sleep(Duration::from_millis(1100));
    let second = stack.xtask_json(&["backup", "--output-dir", b, "--json"]);
    let second_name = Path::new(second["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
    let out = stack.xtask_ok(&["push", "--all", "--to", "offsite", "--output-dir", b]);
    assert!(out.contains("uploaded 1, skipped 1"), "{out}");
    let listed = remote_list(&stack);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|a| a["complete"] == true));
    assert_eq!(listed[0]["file"], second_name.as_str(), "newest first");
    let keep_one = ["--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"];
    let dry = stack.xtask_ok(&[&["prune", "--remote", "offsite", "--dry-run"][..], &keep_one].concat());
    assert!(dry.contains(&format!("would remove {first_name}")), "{dry}");
    assert_eq!(remote_list(&stack).len(), 2, "--dry-run removes nothing");
    stack.xtask_ok(&[&["prune", "--remote", "offsite"][..], &keep_one].concat());
    let names: Vec<String> = objects(&s3, &stack.project).into_iter().map(|o| o.0).collect();
    assert_eq!(names.len(), 2, "the newest archive and its sidecar: {names:?}");
    assert!(names.contains(&second_name) && names.contains(&format!("{second_name}.sha256")));
    assert!(first_path.is_file(), "prune --remote leaves local archives alone");

    // The restore drill: verify --deep streams from the remote, no local copy made.
    let before: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".xtask-deep-verify-"))
        .collect();
    let out = stack.xtask_ok(&["verify", "--remote", "offsite", "--latest", "--deep", "--output-dir", b]);
    assert!(out.is_empty() || !out.contains("FAILED"), "{out}");
    let after: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".xtask-deep-verify-"))
        .collect();
    assert_eq!(before.len(), after.len(), "verify --remote wrote no archive locally (only the drill's record)");
    assert!(
        backups.join(format!(".xtask-deep-verify-{}.json", stack.project)).is_file(),
        "the drill is recorded for check"
    );

    // The machine is lost: local archives gone, every volume gone. Restore from the remote.
    std::fs::remove_dir_all(&backups).unwrap();
    stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", b]);
    stack.xtask_ok(&["restore", "--remote", "offsite", "--latest", "--yes", "--output-dir", b]);
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original, "every file, table and key came back from the remote");

    // Pull: --dry-run downloads nothing; then the same bytes as the remote's sidecar says, and
    // the local copy verifies.
    let dry = stack.xtask_ok(&["pull", "--latest", "--from", "offsite", "--output-dir", b, "--dry-run"]);
    assert!(dry.contains("would download"), "{dry}");
    assert!(!backups.join(&second_name).exists(), "--dry-run wrote nothing");
    let out = stack.xtask_ok(&["pull", "--latest", "--from", "offsite", "--output-dir", b]);
    let pulled = PathBuf::from(out.trim());
    assert_eq!(pulled.file_name().unwrap().to_str().unwrap(), second_name);
    let sidecar =
        rclone(&s3, &["cat", &format!("{}/backups/{}/{second_name}.sha256", s3.root_remote(), stack.project)]);
    assert!(String::from_utf8_lossy(&sidecar.stdout).starts_with(&sha256_file(&pulled)));
    stack.xtask_ok(&["verify", pulled.to_str().unwrap()]);
}

fn keypair(dir: &TempDir, name: &str) -> (PathBuf, String) {
    let key = dir.0.join(name);
    let out = Command::new("age-keygen").arg("-o").arg(&key).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success());
    let public = Command::new("age-keygen").arg("-y").arg(&key).output().unwrap();
    (key, String::from_utf8(public.stdout).unwrap().trim().to_string())
}

fn media_file(stack: &TestStack, path: &str) -> String {
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "cat", path]).trim().to_string()
}

#[test]
fn encrypted_archives_round_trip_and_refuse_a_wrong_key_or_a_forged_object() {
    if !ready() {
        return;
    }
    let s3 = S3::start("crypt");
    let dir = TempDir::new("offsite-crypt");
    let backups = dir.0.join("backups");
    let b = backups.to_str().unwrap();
    let (key, public) = keypair(&dir, "key.txt");
    let (wrong, _) = keypair(&dir, "wrong.txt");
    let mut stack = stack_with_remote("crypt", &s3, &dir, Some(&public));
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let original = sample_state(&stack);

    let summary = stack.xtask_json(&["backup", "--output-dir", b, "--push", "offsite", "--json"]);
    let path = PathBuf::from(summary["path"].as_str().unwrap());
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with(".tar.zst.age"), "{name}");
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "encrypted on disk");
    assert!(!bytes.windows(8).any(|w| w == b"metadata"), "no clear metadata on disk");

    // A clear archive (written with --no-encrypt) never leaves the host while encrypt is set:
    // named, the push is refused; --all leaves it out and says so.
    let clear = stack.xtask_json(&["backup-db", "--no-encrypt", "--output-dir", b, "--json"]);
    let clear = clear["path"].as_str().unwrap().to_string();
    let (ok, _, err) = stack.xtask(&["push", &clear, "--to", "offsite", "--output-dir", b]);
    assert!(!ok && err.contains("is not encrypted") && err.contains("never pushed"), "{err}");
    let (ok, _, err) = stack.xtask(&["push", "--all", "--to", "offsite", "--output-dir", b]);
    assert!(ok && err.contains("left out 1 archive(s) that are not encrypted"), "{err}");
    let clear_name = Path::new(&clear).file_name().unwrap().to_str().unwrap().to_string();
    assert!(!objects(&s3, &stack.project).iter().any(|o| o.0.starts_with(&clear_name)), "not in the bucket");
    std::fs::remove_file(&clear).unwrap();
    let _ = std::fs::remove_file(format!("{clear}.sig"));

    // Without the key: listed, but every read says how to give the key; nothing changes.
    let local = stack.xtask_json(&["backups", "--output-dir", b, "--json"]);
    assert_eq!(local[0]["encrypted"], true, "{local}");
    let (ok, _, err) = stack.xtask(&["verify", path.to_str().unwrap()]);
    assert!(!ok && err.contains("XTASK_AGE_IDENTITY"), "{err}");
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "sh", "-c", "echo changed > /app/media/upload.txt"]);
    let (ok, _, err) = stack.xtask(&["restore", "--remote", "offsite", "--latest", "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("XTASK_AGE_IDENTITY"), "{err}");

    // A wrong key: refused, nothing changed.
    stack.env.push(("XTASK_AGE_IDENTITY".into(), wrong.to_string_lossy().into_owned()));
    stack.unset.retain(|v| v != "XTASK_AGE_IDENTITY");
    let (ok, _, err) = stack.xtask(&["restore", "--remote", "offsite", "--latest", "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("no identity matched"), "{err}");
    assert_eq!(media_file(&stack, "/app/media/upload.txt"), "changed", "a refused restore changed nothing");

    // The right key: local and remote verify, and the remote restores.
    stack.env.retain(|(k, _)| k != "XTASK_AGE_IDENTITY");
    stack.env.push(("XTASK_AGE_IDENTITY".into(), key.to_string_lossy().into_owned()));
    stack.xtask_ok(&["verify", path.to_str().unwrap()]);
    stack.xtask_ok(&["verify", "--remote", "offsite", "--latest"]);

    // A forged object: one byte flipped, its sidecar rewritten to match. age refuses it.
    let mut forged = bytes.clone();
    let at = forged.len() / 2;
    forged[at] ^= 0x01;
    let forged_path = dir.0.join(&name);
    std::fs::write(&forged_path, &forged).unwrap();
    let folder = format!("{}/backups/{}", s3.root_remote(), stack.project);
    assert!(rclone(&s3, &["copyto", forged_path.to_str().unwrap(), &format!("{folder}/{name}")]).status.success());
    let sidecar = dir.0.join("sidecar");
    std::fs::write(&sidecar, format!("{}  {name}\n", sha256_file(&forged_path))).unwrap();
    assert!(rclone(&s3, &["copyto", sidecar.to_str().unwrap(), &format!("{folder}/{name}.sha256")]).status.success());
    // Not what this host pushed: never --latest; named, age refuses it.
    let (ok, _, err) = stack.xtask(&["verify", "--remote", "offsite", "--latest"]);
    assert!(!ok && err.contains("not pushed from this host"), "{err}");
    let (ok, _, err) = stack.xtask(&["verify", "--remote", "offsite", &name]);
    assert!(!ok && err.contains("failed to decrypt and authenticate"), "{err}");
    let (ok, _, err) = stack.xtask(&["restore", "--remote", "offsite", &name, "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("authenticate"), "{err}");
    assert_eq!(media_file(&stack, "/app/media/upload.txt"), "changed", "a forged archive changed nothing");

    // The genuine local archive restores everything.
    stack.xtask_ok(&["restore", path.to_str().unwrap(), "--yes", "--output-dir", b]);
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original);
}

#[test]
fn remote_failures_are_clear_keep_the_local_archive_and_a_killed_push_is_never_listed_good() {
    if !ready() {
        return;
    }
    let s3 = S3::start("faults");
    let dir = TempDir::new("offsite-faults");
    let backups = dir.0.join("backups");
    let b = backups.to_str().unwrap();
    let mut stack = stack_with_remote("faults", &s3, &dir, None);
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    // 24 MiB that does not compress, so an upload throttled to 2 MiB/s takes seconds.
    docker_ok(&[
        "exec",
        &format!("{}-backend-1", stack.project),
        "sh",
        "-c",
        "head -c 25165824 /dev/urandom > /app/media/big.bin",
    ]);

    // Wrong credentials: refused by the server's signature check; the archive stays local.
    stack.env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    stack.env.push(("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into()));
    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", b, "--push", "offsite"]);
    assert!(!ok, "{out}");
    assert!(err.contains("SignatureDoesNotMatch") || err.contains("403"), "{err}");
    assert!(err.contains("it is kept at"), "{err}");
    let local = err.split("it is kept at ").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    assert!(Path::new(&local).is_file(), "the local archive is kept: {local}");
    stack.xtask_ok(&["verify", &local]);
    stack.env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    stack.env.push(("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()));
    assert!(objects(&s3, &stack.project).is_empty(), "nothing reached the remote");

    // An unreachable endpoint: a clear error within seconds, not minutes.
    let t = Instant::now();
    let (ok, _, err) = stack.xtask(&["push", &local, "--to", "dead"]);
    assert!(!ok && err.contains("connection refused"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(90), "gave up after {:?}", t.elapsed());

    // A push killed half-way: nothing listed as complete; the next push completes.
    stack.env.push(("RCLONE_BWLIMIT".into(), "2M".into()));
    let mut child = stack.spawn(&["push", &local, "--to", "offsite"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the throttled push was still running");
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let listed = remote_list(&stack);
    assert!(listed.iter().all(|a| a["complete"] == false), "an interrupted push is never complete: {listed:?}");
    stack.env.retain(|(k, _)| k != "RCLONE_BWLIMIT");
    stack.xtask_ok(&["push", &local, "--to", "offsite"]);
    let listed = remote_list(&stack);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["complete"], true, "{listed:?}");
    stack.xtask_ok(&["verify", "--remote", "offsite", "--latest"]);

    // A broken download (the object cut to half, its sidecar intact): restore refuses, the
    // stack is as it was.
    let name = Path::new(&local).file_name().unwrap().to_str().unwrap().to_string();
    let half = dir.0.join("half");
    let bytes = std::fs::read(&local).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let folder = format!("{}/backups/{}", s3.root_remote(), stack.project);
    assert!(rclone(&s3, &["copyto", half.to_str().unwrap(), &format!("{folder}/{name}")]).status.success());
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "sh", "-c", "echo after > /app/media/upload.txt"]);
    let (ok, _, err) = stack.xtask(&["restore", "--remote", "offsite", "--latest", "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("replaced"), "{err}");
    assert_eq!(media_file(&stack, "/app/media/upload.txt"), "after", "a broken download changed nothing");
}

/// Writes `data` as the project's object `name` in the bucket, as anyone with write access could.
fn put(s3: &S3, project: &str, name: &str, data: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("rclone")
        .args(["rcat", &format!("{}/backups/{project}/{name}", s3.root_remote())])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success(), "rclone rcat {name}");
}

/// `full_backup_YYYYMMDD_HHMMSS.tar.zst` for `name`'s time plus `secs`.
fn later_name(name: &str, secs: i64) -> String {
    shifted(name, secs)
}

/// Objects the tool cannot authenticate (one-byte junk with matching sidecars, named after the
/// genuine archives) never take a retention slot and are never removed; a sidecar naming
/// another archive counts for nothing and cannot make that genuine archive fail.
#[test]
fn a_hostile_bucket_can_neither_erase_nor_poison_genuine_archives() {
    if !ready() {
        return;
    }
    let s3 = S3::start("hostile");
    let dir = TempDir::new("offsite-hostile");
    let b = dir.0.join("backups");
    let b = b.to_str().unwrap();
    let stack = stack_with_remote("hostile", &s3, &dir, None);
    stack.xtask_ok(&["up"]);
    let mut genuine = Vec::new();
    for _ in 0..2 {
        let out = stack.xtask_json(&["backup", "--output-dir", b, "--push", "offsite", "--json"]);
        genuine.push(Path::new(out["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(1100));
    }
    std::thread::sleep(Duration::from_secs(7));
    // Three junk objects dated after the genuine ones (but not in the future), sidecars matching.
    let junk: Vec<String> = (1..=3).map(|s| later_name(&genuine[1], s)).collect();
    for name in &junk {
        put(&s3, &stack.project, name, b"x");
        put(&s3, &stack.project, &format!("{name}.sha256"), format!("{:x}  {name}\n", Sha256::digest(b"x")).as_bytes());
    }
    // A poisoning sidecar: the junk's own sidecar slot holds a line for the first genuine archive.
    let poison = later_name(&genuine[1], -1000);
    put(&s3, &stack.project, &poison, b"y");
    put(&s3, &stack.project, &format!("{poison}.sha256"), format!("{}  {}\n", "0".repeat(64), genuine[0]).as_bytes());

    // Junk that passes the size and header checks (200 bytes that start like the stream their
    // name says: zstd for the genuine archives' .tar.zst, gzip for a .tar.gz), each with its own
    // sidecar, dated after the genuine archives, and one dated 4 minutes ahead: this host did
    // not push them, so they never take a slot from what it did, nor become --latest.
    let starting = |magic: &[u8]| {
        let mut bytes = magic.to_vec();
        bytes.resize(200, 0);
        bytes
    };
    let (zst, gz) = (starting(&[0x28, 0xb5, 0x2f, 0xfd]), starting(&[0x1f, 0x8b, 0x08]));
    let ahead = Command::new("date").args(["-u", "-d", "+4 minutes", "+%Y%m%d_%H%M%S"]).output().unwrap();
    let ahead = format!("full_backup_{}.tar.gz", String::from_utf8(ahead.stdout).unwrap().trim());
    let plausible: Vec<String> = (4..=6).map(|s| later_name(&genuine[1], s)).chain([ahead.clone()]).collect();
    for name in &plausible {
        let bytes = if name.ends_with(".tar.gz") { &gz } else { &zst };
        put(&s3, &stack.project, name, bytes);
        let sidecar = format!("{:x}  {name}\n", Sha256::digest(bytes));
        put(&s3, &stack.project, &format!("{name}.sha256"), sidecar.as_bytes());
    }
    let listed = remote_list(&stack);
    for name in &plausible[..3] {
        let a = listed.iter().find(|a| a["file"] == name.as_str()).unwrap();
        assert_eq!(a["known"], false, "not pushed from this host: {a}");
    }
    let future = listed.iter().find(|a| a["file"] == ahead.as_str()).unwrap();
    assert_eq!(future["complete"], false, "a name dated in the future is never good: {future}");
    for g in &genuine {
        assert_eq!(listed.iter().find(|a| a["file"] == g.as_str()).unwrap()["known"], true, "{g}");
    }
    let text = stack.xtask_ok(&["backups", "--remote", "offsite"]);
    assert!(text.contains("NOT KNOWN (not pushed from this host)"), "{text}");
    let (ok, out, err) = stack.xtask(&["verify", "--remote", "offsite", "--latest", "--output-dir", b]);
    assert!(ok && (out.clone() + &err).contains(&genuine[1]), "--latest is the newest this host pushed: {out}{err}");

    let keep_two = ["--keep-last", "2", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"];
    let out = stack.xtask_ok(&[&["prune", "--remote", "offsite"][..], &keep_two].concat());
    assert!(out.contains("not pushed from this host"), "{out}");
    let names: Vec<String> = objects(&s3, &stack.project).into_iter().map(|o| o.0).collect();
    for g in &genuine {
        assert!(names.contains(g) && names.contains(&format!("{g}.sha256")), "{g} kept: {names:?}\n{out}");
    }
    for j in junk.iter().chain([&poison]).chain(&plausible) {
        assert!(names.contains(j), "{j} is not ours to remove either: {names:?}");
    }
    assert!(out.contains("too small to be an archive"), "{out}");
    let listed = remote_list(&stack);
    let first = listed.iter().find(|a| a["file"] == genuine[0].as_str()).unwrap();
    assert_eq!(first["complete"], true, "the poisoning sidecar changed nothing: {first}");
    let poisoned = listed.iter().find(|a| a["file"] == poison.as_str()).unwrap();
    assert!(poisoned["sidecar_refused"].as_str().unwrap().contains("not its own archive"), "{poisoned}");
    stack.xtask_ok(&["verify", "--remote", "offsite", &genuine[0], "--output-dir", b]);

    // --no-keep-local: the archive is in the remote, complete, and no longer here.
    let out = stack.xtask_json(&["backup-db", "--output-dir", b, "--push", "offsite", "--no-keep-local", "--json"]);
    let gone = PathBuf::from(out["path"].as_str().unwrap());
    let name = gone.file_name().unwrap().to_str().unwrap().to_string();
    assert!(!gone.exists(), "the local copy was removed after the upload");
    assert_eq!((&out["local"], &out["remote"]), (&serde_json::json!(false), &serde_json::json!("offsite")), "{out}");
    let names: Vec<String> = objects(&s3, &stack.project).into_iter().map(|o| o.0).collect();
    assert!(names.contains(&name) && names.contains(&format!("{name}.sha256")), "{names:?}");
}

/// Makes a forged archive's signature file from its name and path.
type SignWith<'a> = dyn Fn(&str, &Path) -> String + 'a;

/// Signs `statement` with `key` as the tool's signature files hold it (statement, then armor).
fn signature_file(key: &Path, statement: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "xtask-archive", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(statement.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("{statement}{}", String::from_utf8(out.stdout).unwrap())
}

fn statement(file: &str, path: &Path, project: &str) -> String {
    let size = std::fs::metadata(path).unwrap().len();
    format!("xtask-archive-signature 1\nfile {file}\nsize {size}\nsha256 {}\nproject {project}\n", sha256_file(path))
}

/// With `x-xtask.sign` (and `encrypt`): backups are signed locally and in the remote; an
/// unsigned archive, one signed by a key the compose file does not allow, one whose signature
/// vouches for another archive and a clear one are refused by verify, restore and `--latest`
/// (nothing changes), and read with `--allow-unsigned` / `--allow-unencrypted`.
#[test]
fn with_sign_set_only_archives_signed_by_an_allowed_key_are_read() {
    if !ready() {
        return;
    }
    let s3 = S3::start("sign");
    let dir = TempDir::new("offsite-sign");
    let b = dir.0.join("backups");
    let b = b.to_str().unwrap();
    let (good, good_pub) = ssh_keypair(&dir, "good");
    let (evil, _) = ssh_keypair(&dir, "evil");
    let (age_key, recipient) = keypair(&dir, "age.txt");
    let sign = format!("  sign: {{allowed_signers: [\"{good_pub}\"]}}\n");
    let mut stack = stack_with_settings("sign", &s3, &dir, Some(&recipient), &sign);
    stack.unset.retain(|v| v != "XTASK_AGE_IDENTITY");
    stack.env.push(("XTASK_AGE_IDENTITY".into(), age_key.to_string_lossy().into_owned()));
    stack.xtask_ok(&["up", "db"]);

    // No signing key: the backup is refused before anything is written.
    let (ok, _, err) = stack.xtask(&["backup-db", "--output-dir", b]);
    assert!(!ok && err.contains("XTASK_SIGNING_KEY"), "{err}");
    stack.env.push(("XTASK_SIGNING_KEY".into(), good.to_string_lossy().into_owned()));
    let out = stack.xtask_json(&["backup-db", "--output-dir", b, "--push", "offsite", "--json"]);
    let genuine = PathBuf::from(out["path"].as_str().unwrap());
    let name = genuine.file_name().unwrap().to_str().unwrap().to_string();
    let sig = std::fs::read_to_string(format!("{}.sig", genuine.display())).unwrap();
    assert!(sig.starts_with(&statement(&name, &genuine, &stack.project)), "{sig}");
    assert!(objects(&s3, &stack.project).iter().any(|o| o.0 == format!("{name}.sig")), "the signature is pushed");
    stack.xtask_ok(&["verify", genuine.to_str().unwrap()]);
    stack.xtask_ok(&["verify", "--remote", "offsite", &name]);

    // Forgeries, each newer than the genuine archive (so `--latest` would pick it).
    std::thread::sleep(Duration::from_secs(4));
    let forge = |n: u32, sig: Option<&SignWith<'_>>| -> PathBuf {
        let file = shifted(&name, n as i64);
        let path = Path::new(b).join(&file);
        std::fs::copy(&genuine, &path).unwrap();
        if let Some(sig) = sig {
            std::fs::write(format!("{}.sig", path.display()), sig(&file, &path)).unwrap();
        }
        path
    };
    let project = stack.project.clone();
    let unsigned = forge(1, None);
    let by_evil = forge(2, Some(&|f, p| signature_file(&evil, &statement(f, p, &project))));
    let sig_of_other = forge(3, Some(&|_, _| sig.clone()));
    for (path, why) in [
        (&unsigned, "no signature"),
        (&by_evil, "not valid for this archive"),
        (&sig_of_other, "vouches for another archive"),
    ] {
        let p = path.to_str().unwrap();
        let (ok, _, err) = stack.xtask(&["verify", p]);
        assert!(!ok && err.contains(why) && err.contains("--allow-unsigned"), "{p}: {err}");
        let (ok, _, err) = stack.xtask(&["restore", p, "--yes", "--output-dir", b]);
        assert!(!ok && err.contains(why), "{p}: {err}");
        let (ok, _, err) = stack.xtask(&["verify", p, "--allow-unsigned"]);
        assert!(ok && err.contains("--allow-unsigned"), "read with the flag, loudly: {err}");
    }
    let (ok, _, err) = stack.xtask(&["verify", "--latest", "--output-dir", b]);
    assert!(ok && err.contains("skip") && err.contains(by_evil.file_name().unwrap().to_str().unwrap()), "{err}");

    // A clear (but signed) archive while encryption is set.
    let clear = stack.xtask_json(&["backup-db", "--output-dir", b, "--no-encrypt", "--json"]);
    let clear = clear["path"].as_str().unwrap();
    let (ok, _, err) = stack.xtask(&["verify", clear]);
    assert!(!ok && err.contains("not encrypted") && err.contains("--allow-unencrypted"), "{err}");
    stack.xtask_ok(&["verify", clear, "--allow-unencrypted"]);

    // The remote: an unsigned copy pushed there is listed untrusted and never "latest".
    stack.xtask_ok(&["push", unsigned.to_str().unwrap(), "--to", "offsite", "--output-dir", b]);
    let listed = remote_list(&stack);
    let copy = listed.iter().find(|a| a["file"] == unsigned.file_name().unwrap().to_str().unwrap()).unwrap();
    assert!(copy["untrusted"].as_str().unwrap().contains("no signature"), "{copy}");
    let (ok, _, err) = stack.xtask(&["verify", "--remote", "offsite", "--latest"]);
    assert!(ok && err.contains("skip"), "the genuine one is the latest trusted: {err}");
}

/// The deduplicated tier on the S3 server: a restic repository in the bucket (restic's own S3
/// client, the same credentials), a backup pushed as a snapshot, restored after clean-all.
#[test]
fn a_restic_repository_in_the_bucket_round_trips() {
    if !ready() {
        return;
    }
    let restic = Command::new("sh").args(["-c", "command -v restic"]).output().is_ok_and(|o| o.status.success());
    if !restic {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "restic missing under CI=true: run scripts/provision.sh");
        return;
    }
    let s3 = S3::start("restic");
    let dir = TempDir::new("s3restic");
    let password = dir.0.join("restic.pw");
    std::fs::write(&password, "the bucket repository's password\n").unwrap();
    let vault = format!(
        "    vault: {{url: \"restic:s3:{}/{BUCKET}/restic\", password_file: \"{}\"}}\n",
        s3.endpoint(),
        password.display()
    );
    let mut stack = stack_with_settings("s3restic", &s3, &dir, None, &vault);
    stack.env.push(("AWS_DEFAULT_REGION".into(), "us-east-1".into()));
    let archives = TempDir::new("s3restic-archives");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    stack.xtask_ok(&["backup", "--push", "vault", "--yes", "--output-dir", archives.s()]);
    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    assert_eq!(listed[0]["complete"], true, "{listed}");
    let before = sample_state(&stack);
    std::fs::remove_dir_all(&archives.0).unwrap();
    stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", archives.s()]);
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", archives.s()]);
    stack.xtask_ok(&["up", "backend"]);
    assert_eq!(sample_state(&stack), before, "rows, files and keys back from the bucket's repository");
}

/// The archive at `path` (seekable zstd) re-made consistent with `from` replaced by `to` (same
/// length) in the file `entry`: its index line, `SHA256SUMS` and footer all matching, as someone
/// who can write the archive but has no signing key could make it.
fn forge_seekable(path: &Path, entry: &str, from: &[u8], to: &[u8]) {
    use std::io::{Read, Write};
    use xtask::archive::{format_sums, frames::FrameWriter, index, INDEX};
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(path).unwrap()).unwrap().read_to_end(&mut plain).unwrap();
    let mut parts: Vec<(tar::Header, Vec<u8>, Vec<u8>)> = Vec::new();
    for e in tar::Archive::new(&plain[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let name = e.path_bytes().into_owned();
        if name == entry.as_bytes() {
            data = String::from_utf8(data)
                .unwrap()
                .replace(std::str::from_utf8(from).unwrap(), std::str::from_utf8(to).unwrap())
                .into_bytes();
        }
        parts.push((e.header().clone(), name, data));
    }
    let n = parts.len();
    let digest = |d: &[u8]| -> [u8; 32] { Sha256::digest(d).into() };
    let new_sha = digest(&parts.iter().find(|p| p.1 == entry.as_bytes()).unwrap().2);
    let mut lines: Vec<index::Entry> = parts[n - 2]
        .2
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| index::parse_line(l).unwrap())
        .collect();
    lines.iter_mut().find(|l| l.name == entry.as_bytes()).unwrap().sha256 = Some(new_sha);
    parts[n - 2].2 = lines.iter().flat_map(index::to_line).collect();
    let sums: Vec<(Vec<u8>, [u8; 32])> = parts[..n - 1]
        .iter()
        .filter(|p| p.0.entry_type() == tar::EntryType::Regular)
        .map(|p| (p.1.clone(), digest(&p.2)))
        .collect();
    assert!(sums.iter().any(|s| s.0 == INDEX.as_bytes()));
    parts[n - 1].2 = format_sums(&sums);
    let mut b = tar::Builder::new(Vec::new());
    let mut starts = Vec::new();
    for (h, name, data) in &mut parts {
        starts.push(b.get_ref().len());
        h.set_size(data.len() as u64);
        let name = os_path(name);
        if matches!(h.entry_type(), tar::EntryType::Symlink | tar::EntryType::Link) {
            let target = h.link_name().unwrap().unwrap().into_owned();
            b.append_link(h, &name, target).unwrap();
        } else {
            b.append_data(h, &name, &data[..]).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    let mut w = FrameWriter::new(Vec::new(), 3, 1).unwrap();
    for (i, &at) in starts.iter().enumerate() {
        w.boundary().unwrap();
        w.write_all(&tar[at..starts.get(i + 1).copied().unwrap_or(tar.len())]).unwrap();
    }
    std::fs::write(path, w.finish(starts[n - 2] as u64, starts[n - 1] as u64).unwrap()).unwrap();
}

fn os_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// A signed seekable archive is read by its index (the signature names it), locally and from the
/// S3 server by ranged reads; the same archive re-made consistent by someone without the key
/// (one file's bytes, its index line, SHA256SUMS, the footer), its signature kept, is refused by
/// `ls` and `cat` in both places before anything is printed.
#[test]
fn a_signed_archive_is_read_by_its_index_locally_and_from_s3_and_a_forged_one_is_refused() {
    if !ready() {
        return;
    }
    let s3 = S3::start("index");
    let dir = TempDir::new("offsite-index");
    let b = dir.0.join("backups");
    let b = b.to_str().unwrap();
    let (key, public) = ssh_keypair(&dir, "signer");
    let sign = format!("  sign: {{allowed_signers: [\"{public}\"]}}\n");
    let mut stack = stack_with_settings("index", &s3, &dir, None, &sign);
    stack.env.push(("XTASK_SIGNING_KEY".into(), key.to_string_lossy().into_owned()));
    stack.xtask_ok(&["up"]);
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "sh", "-c", "echo genuine > /app/media/note.txt"]);
    let out = stack.xtask_json(&["backup", "--output-dir", b, "--push", "offsite", "--json"]);
    let path = PathBuf::from(out["path"].as_str().unwrap());
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let sig = std::fs::read_to_string(format!("{}.sig", path.display())).unwrap();
    assert!(sig.lines().nth(5).unwrap().starts_with("index "), "the signature names the index: {sig}");
    let note = format!("{}/note.txt", stack.volume("backend-media"));
    let local = path.to_str().unwrap();
    let reads = [vec!["cat", local, &note], vec!["cat", "--remote", "offsite", &name, &note]];
    for args in &reads {
        let (ok, bytes, err) = stack.xtask_bytes(args);
        assert!(ok && bytes == b"genuine\n" && err.contains("read by its index"), "{args:?}: {err}");
    }
    let (ok, listed, err) = stack.xtask(&["ls", "--remote", "offsite", &name, &note]);
    assert!(ok && listed.trim() == note && err.contains("read by its index"), "{listed}{err}");

    // Forged locally, then pushed over the genuine object (with its sidecar re-made: the bucket
    // is writable), the signature left as it was.
    forge_seekable(&path, &format!("volumes/{note}"), b"genuine", b"forged!");
    let remote_obj = format!("{}/backups/{}/{name}", s3.root_remote(), stack.project);
    assert!(rclone(&s3, &["copyto", local, &remote_obj]).status.success());
    let sidecar = dir.0.join("sidecar");
    std::fs::write(&sidecar, format!("{}  {name}\n", sha256_file(&path))).unwrap();
    assert!(rclone(&s3, &["copyto", sidecar.to_str().unwrap(), &format!("{remote_obj}.sha256")]).status.success());
    for args in reads.iter().chain([&vec!["ls", local]]) {
        let (ok, bytes, err) = stack.xtask_bytes(args);
        assert!(!ok && bytes.is_empty() && err.contains("untrusted"), "{args:?}: {err}");
    }
}
