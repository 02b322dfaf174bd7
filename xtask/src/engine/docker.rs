//! The one wrapper that runs `docker` and `docker compose`. Every invocation in the tool is built
//! here as an explicit argv (never a shell string), `docker compose` always gets the project's
//! name, directory, files and profiles pinned, secrets travel in the child's environment (never
//! its command line) and are never printed, and a failed child becomes an error carrying its
//! stderr. Queries run even under `--dry-run`; changes are only printed then.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::model::compose::Stack;

/// A prepared docker command: argv plus environment for the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerCmd {
    pub args: Vec<String>,
    /// Variables set in the child's environment; their values are secret and never printed.
    pub secret_env: Vec<(String, String)>,
}

impl DockerCmd {
    /// Passes `value` to the child as environment variable `name`, hidden from output and errors.
    /// Pair it with `-e NAME` (no value) in the args so docker forwards it to the container.
    pub fn secret_env(mut self, name: &str, value: &str) -> Self {
        self.secret_env.push((name.to_string(), value.to_string()));
        self
    }
}

impl DockerCmd {
    /// Appends `flag value`.
    pub fn arg_pair(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }
}

impl fmt::Display for DockerCmd {
    /// The command as a user could paste it into a shell (secret values shown as `***`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, _) in &self.secret_env {
            write!(f, "{name}=*** ")?;
        }
        write!(f, "docker")?;
        for a in &self.args {
            write!(f, " {}", shell_quote(a))?;
        }
        Ok(())
    }
}

/// Quotes for display only; nothing is ever run through a shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The docker client found on PATH, with the run mode.
#[derive(Debug, Clone)]
pub struct Docker {
    bin: PathBuf,
    dry_run: bool,
    /// Print each command before running it (`--verbose`) or instead of running it (`--dry-run`).
    echo: bool,
}

impl Docker {
    /// Finds `docker` on PATH and checks that the daemon answers and Compose v2 is there.
    pub fn connect(dry_run: bool, echo: bool) -> Result<Docker> {
        let bin = which::which("docker").map_err(|_| {
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

    fn preflight(&self) -> Result<()> {
        let out = self.output(&self.cmd(["version", "--format", "{{.Server.Version}}"]))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "cannot reach the Docker daemon: {}\n  \
                 start it (`sudo systemctl start docker`, or `scripts/provision.sh` on a test machine), \
                 check DOCKER_HOST and that you may use the socket, or use --offline",
                err.trim()
            );
        }
        let out = self.output(&self.cmd(["compose", "version", "--short"]))?;
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

    /// `docker run --rm -i` of the helper image with `volume` mounted read-write at `/v/0`,
    /// running `command` (which reads its stdin).
    pub fn helper_writer(&self, volume: &str, command: &[&str]) -> DockerCmd {
        let mut args: Vec<String> = ["run", "--rm", "-i", "--network", "none"].map(String::from).to_vec();
        args.extend(helper_labels());
        args.push("--mount".into());
        args.push(format!("type=volume,source={volume},target=/v/0"));
        args.push(helper_image());
        args.extend(command.iter().map(|c| c.to_string()));
        DockerCmd { args, secret_env: Vec::new() }
    }

    /// `docker run --rm` of the small helper image with `volumes` mounted read-only at
    /// `/v/0`, `/v/1`... in that order, no network, running `command`.
    pub fn helper_read_only(&self, volumes: &[&str], command: &[&str]) -> DockerCmd {
        let mut args: Vec<String> = ["run", "--rm", "--network", "none"].map(String::from).to_vec();
        args.extend(helper_labels());
        for (i, v) in volumes.iter().enumerate() {
            args.push("--mount".into());
            args.push(format!("type=volume,source={v},target=/v/{i},readonly"));
        }
        args.push(helper_image());
        args.extend(command.iter().map(|c| c.to_string()));
        DockerCmd { args, secret_env: Vec::new() }
    }

    #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn docker
    fn command(&self, cmd: &DockerCmd) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(cmd.args.iter().map(OsString::from));
        for (k, v) in &cmd.secret_env {
            c.env(k, v);
        }
        c.stdin(Stdio::null());
        if crate::signals::installed() {
            // Ctrl-C in the terminal reaches the tool only: it runs the way back with these.
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
        }
        c
    }

    fn output(&self, cmd: &DockerCmd) -> Result<std::process::Output> {
        self.command(cmd).output().with_context(|| format!("run `{cmd}`"))
    }

    /// Runs a command that only reads (always, also under `--dry-run`) and returns its stdout.
    pub fn query(&self, cmd: &DockerCmd) -> Result<String> {
        let out = self.output(cmd)?;
        if !out.status.success() {
            return Err(failure(cmd, out.status, &out.stderr));
        }
        String::from_utf8(out.stdout).with_context(|| format!("`{cmd}` printed something that is not UTF-8"))
    }

    /// Runs a command that changes something; under `--dry-run` prints it instead.
    /// Its output is captured and shown only when it fails (or echoed with `--verbose`).
    pub fn apply(&self, cmd: &DockerCmd) -> Result<()> {
        if self.dry_run {
            println!("{cmd}");
            return Ok(());
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
        Ok(())
    }
}

impl Docker {
    /// Runs a command that changes something with its output going straight to the user's
    /// terminal (a migration); under `--dry-run` prints it instead. Returns its exit status.
    pub fn run_live(&self, cmd: &DockerCmd) -> Result<std::process::ExitStatus> {
        if self.dry_run {
            println!("{cmd}");
            return Ok(std::process::ExitStatus::default());
        }
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let mut c = self.command(cmd);
        c.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        c.status().with_context(|| format!("run `{cmd}`"))
    }

    /// Runs `argv` on the host in `dir`, output to the user's terminal (`migrate --host`).
    #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn processes
    pub fn run_host(&self, argv: &[String], dir: &std::path::Path) -> Result<std::process::ExitStatus> {
        let shown = argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
        if self.dry_run {
            println!("{shown}");
            return Ok(std::process::ExitStatus::default());
        }
        let (program, args) = argv.split_first().context("an empty command")?;
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .status()
            .with_context(|| format!("run `{shown}` (is {program} installed and on PATH?)"))
    }
}

/// A running docker child whose stdout the tool reads as a stream (a volume's tar, a dump).
pub struct ChildReader {
    stdout: std::process::ChildStdout,
    run: Running,
}

/// A spawned docker child with its stderr collected on a thread. Waiting turns a non-zero exit
/// into an error carrying that stderr; dropped unwaited (an error elsewhere), it kills the
/// child so none outlives us.
struct Running {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    cmd: DockerCmd,
}

impl Running {
    fn wait(&mut self) -> Result<()> {
        let status = self.child.wait().with_context(|| format!("wait for `{}`", self.cmd))?;
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(failure(&self.cmd, status, &stderr));
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl std::io::Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl ChildReader {
    /// Reads whatever is left, waits for the child and turns a non-zero exit into an error.
    pub fn finish(mut self) -> Result<()> {
        std::io::copy(&mut self.stdout, &mut std::io::sink()).ok();
        self.run.wait()
    }
}

/// A running docker child the tool writes into.
pub struct ChildWriter {
    stdin: Option<std::process::ChildStdin>,
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
    pub fn failed(self) -> anyhow::Error {
        self.finish().err().unwrap_or_else(|| anyhow!("the child stopped reading its input"))
    }
}

impl Docker {
    /// Starts `cmd` with its stderr collected on a thread.
    fn spawn(&self, cmd: &DockerCmd, stdin: Stdio, stdout: Stdio) -> Result<Running> {
        if self.echo {
            eprintln!("+ {cmd}");
        }
        let mut child = self
            .command(cmd)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start `{cmd}`"))?;
        let mut err = child.stderr.take().context("child stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut buf);
            buf
        });
        Ok(Running { child, stderr: Some(stderr), cmd: cmd.clone() })
    }

    /// Starts `cmd` with its stdout piped to the caller (also under `--dry-run`: callers only
    /// stream from commands that read).
    pub fn stream(&self, cmd: &DockerCmd) -> Result<ChildReader> {
        let mut run = self.spawn(cmd, Stdio::null(), Stdio::piped())?;
        let stdout = run.child.stdout.take().context("child stdout")?;
        Ok(ChildReader { stdout, run })
    }

    /// Starts `cmd` with its stdin fed by the caller (a dump into psql, a tar into a helper).
    pub fn pipe_into(&self, cmd: &DockerCmd) -> Result<ChildWriter> {
        if self.dry_run {
            bail!("internal error: a command that writes must not run under --dry-run: {cmd}");
        }
        let mut run = self.spawn(cmd, Stdio::piped(), Stdio::null())?;
        let stdin = run.child.stdin.take().context("child stdin")?;
        Ok(ChildWriter { stdin: Some(stdin), run })
    }

    /// The tar stream of a volume's root (`tar -c -C ROOT .` in a read-only helper container).
    /// With a local engine the bytes travel through a FIFO in a bind-mounted private directory,
    /// kernel to kernel; otherwise (or with XTASK_TRANSPORT=stream) through the container's
    /// stdout, which the daemon relays. If the FIFO cannot be used, the stream is the fallback.
    pub fn volume_tar(&self, volume: &str) -> Result<VolumeTar> {
        let transport = std::env::var("XTASK_TRANSPORT").unwrap_or_default();
        let local = std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"));
        if transport != "stream" && (local || transport == "fifo") {
            match self.volume_tar_fifo(volume) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => {} // the engine does not see our files: use the stream
                Err(e) => return Err(e),
            }
        }
        let cmd = self.helper_read_only(&[volume], &["tar", "-c", "-f", "-", "-C", "/v/0", "."]);
        Ok(VolumeTar::Stream(self.stream(&cmd)?))
    }

    fn volume_tar_fifo(&self, volume: &str) -> Result<Option<VolumeTar>> {
        let cmd = self.helper_read_only(&[volume], &["tar", "-c", "-f", "/xtask-io/stream", "-C", "/v/0", "."]);
        Ok(self.fifo_helper(cmd, false)?.map(VolumeTar::Fifo))
    }

    /// A sink that fills volume `volume` from a tar stream (`tar -x --numeric-owner` in a helper
    /// container); by FIFO with a local engine, else through the container's stdin.
    pub fn volume_untar(&self, volume: &str) -> Result<VolumeSink> {
        let transport = std::env::var("XTASK_TRANSPORT").unwrap_or_default();
        let local = std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"));
        if transport != "stream" && (local || transport == "fifo") {
            let mut cmd =
                self.helper_writer(volume, &["tar", "-x", "--numeric-owner", "-f", "/xtask-io/stream", "-C", "/v/0"]);
            cmd.args.retain(|a| a != "-i");
            if let Some(f) = self.fifo_helper(cmd, true)? {
                return Ok(VolumeSink::Fifo(f));
            }
        }
        let cmd = self.helper_writer(volume, &["tar", "-x", "--numeric-owner", "-f", "-", "-C", "/v/0"]);
        Ok(VolumeSink::Stdin(self.pipe_into(&cmd)?))
    }

    /// Runs a helper `cmd` (whose image is followed by its command) with a private directory
    /// holding a FIFO mounted at /xtask-io, and opens our end: for reading (the helper writes
    /// `/xtask-io/stream`) or for writing (the helper reads it). Ok(None): the engine cannot see
    /// our directory (a remote engine), so the caller falls back to the attach stream.
    fn fifo_helper(&self, mut cmd: DockerCmd, we_write: bool) -> Result<Option<FifoIo>> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xtask-io-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = TempIoDir(dir);
        let fifo = dir.0.join("stream");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).context("FIFO path")?;
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mkfifo {}", fifo.display()));
        }
        let image = helper_image();
        let image_at = cmd.args.iter().position(|a| *a == image).context("helper command without image")?;
        cmd.args.splice(
            image_at..image_at,
            ["--mount".to_string(), format!("type=bind,source={},target=/xtask-io", dir.0.display())],
        );
        let mut run = self.spawn(&cmd, Stdio::null(), Stdio::null())?;
        // Opening a FIFO blocks until the other end opens it: do it on a thread and watch the
        // child meanwhile, so a helper that fails early cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let opened =
                if we_write { std::fs::OpenOptions::new().write(true).open(&path) } else { std::fs::File::open(&path) };
            let _ = tx.send(opened);
        });
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(file) => {
                    let file = file.with_context(|| format!("open {}", fifo.display()))?;
                    // A 1 MiB pipe buffer (the default is 64 KiB) means fewer wake-ups; best effort.
                    // SAFETY: fcntl on a descriptor we own.
                    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_SETPIPE_SZ, 1 << 20) };
                    return Ok(Some(FifoIo { file: Some(file), run, _dir: dir }));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => bail!("FIFO opener thread: {e}"),
            }
            if let Some(status) = run.child.try_wait()? {
                // Unblock the opener by opening the other end ourselves, then decide.
                let mut other = std::fs::OpenOptions::new();
                if we_write {
                    other.read(true);
                } else {
                    other.write(true);
                }
                let _ = other.custom_flags(libc::O_NONBLOCK).open(&fifo);
                let err = run.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
                if !status.success() && !we_write {
                    return Err(failure(&cmd, status, &err));
                }
                // Reading: it succeeded writing elsewhere. Writing: it could not open our FIFO.
                return Ok(None);
            }
        }
    }
}

/// A private directory shared with a helper container; removed when dropped.
struct TempIoDir(PathBuf);

impl Drop for TempIoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A volume's tar stream, by FIFO or by the container's stdout.
pub enum VolumeTar {
    Fifo(FifoIo),
    Stream(ChildReader),
}

/// Where a volume's tar stream goes to be extracted: a FIFO or the container's stdin.
pub enum VolumeSink {
    Fifo(FifoIo),
    Stdin(ChildWriter),
}

/// Our end of the FIFO a helper container reads or writes, and the helper.
pub struct FifoIo {
    file: Option<std::fs::File>,
    run: Running,
    _dir: TempIoDir,
}

impl std::io::Read for VolumeTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            VolumeTar::Fifo(f) => f.file.as_mut().map_or(Ok(0), |file| file.read(buf)),
            VolumeTar::Stream(r) => r.read(buf),
        }
    }
}

impl Write for VolumeSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            VolumeSink::Fifo(f) => match f.file.as_mut() {
                Some(file) => file.write(buf),
                None => Err(std::io::Error::other("FIFO already closed")),
            },
            VolumeSink::Stdin(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl VolumeTar {
    /// Drains the stream, waits for the helper and reports its failure with its stderr.
    pub fn finish(self) -> Result<()> {
        match self {
            VolumeTar::Stream(r) => r.finish(),
            VolumeTar::Fifo(mut f) => {
                if let Some(file) = f.file.as_mut() {
                    std::io::copy(file, &mut std::io::sink()).ok();
                }
                f.finish()
            }
        }
    }
}

impl VolumeSink {
    /// Closes our end, waits for the helper and reports its failure with its stderr.
    pub fn finish(self) -> Result<()> {
        match self {
            VolumeSink::Stdin(w) => w.finish(),
            VolumeSink::Fifo(f) => f.finish(),
        }
    }

    /// The helper's error after a write failed (it exited early: its stderr says why).
    pub fn failed(self) -> anyhow::Error {
        match self {
            VolumeSink::Stdin(w) => w.failed(),
            VolumeSink::Fifo(f) => f.finish().err().unwrap_or_else(|| anyhow!("the helper stopped reading")),
        }
    }
}

impl FifoIo {
    fn finish(mut self) -> Result<()> {
        drop(self.file.take());
        self.run.wait()
    }
}

/// The labels on every container the tool starts for itself: that it is a helper, and which
/// process on which host started it, so a later run can remove helpers a killed run left behind.
pub fn helper_labels() -> Vec<String> {
    vec![
        "--label".into(),
        "xtask.helper=1".into(),
        "--label".into(),
        format!("xtask.pid={}", std::process::id()),
        "--label".into(),
        format!("xtask.host={}", hostname()),
    ]
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

impl Docker {
    /// Removes helper containers whose xtask process (on this host) is gone: after a kill -9 a
    /// helper may still hold a volume (e.g. blocked opening its FIFO). Returns how many.
    pub fn remove_orphan_helpers(&self) -> Result<usize> {
        let out = self.query(&self.cmd([
            "ps",
            "--all",
            "--filter",
            "label=xtask.helper=1",
            "--format",
            "{{.ID}}\t{{.Label \"xtask.pid\"}}\t{{.Label \"xtask.host\"}}",
        ]))?;
        let me = hostname();
        let mut removed = 0;
        for line in out.lines() {
            let mut f = line.split('\t');
            let (Some(id), Some(pid), Some(host)) = (f.next(), f.next(), f.next()) else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            if host != me || pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if !self.dry_run {
                self.query(&self.cmd(["rm", "--force", "--volumes", id]))?;
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// The small image the tool runs to read or write volumes: `$XTASK_HELPER_IMAGE`, else busybox.
pub fn helper_image() -> String {
    std::env::var("XTASK_HELPER_IMAGE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "busybox:1.36".to_string())
}

/// The error for a failed child: the command, its exit status and what it wrote to stderr.
fn failure(cmd: &DockerCmd, status: std::process::ExitStatus, stderr: &[u8]) -> anyhow::Error {
    let mut err = String::from_utf8_lossy(stderr).trim().to_string();
    for (_, v) in &cmd.secret_env {
        if !v.is_empty() {
            err = err.replace(v.as_str(), "***");
        }
    }
    let hint = if err.contains("Cannot connect to the Docker daemon") || err.contains("Is the docker daemon running") {
        "\n  the Docker daemon is not reachable: start it and run this again"
    } else {
        ""
    };
    anyhow!("`{cmd}` failed ({status}): {err}{hint}")
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
        let e = failure(&c, status, b"auth failed for password hunter2\n").to_string();
        assert!(e.contains("auth failed for password ***"), "{e}");
        assert!(!e.contains("hunter2"));
        assert!(e.contains("docker exec db"));
    }
}
