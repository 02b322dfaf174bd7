//! The host's schedulers as CLIs: `systemctl` (is systemd running here, reload, enable and
//! disable timers, list them) and `crontab` (a user's table, read and replaced through stdin).
//! Each found with `which` only when used; argv only.

use anyhow::{Context, Result};

use crate::engine::process::Tool;

/// Whether systemd is the running init (as `sd_booted()` decides).
pub fn running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// `systemctl [--user] ARGS…`, its output.
pub fn systemctl(user: bool, args: &[&str]) -> Result<String> {
    let tool = Tool::find("systemctl", "to enable the timers (systemd)")?;
    let mut argv: Vec<String> = Vec::new();
    if user {
        argv.push("--user".into());
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = tool.output(&argv)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// This user's crontab (empty when there is none).
pub fn crontab_read() -> Result<String> {
    let tool = Tool::find("crontab", "to install the cron lines (--cron --user); Debian's package is `cron`")?;
    match tool.output(&["-l".to_string()]) {
        Ok(out) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) if format!("{e:#}").contains("no crontab") => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Replaces this user's crontab with `text` (`crontab -`, the text on stdin).
pub fn crontab_write(text: &str) -> Result<()> {
    let tool = Tool::find("crontab", "to install the cron lines (--cron --user); Debian's package is `cron`")?;
    tool.output_with_input(&["-".to_string()], text.as_bytes()).map(drop).context("install the crontab")
}
