//! psql in a PostgreSQL database service, as the `postgres` OS user with the password in its
//! environment: the one client every PostgreSQL step runs (staging, the swap, the loading role,
//! recovery). Only names from the verified metadata or made here go into SQL text; others go in
//! as psql variables.

use anyhow::{bail, Context, Result};

use crate::archive::extract::{self, Spooled};
use crate::context::Ctx;
use crate::engine::docker::DockerCmd;
use crate::model::db::postgres;
use crate::tasks::engines::DbRestore;

/// psql in the database service, as the `postgres` OS user, the password in its environment.
pub struct Psql<'a> {
    pub ctx: &'a Ctx,
    pub db: &'a DbRestore,
}

impl Psql<'_> {
    pub fn cmd(&self, database: &str, extra: &[&str]) -> Result<DockerCmd> {
        let docker = self.ctx.docker()?;
        let dbname = postgres::dbname_arg(database);
        let user = self.db.login.user_name(docker, &self.ctx.stack)?;
        let mut args = vec!["psql", "-X", "-q", "-U", user, &dbname];
        args.extend(extra);
        Ok(self.db.login.client(docker, &self.ctx.stack, &args))
    }

    /// One query's rows (`-At`). Only names from the verified metadata or made here go in.
    pub fn rows(&self, database: &str, sql: &str) -> Result<Vec<String>> {
        let out = self.ctx.docker()?.query(&self.cmd(database, &["-At", "-c", sql])?)?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// SQL with psql variables (`-v name=value`), stopping at the first error.
    pub fn run(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> Result<()> {
        let cmd = self.with_vars(database, &[], vars)?;
        extract::pipe_text(self.ctx.docker()?, sql, &cmd)
    }

    /// psql stopping at the first error, with `extra` and the psql variables `vars`.
    fn with_vars(&self, database: &str, extra: &[&str], vars: &[(&str, &str)]) -> Result<DockerCmd> {
        let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-v", "ON_ERROR_STOP=1"];
        args.extend(extra);
        for v in &vars {
            args.extend(["-v", v.as_str()]);
        }
        self.cmd(database, &args)
    }

    /// A script on psql's stdin, its rows (`-At`), stopping at the first error.
    pub fn query_script(&self, database: &str, sql: &str, vars: &[(&str, &str)]) -> Result<Vec<String>> {
        let out = self.ctx.docker()?.query_input(&self.with_vars(database, &["-At"], vars)?, sql.as_bytes())?;
        Ok(out.lines().map(str::to_string).collect())
    }

    pub fn load(&self, database: &str, dump: &Spooled, entry: &str) -> Result<()> {
        self.load_after(database, dump, entry, || Ok(()))
    }

    /// [`Psql::load`], calling `started` once psql runs and before any of the dump is sent.
    pub fn load_after(
        &self,
        database: &str,
        dump: &Spooled,
        entry: &str,
        started: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let cmd = self.with_vars(database, &[], &[])?;
        extract::pipe_file_after(self.ctx.docker()?, dump, &cmd, started)
            .with_context(|| format!("load {entry} (stopped at the first SQL error)"))
    }

    pub fn exists(&self, database: &str) -> Result<bool> {
        // `database` is a checked name (no quote): it can stand in a literal.
        Ok(self.rows("template1", &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"))?.len() == 1)
    }

    /// Compares each table's rows with the archive's count, as the stack's user: only plain
    /// tables (a view or foreign table of that name is refused unread), `search_path` pinned to
    /// `pg_catalog` and `FROM ONLY` (the rows a COPY of that table held), so counting calls no
    /// function a dump defined.
    pub fn check_counts(&self, database: &str, d: &crate::archive::DbDump) -> Result<()> {
        let not_plain = self.rows(
            database,
            "SELECT '\"' || n.nspname || '\".\"' || c.relname || '\"' FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind NOT IN ('r', 'i', 'I', 't')",
        )?;
        for (table, rows) in &d.tables {
            if not_plain.contains(table) {
                bail!("database {}: {table} is not a plain table after loading; refused", d.name);
            }
            // `table` passed the grammar: `"schema"."table"`, no `"` inside.
            let sql = format!("SET search_path = pg_catalog; SELECT pg_catalog.count(*) FROM ONLY {table}");
            let got = self.rows(database, &sql)?.concat();
            if got != rows.to_string() {
                bail!("database {}: table {table} has {got} rows after loading, the archive says {rows}", d.name);
            }
        }
        Ok(())
    }
}
