//! Host tools the tool drives besides docker: `rclone` (remote storage) and `age` (encryption).
//! Found on PATH with `which` (a missing one is named with how to install it), run with argv only,
//! never through a shell; through duct, short commands to their end and streams, with stderr
//! captured and a non-zero exit turned into an error carrying it. A streamed child is killed
//! when its handle is dropped unfinished, so none outlives an error.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};

use crate::engine::docker::cmd::shell_quote;

/// A host program found on PATH.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    bin: PathBuf,
    /// Set in the child's environment (never its command line): how secrets and locations
    /// reach tools that read them from there (restic's repository and password file).
    envs: Vec<(String, String)>,
}

impl Tool {
    /// Finds `name` on PATH, or says what it is needed for and how to install it.
    pub fn find(name: &'static str, needed_for: &str) -> Result<Tool> {
        let bin = which::which_in(name, crate::environment::var("PATH"), crate::environment::cwd()).map_err(|_| {
            anyhow!(
                "`{name}` was not found on PATH; it is needed {needed_for}\n  \
                 install it (Debian/Ubuntu: `sudo apt-get install {name}`; macOS: `brew install {name}`)"
            )
        })?;
        Ok(Tool { name, bin, envs: Vec::new() })
    }

    /// The same tool with `key=value` in its children's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Tool {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// The command as a user could paste it into a shell.
    pub fn shown(&self, args: &[String]) -> String {
        std::iter::once(self.name.to_string()).chain(args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" ")
    }

    fn expression(&self, args: &[String]) -> duct::Expression {
        #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn processes
        let e = self.envs.iter().fold(duct::cmd(&self.bin, args), |e, (k, v)| e.env(k, v));
        super::run::with_group(e)
    }

    /// Runs a short command to its end and returns its stdout; a failure carries its stderr.
    pub fn output(&self, args: &[String]) -> Result<Vec<u8>> {
        let e = self.expression(args).stdin_null().stdout_capture().stderr_capture().unchecked();
        let out = e.run().with_context(|| format!("run `{}`", self.shown(args)))?;
        if !out.status.success() {
            return Err(self.failure(args, out.status, &out.stderr));
        }
        Ok(out.stdout)
    }

    /// Runs a short command with `input` on its stdin (how a secret reaches it: never argv),
    /// to its end; returns its stdout, a failure carries its stderr.
    pub fn output_with_input(&self, args: &[String], input: &[u8]) -> Result<Vec<u8>> {
        let e = self.expression(args).stdin_bytes(input.to_vec()).stdout_capture().stderr_capture().unchecked();
        let out = e.run().with_context(|| format!("run `{}`", self.shown(args)))?;
        if !out.status.success() {
            return Err(self.failure(args, out.status, &out.stderr));
        }
        Ok(out.stdout)
    }

    fn failure(&self, args: &[String], status: std::process::ExitStatus, stderr: &[u8]) -> anyhow::Error {
        let text = String::from_utf8_lossy(stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("NOTICE:") && !l.trim().is_empty()).collect();
        anyhow!("`{}` failed ({status}): {}", self.shown(args), lines.join("\n  "))
    }

    /// Starts the command with its stdout read by the caller; `input`, when given, is copied
    /// into its stdin by a thread (an error there is reported when the output ends).
    pub fn stream(&self, args: &[String], input: Option<Box<dyn Read + Send>>) -> Result<ToolReader> {
        let mut e = self.expression(args).stderr_capture().unchecked();
        let mut feeder = None;
        if let Some(mut input) = input {
            let (read, mut write) = os_pipe::pipe().context("create a pipe")?;
            e = e.stdin_file(read);
            feeder = Some(std::thread::spawn(move || -> io::Result<u64> {
                // Closing our end is the child's EOF; if the child exited early, the copy's
                // error is reported after the child's own (see ToolReader::end).
                let n = io::copy(&mut input, &mut write);
                drop(write);
                n
            }));
        } else {
            e = e.stdin_null();
        }
        // Our own pipe for its stdout, widened: a gigabyte through 64 KiB makes restic and
        // rclone stall on every few writes.
        let (reader, write) = os_pipe::pipe().context("create a pipe")?;
        super::widen_pipe(&reader);
        let e = e.stdout_file(write);
        let handle = e.start().with_context(|| format!("start `{}`", self.shown(args)))?;
        // Our copy of the write end goes with the expression: its end is the child's EOF.
        drop(e);
        Ok(ToolReader { tool: self.clone(), args: args.to_vec(), reader, handle: Some(handle), feeder })
    }

    /// Starts the command with its stdin fed by the caller (an upload), stdout captured.
    pub fn sink(&self, args: &[String]) -> Result<ToolWriter> {
        let (read, write) = os_pipe::pipe().context("create a pipe")?;
        super::widen_pipe(&write);
        let e = self.expression(args).stdin_file(read).stderr_capture().unchecked().stdout_capture();
        let handle = e.start().with_context(|| format!("start `{}`", self.shown(args)))?;
        drop(e);
        let (tool, args) = (self.clone(), args.to_vec());
        Ok(ToolWriter { tool, args, stdin: Some(write), handle: Some(handle), interrupt_first: false })
    }
}

/// The stdout of a running host tool. At its end the child is waited for: a non-zero exit (or a
/// failed feeder) is returned as a read error carrying its stderr, so a consumer that reads to
/// the end never takes a truncated stream for a whole one.
pub struct ToolReader {
    tool: Tool,
    args: Vec<String>,
    reader: os_pipe::PipeReader,
    /// The child, until its output ended and it was waited for.
    handle: Option<duct::Handle>,
    feeder: Option<JoinHandle<io::Result<u64>>>,
}

impl ToolReader {
    fn end(&mut self) -> Result<()> {
        let Some(handle) = self.handle.take() else { return Ok(()) };
        let out = handle.wait().with_context(|| format!("wait for `{}`", self.tool.shown(&self.args)))?;
        let fed = self.feeder.take().map(|f| f.join().unwrap_or_else(|_| Err(io::Error::other("feeder panicked"))));
        if !out.status.success() {
            return Err(self.tool.failure(&self.args, out.status, &out.stderr));
        }
        if let Some(Err(e)) = fed {
            return Err(anyhow!(e).context(format!("feed `{}`", self.tool.shown(&self.args))));
        }
        Ok(())
    }
}

impl Read for ToolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.handle.is_none() {
            return Ok(0);
        }
        let n = self.reader.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.end().map_err(|e| io::Error::other(format!("{e:#}")))?;
        }
        Ok(n)
    }
}

impl Drop for ToolReader {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.kill();
        }
    }
}

/// The stdin of a running host tool (an upload, an encryption).
pub struct ToolWriter {
    tool: Tool,
    args: Vec<String>,
    stdin: Option<os_pipe::PipeWriter>,
    handle: Option<duct::Handle>,
    /// Dropped unfinished, the tool is first asked to stop (SIGINT), its stdin still open.
    interrupt_first: bool,
}

impl Write for ToolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stdin.as_mut() {
            Some(s) => s.write(buf),
            None => Err(io::Error::other("stdin already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), |s| s.flush())
    }
}

impl ToolWriter {
    /// Abandoned unfinished (dropped), the tool gets SIGINT and a few seconds to end on its
    /// own before it is killed, its stdin open all along: restic then removes its lock and
    /// saves no snapshot (killed outright it would leave its lock; given EOF, a snapshot).
    pub fn interrupted_when_abandoned(mut self) -> ToolWriter {
        self.interrupt_first = true;
        self
    }

    /// The tool, if it has not ended already (then its failure, carrying its stderr).
    pub fn still_running(self) -> Result<ToolWriter> {
        let ended = match self.handle.as_ref() {
            Some(h) => h.try_wait().with_context(|| format!("wait for `{}`", self.tool.shown(&self.args)))?.is_some(),
            None => true,
        };
        if !ended {
            return Ok(self);
        }
        let shown = self.tool.shown(&self.args);
        self.finish().and_then(|_| Err(anyhow!("`{shown}` ended before it was given its input")))
    }

    /// Whether the tool still runs (it is not waited for here; [`ToolWriter::finish`] does).
    pub fn running(&self) -> Result<bool> {
        match self.handle.as_ref() {
            Some(h) => {
                Ok(h.try_wait().with_context(|| format!("wait for `{}`", self.tool.shown(&self.args)))?.is_none())
            }
            None => Ok(false),
        }
    }

    /// Closes stdin, waits, and turns a non-zero exit into an error carrying stderr.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        drop(self.stdin.take());
        let handle = self.handle.take().context("child already waited for")?;
        let out = handle.wait().with_context(|| format!("wait for `{}`", self.tool.shown(&self.args)))?;
        if !out.status.success() {
            return Err(self.tool.failure(&self.args, out.status, &out.stderr));
        }
        Ok(out.stdout.clone())
    }
}

impl Drop for ToolWriter {
    /// Unfinished: killed; or, with [`ToolWriter::interrupted_when_abandoned`], SIGINT first and
    /// 2 s to end (restic up to 0.16 exits at once); then its stdin closed and 8 s more (restic
    /// 0.17 on only cancels, its read of stdin ends at EOF, and a cancelled backup saves
    /// nothing); then killed.
    fn drop(&mut self) {
        let Some(h) = self.handle.take() else { return };
        if self.interrupt_first {
            // Our own children, not yet waited for: their pids are not reused.
            for pid in h.pids().into_iter().filter_map(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::Int);
            }
            let ended = |secs| {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                while matches!(h.try_wait(), Ok(None)) {
                    if std::time::Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                true
            };
            if !ended(2) {
                drop(self.stdin.take());
                ended(8);
            }
        }
        let _ = h.kill();
    }
}
