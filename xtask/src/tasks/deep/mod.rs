//! Proof that an archive loads, beyond its checksums (`verify --deep`): each service's dumps
//! proven by its engine's driver (`Driver::deep_check`: a throwaway server of the service's own
//! image), volumes extracted into scratch volumes. A module the tasks share, not a command:
//! nothing here changes the stack.

use anyhow::{bail, Context, Result};

use crate::archive::extract::Verified;
use crate::context::Ctx;
use crate::tasks::engines::throwaway::Scratch;

/// Proves the archive loads: each service's dumps by its driver (into a throwaway server of the
/// stack's image, row counts compared), each volume into a scratch volume with its file count
/// compared; everything is removed afterwards.
pub fn check(ctx: &Ctx, verified: &Verified) -> Result<()> {
    let docker = ctx.docker()?;
    if docker.dry_run() {
        ctx.ui.step("--deep skipped: it starts throwaway containers, which --dry-run never does");
        return Ok(());
    }
    for db in &verified.meta().databases {
        crate::tasks::engines::of(db.engine).deep_check(ctx, verified, db)?;
    }
    deep_check_volumes(ctx, verified)
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
