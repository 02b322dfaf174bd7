//! SIGINT and SIGTERM during a restore or a backup. Once [`install`]ed, a signal no longer
//! kills the tool mid-way: it is noted, the data movers stop at their next chunk
//! ([`interrupted`]), and the restore runs the same way back as after a failure (safety backup
//! restored, services put back); a backup stops the same way (no archive, services put back, a
//! restic push killed before its stream could end). Docker children then run in their own
//! process group, so a terminal's Ctrl-C reaches the tool only and the way back can still use
//! them. Signals are caught through signal-hook's flags: no code of ours runs in a handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::low_level::unregister;
use signal_hook::{flag, SigId};

/// The signals caught, in the order of [`ENDS`].
const SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

static INSTALLED: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SUSPENDED: AtomicBool = AtomicBool::new(false);
/// Per signal: while set, it ends the tool at once (its default action, emulated). Set outside
/// the spans for a signal whose default was in force before the first one; inside a [`Caught`]
/// span, by the first signal, so that a second ends the tool (a backup stuck in a child or a
/// pipe must stay stoppable); never inside a restore, whose way back is never cut off that way.
static ENDS: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
/// The actions registered with signal-hook; they run in the order registered.
static ACTIONS: Mutex<Actions> = Mutex::new(Actions { ignored: None, noting: Vec::new(), arming: Vec::new() });

struct Actions {
    /// Per signal, whether it was ignored before the first span (a shell script's background
    /// job ignores SIGINT): known once the emulated default is registered, which stays.
    ignored: Option<[bool; 2]>,
    /// Setting [`INTERRUPTED`]: while signals are caught.
    noting: Vec<SigId>,
    /// Setting every [`ENDS`]: inside a [`Caught`] span.
    arming: Vec<SigId>,
}

impl Actions {
    /// The emulated default, first of all actions and for good (signal-hook never gives the
    /// handler back to the system: without it a signal would be ignored once the span ends).
    fn emulated_default(&mut self) -> Result<()> {
        if self.ignored.is_none() {
            let ignored = ignored_in(&std::fs::read_to_string("/proc/self/status").unwrap_or_default());
            for (i, &signal) in SIGNALS.iter().enumerate() {
                ENDS[i].store(!ignored[i], Ordering::SeqCst);
                flag::register_conditional_default(signal, &ENDS[i]).context("catch SIGINT and SIGTERM")?;
            }
            self.ignored = Some(ignored);
        }
        Ok(())
    }

    fn noting(&mut self) -> Result<()> {
        if self.noting.is_empty() {
            for signal in SIGNALS {
                self.noting.push(flag::register(signal, &INTERRUPTED).context("catch SIGINT and SIGTERM")?);
            }
        }
        Ok(())
    }

    fn arming(&mut self) -> Result<()> {
        for signal in SIGNALS {
            for ends in &ENDS {
                self.arming.push(flag::register(signal, ends).context("catch SIGINT and SIGTERM")?);
            }
        }
        Ok(())
    }

    /// From now on every signal is noted; with `second_ends`, one after the first ends the tool.
    fn catch(&mut self, second_ends: bool) -> Result<()> {
        self.emulated_default()?;
        self.noting()?;
        for id in self.arming.drain(..) {
            unregister(id);
        }
        if second_ends {
            self.arming()?;
        }
        ENDS.iter().for_each(|e| e.store(false, Ordering::SeqCst));
        INSTALLED.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// As before the first span: the default action, or ignored if the signal was.
    fn put_back(&mut self) {
        for id in self.arming.drain(..).chain(self.noting.drain(..)) {
            unregister(id);
        }
        let ignored = self.ignored.unwrap_or_default();
        ENDS.iter().zip(ignored).for_each(|(e, ignored)| e.store(!ignored, Ordering::SeqCst));
        INSTALLED.store(false, Ordering::SeqCst);
    }
}

/// Which of [`SIGNALS`] a `/proc/PID/status` says are ignored (`SigIgn`, a hexadecimal mask);
/// none when it cannot be read.
fn ignored_in(status: &str) -> [bool; 2] {
    let mask =
        status.lines().find_map(|l| l.strip_prefix("SigIgn:")).and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
    SIGNALS.map(|s| (mask.unwrap_or(0) >> (s - 1)) & 1 == 1)
}

fn actions() -> std::sync::MutexGuard<'static, Actions> {
    ACTIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Catches SIGINT and SIGTERM from now on (for the rest of the process): each is noted, none
/// ends the tool.
pub fn install() -> Result<()> {
    actions().catch(false)
}

/// Signals caught for one step inside a longer command (a backup, which `migrate` follows with
/// the user's own migration, which Ctrl-C must still stop): the first stops the step at its next
/// [`check`], a second ends the tool. Already caught (inside a restore): nothing changes.
/// [`Caught::end`] puts the previous handling back.
pub struct Caught {
    active: bool,
}

impl Caught {
    pub fn begin() -> Result<Caught> {
        if installed() {
            return Ok(Caught { active: false });
        }
        actions().catch(true)?;
        Ok(Caught { active: true })
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

    /// Puts the previous handling back (if this span changed it), then takes the flag: a signal
    /// from then on meets the handling the user expects, none is lost in between.
    fn put_back(&mut self) -> bool {
        if !std::mem::take(&mut self.active) {
            return false;
        }
        actions().put_back();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_signals_are_read_from_the_status_mask() {
        // SIGINT is 2 (bit 1), SIGTERM 15 (bit 14); SIGPIPE (13, bit 12) is not ours.
        assert_eq!(ignored_in("Name:\txtask\nSigIgn:\t0000000000001002\n"), [true, false]);
        assert_eq!(ignored_in("SigIgn:\t0000000000004000\n"), [false, true]);
        assert_eq!(ignored_in("no such line"), [false, false]);
    }
}
