//! What every task receives: the resolved stack, its model (read once, from `docker compose
//! config` when online, else the files), its `x-xtask` settings, the docker runner (absent
//! under `--offline`) and the output settings. Prerequisites are checked here, once, before any
//! task starts.

use anyhow::{bail, Context, Result};

use crate::engine::docker::Docker;
use crate::engine::notify::Notifier;
use crate::environment::{self, Environment};
use crate::model::binds::{self, Bind};
use crate::model::compose::{self, Project, Selection, Stack};
use crate::model::notify::Event;
use crate::model::offsite::{self, Offsite};
use crate::ui::Ui;

pub struct Ctx {
    pub stack: Stack,
    docker: Option<Docker>,
    pub ui: Ui,
    /// The model and the `docker compose config` text, read once on first use.
    model: std::cell::OnceCell<(Project, Option<String>)>,
    /// What the reader of archives lets through that `x-xtask.sign`/`encrypt` would refuse.
    pub trust: Trust,
    /// A drill's throwaway stack: (live host path, its copy's host path) of each bind, so that
    /// a restore knows an archived bind of the live stack as the copy's (empty otherwise).
    pub bind_moves: Vec<(String, String)>,
}

/// Exceptions to the reading policy of `x-xtask.sign` and `x-xtask.encrypt`, each asked for by
/// its own flag (`--allow-unsigned`, `--allow-unencrypted`); none by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust {
    pub allow_unsigned: bool,
    pub allow_unencrypted: bool,
}

impl Ctx {
    /// The context of a run in the caller's shell `sh` (its directory, and its variables as
    /// the stack's files and the tool read them: [`crate::environment`], installed for the run).
    pub fn new(
        sh: &xshell::Shell,
        selection: &Selection,
        offline: bool,
        dry_run: bool,
        verbose: bool,
        quiet: bool,
    ) -> Result<Ctx> {
        let first = Environment::of_shell(sh, &[]);
        let stack = selection.resolve_in(first.vars(), first.cwd())?;
        let env = Environment::of_shell(sh, &stack.interpolated_names());
        let stack = if env.vars() == first.vars() { stack } else { selection.resolve_in(env.vars(), env.cwd())? };
        environment::install(env);
        let docker = if offline { None } else { Some(Docker::connect(dry_run, verbose)?) };
        let model = std::cell::OnceCell::new();
        Ok(Ctx { stack, docker, ui: Ui { quiet }, model, trust: Trust::default(), bind_moves: Vec::new() })
    }

    /// The context of another stack run by the same engine connection, output settings and
    /// exceptions, its files resolved in this run's environment (which stays installed): a
    /// drill's throwaway copy of the stack.
    pub fn for_selection(&self, selection: &Selection) -> Result<Ctx> {
        let env = environment::current();
        let stack = selection.resolve_in(env.vars(), env.cwd())?;
        let ui = Ui { quiet: self.ui.quiet };
        let model = std::cell::OnceCell::new();
        Ok(Ctx { stack, docker: self.docker.clone(), ui, model, trust: self.trust, bind_moves: Vec::new() })
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
            let loaded = self.load_model()?;
            let _ = self.model.set(loaded);
        }
        Ok(self.model.get().expect("set just above"))
    }

    /// The stack's model alone (see [`Ctx::model`]).
    pub fn project(&self) -> Result<&Project> {
        Ok(&self.model()?.0)
    }

    /// Reads the model: the files are parsed first (so a broken file is named), then, online,
    /// Compose's own view.
    fn load_model(&self) -> Result<(Project, Option<String>)> {
        let offline = self.stack.parse_offline()?;
        let Some(docker) = self.online() else { return Ok((offline, None)) };
        let json = docker
            .query(&docker.compose(&self.stack, ["config", "--format", "json"]))
            .context("read the stack's model with `docker compose config`")?;
        let mut project = compose::from_engine_config(&self.stack.name, &json)?;
        for v in &mut project.volumes {
            v.origin = offline.volumes.iter().find(|o| o.key == v.key).and_then(|o| o.origin.clone());
        }
        Ok((project, Some(json)))
    }

    /// The stack's bind mounts, classified (`x-xtask.binds` overrides applied; the host asked
    /// only whether a path is a single file).
    pub fn binds(&self) -> Result<Vec<Bind>> {
        let settings = self.stack.settings()?;
        let overrides = binds::overrides(settings.as_ref(), &self.stack.project_dir)?;
        Ok(binds::binds(self.project()?, &overrides, &|p| std::path::Path::new(p).is_file()))
    }

    /// The `x-xtask` off-site settings of the stack: remotes, encryption, signing.
    /// A file of trusted keys (`allowed_signers_file`, `recipients_file`) inside a bind mount is
    /// refused: a service, or a restore of a bind, could write it and make a key trusted.
    pub fn offsite(&self) -> Result<Offsite> {
        let block = self.stack.settings()?;
        let parsed = offsite::parse(block.as_ref(), &self.stack.name, &self.stack.project_dir)
            .with_context(|| format!("read the x-xtask block of {}", self.stack.files[0].display()))?;
        let binds = self.binds()?;
        let host_paths: Vec<&str> = binds.iter().map(|b| b.host_path.as_str()).collect();
        if let Some(why) = parsed.key_file_in_bind(&host_paths) {
            bail!("{why} in {}", self.stack.files[0].display());
        }
        Ok(parsed)
    }

    /// The notifiers of `x-xtask.notify` (none when the block cannot be read: the task itself
    /// then says why).
    pub fn notifier(&self) -> Notifier {
        let targets = self.offsite().map(|o| o.operations.notify).unwrap_or_default();
        Notifier::new(targets, &self.stack.name)
    }

    /// Runs `task` between notifications: start before, then success or failure with what
    /// `end` says of its result (event, message, details) or the error. Never under `dry_run`;
    /// a notifier that fails is only a warning, the task's result is returned as it was.
    pub fn notified<T>(
        &self,
        name: &str,
        dry_run: bool,
        task: impl FnOnce() -> Result<T>,
        end: impl FnOnce(&T) -> (Event, String, serde_json::Value),
    ) -> Result<T> {
        let notifier = self.notifier();
        if dry_run || notifier.is_empty() {
            return task();
        }
        notifier.send(name, Event::Start, &format!("{name} started"), &serde_json::Value::Null);
        let result = task();
        match &result {
            Ok(value) => {
                let (event, message, details) = end(value);
                notifier.send(name, event, &message, &details);
            }
            Err(e) => notifier.send(name, Event::Failure, &format!("{name} failed: {e:#}"), &serde_json::Value::Null),
        }
        result
    }
}
