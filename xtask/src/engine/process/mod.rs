//! The one place that starts processes (clippy `disallowed-methods` forbids spawning elsewhere),
//! all through duct: [`run`] runs `docker` commands (short ones to their end, streamed ones
//! through pipes), [`tool`] the host CLIs found with `which` (rclone, age, ssh-keygen). Argv only,
//! never a shell string; secrets in the child's environment, never its command line; a failed
//! child is an error carrying its stderr (secrets scrubbed); a streamed child is killed when
//! dropped unfinished; every child in its own process group while signals are caught.

pub mod run;
pub mod tool;

pub use run::{failure, ChildReader, ChildWriter, Running};
pub use tool::{Tool, ToolReader, ToolWriter};

/// Gives a pipe (or FIFO) a 1 MiB buffer instead of Linux's 64 KiB: a stream of gigabytes then
/// wakes its reader a sixteenth as often. Best effort: a kernel that refuses keeps the default.
pub fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, 1 << 20);
}
