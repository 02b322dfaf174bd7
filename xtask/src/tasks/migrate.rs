//! `migrate`: the pre-migration workflow as a composite of other tasks. Under one lock it takes
//! a database backup tagged `pre-migration` ([`backup::take`]), runs the migration command (in a
//! service, or on the host, output streamed live), and when the command fails restores the
//! database from that backup ([`restore::prepare`] and [`restore::execute`], database only, no
//! prompt: running `migrate` asked for the rollback). The archive is kept either way.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::context::Ctx;
use crate::engine::docker::DockerCmd;
use crate::engine::services;
use crate::lock::Lock;
use crate::tasks::{backup, restore};

/// The tag of the backup taken before a migration.
pub const TAG: &str = "pre-migration";

#[derive(Debug, Clone)]
pub struct Options {
    /// Run in this service [default: `x-xtask: {migrate: {service: …}}`].
    pub service: Option<String>,
    /// Run on the host, in the project directory.
    pub host: bool,
    /// The command [default: `x-xtask: {migrate: …}` in the compose file].
    pub command: Vec<String>,
    /// Keep the failed state instead of restoring the database.
    pub no_rollback: bool,
    pub dir: PathBuf,
}

/// Where the migration runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Host(PathBuf),
    Service(String),
}

/// The decision, as data: what `--dry-run` prints and [`run`] carries out.
#[derive(Debug, Clone)]
pub struct Plan {
    pub backup: backup::Options,
    pub command: Vec<String>,
    pub place: Place,
    pub rollback: bool,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The pre-migration archive (kept).
    pub archive: PathBuf,
    /// The migration's exit code (None: killed by a signal); 0 is success.
    pub exit_code: Option<i32>,
    pub succeeded: bool,
    /// The database was restored from `archive` after the failure.
    pub rolled_back: bool,
}

/// `x-xtask: {migrate: "cmd"}`, `{migrate: [argv…]}` or `{migrate: {command: …, service: …}}`.
fn from_settings(settings: Option<&serde_yaml::Value>) -> Result<(Vec<String>, Option<String>)> {
    let Some(m) = settings.and_then(|s| s.get("migrate")) else { return Ok((Vec::new(), None)) };
    let (command, service) = match m {
        serde_yaml::Value::Mapping(map) => (map.get("command"), map.get("service").and_then(|s| s.as_str())),
        other => (Some(other), None),
    };
    let argv = match command {
        None => Vec::new(),
        Some(serde_yaml::Value::String(s)) => vec!["sh".into(), "-c".into(), s.clone()],
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).context("x-xtask.migrate: every item must be a string"))
            .collect::<Result<_>>()?,
        Some(_) => bail!("x-xtask.migrate: expected a command string, a list of strings, or {{command, service}}"),
    };
    Ok((argv, service.map(str::to_string)))
}

/// Decides the migration. Pure apart from reading the compose files' `x-xtask` block.
pub fn plan(ctx: &Ctx, opts: &Options) -> Result<Plan> {
    let settings = ctx.stack.settings()?;
    let (default_cmd, default_service) = from_settings(settings.as_ref())?;
    let command = if opts.command.is_empty() { default_cmd } else { opts.command.clone() };
    if command.is_empty() {
        bail!(
            "no migration command: give it after `--` (cargo xtask migrate --service backend -- ./manage.py migrate) \
             or set `x-xtask: {{migrate: \"…\"}}` in the compose file"
        );
    }
    let place = match (opts.host, opts.service.clone().or(default_service)) {
        (true, _) => Place::Host(ctx.stack.project_dir.clone()),
        (false, Some(s)) => {
            if !ctx.model()?.0.services.iter().any(|svc| svc.name == s) {
                bail!("--service {s}: the stack has no such service; `docker compose config --services` lists them");
            }
            Place::Service(s)
        }
        (false, None) => bail!("say where the migration runs: --service NAME, --host, or x-xtask.migrate.service"),
    };
    let backup = backup::Options {
        tag: Some(TAG.into()),
        no_encrypt: restore::way_back_in_clear(ctx, "the backup before the migration"),
        ..backup::Options::new(backup::Kind::Db, opts.dir.clone())
    };
    backup::prepare(ctx, &backup).context("the database backup before the migration")?;
    Ok(Plan { backup, command, place, rollback: !opts.no_rollback })
}

impl Plan {
    /// The plan in words, for `--dry-run`.
    pub fn describe(&self) -> String {
        let place = match &self.place {
            Place::Host(dir) => format!("on the host in {}", dir.display()),
            Place::Service(s) => format!("in service {s}"),
        };
        format!(
            "migrate:\n  1. back up the databases, tagged {TAG}\n  2. run {:?} {place}, output shown live\n  3. {}\n",
            self.command,
            if self.rollback {
                "if it fails: restore the databases from that backup (volumes untouched) and exit non-zero"
            } else {
                "if it fails: keep the failed state (--no-rollback) and exit non-zero"
            }
        )
    }
}

/// The command that runs the migration in its service: `exec` when it runs, else a one-off `run`.
fn service_cmd(ctx: &Ctx, service: &str, command: &[String]) -> Result<DockerCmd> {
    let docker = ctx.docker()?;
    let running = services::states(docker, &ctx.stack)?.get(service).is_some_and(|s| s == "running");
    let mut args: Vec<String> =
        if running { vec!["exec".into(), "-T".into()] } else { vec!["run".into(), "--rm".into(), "-T".into()] };
    args.push(service.to_string());
    args.extend(command.iter().cloned());
    Ok(docker.compose(&ctx.stack, args))
}

/// Carries out the plan under `lock`.
pub fn execute(ctx: &Ctx, plan: &Plan, lock: &Lock) -> Result<Outcome> {
    let docker = ctx.docker()?;
    ctx.ui.step(&format!("back up the databases before the migration (tag {TAG})"));
    let archive =
        backup::take(ctx, &plan.backup, lock).context("the backup before the migration failed; nothing ran")?;
    ctx.ui.step(&format!("run the migration: {:?}", plan.command));
    let status = match &plan.place {
        Place::Host(dir) => docker.run_host(&plan.command, dir)?,
        Place::Service(s) => docker.run_live(&service_cmd(ctx, s, &plan.command)?)?,
    };
    let mut outcome = Outcome {
        archive: archive.path.clone(),
        exit_code: status.code(),
        succeeded: status.success(),
        rolled_back: false,
    };
    if status.success() || !plan.rollback {
        return Ok(outcome);
    }
    ctx.ui.step(&format!("the migration failed ({status}): restore the databases from {}", archive.path.display()));
    let written = crate::engine::remote::parse_hex32(&archive.sha256).context("the backup's SHA-256")?;
    let ropts = restore::Options {
        only: vec!["db".into()],
        expect_sha256: Some(written),
        ..restore::Options::new(archive.path.clone(), plan.backup.output_dir.clone())
    };
    let prepared = restore::prepare(ctx, &ropts)?;
    restore::execute(ctx, &prepared, &ropts, lock).context("roll the database back after the failed migration")?;
    outcome.rolled_back = true;
    Ok(outcome)
}

/// The `migrate` command: the plan (shown and stopped there under `dry_run`), then, under the
/// lock, backup, migration and rollback on failure. An error when the migration failed, saying
/// whether the databases were restored and how to go back otherwise.
pub fn run(ctx: &Ctx, opts: &Options, dry_run: bool) -> Result<Option<Outcome>> {
    let plan = plan(ctx, opts)?;
    if dry_run {
        print!("{}", plan.describe());
        return Ok(None);
    }
    let lock = Lock::acquire(&crate::store::local::prepare_dir(&opts.dir)?, &ctx.stack.name, "migrate")?;
    let o = execute(ctx, &plan, &lock)?;
    let code = o.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "killed by a signal".into());
    match (o.succeeded, o.rolled_back) {
        (true, _) => {
            println!("the migration succeeded; the backup taken before it is {}", o.archive.display());
            Ok(Some(o))
        }
        (false, true) => {
            bail!("the migration failed (exit {code}); the databases were restored from {} (kept)", o.archive.display())
        }
        (false, false) => bail!(
            "the migration failed (exit {code}); its state was kept (--no-rollback); to go back: {}",
            restore::undo_command(ctx, &o.archive, &["db".to_string()])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> serde_yaml::Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn default_command_and_service_from_the_compose_file() {
        let (cmd, svc) = from_settings(Some(&yaml("migrate: ./manage.py migrate"))).unwrap();
        assert_eq!(cmd, ["sh", "-c", "./manage.py migrate"]);
        assert_eq!(svc, None);
        let (cmd, svc) =
            from_settings(Some(&yaml("migrate: {command: [alembic, upgrade, head], service: api}"))).unwrap();
        assert_eq!(cmd, ["alembic", "upgrade", "head"]);
        assert_eq!(svc.as_deref(), Some("api"));
        assert!(from_settings(None).unwrap().0.is_empty());
        assert!(from_settings(Some(&yaml("migrate: 42"))).is_err());
    }
}
