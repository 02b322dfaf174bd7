//! Running docker, all through duct: short commands to their end (output captured; a non-zero
//! exit is an error carrying the child's stderr, secrets scrubbed), streamed children (a volume's
//! tar or a dump read through a pipe, tar or psql fed through one, stderr captured, `unchecked`
//! plus an explicit status check, the child killed when dropped unfinished). Queries run even
//! under `--dry-run`; changes are only printed then. While a restore catches SIGINT/SIGTERM
//! (crate::signals), every child runs in its own process group so a terminal's Ctrl-C reaches
//! only the tool (duct's `before_spawn`; xshell has no such hook: docs/design.md).

use std::io::{Read, Write};
use std::process::{ExitStatus, Output};

use anyhow::{anyhow, bail, Context, Result};

use crate::engine::docker::{Docker, DockerCmd};
use crate::signals;

/// `docker ARGS` as a duct expression: secrets in its environment, stdin closed, and its own
/// process group while signals are caught.
fn expression(docker: &Docker, cmd: &DockerCmd) -> duct::Expression {
    #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn processes
    let mut e = duct::cmd(&docker.bin, &cmd.args);
    for (k, v) in &cmd.secret_env {
        e = e.env(k, v);
    }
    with_group(e)
}

pub(crate) fn with_group(e: duct::Expression) -> duct::Expression {
    // What the caller's shell set (crate::environment) reaches every child.
    let e = crate::environment::overrides().into_iter().fold(e, |e, (k, v)| e.env(k, v));
    if !signals::installed() {
        return e;
    }
    e.before_spawn(|c| {
        std::os::unix::process::CommandExt::process_group(c, 0);
        Ok(())
    })
}

impl Docker {
    /// Runs a short command to its end with stdout and stderr captured.
    pub(crate) fn output(&self, cmd: &DockerCmd) -> Result<Output> {
        let e = expression(self, cmd).stdin_null().stdout_capture().stderr_capture().unchecked();
        e.run().with_context(|| format!("run `{cmd}`"))
    }

    /// Runs a command that only reads (always, also under `--dry-run`) and returns its stdout.
    pub fn query(&self, cmd: &DockerCmd) -> Result<String> {
        let out = self.output(cmd)?;
        if !out.status.success() {
            return Err(failure(cmd, out.status, &out.stderr));
        }
        String::from_utf8(out.stdout).with_context(|| format!("`{cmd}` printed something that is not UTF-8"))
    }

    /// [`Docker::query`] with `input` on the command's stdin (a script too long for argv).
    pub fn query_input(&self, cmd: &DockerCmd, input: &[u8]) -> Result<String> {
        let e = expression(self, cmd).stdin_bytes(input.to_vec()).stdout_capture().stderr_capture().unchecked();
        let out = e.run().with_context(|| format!("run `{cmd}`"))?;
        if !out.status.success() {
            return Err(failure(cmd, out.status, &out.stderr));
        }
        String::from_utf8(out.stdout).with_context(|| format!("`{cmd}` printed something that is not UTF-8"))
    }

    /// Runs a command that changes something and returns its stdout (e.g. a new container's
    /// id); under `--dry-run` prints it instead and returns an empty string.
    pub fn change(&self, cmd: &DockerCmd) -> Result<String> {
        if self.dry_run {
            println!("{cmd}");
            return Ok(String::new());
        }
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let out = self.output(cmd)?;
        if self.echo {
            std::io::stderr().write_all(&out.stderr).ok();
        }
        if !out.status.success() {
            return Err(failure(cmd, out.status, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Docker::change`] when the output does not matter.
    pub fn apply(&self, cmd: &DockerCmd) -> Result<()> {
        self.change(cmd).map(drop)
    }

    /// Runs a command that changes something with its output going straight to the user's
    /// terminal (a migration); under `--dry-run` prints it instead. Returns its exit status.
    pub fn run_live(&self, cmd: &DockerCmd) -> Result<ExitStatus> {
        if self.dry_run {
            println!("{cmd}");
            return Ok(ExitStatus::default());
        }
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let out = expression(self, cmd).stdin_null().unchecked().run().with_context(|| format!("run `{cmd}`"))?;
        Ok(out.status)
    }

    /// Runs `argv` on the host in `dir`, output to the user's terminal (`migrate --host`).
    pub fn run_host(&self, argv: &[String], dir: &std::path::Path) -> Result<ExitStatus> {
        let shown = argv.iter().map(|a| crate::engine::docker::cmd::shell_quote(a)).collect::<Vec<_>>().join(" ");
        if self.dry_run {
            println!("{shown}");
            return Ok(ExitStatus::default());
        }
        let (program, args) = argv.split_first().context("an empty command")?;
        #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn processes
        let e = duct::cmd(program, args).dir(dir).stdin_null().unchecked();
        let out =
            with_group(e).run().with_context(|| format!("run `{shown}` (is {program} installed and on PATH?)"))?;
        Ok(out.status)
    }

    /// Starts `cmd` with its stdout piped to the caller (also under `--dry-run`: callers only
    /// stream from commands that read).
    pub fn stream(&self, cmd: &DockerCmd) -> Result<ChildReader> {
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let e = expression(self, cmd).stdin_null().stderr_capture().unchecked();
        let reader = e.reader().with_context(|| format!("start `{cmd}`"))?;
        Ok(ChildReader { reader: Some(reader), cmd: cmd.clone() })
    }

    /// Starts `cmd` with its stdin fed by the caller (a dump into psql, a tar into a helper).
    pub fn pipe_into(&self, cmd: &DockerCmd) -> Result<ChildWriter> {
        if self.dry_run {
            bail!("internal error: a command that writes must not run under --dry-run: {cmd}");
        }
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let (read, write) = os_pipe::pipe().context("create a pipe")?;
        let e = expression(self, cmd).stdin_file(read).stdout_null().stderr_capture().unchecked();
        let handle = e.start().with_context(|| format!("start `{cmd}`"))?;
        drop(e);
        Ok(ChildWriter { stdin: Some(write), run: Running::new(handle, cmd) })
    }

    /// Starts `cmd` with no stdin or stdout (a helper that talks through a FIFO).
    pub(crate) fn start_quiet(&self, cmd: &DockerCmd) -> Result<Running> {
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let e = expression(self, cmd).stdin_null().stdout_null().stderr_capture().unchecked();
        Ok(Running::new(e.start().with_context(|| format!("start `{cmd}`"))?, cmd))
    }
}

/// A started child: waiting turns a non-zero exit into an error carrying its stderr; dropped
/// unwaited (an error elsewhere), it kills the child so none outlives us.
pub struct Running {
    handle: Option<duct::Handle>,
    cmd: DockerCmd,
}

impl Running {
    fn new(handle: duct::Handle, cmd: &DockerCmd) -> Running {
        Running { handle: Some(handle), cmd: cmd.clone() }
    }

    pub fn wait(&mut self) -> Result<()> {
        let handle = self.handle.take().context("child already waited for")?;
        let out = handle.wait().with_context(|| format!("wait for `{}`", self.cmd))?;
        if !out.status.success() {
            return Err(failure(&self.cmd, out.status, &out.stderr));
        }
        Ok(())
    }

    /// The exit status if the child has ended, without waiting.
    pub fn try_status(&self) -> Result<Option<(ExitStatus, Vec<u8>)>> {
        let Some(h) = &self.handle else { return Ok(None) };
        Ok(h.try_wait()?.map(|o| (o.status, o.stderr.clone())))
    }

    pub fn cmd(&self) -> &DockerCmd {
        &self.cmd
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.kill();
        }
    }
}

/// A running docker child whose stdout the tool reads as a stream (a volume's tar, a dump).
pub struct ChildReader {
    reader: Option<duct::ReaderHandle>,
    cmd: DockerCmd,
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.reader.as_mut() {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl ChildReader {
    /// Reads whatever is left, waits for the child and turns a non-zero exit into an error.
    pub fn finish(mut self) -> Result<()> {
        let mut reader = self.reader.take().context("child already finished")?;
        std::io::copy(&mut reader, &mut std::io::sink()).ok();
        let out = reader.try_wait()?.context("the child's output ended before it did")?;
        if !out.status.success() {
            return Err(failure(&self.cmd, out.status, &out.stderr));
        }
        Ok(())
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.kill();
        }
    }
}

/// A running docker child the tool writes into.
pub struct ChildWriter {
    stdin: Option<os_pipe::PipeWriter>,
    run: Running,
}

impl Write for ChildWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.stdin.as_mut() {
            Some(s) => s.write(buf),
            None => Err(std::io::Error::other("stdin already closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), |s| s.flush())
    }
}

impl ChildWriter {
    /// Closes stdin, waits, and turns a non-zero exit into an error carrying stderr.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        self.run.wait()
    }

    /// The child's error after a write failed (it usually exited early: its stderr says why).
    pub fn failed(mut self) -> anyhow::Error {
        self.failure()
    }

    /// [`ChildWriter::failed`] through a borrow (stdin closed, the child waited for).
    pub fn failure(&mut self) -> anyhow::Error {
        drop(self.stdin.take());
        self.run.wait().err().unwrap_or_else(|| anyhow!("the child stopped reading its input"))
    }
}

/// The error for a failed child: the command, its exit status and what it wrote to stderr.
pub fn failure(cmd: &DockerCmd, status: ExitStatus, stderr: &[u8]) -> anyhow::Error {
    let err = cmd.scrub(String::from_utf8_lossy(stderr).trim());
    let hint = if err.contains("Cannot connect to the Docker daemon") || err.contains("Is the docker daemon running") {
        "\n  the Docker daemon is not reachable: start it and run this again"
    } else {
        ""
    };
    anyhow!("`{cmd}` failed ({status}): {err}{hint}")
}
