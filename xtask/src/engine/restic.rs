//! A restic repository as a remote (the deduplicated tier): the `restic` CLI found with `which`
//! (0.14 or newer: `backup --stdin`, compression, `dump`), the repository in `RESTIC_REPOSITORY`
//! and its password file in `RESTIC_PASSWORD_FILE` (or the user's own `RESTIC_PASSWORD_FILE` /
//! `RESTIC_PASSWORD_COMMAND`): nothing on a command line but snapshot ids, tags and flags. Each
//! archive is one snapshot of its uncompressed tar stream, tagged `xtask`, `project=P`,
//! `kind=K`, `archive=NAME`; it counts as complete only once a second step added
//! `tar-sha256=HEX` (a snapshot a killed push left, from a truncated stream, never has it).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::process::{Tool, ToolReader, ToolWriter};
use crate::model::offsite::VaultSpec;

/// The oldest restic that has everything used here (`backup --stdin-filename`, compressed
/// repositories, `dump`, `stats --mode raw-data --json`): Debian bookworm's.
const MIN_VERSION: (u32, u32) = (0, 14);

/// The tag that marks a snapshot complete (its tar stream's SHA-256 as pushed).
pub const COMPLETE_TAG: &str = "tar-sha256=";
/// The tar stream's size (with `x-xtask.sign`), added with the completion tag.
pub const SIZE_TAG: &str = "tar-size=";
/// The signed statement's signature ([`crate::archive::signature::compact`]) over the stream's
/// name, size, SHA-256 and project (with `x-xtask.sign`), added with the completion tag.
pub const SIG_TAG: &str = "sig=";
/// On an archive's record snapshot (the tree form): the id of the tree of the snapshot that holds
/// its volumes and binds as file trees, added with the completion tag.
pub const TREES_TAG: &str = "trees=";
/// The tag of a snapshot that holds an archive's volumes and binds as file trees: a part of the
/// archive its `archive=` tag names, used only through that archive's complete record.
pub const PART_TAG: &str = "part=trees";

/// One snapshot of the repository, as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub short_id: String,
    /// RFC 3339 with nanoseconds, UTC or with an offset.
    pub time: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    /// The id of its root tree (a Merkle hash of everything it holds).
    #[serde(default)]
    pub tree: String,
}

impl Snapshot {
    /// The value of the tag `key=…`, if the snapshot has one.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }
}

/// A restic repository with restic found and its version checked.
pub struct Restic {
    pub spec: VaultSpec,
    tool: Tool,
}

impl Restic {
    pub fn open(spec: &VaultSpec) -> Result<Restic> {
        let needed = format!("to reach the restic repository of remote {}", spec.name);
        let mut tool = Tool::find("restic", &needed)?.with_env("RESTIC_REPOSITORY", &spec.repository);
        match &spec.password_file {
            Some(file) => tool = tool.with_env("RESTIC_PASSWORD_FILE", &file.display().to_string()),
            None if crate::environment::var("RESTIC_PASSWORD_FILE").is_none()
                && crate::environment::var("RESTIC_PASSWORD_COMMAND").is_none() =>
            {
                bail!(
                    "remote {}: no repository password: set password_file in x-xtask.remotes.{} (a file, never \
                     the password itself) or RESTIC_PASSWORD_FILE / RESTIC_PASSWORD_COMMAND",
                    spec.name,
                    spec.name
                )
            }
            None => {}
        }
        let restic = Restic { spec: spec.clone(), tool };
        restic.check_version()?;
        Ok(restic)
    }

    fn check_version(&self) -> Result<()> {
        let out = String::from_utf8_lossy(&self.tool.output(&["version".to_string()])?).into_owned();
        let version = out.split_whitespace().nth(1).unwrap_or_default();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if found < MIN_VERSION {
            bail!(
                "restic {version} is too old: 0.14 or newer is needed (backup --stdin into a compressed repository, \
                 dump); install it (Debian/Ubuntu: `sudo apt-get install restic`, or `restic self-update`)"
            );
        }
        Ok(())
    }

    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.tool.output(&args).map_err(|e| explain(e, &self.spec.name))
    }

    /// Whether the repository exists (and the password opens it).
    pub fn exists(&self) -> Result<bool> {
        match self.run(&["cat", "config", "--no-lock"]) {
            Ok(_) => Ok(true),
            Err(e) if missing(&format!("{e:#}")) => Ok(false),
            Err(e) => Err(e.context(format!("open the restic repository of remote {}", self.spec.name))),
        }
    }

    /// Creates the repository (first use, asked for with `--yes`).
    pub fn init(&self) -> Result<()> {
        self.run(&["init"])
            .map(drop)
            .with_context(|| format!("initialise the restic repository of remote {}", self.spec.name))
    }

    /// Starts `restic backup --stdin` of one archive's tar stream; the caller writes the stream
    /// and finishes the writer (stdout: restic's JSON summary).
    pub fn backup_stdin(&self, filename: &str, tags: &[String]) -> Result<ToolWriter> {
        let mut args: Vec<String> =
            ["backup", "--stdin", "--stdin-filename", filename, "--host", "xtask", "--json", "--quiet"]
                .map(String::from)
                .to_vec();
        for t in tags {
            args.extend(["--tag".to_string(), t.clone()]);
        }
        Ok(self.tool.sink(&args)?.interrupted_when_abandoned())
    }

    /// A `backup_stdin` about to be given its stream: still running, or its failure (a lock
    /// held by a prune elsewhere, say) in the user's terms.
    pub fn still_backing_up(&self, writer: ToolWriter) -> Result<ToolWriter> {
        writer.still_running().map_err(|e| explain(e, &self.spec.name))
    }

    /// Ends a `backup_stdin` whose stream was all given: restic's JSON summary, or its failure
    /// in the user's terms.
    pub fn finish_backup(&self, writer: ToolWriter) -> Result<Vec<u8>> {
        writer.finish().map_err(|e| explain(e, &self.spec.name))
    }

    /// `restic backup` of the host directories `paths` (the file trees of volumes and binds, read
    /// where they live), tagged `tags`; unchanged files are skipped by their metadata when
    /// compared with `parent` (None: every file is read, never a parent restic would pick by
    /// itself, which anyone with the password could have written). `go_on` is asked every tenth
    /// of a second: its error stops restic (SIGINT: it saves nothing and removes its lock).
    /// restic's JSON summary.
    pub fn backup_paths(
        &self,
        paths: &[String],
        (tags, parent): (&[String], Option<&str>),
        go_on: &dyn Fn() -> Result<()>,
    ) -> Result<Vec<u8>> {
        let mut args: Vec<String> = ["backup", "--host", "xtask", "--json", "--quiet"].map(String::from).to_vec();
        for t in tags {
            args.extend(["--tag".to_string(), t.clone()]);
        }
        match parent {
            Some(id) => args.extend(["--parent".to_string(), id.to_string()]),
            None => args.push("--force".to_string()),
        }
        args.push("--".to_string());
        args.extend(paths.iter().cloned());
        self.run_watched(&args, go_on)
    }

    /// `restic ARGS`, stopped (SIGINT, then killed) as soon as `go_on` fails; its stdout.
    fn run_watched(&self, args: &[String], go_on: &dyn Fn() -> Result<()>) -> Result<Vec<u8>> {
        // Its stdin stays open and unread: closing it is not what ends these commands.
        let running = self.tool.sink(args)?.interrupted_when_abandoned();
        while running.running()? {
            go_on()?;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running.finish().map_err(|e| explain(e, &self.spec.name))
    }

    /// The snapshot `id` (a full id or a unique prefix), as `restic snapshots --json ID` lists it.
    pub fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let out = self.run(&["snapshots", "--json", "--no-lock", id])?;
        let list: Vec<Snapshot> = serde_json::from_slice(&out).context("read `restic snapshots --json`")?;
        list.into_iter().next().with_context(|| format!("restic lists no snapshot {id}"))
    }

    /// Every file of `snapshot` restored under `target` at its absolute path (`restic restore`:
    /// modes, owners as root, mtimes, symbolic links, hard links, special files).
    /// Stopped when `go_on` fails.
    /// Only `paths` (and their parents): [`include_args`].
    pub fn restore_into(
        &self,
        snapshot: &str,
        target: &std::path::Path,
        paths: &[&str],
        go_on: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let mut args =
            ["restore", "--no-lock", snapshot, "--target", &target.display().to_string()].map(String::from).to_vec();
        args.extend(include_args(paths));
        self.run_watched(&args, go_on).map(drop)
    }

    /// The id of the snapshot a finished `backup --json` reported.
    pub fn snapshot_of(summary: &[u8]) -> Result<String> {
        let text = String::from_utf8_lossy(summary);
        let line = text.lines().rev().find(|l| l.contains("\"summary\"")).context("restic printed no summary")?;
        let v: serde_json::Value = serde_json::from_str(line).context("read restic's backup summary")?;
        v["snapshot_id"].as_str().map(str::to_string).context("restic's summary names no snapshot")
    }

    /// The bytes a finished `backup --json` added to the repository (its summary's `data_added`).
    pub fn data_added(summary: &[u8]) -> Option<u64> {
        let text = String::from_utf8_lossy(summary);
        let line = text.lines().rev().find(|l| l.contains("\"summary\""))?;
        serde_json::from_str::<serde_json::Value>(line).ok()?["data_added"].as_u64()
    }

    /// Adds tags to a snapshot (restic rewrites it under a new id).
    pub fn add_tags(&self, snapshot: &str, tags: &[String]) -> Result<()> {
        let mut args = vec!["tag"];
        for t in tags {
            args.extend(["--add", t.as_str()]);
        }
        args.push(snapshot);
        self.run(&args).map(drop)
    }

    /// The snapshots tagged `project=P`, oldest first.
    pub fn snapshots(&self, project: &str) -> Result<Vec<Snapshot>> {
        let tag = format!("project={project}");
        let out = self.run(&["snapshots", "--json", "--no-lock", "--tag", &tag])?;
        let mut list: Vec<Snapshot> = serde_json::from_slice(&out).context("read `restic snapshots --json`")?;
        list.retain(|s| s.tags.iter().any(|t| t == "xtask"));
        Ok(list)
    }

    /// The stored file `filename` of `snapshot`, streamed (`restic dump`).
    pub fn dump(&self, snapshot: &str, filename: &str) -> Result<Explained<ToolReader>> {
        let path = format!("/{filename}");
        let args = ["dump", "--no-lock", snapshot, &path].map(String::from);
        Ok(Explained { inner: self.tool.stream(&args, None)?, remote: self.spec.name.clone() })
    }

    /// `restic forget` of the given snapshot ids, then `restic prune`.
    pub fn forget_and_prune(&self, ids: &[String]) -> Result<()> {
        if !ids.is_empty() {
            let mut args = vec!["forget"];
            args.extend(ids.iter().map(String::as_str));
            self.run(&args)?;
        }
        self.run(&["prune"]).map(drop)
    }

    /// `restic check`, reading `percent` of the data back (0: structure only).
    pub fn check(&self, percent: u32) -> Result<()> {
        let subset = format!("--read-data-subset={percent}%");
        let args: Vec<&str> = if percent > 0 { vec!["check", &subset] } else { vec!["check"] };
        self.run(&args).map(drop)
    }

    /// The repository's stored bytes (`stats --mode raw-data`).
    pub fn raw_bytes(&self) -> Result<u64> {
        let out = self.run(&["stats", "--mode", "raw-data", "--json", "--no-lock"])?;
        let v: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out).context("read restic stats")?;
        v.get("total_size").and_then(|s| s.as_u64()).context("restic stats gave no total_size")
    }
}

/// Whether restic's failure to open the config says the repository is not there (a missing
/// directory or object), not that it could not be reached (refused, denied, unmounted…): only
/// then may `--yes` create one.
fn missing(text: &str) -> bool {
    let not_found = ["no such file or directory", "does not exist", "NoSuchKey", "404 Not Found", "status code 404"];
    text.contains("Is there a repository at the following location?") && not_found.iter().any(|n| text.contains(n))
}

/// restic's failures in the user's terms: a lock, a wrong password, a missing repository.
/// A restic output stream whose failure (reported at its end) is said in the user's terms
/// ([`explain`]).
pub struct Explained<R> {
    inner: R,
    remote: String,
}

impl<R: std::io::Read> std::io::Read for Explained<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let explained = explain(anyhow::Error::new(e), &self.remote);
            std::io::Error::other(format!("{explained:#}"))
        })
    }
}

fn explain(e: anyhow::Error, remote: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("repository is already locked") || text.contains("unable to create lock") {
        e.context(format!(
            "the restic repository of remote {remote} is locked by another restic; if none runs (a stale lock \
             left by a killed one), remove it with `restic unlock` (RESTIC_REPOSITORY as in x-xtask.remotes.{remote})"
        ))
    } else if text.contains("wrong password") {
        e.context(format!("the password of remote {remote} does not open its restic repository; nothing was changed"))
    } else if let Some(what) = damaged(&text) {
        e.context(format!(
            "the restic repository of remote {remote} holds a file restic cannot read ({what}): someone who can \
             write the repository put it there, or it was damaged; nothing was changed here. `restic check` names \
             every such file (remove what it names, or `restic repair index` for the index); the local archives and \
             other remotes are unaffected"
        ))
    } else if missing(&text) {
        e.context(format!(
            "the restic repository of remote {remote} does not exist yet; `--yes` on `push --to {remote}` or \
             `backup --push {remote}` creates it (restic init)"
        ))
    } else {
        e
    }
}

/// What restic named as unreadable, when a command failed on a repository file that is not
/// restic's (junk, a truncated or forged file), or restic panicked.
fn damaged(text: &str) -> Option<String> {
    if let Some(at) = text.find("panic:") {
        return Some(text[at..].lines().next().unwrap_or("panic").chars().take(160).collect());
    }
    let line = text.lines().find(|l| {
        l.contains("invalid data returned") || l.contains("Unmarshal:") || l.contains("ciphertext verification failed")
    })?;
    Some(line.trim().trim_start_matches("Fatal: ").chars().take(160).collect())
}

/// `--include PATH` for each of `paths`: each absolute, so a pattern from the root (never a
/// leading dash), restic's glob characters escaped by a backslash.
pub fn include_args(paths: &[&str]) -> Vec<String> {
    let escaped = |p: &str| -> String {
        p.chars().flat_map(|c| ['*', '?', '[', ']', '\\'].contains(&c).then_some('\\').into_iter().chain([c])).collect()
    };
    paths.iter().flat_map(|p| ["--include".to_string(), escaped(p)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_in_the_repository_is_named_as_such() {
        let index = "load indexes\nFatal: load <index/ade76c0eee>: invalid data returned";
        assert_eq!(damaged(index).as_deref(), Some("load <index/ade76c0eee>: invalid data returned"));
        assert!(damaged("Fatal: Unmarshal: invalid character 'P' looking for beginning of value").is_some());
        assert!(damaged("panic: runtime error: index out of range [3] with length 0\n\ngoroutine 1")
            .unwrap()
            .starts_with("panic: runtime"));
        assert_eq!(damaged("Fatal: wrong password or no key found"), None);
    }

    #[test]
    fn only_a_repository_that_is_not_there_counts_as_missing() {
        let local = "Fatal: unable to open config file: stat /r/config: no such file or directory\nIs there a repository at the following location?\n/r";
        let refused = "Fatal: unable to open config file: client.Head: dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?";
        assert!(missing(local));
        assert!(!missing(refused), "unreachable is not missing: --yes must not create a new repository");
        assert!(!missing("Fatal: wrong password or no key found"));
    }

    #[test]
    fn the_snapshot_comes_from_the_backup_summary() {
        let out = b"{\"message_type\":\"status\"}\n{\"message_type\":\"summary\",\"snapshot_id\":\"f589b185\"}\n";
        assert_eq!(Restic::snapshot_of(out).unwrap(), "f589b185");
        assert!(Restic::snapshot_of(b"").is_err());
        let s = Snapshot {
            id: "x".into(),
            short_id: "x".into(),
            time: String::new(),
            tags: vec!["kind=db".into()],
            paths: vec![],
            tree: String::new(),
        };
        assert_eq!((s.tag("kind"), s.tag("kin"), s.tag("project")), (Some("db"), None, None));
    }

    /// attack7: a tree path with a glob character restored every tree of the snapshot (the
    /// 500 GiB photo library beside a restored database, past the room check, which counted the
    /// chosen trees only); escaped, it names exactly its own tree (restic 0.14: `x\[1\]` is the
    /// directory `x[1]`, not `x1`).
    #[test]
    fn include_patterns_name_their_path_exactly_even_with_glob_characters() {
        let args = include_args(&["/srv/p/x[1]", "/srv/p/a*b?", "/srv/p/back\\slash", "/srv/plain"]);
        let expected = ["/srv/p/x\\[1\\]", "/srv/p/a\\*b\\?", "/srv/p/back\\\\slash", "/srv/plain"];
        let want: Vec<String> = expected.iter().flat_map(|p| ["--include".to_string(), p.to_string()]).collect();
        assert_eq!(args, want);
    }
}
