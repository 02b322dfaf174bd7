//! SIGINT and SIGTERM during a restore or a backup. Once [`install`]ed, a signal no longer
//! kills the tool mid-way: it is noted, the data movers stop at their next chunk
//! ([`interrupted`]), and the restore runs the same way back as after a failure (safety backup
//! restored, services put back); a backup stops the same way (no archive, services put back, a
//! restic push killed before its stream could end). Docker children then run in their own
//! process group, so a terminal's Ctrl-C reaches the tool only and the way back can still use
//! them.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SUSPENDED: AtomicBool = AtomicBool::new(false);
/// The last signal caught (for [`Caught`] to deliver it again once its step is over).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// [`check`] turned the signal into an error: the step stopped because of it.
static REPORTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM from now on (for the rest of the process).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    INSTALLED.store(true, Ordering::SeqCst);
}

/// Signals caught while it lives, for one step inside a longer command (a backup, which
/// `migrate` follows with the user's own migration, which Ctrl-C must still stop). Already
/// caught (inside a restore): nothing changes. Otherwise, on drop, the previous handlers come
/// back and a signal that arrived too late to stop the step (no [`check`] saw it) is delivered
/// again; one that stopped it is the step's error.
pub struct Caught {
    previous: Option<[libc::sighandler_t; 2]>,
}

impl Caught {
    pub fn begin() -> Caught {
        if installed() {
            return Caught { previous: None };
        }
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: as in `install`; the previous handlers are kept to be put back.
        let previous = unsafe { [libc::signal(libc::SIGINT, handler), libc::signal(libc::SIGTERM, handler)] };
        INSTALLED.store(true, Ordering::SeqCst);
        Caught { previous: Some(previous) }
    }
}

impl Drop for Caught {
    fn drop(&mut self) {
        let Some([int, term]) = self.previous.take() else { return };
        INSTALLED.store(false, Ordering::SeqCst);
        // SAFETY: putting back the handlers `begin` replaced.
        unsafe {
            libc::signal(libc::SIGINT, int);
            libc::signal(libc::SIGTERM, term);
        }
        let stopped_the_step = REPORTED.swap(false, Ordering::SeqCst);
        if INTERRUPTED.swap(false, Ordering::SeqCst) && !stopped_the_step {
            // SAFETY: raising a signal at ourselves; its handler is the one the user expects.
            unsafe { libc::raise(SIGNAL.load(Ordering::SeqCst)) };
        }
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
        REPORTED.store(true, Ordering::SeqCst);
        anyhow::bail!("interrupted by SIGINT or SIGTERM");
    }
    Ok(())
}
