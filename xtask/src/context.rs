//! What every task receives: the resolved stack, the docker runner (absent under `--offline`)
//! and the output settings. Prerequisites are checked here, once, before any task starts.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::engine::docker::Docker;
use crate::model::compose::{Selection, Stack};
use crate::ui::Ui;

pub struct Ctx {
    pub stack: Stack,
    docker: Option<Docker>,
    pub ui: Ui,
}

impl Ctx {
    pub fn new(selection: &Selection, offline: bool, dry_run: bool, verbose: bool, quiet: bool) -> Result<Ctx> {
        let process: BTreeMap<String, String> = std::env::vars().collect();
        let stack = selection.resolve(&process)?;
        let docker = if offline { None } else { Some(Docker::connect(dry_run, verbose)?) };
        Ok(Ctx { stack, docker, ui: Ui { quiet } })
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
}
