//! `verify --deep` for PostgreSQL: the roles and every dump loaded into a throwaway server of
//! the service's own image, row counts compared with the metadata.

use anyhow::{bail, Context, Result};

use crate::archive::extract::Verified;
use crate::archive::{self};
use crate::context::Ctx;
use crate::tasks::engines::throwaway::Throwaway;

/// The dumps loaded into a throwaway PostgreSQL of the stack's image, row counts compared.
pub fn check(ctx: &Ctx, verified: &Verified, pg: &archive::DbInfo) -> Result<()> {
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
