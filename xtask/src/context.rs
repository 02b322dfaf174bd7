//! What every task receives: the resolved stack, the docker runner (absent under `--offline`)
//! and the output settings. Prerequisites are checked here, once, before any task starts.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::engine::docker::Docker;
use crate::model::compose::{Project, Selection, Stack};
use crate::ui::Ui;

pub struct Ctx {
    pub stack: Stack,
    docker: Option<Docker>,
    pub ui: Ui,
    /// The model and the `docker compose config` text, read once on first use.
    model: std::cell::OnceCell<(Project, Option<String>)>,
    /// What the reader of archives lets through that `x-xtask.sign`/`encrypt` would refuse.
    pub trust: Trust,
}

/// Exceptions to the reading policy of `x-xtask.sign` and `x-xtask.encrypt`, each asked for by
/// its own flag (`--allow-unsigned`, `--allow-unencrypted`); none by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust {
    pub allow_unsigned: bool,
    pub allow_unencrypted: bool,
}

impl Ctx {
    pub fn new(selection: &Selection, offline: bool, dry_run: bool, verbose: bool, quiet: bool) -> Result<Ctx> {
        let process: BTreeMap<String, String> = std::env::vars().collect();
        let stack = selection.resolve(&process)?;
        let docker = if offline { None } else { Some(Docker::connect(dry_run, verbose)?) };
        Ok(Ctx { stack, docker, ui: Ui { quiet }, model: std::cell::OnceCell::new(), trust: Trust::default() })
    }

    /// The docker runner, or an error saying the command cannot work offline.
    pub fn docker(&self) -> Result<&Docker> {
        match &self.docker {
            Some(d) => Ok(d),
            None => bail!("this command needs the Docker engine: run it without --offline"),
        }
    }

    pub fn online(&self) -> Option<&Docker> {
        self.docker.as_ref()
    }

    /// The stack's model (from `docker compose config` when online, else the files) and, online,
    /// the config text it came from; read on first use and kept.
    pub fn model(&self) -> Result<&(Project, Option<String>)> {
        if self.model.get().is_none() {
            let loaded = crate::tasks::volumes::load_model(self)?;
            let _ = self.model.set(loaded);
        }
        Ok(self.model.get().expect("set just above"))
    }
}
