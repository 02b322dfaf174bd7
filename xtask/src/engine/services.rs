//! The stack's services as the data tasks see them: which are running, and a guard that starts
//! what a task needs or stops what it must, then puts every service back as it was (also when
//! the task fails): started ones are stopped again (or removed, if they did not exist before),
//! stopped ones are started again and waited for.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
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
    /// The containers of the stopped services that were running: started again directly.
    stopped_containers: Vec<String>,
    /// Every service's state when [`ServiceGuard::remember`] was called, for
    /// [`ServiceGuard::restore_checked`].
    before: Option<BTreeMap<String, String>>,
}

impl<'a> ServiceGuard<'a> {
    pub fn new(docker: &'a Docker, stack: &'a Stack) -> Self {
        ServiceGuard {
            docker,
            stack,
            started: Vec::new(),
            stopped: Vec::new(),
            stopped_containers: Vec::new(),
            before: None,
        }
    }

    /// Notes every service's state now: [`ServiceGuard::restore_checked`] compares with it.
    pub fn remember(&mut self) -> Result<()> {
        self.before = Some(states(self.docker, self.stack).context("note the services' states")?);
        Ok(())
    }

    /// Starts `service` (without its dependencies) and waits for health unless it runs already.
    /// Returns whether it had to be started.
    pub fn ensure_running(&mut self, service: &str, ui: &Ui) -> Result<bool> {
        if self.stopped.iter().any(|s| s == service) {
            // This guard stopped it (a user of a volume being replaced): it runs again as it
            // did before, and is no longer this guard's to put back. Never "started by us",
            // which putting back would stop.
            self.start_again(&[service.to_string()], ui)?;
            return Ok(true);
        }
        let states = states(self.docker, self.stack)?;
        match states.get(service).map(String::as_str) {
            Some("running") => Ok(false),
            other => {
                ui.step(&format!(
                    "start {service} (it was {}) and wait for it to be healthy",
                    other.unwrap_or("not created")
                ));
                let cmd = self.docker.compose(self.stack, ["up", "--detach", "--no-deps", service]);
                self.started.push((service.to_string(), other.is_some()));
                self.docker.apply(&cmd)?;
                let containers: Vec<String> =
                    ps(self.docker, self.stack)?.into_iter().filter(|e| e.service == service).map(|e| e.name).collect();
                wait_until_up(self.docker, &containers, ui)?;
                Ok(true)
            }
        }
    }

    /// Stops those of `services` that run, saying `why` (e.g. "for the swap"); they start again
    /// in `restore`.
    pub fn stop_for(&mut self, services: &[String], why: &str, ui: &Ui) -> Result<()> {
        let entries = ps(self.docker, self.stack)?;
        let running = running_of(&entries, services);
        if running.is_empty() {
            return Ok(());
        }
        ui.step(&format!("stop {} {why}", running.join(", ")));
        let mut args: Vec<String> = vec!["stop".into()];
        args.extend(running.iter().cloned());
        self.stopped_containers.extend(
            entries.iter().filter(|e| e.state == "running" && running.contains(&e.service)).map(|e| e.name.clone()),
        );
        self.stopped.extend(running);
        self.docker.apply(&self.docker.compose(self.stack, args))
    }

    /// Puts every service back as it was; reports the first failure after trying them all.
    pub fn restore(mut self, ui: &Ui) -> Result<()> {
        self.put_back(ui)
    }

    /// [`ServiceGuard::restore`], then checks every service against the states
    /// [`ServiceGuard::remember`] noted: Ok with what it found (said), or an error naming each
    /// service that runs where it did not or no longer runs, and the command to start it.
    pub fn restore_checked(mut self, ui: &Ui) -> Result<String> {
        let put_back = self.put_back(ui);
        let Some(before) = self.before.take() else { return put_back.map(|()| String::new()) };
        let now = states(self.docker, self.stack).context("check the services' states")?;
        let changed = changed_since(&before, &now);
        if changed.is_empty() {
            put_back?;
            let running = now.values().filter(|s| *s == "running").count();
            return Ok(format!("every service is as it was before ({running} running)"));
        }
        let not_running: Vec<&str> =
            changed.iter().filter(|c| c.contains("was running")).map(|c| c.split(' ').next().unwrap_or("")).collect();
        let hint = if not_running.is_empty() {
            String::new()
        } else {
            format!("; start them with `cargo xtask up {}`", not_running.join(" "))
        };
        let e = anyhow::anyhow!("the services are not as they were before: {}{hint}", changed.join(", "));
        Err(match put_back {
            Err(p) => e.context(format!("{p:#}")),
            Ok(()) => e,
        })
    }

    /// Starts the services this guard stopped again and waits for their health (the ones it
    /// started stay up until [`ServiceGuard::restore`]).
    pub fn restart_stopped(&mut self, ui: &Ui) -> Result<()> {
        let list = self.start_stopped(ui)?;
        wait_until_up(self.docker, &list, ui)
    }

    /// Starts the containers this guard stopped again, as they were (`docker start`: no
    /// recreation, no wait for their dependencies' health), and returns them: the moment this
    /// returns, their services run again. [`wait_until_up`] then waits for their health.
    pub fn start_stopped(&mut self, ui: &Ui) -> Result<Vec<String>> {
        let services = std::mem::take(&mut self.stopped);
        let containers = std::mem::take(&mut self.stopped_containers);
        if containers.is_empty() {
            return Ok(containers);
        }
        ui.step(&format!("start {} again", services.join(", ")));
        let mut args: Vec<String> = vec!["start".into()];
        args.extend(containers.iter().cloned());
        if let Err(e) = self.docker.apply(&self.docker.cmd(args)) {
            // Still this guard's to put back.
            let what = format!("start {} again; run `cargo xtask up {}`", services.join(", "), services.join(" "));
            self.stopped = services;
            self.stopped_containers = containers;
            return Err(e.context(what));
        }
        Ok(containers)
    }

    /// Starts again, and waits for, those of `services` this guard stopped (a database server
    /// that mounts a restored volume, whose dumps load next): from then on they are no longer
    /// this guard's to put back. On a failure they stay its own.
    pub fn start_again(&mut self, services: &[String], ui: &Ui) -> Result<()> {
        let again: Vec<String> = self.stopped.iter().filter(|s| services.contains(s)).cloned().collect();
        if again.is_empty() {
            return Ok(());
        }
        let entries = ps(self.docker, self.stack)?;
        let containers: Vec<String> = self
            .stopped_containers
            .iter()
            .filter(|c| entries.iter().any(|e| &e.name == *c && again.contains(&e.service)))
            .cloned()
            .collect();
        ui.step(&format!("start {} again: its databases load next", again.join(", ")));
        let mut args: Vec<String> = vec!["start".into()];
        args.extend(containers.iter().cloned());
        self.docker.apply(&self.docker.cmd(args))?;
        self.stopped.retain(|s| !again.contains(s));
        self.stopped_containers.retain(|c| !containers.contains(c));
        wait_until_up(self.docker, &containers, ui)
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

/// How the services' states now differ from `before` (service -> state, [`states`]): one line
/// per service that ran and no longer does, or did not run and now does. Empty: as before.
pub fn changed_since(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let running = |m: &BTreeMap<String, String>, s: &str| m.get(s).is_some_and(|st| st == "running");
    let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|s| running(before, s) != running(now, s))
        .map(|s| {
            let was = before.get(s).map_or("not created", String::as_str);
            let is = now.get(s).map_or("not created", String::as_str);
            format!("{s} was {was}, is {is}")
        })
        .collect()
}

/// The running ones of `services` (by their first container's state, as `compose stop` sees them).
fn running_of(entries: &[PsEntry], services: &[String]) -> Vec<String> {
    services
        .iter()
        .filter(|s| entries.iter().find(|e| &e.service == *s).is_some_and(|e| e.state == "running"))
        .cloned()
        .collect()
}

/// How long a started container may take to become healthy before the wait gives up.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits until every one of `containers` runs and, if it has a health check, reports healthy.
/// A container without a health check (or with `healthcheck: {disable: true}`) is up when it
/// runs; one that exits or turns unhealthy is an error naming it.
pub fn wait_until_up(docker: &Docker, containers: &[String], ui: &Ui) -> Result<()> {
    if containers.is_empty() || docker.dry_run() {
        return Ok(());
    }
    let progress = ui.waiting(&format!("wait until {} run and are healthy", containers.join(", ")));
    let started = std::time::Instant::now();
    let format =
        "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";
    loop {
        let mut args: Vec<String> = vec!["inspect".into(), "--format".into(), format.into()];
        args.extend(containers.iter().cloned());
        let out = docker.query(&docker.cmd(args)).context("ask the engine for the containers' health")?;
        match health_verdict(&out) {
            Health::Up => {
                progress.done(&format!("{} up", containers.join(", ")));
                return Ok(());
            }
            Health::Failed(why) => bail!("{why}; see `docker logs {}`", why.split(' ').next().unwrap_or_default()),
            Health::Waiting(who) if started.elapsed() > HEALTH_TIMEOUT => {
                bail!("{who} did not become healthy in {} s; see `docker logs {who}`", HEALTH_TIMEOUT.as_secs())
            }
            Health::Waiting(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Health {
    Up,
    /// The first container still starting.
    Waiting(String),
    /// A container that exited or is unhealthy, and what is wrong.
    Failed(String),
}

/// Reads `NAME STATUS EXITCODE HEALTH` lines (HEALTH `none` without a health check). A
/// one-shot container that exited 0 (an init or migration job) is done, not failed.
fn health_verdict(inspect: &str) -> Health {
    for line in inspect.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().trim_start_matches('/').to_string();
        let (status, code) = (words.next().unwrap_or_default(), words.next().unwrap_or("0"));
        let health = words.next().unwrap_or("none");
        match (status, health) {
            ("running", "healthy" | "none") => continue,
            ("exited", _) if code == "0" => continue,
            ("running", "unhealthy") => return Health::Failed(format!("{name} is unhealthy")),
            ("running" | "created" | "restarting", _) => return Health::Waiting(name),
            (other, _) => return Health::Failed(format!("{name} is {other} (exit code {code}), not running")),
        }
    }
    Health::Up
}

impl Drop for ServiceGuard<'_> {
    /// On every path, also an early `?` or a panic: services go back as they were found.
    fn drop(&mut self) {
        if self.started.is_empty() && self.stopped.is_empty() && self.stopped_containers.is_empty() {
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
    fn a_change_of_running_is_named_and_other_states_are_alike() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let before = map(&[("db", "running"), ("app", "running"), ("job", "exited"), ("old", "created")]);
        let same = map(&[("db", "running"), ("app", "running"), ("job", "created")]);
        assert!(changed_since(&before, &same).is_empty(), "{:?}", changed_since(&before, &same));
        let now = map(&[("db", "exited"), ("app", "running"), ("job", "running")]);
        assert_eq!(changed_since(&before, &now), ["db was running, is exited", "job was exited, is running"]);
        let gone = map(&[("app", "running"), ("job", "exited")]);
        assert_eq!(changed_since(&before, &gone), ["db was running, is not created"]);
    }

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

    #[test]
    fn health_counts_running_without_a_check_as_up() {
        assert_eq!(health_verdict("/a running 0 healthy\n/b running 0 none\n"), Health::Up);
        assert_eq!(health_verdict("/a running 0 starting\n"), Health::Waiting("a".into()));
        assert_eq!(
            health_verdict("/a running 0 healthy\n/b exited 3 none\n"),
            Health::Failed("b is exited (exit code 3), not running".into())
        );
        assert_eq!(health_verdict("/a exited 0 none\n"), Health::Up, "a one-shot job that finished");
        assert_eq!(health_verdict("/a running 0 unhealthy\n"), Health::Failed("a is unhealthy".into()));
        assert_eq!(health_verdict(""), Health::Up);
    }
}
