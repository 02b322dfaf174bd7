//! The Docker engine as the tool drives it: `docker` and `docker compose`, built as explicit argv
//! (never a shell string), `docker compose` always with the project's name, directory, files and
//! profiles pinned, secrets in the child's environment (never its command line, never printed).
//! Split by concern: [`cmd`] (the command as data), [`helper`] (helper containers), [`volumes`]
//! (what the engine holds); running them is the process layer's (engine/process/run.rs).

pub mod cmd;
pub mod helper;
pub mod volumes;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

pub use crate::engine::process::{ChildReader, ChildWriter, Tool, ToolReader, ToolWriter};
pub use cmd::DockerCmd;
pub use helper::{engine_is_local, Helper, HelperMount, VolumeSink, VolumeTar};

use crate::model::compose::Stack;

/// The docker client found on PATH, with the run mode.
#[derive(Debug, Clone)]
pub struct Docker {
    pub(crate) bin: PathBuf,
    pub(crate) dry_run: bool,
    /// Print each command before running it (`--verbose`) or instead of running it (`--dry-run`).
    pub(crate) echo: bool,
}

impl Docker {
    /// Finds `docker` on PATH and checks that the daemon answers and Compose v2 is there.
    pub fn connect(dry_run: bool, echo: bool) -> Result<Docker> {
        let bin =
            which::which_in("docker", crate::environment::var("PATH"), crate::environment::cwd()).map_err(|_| {
                anyhow!(
                    "the `docker` command was not found on PATH\n  \
                 install Docker Engine (https://docs.docker.com/engine/install/), or on Debian run \
                 `scripts/provision.sh`, or use --offline to only read the compose files"
                )
            })?;
        let docker = Docker { bin, dry_run, echo };
        docker.preflight()?;
        Ok(docker)
    }

    /// Asks the daemon and Compose for their versions at the same time (each is a process start).
    fn preflight(&self) -> Result<()> {
        let (out, compose) = std::thread::scope(|s| {
            let compose = s.spawn(|| self.output(&self.cmd(["compose", "version", "--short"])));
            let out = self.output(&self.cmd(["version", "--format", "{{.Server.Version}}"]));
            (out, compose.join().unwrap_or_else(|_| Err(anyhow!("`docker compose version` could not be run"))))
        });
        let out = out?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "cannot reach the Docker daemon: {}\n  \
                 start it (`sudo systemctl start docker`, or `scripts/provision.sh` on a test machine), \
                 check DOCKER_HOST and that you may use the socket, or use --offline",
                err.trim()
            );
        }
        let out = compose?;
        let version = String::from_utf8_lossy(&out.stdout).trim().trim_start_matches('v').to_string();
        if !out.status.success() || !version.starts_with("2.") {
            bail!(
                "Docker Compose v2 (`docker compose`) is required, found {}\n  \
                 install the Compose plugin (https://docs.docker.com/compose/install/linux/), \
                 or on Debian run `scripts/provision.sh`",
                if version.is_empty() { "none".to_string() } else { version }
            );
        }
        Ok(())
    }

    /// A runner that only builds commands, for unit tests of plans.
    #[cfg(test)]
    pub fn for_plans() -> Docker {
        Docker { bin: "docker".into(), dry_run: true, echo: false }
    }

    /// Whether commands are echoed (`-v`): the tool's own detail lines follow it.
    pub fn verbose(&self) -> bool {
        self.echo
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// `docker ARGS...`
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(&self, args: I) -> DockerCmd {
        DockerCmd { args: args.into_iter().map(Into::into).collect(), secret_env: Vec::new() }
    }

    /// `docker compose -p NAME --project-directory DIR -f F... [--profile P]... ARGS...`
    pub fn compose<I: IntoIterator<Item = S>, S: Into<String>>(&self, stack: &Stack, args: I) -> DockerCmd {
        let mut argv = vec!["compose".to_string(), "--project-name".into(), stack.name.clone()];
        argv.push("--project-directory".into());
        argv.push(stack.project_dir.to_string_lossy().into_owned());
        for f in &stack.files {
            argv.push("--file".into());
            argv.push(f.to_string_lossy().into_owned());
        }
        for p in &stack.profiles {
            argv.push("--profile".into());
            argv.push(p.clone());
        }
        argv.extend(args.into_iter().map(Into::into));
        DockerCmd { args: argv, secret_env: Vec::new() }
    }

    /// A helper with `volume` mounted read-write at `/v/0`, running `command` on its stdin.
    pub fn helper_writer(&self, volume: &str, command: &[&str]) -> DockerCmd {
        Helper::writer(volume, command).to_cmd()
    }

    /// A helper with `volumes` mounted read-only at `/v/0`, `/v/1`… in that order, no network.
    pub fn helper_read_only(&self, volumes: &[&str], command: &[&str]) -> DockerCmd {
        Helper::read_only(volumes, command).to_cmd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::compose::Env;

    fn docker() -> Docker {
        Docker { bin: "docker".into(), dry_run: true, echo: false }
    }

    #[test]
    fn compose_pins_project_directory_files_and_profiles() {
        let stack = Stack {
            name: "demo".into(),
            files: vec!["/s/compose.yaml".into(), "/s/compose.test.yaml".into()],
            project_dir: "/s".into(),
            profiles: vec!["debug".into()],
            env: Env::default(),
        };
        let c = docker().compose(&stack, ["ps", "--format", "json"]);
        assert_eq!(
            c.args,
            [
                "compose",
                "--project-name",
                "demo",
                "--project-directory",
                "/s",
                "--file",
                "/s/compose.yaml",
                "--file",
                "/s/compose.test.yaml",
                "--profile",
                "debug",
                "ps",
                "--format",
                "json"
            ]
        );
    }

    #[test]
    fn helpers_are_specs_with_mounts_in_order_and_the_image_before_the_command() {
        std::env::set_var("XTASK_HELPER_IMAGE", "busybox:test");
        let mut h = Helper::read_only(&["a", "b"], &["du", "-s", "/v/0"]);
        h.mounts.push(HelperMount {
            source: "/tmp/io".into(),
            target: "/xtask-io".into(),
            read_only: false,
            bind: true,
            expect: None,
        });
        let args = h.to_cmd().args;
        assert!(args.starts_with(&["run".into(), "--rm".into(), "--network".into(), "none".into()]), "{args:?}");
        let at = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert!(at("type=volume,source=a,target=/v/0,readonly") < at("type=volume,source=b,target=/v/1,readonly"));
        assert!(at("type=bind,source=/tmp/io,target=/xtask-io") < at("busybox:test"));
        assert_eq!(&args[at("busybox:test") + 1..], ["du", "-s", "/v/0"]);
        let w = Helper::writer("v", &["tar", "-x"]).to_cmd().args;
        assert_eq!(&w[..3], ["run", "--rm", "-i"]);
        assert!(w.contains(&"type=volume,source=v,target=/v/0".to_string()));
        assert!(!w.contains(&"sh".to_string()), "a volume needs no guard: {w:?}");
        // A bind written to: its command runs behind the guard, given the identity the tool
        // found ("-": not a directory here) and the path, as arguments, never as script text.
        let b = Helper::writer("/nonexistent/x'$(reboot)", &["tar", "-x"]).to_cmd().args;
        let at = b.iter().position(|a| a == "busybox:test").unwrap();
        assert_eq!(b[at + 1..at + 3], ["sh", "-c"]);
        assert!(b[at + 3].contains("stat -c %d:%i") && !b[at + 3].contains("reboot"), "{}", b[at + 3]);
        assert_eq!(b[at + 4..], ["1", "/v/0", "-", "/nonexistent/x'$(reboot)", "tar", "-x"]);
        // Several targets: a triple for each bind among them, none for a volume.
        let s = Helper::writers(&["vol", "/nonexistent/a"], &["true"]).to_cmd().args;
        let at = s.iter().position(|a| a == "busybox:test").unwrap();
        assert_eq!(s[at + 4..], ["1", "/v/1", "-", "/nonexistent/a", "true"]);
    }

    #[test]
    fn display_quotes_and_hides_secrets() {
        let c = docker().cmd(["run", "-e", "PGPASSWORD", "it's here", "{{.Name}}"]).secret_env("PGPASSWORD", "hunter2");
        let shown = c.to_string();
        assert_eq!(shown, r"PGPASSWORD=*** docker run -e PGPASSWORD 'it'\''s here' '{{.Name}}'");
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn failure_carries_stderr_without_secrets() {
        let c = docker().cmd(["exec", "db"]).secret_env("PGPASSWORD", "hunter2");
        let status = std::process::ExitStatus::default();
        let e = crate::engine::process::failure(&c, status, b"auth failed for password hunter2\n").to_string();
        assert!(e.contains("auth failed for password ***"), "{e}");
        assert!(!e.contains("hunter2"));
        assert!(e.contains("docker exec db"));
    }
}
