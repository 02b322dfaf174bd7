//! Proof that an archive loads, beyond its checksums (`verify --deep`, and restore before it
//! touches a live MariaDB): PostgreSQL dumps loaded into a throwaway server of the service's own
//! image, MariaDB/MySQL dumps likewise ([`mariadb`]), volumes extracted into scratch volumes. A
//! module the tasks share, not a command: nothing here changes the stack.

use anyhow::{bail, Context, Result};

use crate::archive::extract::Verified;
use crate::archive::{self};
use crate::context::Ctx;

pub mod mariadb;

/// Removes a throwaway container or volume when dropped.
struct Scratch<'a> {
    docker: &'a crate::engine::docker::Docker,
    args: Vec<String>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self.docker.apply(&self.docker.cmd(self.args.clone()));
    }
}

/// Proves the archive loads: the dumps into a throwaway PostgreSQL or MariaDB/MySQL (same image
/// as the stack's database service) with the row counts compared, each volume into a scratch volume with its
/// file count compared; everything is removed afterwards.
pub fn check(ctx: &Ctx, verified: &Verified) -> Result<()> {
    let docker = ctx.docker()?;
    if docker.dry_run() {
        ctx.ui.step("--deep skipped: it starts throwaway containers, which --dry-run never does");
        return Ok(());
    }
    for db in &verified.meta().databases {
        match db.engine {
            archive::DbEngine::Postgres => deep_check_dumps(ctx, verified, db)?,
            archive::DbEngine::Mariadb | archive::DbEngine::Mysql => mariadb::check(ctx, verified, db)?,
            archive::DbEngine::Hook => ctx.ui.step(&format!(
                "--deep cannot load the hook dump of service {} (only its xtask.load command can): its \
                 checksum was verified",
                db.service
            )),
        }
    }
    deep_check_volumes(ctx, verified)
}

/// The image of the stack's `service`, for a throwaway server of the same kind.
fn service_image(ctx: &Ctx, service: &str) -> Result<String> {
    let model = ctx.project()?.clone();
    let s = model.services.iter().find(|s| s.name == service);
    s.and_then(|s| s.image.clone())
        .with_context(|| format!("the stack has no service {service} to take the server image from"))
}

/// A throwaway database server for `verify --deep`: the stack's `service` image, no network,
/// the helper labels (a later run removes it if this one is killed), a fresh password in its
/// environment variables `secrets` only (every name the image may read it under), and `env`
/// besides. Removed when dropped.
struct Throwaway<'a> {
    name: String,
    password: String,
    ctx: &'a Ctx,
    _container: Scratch<'a>,
}

impl<'a> Throwaway<'a> {
    fn start(ctx: &'a Ctx, service: &str, secrets: &[&str], env: &[String]) -> Result<Throwaway<'a>> {
        let docker = ctx.docker()?;
        let image = service_image(ctx, service)?;
        let password = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let name = format!("xtask-verify-{}-{service}", std::process::id());
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "none"].map(String::from).to_vec();
        args.extend(crate::engine::docker::helper::labels());
        args.extend(secrets.iter().flat_map(|s| ["-e".to_string(), s.to_string()]));
        args.extend(env.iter().flat_map(|e| ["-e".to_string(), e.clone()]));
        args.push(image.clone());
        ctx.ui.step(&format!("load the dumps of service {service} into a throwaway server ({image})"));
        let cmd = secrets.iter().fold(docker.cmd(args), |c, s| c.secret_env(s, &password));
        docker.change(&cmd).context("start a throwaway database server")?;
        let _container = Scratch { docker, args: vec!["rm".into(), "-f".into(), "-v".into(), name.clone()] };
        Ok(Throwaway { name, password, ctx, _container })
    }

    /// Waits (at most 120 s, a spinner on a terminal) until `ready` says the server takes
    /// connections; a server that stopped fails at once with its last log lines.
    fn wait(&self, ready: impl Fn() -> bool) -> Result<()> {
        let docker = self.ctx.docker()?;
        let progress = self.ctx.ui.waiting(&format!("wait for the throwaway server {} to take connections", self.name));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !ready() {
            let state = docker.query(&docker.cmd(["inspect", "-f", "{{.State.Running}}", &self.name]));
            let stopped = state.as_deref().is_ok_and(|s| s.trim() == "false");
            if stopped || std::time::Instant::now() > deadline {
                let logs = docker.query(&docker.cmd(["logs", "--tail", "15", &self.name])).unwrap_or_default();
                let why = if stopped { "stopped" } else { "did not take connections in 120 s" };
                bail!("the throwaway server {} {why}; its last log lines:\n{}", self.name, logs.trim_end());
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        progress.done("the throwaway server is ready");
        Ok(())
    }
}

/// The dumps loaded into a throwaway PostgreSQL of the stack's image, row counts compared.
fn deep_check_dumps(ctx: &Ctx, verified: &Verified, pg: &archive::DbInfo) -> Result<()> {
    let docker = ctx.docker()?;
    let server = Throwaway::start(ctx, &pg.service, &["POSTGRES_PASSWORD"], &[format!("POSTGRES_USER={}", pg.user)])?;
    let name = &server.name;
    let ready = docker.cmd(["exec", name, "pg_isready", "-h", "127.0.0.1", "-U", &pg.user, "-d", "postgres"]);
    server.wait(|| docker.query(&ready).is_ok())?;
    let os_user = crate::model::db::postgres::OS_USER;
    let psql = |db: &str, stop: bool| {
        let dbname = crate::model::db::postgres::dbname_arg(db);
        let mut args =
            vec!["exec", "-i", "--user", os_user, name.as_str(), "psql", "-X", "-q", "-U", &pg.user, &dbname];
        if stop {
            args.extend(["-v", "ON_ERROR_STOP=1"]);
        }
        docker.cmd(args)
    };
    // One value from a query.
    let psql_at = |db: &str, sql: &str| {
        let dbname = crate::model::db::postgres::dbname_arg(db);
        docker.query(
            &docker.cmd(["exec", "--user", os_user, name, "psql", "-X", "-At", "-U", &pg.user, &dbname, "-c", sql]),
        )
    };
    let dir = std::env::temp_dir();
    // Roles: the cluster's own superuser exists already, so errors here are expected and ignored.
    let globals_entry = pg.globals_entry.as_deref().context("a PostgreSQL dump without its roles entry")?;
    let globals = crate::archive::extract::spool_dump(verified, globals_entry, &dir)?;
    crate::archive::extract::pipe_file(docker, &globals, &psql("postgres", false))?;
    for db in &pg.databases {
        let exists = psql_at(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{}'", db.name.replace('\'', "''")),
        )?;
        if exists.trim() != "1" {
            crate::archive::extract::pipe_text(
                docker,
                "CREATE DATABASE :\"d\";",
                &psql("postgres", true).arg_pair("-v", &format!("d={}", db.name)),
            )?;
        }
        let dump = crate::archive::extract::spool_dump(verified, &db.entry, &dir)?;
        crate::archive::extract::pipe_file(docker, &dump, &psql(&db.name, true))
            .with_context(|| format!("load {} into a throwaway PostgreSQL", db.entry))?;
        for (table, rows) in &db.tables {
            let got = psql_at(&db.name, &format!("SELECT count(*) FROM {table}"))?;
            if got.trim() != rows.to_string() {
                bail!(
                    "database {}: table {table} has {} rows after loading, the metadata says {rows}",
                    db.name,
                    got.trim()
                );
            }
        }
    }
    Ok(())
}

/// Each volume loaded into a scratch volume, its file count compared.
fn deep_check_volumes(ctx: &Ctx, verified: &Verified) -> Result<()> {
    let docker = ctx.docker()?;
    let (pid, meta) = (std::process::id(), verified.meta());
    for (i, v) in meta.volumes.iter().enumerate() {
        let scratch = format!("xtask-verify-{pid}-{i}");
        docker.apply(&docker.cmd(["volume", "create", "--label", "xtask.helper=1", &scratch]))?;
        let _volume = Scratch { docker, args: vec!["volume".into(), "rm".into(), "-f".into(), scratch.clone()] };
        let files = crate::archive::extract::fill_volume(docker, verified, &v.name, &scratch, &mut |_| {})
            .with_context(|| format!("load volume {} into a scratch volume", v.name))?;
        let counted = docker.query(&docker.helper_read_only(&[scratch.as_str()], &["find", "/v/0", "-type", "f"]))?;
        if counted.lines().count() as u64 != files {
            // Names with newlines print over several lines: count NUL-separated instead.
            let nul = docker
                .query(&docker.helper_read_only(&[scratch.as_str()], &["find", "/v/0", "-type", "f", "-print0"]))?;
            let n = nul.split('\0').filter(|s| !s.is_empty()).count() as u64;
            if n != files {
                bail!("volume {}: {n} files after loading, the archive holds {files}", v.name);
            }
        }
    }
    Ok(())
}
