//! Where a restore may write a bind: the stack's binds as today's compose file declares them,
//! with the project and backup directories no bind may hold. An archive's path text never
//! chooses a place: a recorded bind is matched to a declared one by its mounts.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::archive::{self, Metadata};
use crate::context::Ctx;
use crate::model::binds::{Bind, Recorded};

/// This stack's bind mounts (where a restore may write binds) and the directories no restored
/// bind may hold: the project directory and the backup directory.
pub struct StackBinds {
    pub project_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub binds: Vec<Bind>,
    /// The accounts' home directories (from `/etc/passwd`): held like `/home/*`.
    pub homes: Vec<String>,
    /// A drill's binds: (live host path, the throwaway copy's), from [`Ctx::bind_moves`].
    pub moves: Vec<(String, String)>,
}

impl StackBinds {
    pub fn of(ctx: &Ctx, backup_dir: &Path) -> Result<StackBinds> {
        let backup_dir = std::path::absolute(backup_dir).unwrap_or_else(|_| backup_dir.to_path_buf());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let homes = passwd.lines().filter_map(|l| l.split(':').nth(5)).filter(|h| h.len() > 1).map(String::from);
        Ok(StackBinds {
            project_dir: ctx.stack.project_dir.clone(),
            backup_dir,
            binds: ctx.binds()?,
            homes: homes.collect(),
            moves: ctx.bind_moves.clone(),
        })
    }

    /// The bind of this stack the archived bind `v` of `meta` goes back into (see
    /// [`crate::model::binds::declared_target`]); one that is held
    /// ([`crate::model::binds::held`]) only when `named` (the user named it with `--only`).
    pub fn target_of(&self, meta: &Metadata, v: &archive::VolumeInfo, path: &str, named: bool) -> Result<&Bind> {
        let uses = v.bind_uses();
        // In a drill's copy the live stack's bind is the copy's (the tool's own map, never the archive's).
        let path = self.moves.iter().find(|(live, _)| live == path).map_or(path, |(_, copy)| copy.as_str());
        let recorded = Recorded { path, project_dir: meta.project_dir.as_deref(), uses: &uses };
        let protected = [self.project_dir.as_path(), self.backup_dir.as_path()];
        let bind = crate::model::binds::declared_target(&recorded, &self.binds, &self.project_dir, &protected)?;
        match crate::model::binds::held(&bind.host_path, &self.homes, &self.backup_dir) {
            Some(why) if !named => anyhow::bail!(
                "this stack binds {} there, which is {why}: a restore replaces it only when you name it \
                 (--only {})",
                bind.host_path,
                v.name
            ),
            _ => Ok(bind),
        }
    }
}
