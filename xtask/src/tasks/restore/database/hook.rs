//! Restoring a service dumped by its `xtask.dump` hook: the dump, checked against the archive's
//! checksums, is piped into the service's `xtask.load` command (run by `sh -c` in the service,
//! as the compose file says). What "restore" means for that engine is the command's to decide.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{find, DbRestore};
use crate::archive::extract::{self, Spooled};
use crate::context::Ctx;

pub fn load(ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<()> {
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
