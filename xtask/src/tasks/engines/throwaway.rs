//! Throwaway database servers for proving dumps away from the live one (`verify --deep`, and a
//! restore's MariaDB proof): the stack's own image, no network, a fresh password, removed when
//! dropped (also on failure; a later run removes it if this one is killed).

use anyhow::{bail, Context, Result};

use crate::context::Ctx;

/// Removes a throwaway container or volume when dropped.
pub struct Scratch<'a> {
    pub docker: &'a crate::engine::docker::Docker,
    pub args: Vec<String>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self.docker.apply(&self.docker.cmd(self.args.clone()));
    }
}

/// The image of the stack's `service`, for a throwaway server of the same kind.
fn service_image(ctx: &Ctx, service: &str) -> Result<String> {
    let model = ctx.project()?.clone();
    let s = model.services.iter().find(|s| s.name == service);
    s.and_then(|s| s.image.clone())
        .with_context(|| format!("the stack has no service {service} to take the server image from"))
}

/// A throwaway database server for `verify --deep`: the stack's `service` image, no network,
/// the helper labels (a later run removes it if this one is killed), a fresh password in its
/// environment variables `secrets` only (every name the image may read it under), and `env`
/// besides. Removed when dropped.
pub struct Throwaway<'a> {
    pub name: String,
    pub password: String,
    ctx: &'a Ctx,
    _container: Scratch<'a>,
}

impl<'a> Throwaway<'a> {
    pub fn start(ctx: &'a Ctx, service: &str, secrets: &[&str], env: &[String]) -> Result<Throwaway<'a>> {
        let docker = ctx.docker()?;
        let image = service_image(ctx, service)?;
        let password = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let name = format!("xtask-verify-{}-{service}", std::process::id());
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "none"].map(String::from).to_vec();
        args.extend(crate::engine::docker::helper::labels());
        args.extend(secrets.iter().flat_map(|s| ["-e".to_string(), s.to_string()]));
        args.extend(env.iter().flat_map(|e| ["-e".to_string(), e.clone()]));
        args.push(image.clone());
        ctx.ui.step(&format!("load the dumps of service {service} into a throwaway server ({image})"));
        let cmd = secrets.iter().fold(docker.cmd(args), |c, s| c.secret_env(s, &password));
        docker.change(&cmd).context("start a throwaway database server")?;
        let _container = Scratch { docker, args: vec!["rm".into(), "-f".into(), "-v".into(), name.clone()] };
        Ok(Throwaway { name, password, ctx, _container })
    }

    /// Waits (at most 120 s, a spinner on a terminal) until `ready` says the server takes
    /// connections; a server that stopped fails at once with its last log lines.
    pub fn wait(&self, ready: impl Fn() -> bool) -> Result<()> {
        let docker = self.ctx.docker()?;
        let progress = self.ctx.ui.waiting(&format!("wait for the throwaway server {} to take connections", self.name));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !ready() {
            let state = docker.query(&docker.cmd(["inspect", "-f", "{{.State.Running}}", &self.name]));
            let stopped = state.as_deref().is_ok_and(|s| s.trim() == "false");
            if stopped || std::time::Instant::now() > deadline {
                let logs = docker.query(&docker.cmd(["logs", "--tail", "15", &self.name])).unwrap_or_default();
                let why = if stopped { "stopped" } else { "did not take connections in 120 s" };
                bail!("the throwaway server {} {why}; its last log lines:\n{}", self.name, logs.trim_end());
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        progress.done("the throwaway server is ready");
        Ok(())
    }
}
