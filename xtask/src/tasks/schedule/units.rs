//! What `schedule install` writes, as text built by pure functions: the jobs (the nightly backup
//! with its prunes, the drill) as argument vectors, a systemd service and timer per job (each
//! argument double-quoted for systemd: `\` and `"` escaped, `%` and `$` doubled, so no
//! specifier, variable or word splitting reaches it), and the same jobs as cron lines (each
//! argument quoted for `/bin/sh`, `%` escaped for cron). Every file starts with a marker naming
//! the project, which is how `schedule remove` knows what it wrote.

use anyhow::{bail, Result};

use crate::engine::docker::cmd::shell_quote;
use crate::model::alerts::{Cadence, Keep};

/// The first line of everything written; `remove` deletes only files that start with it.
pub fn marker(project: &str) -> String {
    format!(
        "# xtask-schedule: project={project} (written by `xtask schedule install`; `xtask schedule remove` deletes it)"
    )
}

/// What the jobs are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub project: String,
    /// The installed binary, absolute.
    pub binary: String,
    /// The arguments that select the stack (`-p`, `-f`…), one per element.
    pub stack_args: Vec<String>,
    pub backup_dir: String,
    /// `HH:MM`.
    pub at: String,
    pub push: Option<String>,
    pub drill: Cadence,
    pub keep: Keep,
    /// A file of variables (secrets) the jobs read if it exists.
    pub env_file: String,
}

/// One scheduled job: its commands (run in order, each only after the previous succeeded) and
/// when it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `backup` or `drill`: the unit is `xtask-<project>-<name>`.
    pub name: &'static str,
    pub description: String,
    pub commands: Vec<Vec<String>>,
    /// systemd's `OnCalendar=`.
    pub calendar: String,
    /// cron's five time fields.
    pub cron: String,
}

impl Job {
    pub fn unit(&self, project: &str) -> String {
        format!("xtask-{project}-{}", self.name)
    }
}

fn command(i: &Inputs, args: &[&str]) -> Vec<String> {
    let mut c = vec![i.binary.clone()];
    c.extend(i.stack_args.iter().cloned());
    c.push("--quiet".into());
    c.extend(args.iter().map(|a| a.to_string()));
    c
}

fn keep_args(k: &Keep) -> Vec<String> {
    let pairs = [
        ("--keep-last", k.last),
        ("--keep-daily", k.daily),
        ("--keep-weekly", k.weekly),
        ("--keep-monthly", k.monthly),
    ];
    pairs.iter().flat_map(|(flag, n)| [flag.to_string(), n.to_string()]).collect()
}

/// The jobs: the backup (pushed when asked) then the local prune (and the remote's), and the
/// drill an hour later on its cadence (`drill --latest`: the newest archive restored into a
/// throwaway copy of the stack, the remote's when the backup pushes).
pub fn jobs(i: &Inputs) -> Vec<Job> {
    let (hour, minute) = (&i.at[..2], &i.at[3..]);
    let dir = i.backup_dir.as_str();
    let mut backup = vec!["backup", "--output-dir", dir];
    if let Some(r) = &i.push {
        backup.extend(["--push", r.as_str()]);
    }
    let mut commands = vec![command(i, &backup)];
    let keep = keep_args(&i.keep);
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    commands.push(command(i, &[&["prune", "--output-dir", dir][..], &keep].concat()));
    let mut drill = vec!["drill", "--latest", "--output-dir", dir];
    if let Some(r) = &i.push {
        commands.push(command(i, &[&["prune", "--remote", r.as_str()][..], &keep].concat()));
        drill.extend(["--remote", r.as_str()]);
    }
    let drill_hour = format!("{:02}", (hour.parse::<u8>().unwrap_or(3) + 1) % 24);
    let (drill_calendar, drill_cron) = match i.drill {
        Cadence::Weekly => (format!("Sun *-*-* {drill_hour}:{minute}:00"), format!("{minute} {drill_hour} * * 0")),
        Cadence::Monthly => (format!("*-*-01 {drill_hour}:{minute}:00"), format!("{minute} {drill_hour} 1 * *")),
    };
    vec![
        Job {
            name: "backup",
            description: format!(
                "Back up stack {}{} and prune",
                i.project,
                i.push.as_deref().map(|r| format!(", push it to {r}")).unwrap_or_default()
            ),
            commands,
            calendar: format!("*-*-* {hour}:{minute}:00"),
            cron: format!("{minute} {hour} * * *"),
        },
        Job {
            name: "drill",
            description: format!(
                "Restore drill of stack {}: the newest archive restored into a throwaway copy ({})",
                i.project,
                i.drill.as_str()
            ),
            commands: vec![command(i, &drill)],
            calendar: drill_calendar,
            cron: drill_cron,
        },
    ]
}

/// Refuses text that no unit or cron line can carry (a newline would start a new directive).
fn one_line(s: &str) -> Result<()> {
    if s.chars().any(char::is_control) {
        bail!("{s:?} holds a control character (a newline?): it cannot go into a unit or a crontab");
    }
    Ok(())
}

/// One argument of an `ExecStart=` line: double-quoted, `\` and `"` escaped, `%` doubled (no
/// specifier) and `$` doubled (no variable), so systemd passes it as this exact one word.
pub fn systemd_quote(arg: &str) -> Result<String> {
    one_line(arg)?;
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// The program of an `ExecStart=` line: double-quoted with `%` doubled; `$` stays single (the
/// program is never variable-expanded, so `$$` would stay two), and a path holding a quote or
/// a backslash is refused (systemd refuses such an executable: "special characters").
pub fn systemd_program(path: &str) -> Result<String> {
    one_line(path)?;
    if path.contains(['"', '\'', '\\']) || !path.starts_with('/') {
        bail!("the program {path:?} cannot be run by systemd: it must be an absolute path without quotes or backslashes (install it elsewhere, or pass --binary)");
    }
    Ok(format!("\"{}\"", path.replace('%', "%%")))
}

/// A path in a directive that takes one path (no quoting there): only `%` doubled.
fn systemd_path(path: &str) -> Result<String> {
    one_line(path)?;
    Ok(path.replace('%', "%%"))
}

/// The `.service` unit of `job`: oneshot, one `ExecStart=` per command (each runs only if the
/// previous one succeeded), the environment file optional.
pub fn service(i: &Inputs, job: &Job) -> Result<String> {
    let mut out = format!(
        "{}\n[Unit]\nDescription={}\nWants=network-online.target\nAfter=network-online.target docker.service\n\n\
         [Service]\nType=oneshot\nEnvironmentFile=-{}\n",
        marker(&i.project),
        systemd_path(&job.description)?,
        systemd_path(&i.env_file)?
    );
    for c in &job.commands {
        let mut words = vec![systemd_program(&c[0])?];
        words.extend(c[1..].iter().map(|a| systemd_quote(a)).collect::<Result<Vec<_>>>()?);
        out.push_str(&format!("ExecStart={}\n", words.join(" ")));
    }
    Ok(out)
}

/// The `.timer` unit of `job`: its calendar, persistent (a run missed while the host was off
/// happens at the next boot).
pub fn timer(i: &Inputs, job: &Job) -> String {
    format!(
        "{}\n[Unit]\nDescription=Timer: {}\n\n[Timer]\nOnCalendar={}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
        marker(&i.project),
        job.description.replace('%', "%%"),
        job.calendar
    )
}

/// One argument of a cron line: quoted for `/bin/sh`, `%` escaped (cron turns a bare one into
/// a newline).
pub fn cron_quote(arg: &str) -> Result<String> {
    one_line(arg)?;
    Ok(shell_quote(arg).replace('%', "\\%"))
}

/// The cron lines between the marker and an end line: each job's commands joined with `&&`,
/// after reading the environment file if it exists. `user`: the user field of an
/// `/etc/cron.d` file (None: a user's crontab).
pub fn cron_block(i: &Inputs, jobs: &[Job], user: Option<&str>) -> Result<String> {
    let mut out = format!("{}\n", marker(&i.project));
    let env = cron_quote(&i.env_file)?;
    for job in jobs {
        let commands: Vec<String> = job
            .commands
            .iter()
            .map(|c| c.iter().map(|a| cron_quote(a)).collect::<Result<Vec<_>>>().map(|w| w.join(" ")))
            .collect::<Result<_>>()?;
        let user = user.map(|u| format!("{u} ")).unwrap_or_default();
        let source = format!("if [ -r {env} ]; then set -a; . {env}; set +a; fi; ");
        out.push_str(&format!("{} {user}{source}{}\n", job.cron, commands.join(" && ")));
    }
    out.push_str(&format!("# xtask-schedule end: project={}\n", i.project));
    Ok(out)
}

/// `crontab` text with this project's block replaced by `block` (None: removed); every other
/// line kept as it was.
pub fn merge_crontab(existing: &str, project: &str, block: Option<&str>) -> String {
    let start = marker(project);
    let end = format!("# xtask-schedule end: project={project}");
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        if line == start {
            inside = true;
        } else if inside && line == end {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(b) = block {
        out.push_str(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            project: "app".into(),
            binary: "/usr/local/bin/xtask".into(),
            stack_args: vec!["-p".into(), "app".into(), "-f".into(), "/srv/my app/100% \"$HOME\"/compose.yaml".into()],
            backup_dir: "/var/backups/app".into(),
            at: "03:15".into(),
            push: Some("offsite".into()),
            drill: Cadence::Weekly,
            keep: Keep::default(),
            env_file: "/etc/xtask/app.env".into(),
        }
    }

    #[test]
    fn arguments_are_quoted_for_systemd_so_nothing_is_expanded_or_split() {
        assert_eq!(systemd_quote("/srv/my app").unwrap(), "\"/srv/my app\"");
        assert_eq!(systemd_quote("100%").unwrap(), "\"100%%\"", "no specifier");
        assert_eq!(systemd_quote("$HOME ${X}").unwrap(), "\"$$HOME $${X}\"", "no variable");
        assert_eq!(systemd_quote("a\"b'c\\d").unwrap(), "\"a\\\"b'c\\\\d\"");
        assert_eq!(systemd_quote(";").unwrap(), "\";\"", "a quoted ; is a word, not a command separator");
        assert!(systemd_quote("a\nExecStart=/bin/rm").is_err(), "a newline would add a directive");
        assert!(cron_quote("a\nb").is_err());
        assert_eq!(systemd_program("/opt/my tools/100%/$x").unwrap(), "\"/opt/my tools/100%%/$x\"");
        for bad in ["/opt/a\"b/x", "/opt/a'b/x", "/opt/a\\b/x", "relative/x"] {
            assert!(systemd_program(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_backup_prunes_after_it_and_the_drill_follows_an_hour_later() {
        let jobs = jobs(&inputs());
        let backup = &jobs[0];
        let args: Vec<Vec<&str>> =
            backup.commands.iter().map(|c| c[5..].iter().map(String::as_str).collect()).collect();
        assert_eq!(args[0], ["--quiet", "backup", "--output-dir", "/var/backups/app", "--push", "offsite"]);
        assert_eq!(&args[1][..4], ["--quiet", "prune", "--output-dir", "/var/backups/app"]);
        assert_eq!(&args[2][..4], ["--quiet", "prune", "--remote", "offsite"]);
        assert_eq!(
            &args[2][4..],
            ["--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6"]
        );
        assert_eq!((backup.calendar.as_str(), backup.cron.as_str()), ("*-*-* 03:15:00", "15 03 * * *"));
        let drill = &jobs[1];
        assert_eq!((drill.calendar.as_str(), drill.cron.as_str()), ("Sun *-*-* 04:15:00", "15 04 * * 0"));
        let drill_args: Vec<&str> = drill.commands[0][5..].iter().map(String::as_str).collect();
        assert_eq!(
            drill_args,
            ["--quiet", "drill", "--latest", "--output-dir", "/var/backups/app", "--remote", "offsite"]
        );
        let monthly = super::jobs(&Inputs { drill: Cadence::Monthly, at: "23:30".into(), push: None, ..inputs() });
        assert_eq!(monthly[1].calendar, "*-*-01 00:30:00");
        assert_eq!(monthly[0].commands.len(), 2, "no remote prune without a push");
    }

    #[test]
    fn units_carry_the_marker_and_one_exec_line_per_command() {
        let i = inputs();
        let jobs = jobs(&i);
        let unit = service(&i, &jobs[0]).unwrap();
        assert!(unit.starts_with("# xtask-schedule: project=app "), "{unit}");
        assert!(unit.contains("\nType=oneshot\nEnvironmentFile=-/etc/xtask/app.env\n"), "{unit}");
        let exec: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart=")).collect();
        assert_eq!(exec.len(), 3);
        assert!(
            exec[0].starts_with("ExecStart=\"/usr/local/bin/xtask\" \"-p\" \"app\" \"-f\" \"/srv/my app/100%% \\\"$$HOME\\\"/compose.yaml\" \"--quiet\" \"backup\""),
            "{}",
            exec[0]
        );
        let t = timer(&i, &jobs[0]);
        assert!(
            t.contains("\nOnCalendar=*-*-* 03:15:00\nPersistent=true\n") && t.contains("WantedBy=timers.target"),
            "{t}"
        );
    }

    #[test]
    fn cron_lines_quote_for_the_shell_and_escape_percent() {
        let i = inputs();
        let block = cron_block(&i, &jobs(&i), Some("root")).unwrap();
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines.len(), 4, "{block}");
        assert!(lines[1].starts_with("15 03 * * * root if [ -r /etc/xtask/app.env ]; then"), "{block}");
        assert!(lines[1].contains("'/srv/my app/100\\% \"$HOME\"/compose.yaml'"), "{block}");
        assert_eq!(lines[1].matches(" && ").count(), 2);
        assert_eq!(lines[3], "# xtask-schedule end: project=app");
    }

    #[test]
    fn a_crontab_keeps_other_lines_and_replaces_only_this_projects_block() {
        let i = inputs();
        let block = cron_block(&i, &jobs(&i), None).unwrap();
        let mine = merge_crontab("MAILTO=ops\n0 1 * * * /bin/true\n", "app", Some(&block));
        assert!(mine.starts_with("MAILTO=ops\n0 1 * * * /bin/true\n# xtask-schedule: project=app"), "{mine}");
        let again = merge_crontab(&mine, "app", Some(&block));
        assert_eq!(again, mine, "installing twice changes nothing");
        let other = merge_crontab(&mine, "other", None);
        assert_eq!(other, mine, "another project's removal keeps this block");
        assert_eq!(merge_crontab(&mine, "app", None), "MAILTO=ops\n0 1 * * * /bin/true\n");
    }
}
