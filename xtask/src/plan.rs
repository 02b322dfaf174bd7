//! Decide, then do: a task returns a `Plan` (plain data: what each step is for and the docker
//! command that does it); one executor runs plans. Under `--dry-run` the executor prints
//! each step's command instead of running it.

use anyhow::{Context, Result};

use crate::engine::docker::{Docker, DockerCmd};
use crate::ui::Ui;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What the step does, in words ("stop the stack's containers").
    pub what: String,
    pub cmd: DockerCmd,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn step(mut self, what: impl Into<String>, cmd: DockerCmd) -> Self {
        self.steps.push(Step { what: what.into(), cmd });
        self
    }

    /// Each step and its command, for confirmations and `--dry-run`.
    pub fn describe(&self) -> String {
        self.steps.iter().map(|s| format!("  - {}\n      {}\n", s.what, s.cmd)).collect()
    }

    /// Runs every step in order, also after one failed (each step must be safe on its own, as
    /// `docker volume rm` is: it refuses a volume still in use); returns the steps that failed,
    /// each with its error.
    pub fn execute_all(&self, docker: &Docker, ui: &Ui) -> Vec<(&Step, anyhow::Error)> {
        let mut failed = Vec::new();
        for step in &self.steps {
            if !docker.dry_run() {
                ui.step(&step.what);
            }
            if let Err(e) = docker.apply(&step.cmd) {
                eprintln!("error: {}: {e:#}", step.what);
                failed.push((step, e));
            }
        }
        failed
    }

    /// Runs the steps in order and stops at the first failure, naming the step.
    pub fn execute(&self, docker: &Docker, ui: &Ui) -> Result<()> {
        for step in &self.steps {
            if !docker.dry_run() {
                ui.step(&step.what);
            }
            docker.apply(&step.cmd).with_context(|| step.what.clone())?;
        }
        Ok(())
    }
}
