//! `schedule install|show|remove`: the nightly backup (pushed when asked) with the prunes of the
//! retention in `x-xtask.retention`, and the restore drill (`drill --latest` on `x-xtask.schedule`'s
//! or `--drill`'s cadence), as systemd service and timer units or, where systemd does not run,
//! cron lines. Decide, then do: [`units`] builds every text from plain inputs (pure, tested);
//! this module finds the binary, the places and the stack's arguments, writes each file
//! atomically (never over a file it did not write) and asks systemctl to load the timers.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::context::Ctx;
use crate::engine::systemd;
use crate::model::alerts::{self, Cadence};
use crate::model::offsite;

pub mod units;

use units::{Inputs, Job};

/// Where the schedule goes.
#[derive(Debug, Clone, Default)]
pub struct Place {
    /// A user's units or crontab (`--user`) instead of the system's.
    pub user: bool,
    /// Cron instead of systemd (`--cron`).
    pub cron: bool,
    /// Write the files into this directory instead, and ask no scheduler (`--into`: staging, an
    /// image, configuration management).
    pub into: Option<PathBuf>,
}

/// What `schedule install` was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub at: Option<String>,
    pub push: Option<String>,
    pub drill: Option<Cadence>,
    pub place: Place,
    /// The binary the units run [default: this one].
    pub binary: Option<PathBuf>,
    /// The backup directory.
    pub dir: PathBuf,
    /// `--env` as given, passed on instead of its overlay file.
    pub env: Option<String>,
}

fn home() -> Result<PathBuf> {
    crate::environment::var("HOME").map(PathBuf::from).context("HOME is not set: say where with --into")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The directory the units go into.
fn unit_dir(place: &Place) -> Result<PathBuf> {
    if let Some(d) = &place.into {
        return Ok(d.clone());
    }
    if place.user {
        let config = crate::environment::var("XDG_CONFIG_HOME").map(PathBuf::from);
        return Ok(config.map(Ok).unwrap_or_else(|| home().map(|h| h.join(".config")))?.join("systemd/user"));
    }
    if !is_root() {
        bail!("system units go into /etc/systemd/system, which needs root: run it with sudo, or pass --user");
    }
    Ok(PathBuf::from("/etc/systemd/system"))
}

/// The cron.d file (system cron, or `--cron --into DIR`).
fn cron_file(place: &Place, project: &str) -> Result<PathBuf> {
    let dir = match &place.into {
        Some(d) => d.clone(),
        None if is_root() => PathBuf::from("/etc/cron.d"),
        None => bail!("/etc/cron.d needs root: run it with sudo, or pass --user for your own crontab"),
    };
    Ok(dir.join(format!("xtask-{project}")))
}

/// The arguments that select this stack, each its own word: `-p`, `--project-directory`, every
/// file (`--env` instead of its overlay), every profile.
fn stack_args(ctx: &Ctx, env: Option<&str>) -> Vec<String> {
    let s = &ctx.stack;
    let mut args = vec!["-p".to_string(), s.name.clone(), "--project-directory".into()];
    args.push(s.project_dir.display().to_string());
    let files = if env.is_some() { &s.files[..s.files.len() - 1] } else { &s.files[..] };
    for f in files {
        args.extend(["-f".to_string(), f.display().to_string()]);
    }
    if let Some(e) = env {
        args.extend(["--env".to_string(), e.to_string()]);
    }
    for p in &s.profiles {
        args.extend(["--profile".to_string(), p.clone()]);
    }
    args
}

/// The inputs of the units: settings from `x-xtask`, options over them.
fn inputs(ctx: &Ctx, opts: &Options) -> Result<Inputs> {
    let settings = ctx.offsite()?;
    let ops = &settings.operations;
    let at = match &opts.at {
        Some(at) => alerts::check_time(at).context("--at")?,
        None => ops.schedule.at.clone(),
    };
    if let Some(r) = &opts.push {
        if !settings.remotes.contains_key(r) && !settings.vaults.contains_key(r) && !offsite::is_url(r) {
            bail!("--push {r}: no remote of that name in x-xtask.remotes (nor an s3:// or rclone: URL)");
        }
    }
    let binary = match &opts.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("find this program's path")?,
    };
    let binary = binary.canonicalize().with_context(|| format!("the binary {} does not exist", binary.display()))?;
    if binary.components().any(|c| c.as_os_str() == "target") {
        eprintln!(
            "note: the units run {}, a build in a target directory; install the binary \
             (`cargo install --locked --path xtask`) and run `xtask schedule install` from there, or pass --binary",
            binary.display()
        );
    }
    let dir = crate::environment::cwd().join(&opts.dir);
    let env_file = if opts.place.user {
        home()?.join(format!(".config/xtask/{}.env", ctx.stack.name))
    } else {
        PathBuf::from(format!("/etc/xtask/{}.env", ctx.stack.name))
    };
    Ok(Inputs {
        project: ctx.stack.name.clone(),
        binary: binary.display().to_string(),
        stack_args: stack_args(ctx, opts.env.as_deref()),
        backup_dir: dir.display().to_string(),
        at,
        push: opts.push.clone(),
        drill: opts.drill.unwrap_or(ops.schedule.drill),
        keep: ops.retention,
        env_file: env_file.display().to_string(),
    })
}

/// Writes `text` to `path` atomically unless a file there was not written by this tool for
/// this project.
fn write_ours(path: &Path, text: &str, project: &str) -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(path) {
        if !old.starts_with(&units::marker(project)) {
            bail!(
                "{} exists and was not written by `schedule install` for {project}: move it away first",
                path.display()
            );
        }
    }
    crate::files::write_atomic(path, text.as_bytes(), 0o644)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `schedule install`.
pub fn install(ctx: &Ctx, opts: &Options) -> Result<()> {
    let i = inputs(ctx, opts)?;
    let jobs = units::jobs(&i);
    let place = &opts.place;
    if place.cron {
        return install_cron(&i, &jobs, place);
    }
    if place.into.is_none() && !systemd::running() {
        println!("systemd is not running here; the same schedule as cron lines:\n");
        print!("{}", units::cron_block(&i, &jobs, None)?);
        println!("\n`xtask schedule install --cron` installs them (root: /etc/cron.d; --user: your crontab).");
        return Ok(());
    }
    let dir = unit_dir(place)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    for job in &jobs {
        let unit = job.unit(&i.project);
        write_ours(&dir.join(format!("{unit}.service")), &units::service(&i, job)?, &i.project)?;
        write_ours(&dir.join(format!("{unit}.timer")), &units::timer(&i, job), &i.project)?;
    }
    if place.into.is_some() {
        return Ok(());
    }
    systemd::systemctl(place.user, &["daemon-reload"])?;
    let timers: Vec<String> = jobs.iter().map(|j| format!("{}.timer", j.unit(&i.project))).collect();
    let mut args = vec!["enable", "--now"];
    args.extend(timers.iter().map(String::as_str));
    systemd::systemctl(place.user, &args)?;
    println!("enabled {}", timers.join(", "));
    Ok(())
}

fn install_cron(i: &Inputs, jobs: &[Job], place: &Place) -> Result<()> {
    if place.user && place.into.is_none() {
        let table =
            units::merge_crontab(&systemd::crontab_read()?, &i.project, Some(&units::cron_block(i, jobs, None)?));
        systemd::crontab_write(&table)?;
        println!("installed the cron lines of {} in your crontab (crontab -l)", i.project);
        return Ok(());
    }
    let user = crate::environment::var("USER").filter(|_| !is_root()).unwrap_or_else(|| "root".into());
    let file = cron_file(place, &i.project)?;
    write_ours(&file, &units::cron_block(i, jobs, Some(&user))?, &i.project)
}

/// The files of this project's schedule in `place` (only those carrying the marker).
fn ours(ctx: &Ctx, place: &Place) -> Result<Vec<PathBuf>> {
    let project = &ctx.stack.name;
    let candidates: Vec<PathBuf> = if place.cron {
        if place.user && place.into.is_none() {
            return Ok(Vec::new());
        }
        vec![cron_file(place, project)?]
    } else {
        let dir = unit_dir(place)?;
        ["backup", "drill"]
            .iter()
            .flat_map(|j| ["service", "timer"].map(|ext| dir.join(format!("xtask-{project}-{j}.{ext}"))))
            .collect()
    };
    let marker = units::marker(project);
    Ok(candidates.into_iter().filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.starts_with(&marker))).collect())
}

/// `schedule show`: each file this project's schedule has, and systemd's next runs.
pub fn show(ctx: &Ctx, place: &Place) -> Result<()> {
    if place.cron && place.user && place.into.is_none() {
        let table = systemd::crontab_read()?;
        let block = table.lines().skip_while(|l| *l != units::marker(&ctx.stack.name)).collect::<Vec<_>>();
        println!(
            "{}",
            if block.is_empty() { "no cron lines of this project in your crontab".into() } else { block.join("\n") }
        );
        return Ok(());
    }
    let files = ours(ctx, place)?;
    if files.is_empty() {
        println!("no schedule of project {} installed here (schedule install writes one)", ctx.stack.name);
    }
    for f in &files {
        println!("== {}\n{}", f.display(), std::fs::read_to_string(f)?);
    }
    if !place.cron && place.into.is_none() && systemd::running() && !files.is_empty() {
        print!("{}", systemd::systemctl(place.user, &["list-timers", &format!("xtask-{}-*", ctx.stack.name)])?);
    }
    Ok(())
}

/// `schedule remove`: the timers stopped and disabled, then only the files carrying this
/// project's marker deleted.
pub fn remove(ctx: &Ctx, place: &Place) -> Result<()> {
    if place.cron && place.user && place.into.is_none() {
        let table = units::merge_crontab(&systemd::crontab_read()?, &ctx.stack.name, None);
        return systemd::crontab_write(&table);
    }
    let files = ours(ctx, place)?;
    let live = !place.cron && place.into.is_none() && systemd::running();
    let timers: Vec<String> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "timer"))
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if live && !timers.is_empty() {
        let mut args = vec!["disable", "--now"];
        args.extend(timers.iter().map(String::as_str));
        systemd::systemctl(place.user, &args)?;
    }
    for f in &files {
        std::fs::remove_file(f).with_context(|| format!("remove {}", f.display()))?;
        println!("removed {}", f.display());
    }
    if live && !files.is_empty() {
        systemd::systemctl(place.user, &["daemon-reload"])?;
    }
    if files.is_empty() {
        println!("nothing to remove: no schedule of project {} installed here", ctx.stack.name);
    }
    Ok(())
}
