//! Proof that an archive loads, beyond its checksums (`verify --deep`, and restore before it
//! touches a live MariaDB): PostgreSQL dumps loaded into a throwaway server of the service's own
//! image, MariaDB/MySQL dumps likewise ([`mariadb`]), volumes extracted into scratch volumes. A
//! module the tasks share, not a command: nothing here changes the stack.

use anyhow::{bail, Context, Result};

use crate::archive::extract::Verified;
use crate::archive::{self};
use crate::context::Ctx;
use crate::tasks::engines::throwaway::{Scratch, Throwaway};

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
            archive::DbEngine::Mariadb => crate::tasks::engines::mariadb::prove::check(
                &crate::tasks::engines::mariadb::MARIADB,
                ctx,
                verified,
                db,
            )?,
            archive::DbEngine::Mysql => {
                crate::tasks::engines::mariadb::prove::check(&crate::tasks::engines::mariadb::MYSQL, ctx, verified, db)?
            }
            archive::DbEngine::Hook => ctx.ui.step(&format!(
                "--deep cannot load the hook dump of service {} (only its xtask.load command can): its \
                 checksum was verified",
                db.service
            )),
        }
    }
    deep_check_volumes(ctx, verified)
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
