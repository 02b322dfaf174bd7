//! Doing the drill: the throwaway stack written into its scratch directory (binds seeded, the
//! escaping of `$` proven by reading the file back), started and waited for, its check run, its
//! logs kept on failure, and everything removed by [`Cleanup`] on every path.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::throwaway::{self, Redirect, Throwaway};
use super::{Options, Outcome};
use crate::context::Ctx;
use crate::engine::docker::Docker;
use crate::files::TempDir;
use crate::model::alerts::DrillCheck;
use crate::model::compose::Stack;

/// The live stack's config turned into the throwaway stack (see [`throwaway::throwaway`]).
fn plan(ctx: &Ctx, drill_project: &str, scratch: &Path) -> Result<Throwaway> {
    let json = ctx.model()?.1.as_deref().context("a drill needs the Docker engine: run it without --offline")?;
    let config: Value = serde_json::from_str(json).context("parse the output of `docker compose config`")?;
    throwaway::throwaway(&config, &ctx.stack.name, drill_project, scratch, &ctx.stack.project_dir)
        .context("make a throwaway copy of the stack for the drill")
}

/// `--dry-run`: the throwaway stack that would be made, and what would be done with it.
pub fn dry_run(ctx: &Ctx, opts: &Options) -> Result<Outcome> {
    let drill_project = format!("{}-drill-{}", ctx.stack.name, std::process::id());
    let scratch = std::env::temp_dir().join(format!("xtask-drill-{}-SCRATCH", ctx.stack.name));
    let t = plan(ctx, &drill_project, &scratch)?;
    let archive = opts.archive.as_ref().map(|a| a.display().to_string()).unwrap_or_else(|| "the newest archive".into());
    // A summary, never the document itself: its environment holds the stack's secrets.
    println!("would write the throwaway stack {drill_project} into a private scratch directory {}:", scratch.display());
    let services =
        t.document["services"].as_object().map(|s| s.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    println!("  services (no published ports, no container names, restart no): {}", services.join(", "));
    for (key, live, scratch) in &t.volumes {
        println!("  volume {key}: {scratch} instead of {live}");
    }
    for r in &t.binds {
        let how = if r.read_only { "a copy of" } else { "empty, instead of" };
        println!("  bind {}: {how} {}", r.scratch.display(), r.live);
    }
    println!("  networks: {}", t.networks.join(", "));
    println!(
        "would restore {archive} into it, start every service, wait for their health checks, run x-xtask.drill.check, \
         record the time to recover and remove it"
    );
    Ok(Outcome {
        project: ctx.stack.name.clone(),
        drill_project,
        archive,
        ok: true,
        seconds: None,
        restore_seconds: None,
        reason: None,
        logs: None,
        remove_with: None,
    })
}

/// Writes the throwaway stack's compose file (and its seeded binds) into `scratch`; returns
/// the file and the plan.
pub fn write_throwaway(ctx: &Ctx, drill_project: &str, scratch: &Path) -> Result<(PathBuf, Throwaway)> {
    let t = plan(ctx, drill_project, scratch)?;
    std::fs::create_dir(throwaway::project_dir(scratch))?;
    for r in &t.binds {
        seed_bind(r).with_context(|| format!("prepare the drill's copy of bind {}", r.live))?;
    }
    let file = scratch.join("compose.yaml");
    let text = serde_json::to_vec_pretty(&t.document)?;
    crate::files::write_atomic(&file, &text, 0o600)?;
    Ok((file, t))
}

/// Compose's `config` prints `$` escaped as `$$` in some versions and raw in others: the file
/// is read back and, unless its `$` strings came back as written, written with every `$`
/// escaped and read back again; a file that still does not read back as meant is refused.
pub fn settle_escaping(drill: &Ctx, t: &Throwaway, file: &Path) -> Result<()> {
    let mut wanted = throwaway::dollar_strings(&t.document);
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort();
    let docker = drill.docker()?;
    let read_back = || -> Result<Vec<String>> {
        let json = docker.query(&docker.compose(&drill.stack, ["config", "--format", "json"]))?;
        let mut got = throwaway::dollar_strings(&serde_json::from_str(&json)?);
        got.sort();
        Ok(got)
    };
    if read_back()? == wanted {
        return Ok(());
    }
    let escaped = serde_json::to_vec_pretty(&throwaway::escape_dollars(&t.document))?;
    crate::files::write_atomic(file, &escaped, 0o600)?;
    if read_back()? != wanted {
        bail!(
            "the throwaway stack's compose file does not read back as written (its `$` characters); {}",
            file.display()
        );
    }
    Ok(())
}

/// A redirected bind made ready: a read-only one (configuration) copied from the live path
/// (read only), a writable directory created empty (the restore fills it), a writable file
/// created empty (so Docker does not make a directory of it).
fn seed_bind(r: &Redirect) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let Ok(meta) = std::fs::metadata(&r.live) else { return Ok(()) };
    if let Some(parent) = r.scratch.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
    }
    match (meta.is_dir(), r.read_only) {
        (true, true) => copy_tree(Path::new(&r.live), &r.scratch),
        (true, false) => Ok(std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&r.scratch)?),
        (false, true) => std::fs::copy(&r.live, &r.scratch).map(drop).map_err(Into::into),
        (false, false) => std::fs::File::create(&r.scratch).map(drop).map_err(Into::into),
    }
}

/// Copies a directory tree: directories, regular files (with their modes) and symbolic links
/// as links; nothing else.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let (kind, target) = (entry.file_type()?, to.join(entry.file_name()));
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).with_context(|| format!("copy {}", entry.path().display()))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        }
    }
    Ok(())
}

/// Starts every service of the throwaway stack and waits for their health checks (stopped
/// by Ctrl-C: the wait runs beside, the signal is looked at here).
pub fn start_and_wait(drill: &Ctx) -> Result<()> {
    let docker = drill.docker()?;
    drill.ui.step(&format!("start every service of the throwaway stack {}", drill.stack.name));
    docker.apply(&docker.compose(&drill.stack, ["up", "--detach", "--no-build"]))?;
    let names: Vec<String> = crate::engine::services::ps(docker, &drill.stack)?.into_iter().map(|e| e.name).collect();
    let (docker, quiet) = (docker.clone(), drill.ui.quiet);
    let waiting =
        std::thread::spawn(move || crate::engine::services::wait_until_up(&docker, &names, &crate::ui::Ui { quiet }));
    while !waiting.is_finished() {
        crate::signals::check()?;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    waiting.join().map_err(|_| anyhow::anyhow!("the wait for the services' health ended abnormally"))?
}

/// Runs `x-xtask.drill.check` (its words as they are, no shell) with `docker compose exec` in
/// its service of the throwaway stack.
pub fn run_check(drill: &Ctx, check: &DrillCheck) -> Result<()> {
    let docker = drill.docker()?;
    drill.ui.step(&format!("run the drill's check in service {}: {}", check.service, check.check.join(" ")));
    let mut args = vec!["exec".to_string(), "-T".into(), check.service.clone()];
    args.extend(check.check.iter().cloned());
    docker
        .change(&docker.compose(&drill.stack, args))
        .with_context(|| format!("x-xtask.drill.check failed in service {} of the restored copy", check.service))?;
    Ok(())
}

/// Removes the throwaway stack when dropped (success, failure, Ctrl-C): its containers and
/// networks (`compose down`), its scratch volumes, its scratch directory. Under `--keep` it
/// leaves them and [`Cleanup::remove_command`] says how.
pub struct Cleanup<'a> {
    docker: &'a Docker,
    scratch: Option<TempDir>,
    keep: bool,
    /// The throwaway stack, once its file is written: (stack, volumes, networks).
    armed: Option<(Stack, Vec<String>, Vec<String>)>,
}

impl<'a> Cleanup<'a> {
    pub fn new(docker: &'a Docker, scratch: TempDir, keep: bool) -> Cleanup<'a> {
        Cleanup { docker, scratch: Some(scratch), keep, armed: None }
    }

    pub fn scratch(&self) -> &Path {
        self.scratch.as_ref().map(|s| s.path.as_path()).unwrap_or(Path::new("/nonexistent"))
    }

    /// From now on the throwaway stack `drill` (made by `t`) is removed too.
    pub fn arm(&mut self, drill: &Ctx, t: &Throwaway) {
        let volumes = t.volumes.iter().map(|(_, _, scratch)| scratch.clone()).collect();
        self.armed = Some((drill.stack.clone(), volumes, t.networks.clone()));
    }

    /// The services' logs of the throwaway stack, kept in the backup directory `dir` as
    /// `.xtask-drill-<project>.log` (None: nothing to keep, or it could not be written).
    pub fn keep_logs(&self, dir: &Path, project: &str) -> Option<PathBuf> {
        let (stack, _, _) = self.armed.as_ref()?;
        let cmd = self.docker.compose(stack, ["logs", "--no-color", "--timestamps", "--tail", "500"]);
        let logs = self.docker.query(&cmd).ok().filter(|l| !l.trim().is_empty())?;
        let path = dir.join(format!(".xtask-drill-{project}.log"));
        match crate::files::write_atomic(&path, logs.as_bytes(), 0o600) {
            Ok(()) => Some(path),
            Err(e) => {
                eprintln!("warning: the failed drill's logs were not kept: {e:#}");
                None
            }
        }
    }

    /// `--keep`: the command that removes what the drill left.
    pub fn remove_command(&self) -> Option<String> {
        let (stack, _, _) = self.armed.as_ref().filter(|_| self.keep)?;
        let q = |s: &str| crate::engine::docker::cmd::shell_quote(s);
        let file = stack.files.first().map(|f| f.display().to_string()).unwrap_or_default();
        Some(format!(
            "docker compose -p {} -f {} down --volumes --remove-orphans && rm -rf {}",
            q(&stack.name),
            q(&file),
            q(&self.scratch().display().to_string())
        ))
    }

    fn remove(&mut self) {
        let Some((stack, volumes, networks)) = self.armed.take() else { return };
        let d = self.docker;
        let down = d.compose(&stack, ["down", "--volumes", "--remove-orphans", "--timeout", "10"]);
        if let Err(e) = d.change(&down) {
            eprintln!("warning: removing the throwaway stack {}: {e:#}", stack.name);
        }
        let label = format!("label=com.docker.compose.project={}", stack.name);
        let left = d.query(&d.cmd(["ps", "-aq", "--filter", &label])).unwrap_or_default();
        for id in left.split_whitespace() {
            let _ = d.change(&d.cmd(["rm", "-f", "-v", id]));
        }
        for v in &volumes {
            let gone = d.query(&d.cmd(["volume", "inspect", v])).is_err();
            if !gone && d.change(&d.cmd(["volume", "rm", "-f", v])).is_err() {
                eprintln!("warning: the drill's scratch volume {v} could not be removed: `docker volume rm {v}`");
            }
        }
        for n in &networks {
            let _ = d.change(&d.cmd(["network", "rm", n]));
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _way_back = crate::signals::Suspended::begin();
        if self.keep {
            std::mem::forget(self.scratch.take());
            return;
        }
        self.remove();
        if let Some(dir) = self.scratch.take() {
            let path = dir.path.clone();
            drop(dir);
            if path.exists() {
                eprintln!("warning: the drill's scratch directory {} could not be removed", path.display());
            }
        }
    }
}
