//! The stack's services as the data tasks see them: which are running, and a guard that starts
//! what a task needs or stops what it must, then puts every service back as it was (also when
//! the task fails): started ones are stopped again (or removed, if they did not exist before),
//! stopped ones are started again and waited for.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::engine::docker::Docker;
use crate::model::compose::Stack;
use crate::ui::Ui;

#[derive(Debug, Deserialize)]
pub struct PsEntry {
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "State")]
    pub state: String,
    #[serde(rename = "Health", default)]
    pub health: String,
}

/// `docker compose ps --format json` prints one object per line (newer) or one array (older).
pub fn parse_ps(out: &str) -> Result<Vec<PsEntry>> {
    let trimmed = out.trim();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).context("parse `docker compose ps` output");
    }
    trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("parse `docker compose ps` output"))
        .collect()
}

/// Every container of the stack, running or not.
pub fn ps(docker: &Docker, stack: &Stack) -> Result<Vec<PsEntry>> {
    parse_ps(&docker.query(&docker.compose(stack, ["ps", "--all", "--format", "json"]))?)
}

/// service -> state of its first container ("running", "exited", ...); absent: no container.
pub fn states(docker: &Docker, stack: &Stack) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for e in ps(docker, stack)? {
        map.entry(e.service).or_insert(e.state);
    }
    Ok(map)
}

pub struct ServiceGuard<'a> {
    docker: &'a Docker,
    stack: &'a Stack,
    /// Started by us: (service, whether a container existed before).
    started: Vec<(String, bool)>,
    /// Stopped by us.
    stopped: Vec<String>,
}

impl<'a> ServiceGuard<'a> {
    pub fn new(docker: &'a Docker, stack: &'a Stack) -> Self {
        ServiceGuard { docker, stack, started: Vec::new(), stopped: Vec::new() }
    }

    /// Starts `service` (without its dependencies) and waits for health unless it runs already.
    /// Returns whether it had to be started.
    pub fn ensure_running(&mut self, service: &str, ui: &Ui) -> Result<bool> {
        let states = states(self.docker, self.stack)?;
        match states.get(service).map(String::as_str) {
            Some("running") => Ok(false),
            other => {
                ui.step(&format!(
                    "start {service} (it was {}) and wait for it to be healthy",
                    other.unwrap_or("not created")
                ));
                let cmd = self.docker.compose(self.stack, ["up", "--detach", "--wait", "--no-deps", service]);
                self.started.push((service.to_string(), other.is_some()));
                self.docker.apply(&cmd)?;
                Ok(true)
            }
        }
    }

    /// Stops those of `services` that run, for a file-consistent copy; they start again in `restore`.
    pub fn stop_for_copy(&mut self, services: &[String], ui: &Ui) -> Result<()> {
        let states = states(self.docker, self.stack)?;
        let running: Vec<&String> =
            services.iter().filter(|s| states.get(*s).map(String::as_str) == Some("running")).collect();
        if running.is_empty() {
            return Ok(());
        }
        ui.step(&format!(
            "stop {} for a consistent copy (--stop)",
            running.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
        let mut args: Vec<String> = vec!["stop".into()];
        args.extend(running.iter().map(|s| s.to_string()));
        self.stopped.extend(running.iter().map(|s| s.to_string()));
        self.docker.apply(&self.docker.compose(self.stack, args))
    }

    /// Puts every service back as it was; reports the first failure after trying them all.
    pub fn restore(mut self, ui: &Ui) -> Result<()> {
        self.put_back(ui)
    }

    /// Starts the services this guard stopped again and waits for their health (the ones it
    /// started stay up until [`ServiceGuard::restore`]).
    pub fn restart_stopped(&mut self, ui: &Ui) -> Result<()> {
        if self.stopped.is_empty() {
            return Ok(());
        }
        let list = std::mem::take(&mut self.stopped);
        ui.step(&format!("start {} again and wait for health", list.join(", ")));
        let mut args: Vec<String> = vec!["up".into(), "--detach".into(), "--wait".into(), "--no-deps".into()];
        args.extend(list.iter().cloned());
        self.docker
            .apply(&self.docker.compose(self.stack, args))
            .with_context(|| format!("start {} again", list.join(", ")))
    }

    fn put_back(&mut self, ui: &Ui) -> Result<()> {
        let mut first_error = self.restart_stopped(ui).err();
        for (service, existed) in std::mem::take(&mut self.started) {
            let cmd = if existed {
                ui.step(&format!("stop {service} again, as it was before"));
                self.docker.compose(self.stack, ["stop", service.as_str()])
            } else {
                ui.step(&format!("remove the {service} container again, as it was before"));
                self.docker.compose(self.stack, ["rm", "--stop", "--force", service.as_str()])
            };
            if let Err(e) = self.docker.apply(&cmd) {
                first_error.get_or_insert(e.context(format!("return {service} to how it was")));
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for ServiceGuard<'_> {
    /// On every path, also an early `?` or a panic: services go back as they were found.
    fn drop(&mut self) {
        if self.started.is_empty() && self.stopped.is_empty() {
            return;
        }
        let (stopped, started) = (self.stopped.clone(), self.started.clone());
        if let Err(e) = self.put_back(&Ui { quiet: false }) {
            eprintln!(
                "warning: services could not be put back ({e:#}); run `cargo xtask up` (stopped: {stopped:?}, started: {started:?})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_in_both_formats() {
        let lines = "{\"Service\":\"db\",\"Name\":\"app-db-1\",\"State\":\"running\",\"Health\":\"healthy\"}\n\
                     {\"Service\":\"web\",\"Name\":\"app-web-1\",\"State\":\"exited\",\"Health\":\"\"}\n";
        let e = parse_ps(lines).unwrap();
        assert_eq!((e[0].service.as_str(), e[0].health.as_str(), e[1].state.as_str()), ("db", "healthy", "exited"));
        let array = "[{\"Service\":\"db\",\"Name\":\"x\",\"State\":\"running\"}]";
        assert_eq!(parse_ps(array).unwrap()[0].health, "");
        assert!(parse_ps("").unwrap().is_empty());
        assert!(parse_ps("not json").is_err());
    }
}
