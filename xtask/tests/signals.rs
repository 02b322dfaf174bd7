//! SIGINT and SIGTERM as the tool handles them (`xtask::signals`), no Docker needed: each case
//! runs in a child run of this test binary, since a signal ends or spares the whole process.
//! Inside a backup's span (`Caught`) the first signal is noted and a second ends the tool; at
//! the span's end the handlers found before it are back (the default ends the tool, an ignored
//! signal stays ignored) and a signal that came during it is an error; a restore's `install`
//! keeps noting signals for the rest of the run and never ends it.

#![allow(clippy::disallowed_methods)] // the test starts itself as the child

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use signal_hook::consts::{SIGINT, SIGTERM};
use xtask::signals::{self, Caught, Suspended};

const CASE: &str = "XTASK_SIGNALS_CASE";

fn raise(signal: i32) {
    signal_hook::low_level::raise(signal).unwrap();
}

/// Runs this binary's `child` test alone with `case`, SIGINT ignored from the start if asked
/// (as in a shell script's background job).
fn run(case: &str, sigint_ignored: bool) -> Output {
    let exe = std::env::current_exe().unwrap();
    let args = ["--exact", "child", "--nocapture", "--test-threads=1"];
    let mut cmd = match sigint_ignored {
        true => {
            let mut sh = Command::new("sh");
            sh.args(["-c", "trap '' INT; exec \"$0\" \"$@\""]).arg(&exe).args(args);
            sh
        }
        false => {
            let mut c = Command::new(&exe);
            c.args(args);
            c
        }
    };
    cmd.env(CASE, case).output().unwrap()
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The cases, each run by the tests below in a child of its own (a no-op when run directly).
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE) else { return };
    match case.as_str() {
        "second-ends" => {
            let _caught = Caught::begin().unwrap();
            raise(SIGINT);
            assert!(signals::interrupted() && signals::check().is_err());
            println!("first noted");
            raise(SIGTERM);
            println!("survived the second");
        }
        "put-back" => {
            let caught = Caught::begin().unwrap();
            assert_eq!(caught.end(Ok(7), |_| unreachable!()).unwrap(), 7, "no signal: the step's result");
            let caught = Caught::begin().unwrap();
            raise(SIGTERM);
            let e = caught.end(Ok(()), |_| "the step".to_string()).unwrap_err();
            assert_eq!(e.to_string(), "interrupted by SIGINT or SIGTERM after the step");
            assert!(!signals::interrupted() && !signals::installed());
            println!("span ended");
            raise(SIGINT);
            println!("survived after the span");
        }
        "install" => {
            signals::install().unwrap();
            for s in [SIGINT, SIGTERM, SIGINT] {
                raise(s);
            }
            assert!(signals::interrupted());
            let calm = Suspended::begin();
            assert!(!signals::interrupted() && signals::check().is_ok());
            drop(calm);
            let caught = Caught::begin().unwrap();
            raise(SIGTERM);
            drop(caught);
            raise(SIGINT);
            assert!(signals::interrupted() && signals::installed());
            println!("alive");
        }
        "ignored" => {
            let caught = Caught::begin().unwrap();
            raise(SIGINT);
            assert!(caught.end(Ok(()), |_| String::new()).is_err(), "caught inside the span");
            raise(SIGINT);
            assert!(!signals::interrupted());
            println!("ignored again after the span");
            raise(SIGTERM);
            println!("survived SIGTERM");
        }
        other => panic!("no case {other}"),
    }
}

#[test]
fn in_a_span_the_first_signal_is_noted_and_a_second_ends_the_tool() {
    let out = run("second-ends", false);
    assert_eq!(out.status.signal(), Some(SIGTERM), "{}", said(&out));
    assert!(said(&out).contains("first noted") && !said(&out).contains("survived"), "{}", said(&out));
}

#[test]
fn after_a_span_the_default_is_back_and_a_signal_during_it_is_an_error() {
    let out = run("put-back", false);
    assert_eq!(out.status.signal(), Some(SIGINT), "{}", said(&out));
    assert!(said(&out).contains("span ended") && !said(&out).contains("survived"), "{}", said(&out));
}

#[test]
fn installed_signals_are_noted_for_the_rest_of_the_run_and_never_end_it() {
    let out = run("install", false);
    assert!(out.status.success() && said(&out).contains("alive"), "{}", said(&out));
}

#[test]
fn a_signal_ignored_before_a_span_is_ignored_again_after_it() {
    let out = run("ignored", true);
    assert_eq!(out.status.signal(), Some(SIGTERM), "{}", said(&out));
    assert!(said(&out).contains("ignored again") && !said(&out).contains("survived"), "{}", said(&out));
}
