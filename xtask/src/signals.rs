//! SIGINT and SIGTERM during a restore or a backup. Once [`install`]ed, a signal no longer
//! kills the tool mid-way: it is noted, the data movers stop at their next chunk
//! ([`interrupted`]), and the restore runs the same way back as after a failure (safety backup
//! restored, services put back); a backup stops the same way (no archive, services put back, a
//! restic push killed before its stream could end). Docker children then run in their own
//! process group, so a terminal's Ctrl-C reaches the tool only and the way back can still use
//! them.

use std::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SUSPENDED: AtomicBool = AtomicBool::new(false);
/// Inside a [`Caught`] span: a second signal kills the tool (a backup stuck in a child or a
/// pipe must stay stoppable); a restore's way back is never cut off that way.
static SECOND_KILLS: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) && SECOND_KILLS.load(Ordering::SeqCst) {
        // SAFETY: signal() and raise() are async-signal-safe; the default action ends the tool.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Catches SIGINT and SIGTERM from now on (for the rest of the process).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    SECOND_KILLS.store(false, Ordering::SeqCst);
    INSTALLED.store(true, Ordering::SeqCst);
}

/// Signals caught for one step inside a longer command (a backup, which `migrate` follows with
/// the user's own migration, which Ctrl-C must still stop): the first stops the step at its next
/// [`check`], a second ends the tool. Already caught (inside a restore): nothing changes.
/// [`Caught::end`] puts the previous handlers back.
pub struct Caught {
    previous: Option<[libc::sighandler_t; 2]>,
}

impl Caught {
    pub fn begin() -> Caught {
        if installed() {
            return Caught { previous: None };
        }
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        SECOND_KILLS.store(true, Ordering::SeqCst);
        // SAFETY: as in `install`; the previous handlers are kept to be put back.
        let previous = unsafe { [libc::signal(libc::SIGINT, handler), libc::signal(libc::SIGTERM, handler)] };
        INSTALLED.store(true, Ordering::SeqCst);
        Caught { previous: Some(previous) }
    }

    /// Ends the span with the step's `result`: a signal that came too late to stop a step that
    /// succeeded is still an error (the command goes no further), naming what was done.
    pub fn end<T>(mut self, result: anyhow::Result<T>, done: impl FnOnce(&T) -> String) -> anyhow::Result<T> {
        let signalled = self.put_back();
        match result {
            Ok(value) if signalled => anyhow::bail!("interrupted by SIGINT or SIGTERM after {}", done(&value)),
            other => other,
        }
    }

    /// Puts the previous handlers back (if this span installed them), then takes the flag: a
    /// signal from then on meets the handlers the user expects, none is lost in between.
    fn put_back(&mut self) -> bool {
        let Some([int, term]) = self.previous.take() else { return false };
        // SAFETY: putting back the handlers `begin` replaced.
        unsafe {
            libc::signal(libc::SIGINT, int);
            libc::signal(libc::SIGTERM, term);
        }
        SECOND_KILLS.store(false, Ordering::SeqCst);
        INSTALLED.store(false, Ordering::SeqCst);
        INTERRUPTED.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Caught {
    fn drop(&mut self) {
        self.put_back();
    }
}

/// Whether signals are caught (children then get their own process group).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Whether SIGINT or SIGTERM arrived since [`install`] (and no [`Suspended`] is alive).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) && !SUSPENDED.load(Ordering::SeqCst)
}

/// While alive, signals are still caught but do not stop anything: the way back runs to its end.
pub struct Suspended(());

impl Suspended {
    pub fn begin() -> Suspended {
        SUSPENDED.store(true, Ordering::SeqCst);
        Suspended(())
    }
}

impl Drop for Suspended {
    fn drop(&mut self) {
        SUSPENDED.store(false, Ordering::SeqCst);
    }
}

/// An error when a signal arrived: the caller stops and takes the way back.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted by SIGINT or SIGTERM");
    }
    Ok(())
}
