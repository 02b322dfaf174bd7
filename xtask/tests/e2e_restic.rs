//! The deduplicated tier, end to end: real restic repositories (a local path) and the sample
//! stack on the live engine. Push creates the repository only with `--yes`; a backup pushed as a
//! snapshot of its tar stream comes back identical after clean-all (`restore --remote --latest`),
//! `verify --remote` reads it through the grammar and `restic check`, `pull` makes a local archive
//! that verifies; a second backup adds only
//! what changed (restic's raw data measured); prune touches only this project's snapshots; a
//! wrong password is refused with nothing changed; a push killed half-way (the tool, or restic)
//! leaves no snapshot that counts, and the previous one stays the latest and restorable.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

fn ready() -> bool {
    if !engine() {
        return false;
    }
    if Command::new("sh").args(["-c", "command -v restic"]).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("restic missing under CI=true: run scripts/provision.sh");
    }
    eprintln!("SKIPPED: restic missing (run scripts/provision.sh)");
    false
}

/// A repository of the test's own: its path and password file.
struct Repo {
    path: PathBuf,
    password: PathBuf,
}

impl Repo {
    fn new(dir: &TempDir) -> Repo {
        let password = dir.0.join("restic.pw");
        std::fs::write(&password, "a test repository password\n").unwrap();
        Repo { path: dir.0.join("repo"), password }
    }

    /// `restic ARGS` on this repository (the test's own look, beside the tool's).
    fn restic(&self, args: &[&str]) -> String {
        let out = Command::new("restic")
            .args(args)
            .env("RESTIC_REPOSITORY", &self.path)
            .env("RESTIC_PASSWORD_FILE", &self.password)
            .output()
            .unwrap();
        assert!(out.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates the repository with the chunker parameters of the committed fixture
    /// (`tests/fixtures/restic-chunker`: only its config and key): every new restic repository
    /// draws a random chunker polynomial, so without this the bytes a small change adds vary
    /// from repository to repository, and a test of deduplication would pass or fail by chance.
    fn init_with_fixed_chunker(&self) {
        let fixture = fixtures().join("restic-chunker");
        let from_password = self.path.with_file_name("fixture.pw");
        std::fs::write(&from_password, "xtask test chunker\n").unwrap();
        let fixture_s = fixture.to_str().unwrap();
        let from_s = from_password.to_str().unwrap();
        self.restic(&["init", "--from-repo", fixture_s, "--from-password-file", from_s, "--copy-chunker-params"]);
        let config = |args: &[&str]| -> serde_json::Value {
            serde_json::from_str(&self.restic(&[args, &["cat", "config"]].concat())).unwrap()
        };
        let fixed = config(&["--repo", fixture_s, "--password-file", from_s]);
        assert_eq!(config(&[])["chunker_polynomial"], fixed["chunker_polynomial"], "the fixture's chunker");
    }

    fn raw_bytes(&self) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.restic(&["stats", "--mode", "raw-data", "--json"])).unwrap();
        v["total_size"].as_u64().unwrap()
    }

    /// Snapshots' tags, per snapshot.
    fn tags(&self) -> Vec<Vec<String>> {
        let v: serde_json::Value = serde_json::from_str(&self.restic(&["snapshots", "--json"])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .collect()
    }
}

/// `n` bytes of a fixed pseudo-random sequence (xorshift64*): incompressible, the same every run.
fn pseudo_random_bytes(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Whether a process whose command line matches `pattern` (pgrep -f) runs.
fn running(pattern: &str) -> bool {
    Command::new("pgrep").args(["-f", pattern]).output().is_ok_and(|o| o.status.success())
}

/// Whether such a process appears within 10 s.
fn appears(pattern: &str) -> bool {
    (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        running(pattern)
    })
}

/// The sample stack with remote `vault` = `repo` (password in `password`).
fn stack_with_vault(name: &str, dir: &TempDir, repo: &Path, password: &Path) -> TestStack {
    let mut stack = TestStack::sample(name);
    let overlay = format!(
        "x-xtask:\n  remotes:\n    vault: {{url: \"restic:{}\", password_file: \"{}\"}}\n",
        repo.display(),
        password.display()
    );
    let path = dir.0.join(format!("vault-{name}.yaml"));
    std::fs::write(&path, overlay).unwrap();
    stack.files.push(path);
    stack.unset.extend(["RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY"].map(String::from));
    stack
}

#[test]
fn a_backup_in_a_restic_repository_comes_back_identical_and_the_next_adds_only_what_changed() {
    if !ready() {
        return;
    }
    let dir = TempDir::new("vault");
    let repo = Repo::new(&dir);
    let stack = stack_with_vault("vault", &dir, &repo.path, &repo.password);
    let archives = TempDir::new("vault-archives");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    let backend = format!("{}-backend-1", stack.project);
    // 20 MiB that do not compress, the same every run: with the fixed chunker below, the
    // chunks they are cut into are the same every run too.
    let photos = dir.0.join("photos.bin");
    std::fs::write(&photos, pseudo_random_bytes(20 << 20)).unwrap();
    docker_ok(&["cp", photos.to_str().unwrap(), &format!("{backend}:/app/media/photos.bin")]);

    // No repository yet: created only when asked, and asked before anything is written.
    let (ok, _, err) = stack.xtask(&["backup", "--push", "vault", "--output-dir", archives.s()]);
    assert!(!ok && err.contains("--yes"), "a missing repository is named with how to create it: {err}");
    // (The backup directory's lock is taken first: the repository is asked while the sources are.)
    let written: Vec<String> = match archives.0.exists() {
        true => archives.names().into_iter().filter(|n| !n.ends_with(".lock")).collect(),
        false => Vec::new(),
    };
    assert!(written.is_empty(), "nothing was written: {written:?}");
    // Read before it exists: named as missing, with how to create it.
    let (ok, _, err) = stack.xtask(&["backups", "--remote", "vault"]);
    assert!(!ok && err.contains("does not exist yet") && err.contains("--yes"), "{err}");
    stack.xtask_ok(&["backup", "--output-dir", archives.s()]);
    // Created here, with fixed chunker parameters (creation by `--yes` is the next test's).
    repo.init_with_fixed_chunker();
    stack.xtask_ok(&["push", "--latest", "--to", "vault", "--output-dir", archives.s()]);
    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["complete"], true, "{listed}");
    let first = repo.raw_bytes();
    assert!(first > 20_000_000, "the first snapshot holds the data: {first} bytes");

    // One small change, then a second backup pushed: only the chunks around what changed are
    // added (restic's chunks are 0.5 to 8 MiB: the metadata at the start, the new file and the
    // checksums at the end, each a chunk), not the 20 MiB again.
    // Pushed while it is written, with no local copy at all (--no-keep-local): the tar stream
    // goes only into restic.
    docker_ok(&["exec", &backend, "sh", "-c", "echo 'a new upload' > /app/media/new.txt"]);
    let local_before = archives.names();
    let (ok, out, err) = stack.xtask(&["backup", "--push", "vault", "--no-keep-local", "--output-dir", archives.s()]);
    assert!(ok && err.contains("while it was written"), "{err}");
    assert!(
        out.contains(".tar.zst in remote vault, no local copy"),
        "the summary names no file that is not there: {out}"
    );
    assert_eq!(archives.names(), local_before, "no local file was written or left");
    // Deduplicated: the unchanged 20 MiB file is stored once. What the second snapshot adds is
    // the chunks around what changed (the metadata and dumps at the start, the new file, the
    // checksums at the end), each at most restic's largest chunk (8 MiB), far from 20 MiB.
    let added = repo.raw_bytes() - first;
    assert!(added < 4 << 20, "the second backup added {added} bytes to {first}: not deduplicated");
    eprintln!("second backup added {added} bytes to {first}");
    assert_eq!(stack.xtask_json(&["backups", "--remote", "vault", "--json"]).as_array().unwrap().len(), 2);

    // The whole stack gone, the local archives gone: the repository brings it back.
    let before = sample_state(&stack);
    std::fs::remove_dir_all(&archives.0).unwrap();
    stack.xtask_ok(&["verify", "--remote", "vault", "--latest", "--output-dir", archives.s()]);
    stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", archives.s()]);
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", archives.s()]);
    stack.xtask_ok(&["up", "backend"]);
    assert_eq!(sample_state(&stack), before, "rows, files and keys as they were");
    // A local archive made again from the repository reads as any other.
    let pulled = stack.xtask_ok(&["pull", "--from", "vault", "--latest", "--output-dir", archives.s()]);
    stack.xtask_ok(&["verify", pulled.trim(), "--output-dir", archives.s()]);

    // Another project in the same repository: prune keeps its snapshots whatever the policy.
    let other = stack_with_vault("vault-other", &dir, &repo.path, &repo.password);
    other.xtask_ok(&["up", "db"]);
    other.xtask_ok(&["backup-db", "--push", "vault", "--output-dir", archives.s()]);
    let keep_one = ["--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"];
    stack.xtask_ok(&[&["prune", "--remote", "vault"][..], &keep_one].concat());
    let tags = repo.tags();
    let ours = tags.iter().filter(|t| t.contains(&format!("project={}", stack.project))).count();
    let theirs = tags.iter().filter(|t| t.contains(&format!("project={}", other.project))).count();
    // Ours: the kept archive (the --no-keep-local one, in the tree form) and its trees snapshot.
    let parts = tags.iter().filter(|t| t.iter().any(|t| t == "part=trees")).count();
    assert_eq!(
        (ours, parts, theirs),
        (2, 1, 1),
        "this project's older snapshot forgotten, the other project's kept: {tags:?}"
    );
}

#[test]
fn a_wrong_password_or_a_killed_push_changes_nothing_that_counts() {
    if !ready() {
        return;
    }
    let dir = TempDir::new("vaultkill");
    let repo = Repo::new(&dir);
    let stack = stack_with_vault("vaultkill", &dir, &repo.path, &repo.password);
    let archives = TempDir::new("vaultkill-archives");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    stack.xtask_ok(&["backup", "--push", "vault", "--yes", "--output-dir", archives.s()]);
    let good = stack.xtask_json(&["backups", "--remote", "vault", "--json"])[0]["file"].as_str().unwrap().to_string();
    // Its record and its trees (the volumes read by restic as file trees).
    let snapshots = repo.tags().len();
    assert_eq!(snapshots, 2, "{:?}", repo.tags());

    // A wrong password: refused, nothing read or written.
    let wrong = dir.0.join("wrong.pw");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let bad = stack_with_vault("vaultkill-bad", &dir, &repo.path, &wrong);
    let (ok, _, err) = bad.xtask(&["backups", "--remote", "vault"]);
    assert!(!ok && err.contains("does not open its restic repository"), "{err}");
    assert_eq!(repo.tags().len(), snapshots, "nothing was written");

    // A big archive whose push is killed half-way: first the tool (restic then sees its input
    // end and may store the truncated stream), then restic itself.
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&["exec", &backend, "sh", "-c", "head -c 419430400 /dev/urandom > /app/media/big.bin"]);
    let big = stack.xtask_json(&["backup", "--level", "1", "--json", "--output-dir", archives.s()]);
    let big = big["path"].as_str().unwrap().to_string();
    // Only this push's restic: its stdin file name is the archive's own.
    let stored = Path::new(&big).file_name().unwrap().to_str().unwrap().trim_end_matches(".zst").to_string();
    let pattern = format!("restic backup --stdin --stdin-filename {stored}");
    for victim in ["xtask", "restic"] {
        let mut child = stack.spawn(&["push", &big, "--to", "vault", "--output-dir", archives.s()]);
        let started = appears(&pattern);
        assert!(started, "restic started for the push");
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert!(child.try_wait().unwrap().is_none(), "the push was still running when {victim} was killed");
        if victim == "xtask" {
            child.kill().unwrap();
        } else {
            Command::new("pkill").args(["-9", "-f", &pattern]).status().unwrap();
        }
        child.wait().unwrap();
        // restic, its input ended, finishes what it was given (or is gone).
        let gone = (0..600).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            !running(&pattern)
        });
        assert!(gone, "restic ended after {victim} was killed");
        let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
        let big_name = Path::new(&big).file_name().unwrap().to_str().unwrap();
        let truncated = listed.as_array().unwrap().iter().filter(|a| a["file"] == big_name).count();
        if victim == "xtask" {
            // The hazard itself: restic stored the truncated stream as a snapshot.
            assert_eq!(truncated, 1, "killing the tool left restic's snapshot of a truncated stream: {listed}");
        }
        let complete: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["complete"] == true)
            .map(|a| a["file"].as_str().unwrap())
            .collect();
        assert_eq!(complete, [good.as_str()], "after killing {victim}: only the finished push counts: {listed}");
    }
    // A backup whose tar stream goes only into restic (--no-keep-local, new data): restic killed
    // half-way fails the backup with restic's own failure, and leaves no file and nothing that
    // counts.
    docker_ok(&["exec", &backend, "sh", "-c", "head -c 419430400 /dev/urandom > /app/media/big.bin"]);
    let streamed = TempDir::new("vaultkill-stream");
    let pattern = format!("restic backup --stdin .*project={}", stack.project);
    let mut child = stack.spawn(&["backup", "--push", "vault", "--no-keep-local", "--output-dir", streamed.s()]);
    let started = appears(&pattern);
    assert!(started, "restic started for the backup");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the backup was still running when restic was killed");
    Command::new("pkill").args(["-9", "-f", &pattern]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("restic backup") && err.contains("signal: 9"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&streamed.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tar"))
        .collect();
    assert!(left.is_empty(), "no archive file, not even a temporary one: {left:?}");
    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    let complete = listed.as_array().unwrap().iter().filter(|a| a["complete"] == true).count();
    assert_eq!(complete, 1, "the killed backup added nothing that counts: {listed}");

    // SIGTERM to the tool in the middle of a `--stop` backup streaming into restic: it stops at
    // its next file like a failure, the service it stopped runs again, and restic, asked to stop
    // before its input could end, saved no snapshot and left no lock.
    let (snapshots, locks) = (repo.tags().len(), repo.restic(&["list", "locks", "--no-lock"]));
    let mut child =
        stack.spawn(&["backup", "--push", "vault", "--no-keep-local", "--stop", "--output-dir", streamed.s()]);
    let streaming = appears(&pattern);
    assert!(streaming, "restic started for the backup");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the backup was still running when it was sent SIGTERM");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("interrupted by SIGINT or SIGTERM"), "{err}");
    assert!(!running(&pattern), "restic is gone");
    assert_eq!(repo.tags().len(), snapshots, "no snapshot of the cut stream was saved");
    // (The kills above left theirs: restic cannot clean up after SIGKILL or a cut pipe.)
    assert_eq!(repo.restic(&["list", "locks", "--no-lock"]), locks, "restic removed its lock");
    let st = stack.xtask_json(&["status", "--json"]);
    let backend_state = st["services"].as_array().unwrap().iter().find(|s| s["service"] == "backend").unwrap();
    assert_eq!(backend_state["state"], "running", "the service stopped for the copy runs again");

    // A snapshot named in the future (a skewed clock, or a writer with the password) whose digest
    // tag matches its bytes: listed in doubt, never the latest.
    let junk = dir.0.join("junk");
    std::fs::write(&junk, "junk").unwrap();
    let sha: String = Sha256::digest(b"junk").iter().map(|b| format!("{b:02x}")).collect();
    let future = "full_backup_20991231_000000.tar.gz";
    let tags = [
        "xtask".to_string(),
        format!("project={}", stack.project),
        "kind=full".into(),
        format!("archive={future}"),
        format!("tar-sha256={sha}"),
    ];
    let mut forge = Command::new("restic");
    forge.args(["backup", "-q", "--stdin", "--stdin-filename", "full_backup_20991231_000000.tar", "--host", "xtask"]);
    for t in &tags {
        forge.args(["--tag", t]);
    }
    let status = forge
        .env("RESTIC_REPOSITORY", &repo.path)
        .env("RESTIC_PASSWORD_FILE", &repo.password)
        .stdin(std::fs::File::open(&junk).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    let forged =
        listed.as_array().unwrap().iter().find(|a| a["file"] == future).expect("the forged snapshot is listed");
    assert!(forged["problem"].as_str().is_some_and(|p| p.contains("future")), "{listed}");
    // The latest complete archive is still the one restored.
    docker_ok(&["exec", &backend, "sh", "-c", "rm /app/media/big.bin"]);
    let before = sample_state(&stack);
    docker_ok(&["exec", &backend, "sh", "-c", "echo changed > /app/media/upload.txt"]);
    stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", archives.s()]);
    stack.xtask_ok(&["up", "backend"]);
    assert_eq!(sample_state(&stack), before, "the previous snapshot is restored");

    // A junk file in the repository's index (anyone who can write the bucket): restic cannot
    // load it; the error says so and what still works, and the stack is untouched.
    let index = repo.path.join("index").join(format!("{:x}", Sha256::digest(b"junk index")));
    std::fs::write(&index, b"\x01").unwrap();
    let (ok, _, err) =
        stack.xtask(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", archives.s()]);
    assert!(!ok && err.contains("holds a file restic cannot read") && err.contains("restic check"), "{err}");
    assert_eq!(sample_state(&stack), before, "nothing changed");
}

/// Under `x-xtask.sign`, a snapshot is trusted only with this host's signature of its stream:
/// one written by anyone else who holds the repository's password (tags and digest made to
/// look complete, named after the genuine one so it would be --latest) is in doubt, never
/// restored, verified or pulled, and never signed by `pull`; the genuine one still is.
#[test]
fn with_sign_set_a_snapshot_written_with_the_password_alone_is_not_trusted() {
    if !ready() {
        return;
    }
    let dir = TempDir::new("vaultsign");
    let repo = Repo::new(&dir);
    let (key, public) = ssh_keypair(&dir, "host");
    let mut stack = stack_with_vault("vaultsign", &dir, &repo.path, &repo.password);
    // The signers go into the same x-xtask block as the vault.
    let vault = std::fs::read_to_string(stack.files.last().unwrap()).unwrap();
    std::fs::write(stack.files.last().unwrap(), format!("{vault}  sign: {{allowed_signers: [\"{public}\"]}}\n"))
        .unwrap();
    stack.env.push(("XTASK_SIGNING_KEY".into(), key.to_string_lossy().into_owned()));
    let archives = TempDir::new("vaultsign-archives");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);");
    stack.xtask_ok(&["backup-db", "--push", "vault", "--yes", "--output-dir", archives.s()]);
    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    let genuine = listed[0]["file"].as_str().unwrap().to_string();
    assert!(listed[0]["untrusted"].is_null(), "this host's own snapshot is signed: {listed}");
    assert!(repo.tags()[0].iter().any(|t| t.starts_with("sig=")), "{:?}", repo.tags());

    // A forgery by the password alone: a valid tar stream of another archive, named one second
    // later, tagged complete with its true digest.
    // (A real second later: `HHMMSS + 1` made second 60 of a minute once in 60 runs, a name the
    // listing rightly never shows.)
    let forged_name = shifted(&genuine, 1);
    psql(&db, "app", "INSERT INTO t VALUES (666);");
    let other = TempDir::new("vaultsign-other");
    let made = stack.xtask_json(&["backup-db", "--json", "--output-dir", other.s()]);
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}'", made["path"].as_str().unwrap()))
        .output()
        .unwrap()
        .stdout;
    let digest = format!("{:x}", Sha256::digest(&tar));
    let stored = forged_name.trim_end_matches(".zst").to_string();
    let tags = format!("xtask,project={},kind=db,archive={forged_name}", stack.project);
    let mut child = Command::new("restic")
        .args(["backup", "--stdin", "--stdin-filename", &stored, "--tag", &tags, "--json", "-q"])
        .env("RESTIC_REPOSITORY", &repo.path)
        .env("RESTIC_PASSWORD_FILE", &repo.password)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let snapshots: serde_json::Value = serde_json::from_str(&repo.restic(&["snapshots", "--json"])).unwrap();
    let forged_id =
        snapshots.as_array().unwrap().iter().find(|s| {
            s["tags"].as_array().unwrap().iter().any(|t| t.as_str() == Some(&format!("archive={forged_name}")))
        });
    let forged_id = forged_id.unwrap()["id"].as_str().unwrap().to_string();
    repo.restic(&["tag", "--add", &format!("tar-sha256={digest}"), &forged_id]);

    let listed = stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    let forged = listed.as_array().unwrap().iter().find(|a| a["file"] == forged_name.as_str()).unwrap();
    assert!(forged["untrusted"].as_str().unwrap().contains("no signature"), "{forged}");
    // --latest passes it over; named, it is refused; pull makes no local copy of it.
    psql(&db, "app", "DELETE FROM t");
    let (ok, _, err) =
        stack.xtask(&["restore", "--remote", "vault", &forged_name, "--yes", "--output-dir", archives.s()]);
    assert!(!ok && err.contains("untrusted"), "{err}");
    let (ok, _, err) = stack.xtask(&["pull", "--from", "vault", &forged_name, "--output-dir", archives.s()]);
    assert!(!ok && err.contains("untrusted"), "{err}");
    assert!(!archives.names().iter().any(|n| n.contains(&forged_name[..forged_name.len() - 7])), "nothing pulled");
    stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", archives.s()]);
    assert_eq!(psql(&db, "app", "SELECT string_agg(x::text, ',' ORDER BY x) FROM t"), "1,2", "the genuine one");
}
