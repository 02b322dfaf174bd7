//! SIGINT and SIGTERM during a restore. Once [`install`]ed, a signal no longer kills the tool
//! mid-way: it is noted, the data movers stop at their next chunk ([`interrupted`]), and the
//! restore runs the same way back as after a failure (safety backup restored, services put
//! back). Docker children then run in their own process group, so a terminal's Ctrl-C reaches
//! the tool only and the way back can still use them.

use std::sync::atomic::{AtomicBool, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SUSPENDED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
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
