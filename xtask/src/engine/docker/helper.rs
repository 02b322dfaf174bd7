//! Helper containers: the small image the tool runs to read or write volumes, described as a
//! [`Helper`] spec (mounts, stdin, command) rather than argv. A volume's tar stream travels
//! through a FIFO in a private bind-mounted directory when the engine is local (kernel to
//! kernel), else through the container's stdout/stdin, which the daemon relays. Every helper
//! carries labels naming the process that started it, so a later run removes orphans.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use super::{Docker, DockerCmd};
use crate::engine::process::{failure, ChildReader, ChildWriter, Running};

/// One mount of a helper container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperMount {
    /// A volume name, or a host directory for a bind mount.
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub bind: bool,
    /// For a bind written to: the device and inode of the host directory as the tool resolved
    /// it without following links ("-" when it is not such a directory). The helper checks, after
    /// Docker mounted it and before its command runs, that this is what it got, and refuses
    /// otherwise: a path swapped for a symbolic link in between never receives a byte.
    pub expect: Option<String>,
}

/// A helper container: `docker run --rm --network none` of the helper image, or a [`Beside`]
/// helper that runs a service's own image in that service's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    pub mounts: Vec<HelperMount>,
    /// Attach stdin (`-i`): the command reads what the tool writes.
    pub stdin: bool,
    pub command: Vec<String>,
    pub beside: Option<Beside>,
}

/// Running beside a service's container: its image, its network namespace (`--network
/// container:ID`, so the server is at 127.0.0.1) and its mounts read-only (`--volumes-from
/// ID:ro`, so the files its `_FILE` secrets name are there), with secret environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beside {
    pub container: String,
    pub image: String,
    /// Passed as `-e NAME`, the value in docker's environment only.
    pub secret_env: Vec<(String, String)>,
}

impl Helper {
    /// `volumes` mounted read-only at `/v/0`, `/v/1`… in that order. A name starting with `/` is
    /// a host directory (a bind of the stack), bind-mounted; volume names never start with `/`.
    pub fn read_only(volumes: &[&str], command: &[&str]) -> Helper {
        let mounts = volumes
            .iter()
            .enumerate()
            .map(|(i, v)| HelperMount {
                source: v.to_string(),
                target: format!("/v/{i}"),
                read_only: true,
                bind: v.starts_with('/'),
                expect: None,
            })
            .collect();
        Helper { mounts, stdin: false, command: command.iter().map(|c| c.to_string()).collect(), beside: None }
    }

    /// `targets` mounted read-write at `/v/0`, `/v/1`… (no stdin), each bind among them checked
    /// inside the helper before the command runs ([`HelperMount::expect`]).
    pub fn writers(targets: &[&str], command: &[&str]) -> Helper {
        let mut h = Helper::read_only(targets, command);
        for m in &mut h.mounts {
            m.read_only = false;
            m.expect = m.bind.then(|| bind_identity(&m.source)).flatten();
        }
        h
    }

    /// `volume` mounted read-write at `/v/0`, stdin attached. A bind (a host directory) is
    /// checked inside the helper before the command runs ([`HelperMount::expect`]).
    pub fn writer(volume: &str, command: &[&str]) -> Helper {
        let bind = volume.starts_with('/');
        let expect = bind.then(|| bind_identity(volume)).flatten();
        let mount = HelperMount { source: volume.into(), target: "/v/0".into(), read_only: false, bind, expect };
        let command = command.iter().map(|c| c.to_string()).collect();
        Helper { mounts: vec![mount], stdin: true, command, beside: None }
    }

    /// The docker command that runs it.
    pub fn to_cmd(&self) -> DockerCmd {
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        if self.stdin {
            args.push("-i".into());
        }
        let network = match &self.beside {
            Some(b) => format!("container:{}", b.container),
            None => "none".into(),
        };
        args.extend(["--network".into(), network]);
        args.extend(labels());
        for m in &self.mounts {
            let kind = if m.bind { "bind" } else { "volume" };
            let ro = if m.read_only { ",readonly" } else { "" };
            args.extend(["--mount".into(), format!("type={kind},source={},target={}{ro}", m.source, m.target)]);
        }
        let mut secret_env = Vec::new();
        match &self.beside {
            Some(b) => {
                args.extend(["--volumes-from".into(), format!("{}:ro", b.container)]);
                for (name, value) in &b.secret_env {
                    args.extend(["-e".into(), name.clone()]);
                    secret_env.push((name.clone(), value.clone()));
                }
                args.extend(["--entrypoint".into(), String::new(), b.image.clone()]);
            }
            None => args.push(image()),
        }
        let guarded: Vec<&HelperMount> = self.mounts.iter().filter(|m| m.expect.is_some()).collect();
        if !guarded.is_empty() {
            args.extend(["sh".into(), "-c".into(), GUARD.into(), guarded.len().to_string()]);
            for m in guarded {
                args.extend([m.target.clone(), m.expect.clone().unwrap_or_default(), m.source.clone()]);
            }
        }
        args.extend(self.command.iter().cloned());
        DockerCmd { args, secret_env }
    }
}

/// What a bind written to must be when mounted ([`HelperMount::expect`]): its device and
/// inode as the tool resolves it now ("-": not a real directory); None on a remote engine,
/// whose host paths are not this machine's.
fn bind_identity(host_path: &str) -> Option<String> {
    engine_is_local().then(|| {
        let id = crate::files::dir_identity(std::path::Path::new(host_path));
        id.map_or_else(|| "-".to_string(), |(dev, ino)| format!("{dev}:{ino}"))
    })
}

/// The script that runs first in a helper writing into binds: `$0` is how many binds follow as
/// triples (mount point in the helper, device:inode the tool resolved, host path for the
/// message); each mounted directory must be the one the tool resolved, else nothing runs (exit
/// 97); then the helper's own command. Every value comes as an argument, never as script text.
const GUARD: &str = "n=$0; while [ \"$n\" -gt 0 ]; do \
    id=$(stat -c %d:%i \"$1\") && [ \"$id\" = \"$2\" ] || { echo \"xtask: the bind $3 mounted at $1 ($id) is not \
    the directory the tool checked ($2): it was changed or replaced by a link since; nothing was written\" >&2; \
    exit 97; }; shift 3; n=$((n - 1)); done; exec \"$@\"";

/// The labels on every container the tool starts for itself: that it is a helper, and which
/// process on which host started it, so a later run can remove helpers a killed run left behind.
pub fn labels() -> Vec<String> {
    vec![
        "--label".into(),
        "xtask.helper=1".into(),
        "--label".into(),
        format!("xtask.pid={}", std::process::id()),
        "--label".into(),
        format!("xtask.host={}", hostname()),
    ]
}

/// Where a helper's `xtask.pid` means something: the host name and this process's pid namespace
/// (`vm/pid:[4026531836]`). A run in another pid namespace (a container, `unshare --pid`) on the
/// same host cannot see this one's processes, so it must never judge its helpers orphaned.
fn hostname() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid").map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{host}/{ns}")
}

/// The small image the tool runs to read or write volumes: `$XTASK_HELPER_IMAGE`, else busybox.
pub fn image() -> String {
    crate::environment::var("XTASK_HELPER_IMAGE").unwrap_or_else(|| "busybox:1.36".to_string())
}

/// Whether the engine runs on this machine (DOCKER_HOST unset or a unix socket): it then sees
/// this machine's paths.
pub fn engine_is_local() -> bool {
    crate::environment::var("DOCKER_HOST").is_none_or(|h| h.starts_with("unix://"))
}

/// Whether volume streams may use a FIFO: a local engine, unless XTASK_TRANSPORT says otherwise.
fn fifo_allowed() -> bool {
    let transport = crate::environment::var("XTASK_TRANSPORT").unwrap_or_default();
    transport != "stream" && (engine_is_local() || transport == "fifo")
}

impl Docker {
    /// The tar stream of a volume's root (`tar -c -C ROOT .` in a read-only helper container).
    pub fn volume_tar(&self, volume: &str) -> Result<VolumeTar> {
        if fifo_allowed() {
            let helper = Helper::read_only(&[volume], &["tar", "-c", "-f", "/xtask-io/stream", "-C", "/v/0", "."]);
            if let Some(f) = self.fifo_helper(helper, false)? {
                return Ok(VolumeTar::Fifo(f));
            }
        }
        let helper = Helper::read_only(&[volume], &["tar", "-c", "-f", "-", "-C", "/v/0", "."]);
        Ok(VolumeTar::Stream(self.stream(&helper.to_cmd())?))
    }

    /// Whether the host directory `path` exists where the engine runs: asked of this machine's
    /// filesystem when the engine is local, else of the engine (a helper that bind-mounts it).
    pub fn host_dir_exists(&self, path: &str) -> Result<bool> {
        if engine_is_local() {
            return Ok(std::path::Path::new(path).is_dir());
        }
        let probe = Helper::read_only(&[path], &["test", "-d", "/v/0"]).to_cmd();
        match self.query(&probe) {
            Ok(_) => Ok(true),
            Err(e) if format!("{e:#}").contains("does not exist") => Ok(false),
            Err(e) => Err(e.context(format!("check that {path} exists on the Docker host"))),
        }
    }

    /// What `helper` writes to `/xtask-io/stream`, through a FIFO (kernel to kernel, not the
    /// daemon's attach stream). None when the engine is not local: use another way.
    pub fn helper_output(&self, helper: Helper) -> Result<Option<VolumeTar>> {
        if !fifo_allowed() {
            return Ok(None);
        }
        Ok(self.fifo_helper(helper, false)?.map(VolumeTar::Fifo))
    }

    /// A sink that fills volume `volume` from a tar stream (`tar -x --numeric-owner` in a helper).
    /// Through a FIFO, the same helper then sets the mtimes [`VolumeSink::send_times`] lists.
    pub fn volume_untar(&self, volume: &str) -> Result<VolumeSink> {
        if fifo_allowed() {
            let mut helper = Helper::writer(volume, &["sh", "-c", UNTAR_THEN_TOUCH]);
            helper.stdin = false;
            if let Some(f) = self.fifo_helper(helper, true)? {
                return Ok(VolumeSink::Fifo(f));
            }
        }
        let helper = Helper::writer(volume, &["sh", "-c", UNTAR_STDIN]);
        Ok(VolumeSink::Stdin(self.pipe_into(&helper.to_cmd())?))
    }

    /// Runs `helper` with a private directory holding a FIFO mounted at /xtask-io, and opens our
    /// end: for reading (the helper writes `/xtask-io/stream`) or for writing (it reads it).
    /// Ok(None): the engine cannot see our directory (a remote engine): use the attach stream.
    fn fifo_helper(&self, mut helper: Helper, we_write: bool) -> Result<Option<FifoIo>> {
        let dir = TempIoDir::create()?;
        let fifo = dir.0.join("stream");
        mkfifo(&fifo)?;
        let source = dir.0.display().to_string();
        // Read-only: the FIFO is read and written through it all the same, and nothing the
        // helper extracts (a link a running service planted in its staging, say) can write into
        // this host directory.
        helper.mounts.push(HelperMount {
            source,
            target: "/xtask-io".into(),
            read_only: true,
            bind: true,
            expect: None,
        });
        let run = self.start_quiet(&helper.to_cmd())?;
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
                    crate::engine::process::widen_pipe(&file);
                    return Ok(Some(FifoIo { file: Some(file), run, dir }));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => bail!("FIFO opener thread: {e}"),
            }
            if let Some((status, stderr)) = run.try_status()? {
                // Unblock the opener by opening the other end ourselves, then decide.
                let mut other = std::fs::OpenOptions::new();
                if we_write {
                    other.read(true);
                } else {
                    other.write(true);
                }
                let _ = other.custom_flags(libc::O_NONBLOCK).open(&fifo);
                if !status.success() && !we_write {
                    return Err(failure(run.cmd(), status, &stderr));
                }
                // Reading: it succeeded writing elsewhere. Writing: it could not open our FIFO.
                return Ok(None);
            }
        }
    }

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
            match self.apply(&self.cmd(["rm", "--force", "--volumes", id])) {
                Ok(()) => removed += 1,
                // A `--rm` helper whose process just died may be removing itself: that is fine.
                Err(e) if ["already in progress", "No such container"].iter().any(|m| format!("{e:#}").contains(m)) => {
                }
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

fn mkfifo(path: &std::path::Path) -> Result<()> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).with_context(|| format!("mkfifo {}", path.display()))
}

/// A private directory (0700) shared with a helper container; removed when dropped.
struct TempIoDir(PathBuf);

/// Removes the FIFO directories of runs that were killed (their pid no longer runs); only
/// directories of this user, by their name's pattern.
fn remove_dead_io_dirs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    let uid = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("xtask-io-").and_then(|r| r.split('-').next()) else { continue };
        let dead = pid.parse::<u32>().is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if dead && ours {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl TempIoDir {
    fn create() -> Result<TempIoDir> {
        use std::os::unix::fs::DirBuilderExt;
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(remove_dead_io_dirs);
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xtask-io-{}-{n}", std::process::id()));
        let create = || std::fs::DirBuilder::new().mode(0o700).create(&dir);
        match create() {
            // This process never made this name: it is a killed run's, whose pid was ours.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_dir_all(&dir).or_else(|_| std::fs::remove_file(&dir));
                create()
            }
            other => other,
        }
        .with_context(|| format!("create {}", dir.display()))?;
        Ok(TempIoDir(dir))
    }
}

impl Drop for TempIoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The helper's script for a volume's tar stream by FIFO: extract, then, if the tool wrote the
/// file `times` (NUL-separated `-d`, `@SECONDS`, path triples), give those paths their mtimes
/// (symlinks and directories tar leaves at the restore time), then flush the volume's
/// filesystem: what a helper wrote is on disk before anything is swapped in (a later step may
/// remove the old content). Fixed: nothing from an archive is in it; the paths reach `touch` as
/// arguments through `xargs -0`, never through a shell.
const UNTAR_THEN_TOUCH: &str = "tar -x --numeric-owner -f /xtask-io/stream -C /v/0 && \
    if [ -e /xtask-io/times ]; then xargs -0 -r -n 3 touch -h < /xtask-io/times; fi && \
    { sync -f /v/0 2>/dev/null || sync; }";

/// The same from the container's stdin (a remote engine), without the mtimes (set afterwards by
/// a helper of their own).
const UNTAR_STDIN: &str = "tar -x --numeric-owner -f - -C /v/0 && { sync -f /v/0 2>/dev/null || sync; }";

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
    dir: TempIoDir,
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

    /// Hands the helper the mtimes to set once its extraction is done (`input`: what
    /// `xargs -0 -n 3 touch -h` reads). Must come before the stream's last entries, so that the
    /// helper cannot have finished already. Ok(false): this transport cannot carry them (the
    /// container's stdin): the caller sets them with a helper of its own after [`Self::finish`].
    pub fn send_times(&self, input: &[u8]) -> Result<bool> {
        let VolumeSink::Fifo(f) = self else { return Ok(false) };
        let path = f.dir.0.join("times");
        let mut file = crate::files::create_private(&path)?;
        file.write_all(input).with_context(|| format!("write {}", path.display()))?;
        Ok(true)
    }

    /// The helper's error after a write failed (it exited early: its stderr says why).
    pub fn failed(mut self) -> anyhow::Error {
        self.failure()
    }

    /// [`VolumeSink::failed`] through a borrow: our end closed, the helper waited for.
    pub fn failure(&mut self) -> anyhow::Error {
        match self {
            VolumeSink::Stdin(w) => w.failure(),
            VolumeSink::Fifo(f) => {
                drop(f.file.take());
                f.run.wait().err().unwrap_or_else(|| anyhow!("the helper stopped reading"))
            }
        }
    }
}

impl FifoIo {
    fn finish(mut self) -> Result<()> {
        drop(self.file.take());
        self.run.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_directories_of_dead_runs_are_swept_and_live_ones_kept() {
        let dead = std::env::temp_dir().join("xtask-io-4194303-0");
        let live = std::env::temp_dir().join(format!("xtask-io-{}-9999", std::process::id()));
        // Another sweep (a test beside this one, any xtask run on the machine) may remove the
        // dead one while it is made: that is what it is for, and the check below still holds.
        let _ = std::fs::create_dir_all(dead.join("stream"));
        std::fs::create_dir_all(live.join("stream")).unwrap();
        remove_dead_io_dirs();
        assert!(!dead.exists(), "pid 4194303 does not run: its directory goes");
        assert!(live.exists(), "this process runs: its directory stays");
        std::fs::remove_dir_all(&live).unwrap();
    }

    #[test]
    fn a_killed_runs_io_directory_with_our_pid_is_replaced() {
        // Names a killed process with this pid may have left (the counter starts anew per process).
        let stale: Vec<PathBuf> =
            (0..64).map(|n| std::env::temp_dir().join(format!("xtask-io-{}-{n}", std::process::id()))).collect();
        for d in &stale {
            let _ = std::fs::create_dir_all(d.join("left"));
        }
        let dir = TempIoDir::create().expect("a stale directory is no obstacle");
        assert!(dir.0.is_dir() && !dir.0.join("left").exists(), "a fresh, empty directory");
        let path = dir.0.clone();
        drop(dir);
        assert!(!path.exists());
        for d in &stale {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
