//! The driver of a service's own dump hook: `xtask.dump` (a command whose stdout is the dump,
//! run by `sh -c` in the service) makes one opaque dump. Restoring it: the dump, checked against the
//! archive's checksums, is piped into the service's `xtask.load` command (run by `sh -c` in the
//! service, as the compose file says). What "restore" means for that engine is the command's to
//! decide.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::dump::{dump_to_file, exec_stream, new_info, Dumped};
use super::{find, spool_all, DbRestore, DbSource, Driver, StagedDb};
use crate::archive::extract::{self, Spooled, Verified};
use crate::archive::{DbDump, DbInfo};
use crate::context::Ctx;
use crate::ui::human_bytes;

pub struct Hook;

impl Driver for Hook {
    fn dump(&self, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
        dump(ctx, src, dir)
    }

    /// Nothing of the tool's is left in the service by a restore that died.
    fn recover(&self, _: &Ctx, _: &DbRestore) -> Result<()> {
        Ok(())
    }

    /// Nothing to stage: only the service's `xtask.load` command can load its dump.
    fn stage(&self, _: &Ctx, _: &DbRestore, _: &BTreeMap<String, Spooled>) -> Result<Vec<StagedDb>> {
        Ok(Vec::new())
    }

    fn unstage(&self, _: &Ctx, _: &DbRestore, _: &[StagedDb]) {}

    fn swap(
        &self,
        ctx: &Ctx,
        db: &DbRestore,
        _: &[StagedDb],
        spooled: &BTreeMap<String, Spooled>,
    ) -> Result<Vec<String>> {
        load(ctx, db, spooled).map(|()| Vec::new())
    }

    fn drop_own(&self, _: &Ctx, _: &DbRestore) -> Result<()> {
        Ok(())
    }

    fn drop_old(&self, _: &Ctx, _: &DbRestore, _: &[String]) -> Result<()> {
        Ok(())
    }

    fn in_place(&self, ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<()> {
        load(ctx, db, &spool_all(verified, &db.info, dir)?)
    }

    /// Only its `xtask.load` command can load it: its checksum was verified, that is all.
    fn deep_check(&self, ctx: &Ctx, _: &Verified, db: &DbInfo) -> Result<()> {
        ctx.ui.step(&format!(
            "--deep cannot load the hook dump of service {} (only its xtask.load command can): its \
             checksum was verified",
            db.service
        ));
        Ok(())
    }
}

/// The dump piped into the service's `xtask.load` command.
fn load(ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<()> {
    let login = &db.login;
    let command = login.load_cmd.as_deref().with_context(|| {
        format!("service {} has no label xtask.load (a command that reads the dump on stdin)", login.service)
    })?;
    for d in &db.info.databases {
        ctx.ui.step(&format!("load the dump of service {} with its xtask.load command", login.service));
        let docker = ctx.docker()?;
        let cmd = login.exec(docker, &ctx.stack, None, &["sh", "-c", command]);
        extract::pipe_file(docker, find(spooled, &d.entry)?, &cmd)
            .with_context(|| format!("run the xtask.load command of service {}", login.service))?;
    }
    Ok(())
}

/// The output of the service's `xtask.dump` command, one opaque dump.
fn dump(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let command = login.dump_cmd.as_deref().context("no xtask.dump label")?;
    let mut info = new_info(src, "hook".into());
    info.user = "hook".into();
    let progress = ctx.ui.progress(&format!("dump service {} (xtask.dump)", login.service));
    let stream = exec_stream(docker, &login.exec(docker, stack, None, &["sh", "-c", command]))?;
    let (file, stats) = dump_to_file(stream, login.engine, dir, &progress)
        .with_context(|| format!("run the xtask.dump command of service {}", login.service))?;
    if stats.bytes == 0 {
        bail!("the xtask.dump command of service {} printed nothing: the backup failed", login.service);
    }
    progress.finish(&format!("{}: {}", login.service, human_bytes(stats.bytes)));
    let entry = format!("databases/{}/dump", login.service);
    info.databases.push(DbDump {
        name: "dump".into(),
        entry: entry.clone(),
        tables: BTreeMap::new(),
        properties: None,
    });
    Ok(Dumped { files: vec![(entry, file)], info, skipped: Vec::new() })
}
