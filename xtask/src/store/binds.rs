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
}

impl StackBinds {
    pub fn of(ctx: &Ctx, backup_dir: &Path) -> Result<StackBinds> {
        let backup_dir = std::path::absolute(backup_dir).unwrap_or_else(|_| backup_dir.to_path_buf());
        Ok(StackBinds { project_dir: ctx.stack.project_dir.clone(), backup_dir, binds: ctx.binds()? })
    }

    /// The bind of this stack the archived bind `v` of `meta` goes back into (see
    /// [`crate::model::binds::declared_target`]).
    pub fn target_of(&self, meta: &Metadata, v: &archive::VolumeInfo, path: &str) -> Result<&Bind> {
        let uses = v.bind_uses();
        let recorded = Recorded { path, project_dir: meta.project_dir.as_deref(), uses: &uses };
        let protected = [self.project_dir.as_path(), self.backup_dir.as_path()];
        crate::model::binds::declared_target(&recorded, &self.binds, &self.project_dir, &protected)
    }
}
