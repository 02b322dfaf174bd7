//! `cargo xtask`: owns the persistent data of the project's Docker Compose stack.
//! This file only parses the command line and dispatches; each task family has its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use xtask::lock::Lock;
use xtask::model::compose;
use xtask::store::{local, retention};
use xtask::tasks::{backup, catalog as archives, clean, migrate, offsite, restore, stack, status, volumes};
use xtask::{archive, context, ui};

/// Back up, verify, restore and clean the named volumes of the project's Docker Compose stack.
#[derive(Parser)]
#[command(name = "cargo xtask", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts, before or after the command name.
#[derive(Args)]
struct Global {
    /// Compose file of the stack; repeat to merge several in order
    /// [default: $COMPOSE_FILE, else compose/compose.yaml in this workspace]
    #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
    files: Vec<PathBuf>,
    /// Add the environment's overlay, compose.<ENV>.yaml next to the first file
    #[arg(long, value_enum, global = true)]
    env: Option<Environment>,
    /// Compose project name [default: $COMPOSE_PROJECT_NAME, the files' `name:`, or the directory's name]
    #[arg(short = 'p', long, value_name = "NAME", global = true)]
    project_name: Option<String>,
    /// Project directory [default: the first compose file's directory]
    #[arg(long, value_name = "DIR", global = true)]
    project_directory: Option<PathBuf>,
    /// Enable a Compose profile; repeatable [default: $COMPOSE_PROFILES]
    #[arg(long = "profile", value_name = "PROFILE", global = true)]
    profiles: Vec<String>,
    /// Read the compose files directly and ask the Docker engine nothing
    #[arg(long, global = true)]
    offline: bool,
    /// Print each docker command that would change something instead of running it
    #[arg(long, global = true)]
    dry_run: bool,
    /// Print each docker command before running it, and its output
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print only results and errors, no progress lines
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Read archives without a valid signature although x-xtask.sign is set (restore, verify,
    /// pull, --latest, prune count them); loud, for recovery only
    #[arg(long, global = true)]
    allow_unsigned: bool,
    /// Read clear archives although x-xtask.encrypt is set; for archives made before encryption
    #[arg(long, global = true)]
    allow_unencrypted: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Environment {
    Dev,
    Test,
    Prod,
}

#[derive(Subcommand)]
enum Command {
    /// List the stack's named volumes: role, priority, size, who mounts them
    Volumes {
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show each service's state and health, the volumes and the newest backup
    Status {
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
    /// Back up every database (as dumps) and the critical and important volumes into one archive
    Backup(BackupArgs),
    /// Back up only the databases (every database service, as dumps), e.g. before a migration
    BackupDb(BackupDbArgs),
    /// List the archives: file, created, age, size, kind, tag, checksum status, contents
    Backups {
        #[command(flatten)]
        dir: DirArg,
        /// List the archives in this remote (a name from x-xtask.remotes, or s3://… / rclone:…)
        #[arg(long, value_name = "REMOTE")]
        remote: Option<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Upload archives to a remote; skips those already there with the same size and SHA-256
    Push {
        /// The archive to upload
        #[arg(required_unless_present_any = ["latest", "all"], conflicts_with_all = ["latest", "all"])]
        archive: Option<PathBuf>,
        /// Upload the newest archive of the project
        #[arg(long, conflicts_with = "all")]
        latest: bool,
        /// Upload every sound archive of the project
        #[arg(long)]
        all: bool,
        /// The remote: a name from x-xtask.remotes, or s3://… / rclone:…
        #[arg(long, value_name = "REMOTE")]
        to: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Download an archive from a remote into the backup directory (checked against its SHA-256)
    Pull {
        /// The archive's file name in the remote
        #[arg(required_unless_present = "latest", conflicts_with = "latest")]
        archive: Option<String>,
        /// Download the newest complete archive of the project
        #[arg(long)]
        latest: bool,
        /// The remote: a name from x-xtask.remotes, or s3://… / rclone:…
        #[arg(long, value_name = "REMOTE")]
        from: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Re-read archives: gzip and tar integrity, every checksum, metadata, path safety, dumps
    Verify(VerifyArgs),
    /// Delete old archives by a retention policy; never the newest verified one, never other files
    Prune(PruneArgs),
    /// Restore an archive: verified first, confirmed, with a safety backup and an undo command
    Restore(RestoreArgs),
    /// Back up the databases, run a migration, and restore the databases if it fails
    Migrate {
        /// Run it in this service (`exec` when running, else a one-off `run`) [default: x-xtask.migrate.service]
        #[arg(long, value_name = "SERVICE", conflicts_with = "host")]
        service: Option<String>,
        /// Run it on the host, in the project directory
        #[arg(long)]
        host: bool,
        /// Keep the failed state instead of restoring the databases
        #[arg(long)]
        no_rollback: bool,
        #[command(flatten)]
        dir: DirArg,
        /// The migration command, after `--` [default: x-xtask.migrate in the compose file]
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Remove the stack's containers and networks; every volume stays
    Clean,
    /// The same as `clean`, by its explicit name
    CleanContainers,
    /// Remove the volumes with the logs role (asks yes/no)
    CleanLogs {
        /// Do not ask: for scripts
        #[arg(long)]
        yes: bool,
    },
    /// Remove the volumes with the cache role (asks yes/no); they come back empty
    CleanCache {
        /// Do not ask: for scripts
        #[arg(long)]
        yes: bool,
    },
    /// Remove containers, networks and EVERY volume of the stack (asks for DELETE EVERYTHING)
    CleanAll {
        /// Confirmation for scripts: must be exactly "DELETE EVERYTHING"
        #[arg(long, value_name = "PHRASE")]
        confirm: Option<String>,
        /// Take a full backup first; the clean is aborted if it fails
        #[arg(long)]
        backup_first: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Regenerate generated docs (docs/data-protection.md)
    #[command(hide = true)]
    GenDocs,
    /// Start the stack (or the given services) and wait until healthy
    Up {
        /// Services to start [default: all]
        services: Vec<String>,
    },
    /// Remove the stack's containers and networks; volumes are kept
    Down,
}

#[derive(Args)]
struct VerifyArgs {
    /// The archive to verify
    #[arg(required_unless_present_any = ["latest", "all"], conflicts_with_all = ["latest", "all"])]
    archive: Option<PathBuf>,
    /// Verify the newest archive of the project
    #[arg(long, conflicts_with = "all")]
    latest: bool,
    /// Verify every archive of the project
    #[arg(long)]
    all: bool,
    /// Also prove it loads: SQL dumps into a throwaway server of the service's image, volumes into scratch volumes
    #[arg(long)]
    deep: bool,
    /// Accept device nodes and FIFOs inside volumes (refused by default)
    #[arg(long)]
    allow_special_files: bool,
    /// Verify an archive of this remote, streamed without a local copy (ARCHIVE is its file name)
    #[arg(long, value_name = "REMOTE", conflicts_with = "all")]
    remote: Option<String>,
    #[command(flatten)]
    dir: DirArg,
    /// Print the reports as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PruneArgs {
    /// Keep the N newest archives
    #[arg(long, value_name = "N", env = "XTASK_KEEP_LAST", default_value_t = 3)]
    keep_last: usize,
    /// Keep the newest archive of each of the last D days that have one
    #[arg(long, value_name = "D", env = "XTASK_KEEP_DAILY", default_value_t = 7)]
    keep_daily: usize,
    /// Keep the newest archive of each of the last W weeks that have one
    #[arg(long, value_name = "W", env = "XTASK_KEEP_WEEKLY", default_value_t = 4)]
    keep_weekly: usize,
    /// Keep the newest archive of each of the last M months that have one
    #[arg(long, value_name = "M", env = "XTASK_KEEP_MONTHLY", default_value_t = 6)]
    keep_monthly: usize,
    /// Prune the archives in this remote instead of the local ones
    #[arg(long, value_name = "REMOTE")]
    remote: Option<String>,
    #[command(flatten)]
    dir: DirArg,
}

#[derive(Args)]
struct RestoreArgs {
    /// The archive to restore
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    archive: Option<PathBuf>,
    /// Restore the newest archive of the project
    #[arg(long)]
    latest: bool,
    /// Restore only `db` (every database service), `db:SERVICE` or the named volume; repeatable
    /// [default: everything in the archive]
    #[arg(long, value_name = "db|db:SERVICE|VOLUME")]
    only: Vec<String>,
    /// Do not ask: for scripts (without a terminal, restore refuses unless given)
    #[arg(long)]
    yes: bool,
    /// Restore an archive made for another project into this one
    #[arg(long)]
    force: bool,
    /// Skip the backup of what is replaced (the restore then cannot be undone)
    #[arg(long)]
    no_safety_backup: bool,
    /// Accept device nodes and FIFOs inside volumes (refused by default)
    #[arg(long)]
    allow_special_files: bool,
    /// Empty each volume and fill it in place instead of staging the new copy beside the
    /// current one (for a disk without room for both; the safety backup is then the way back)
    #[arg(long)]
    in_place: bool,
    /// Print the outcome (archive, undo archive, downtime) as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Stream the archive from this remote (ARCHIVE is its file name there)
    #[arg(long, value_name = "REMOTE")]
    remote: Option<String>,
    #[command(flatten)]
    dir: DirArg,
}

/// Where and how archives are written.
#[derive(Args)]
struct ArchiveArgs {
    /// Directory for archives [default: $XTASK_BACKUP_DIR, else backups/ in the workspace this
    /// xtask was built from, also for a stack given with -f elsewhere]
    #[arg(long, value_name = "DIR", env = "XTASK_BACKUP_DIR")]
    output_dir: Option<PathBuf>,
    /// Label recorded in the archive and added to its file name, e.g. pre-migration
    #[arg(long)]
    tag: Option<String>,
    /// Dump only this database; repeatable [default: every database of each server]
    #[arg(long = "database", value_name = "NAME")]
    databases: Vec<String>,
    /// Dump only this database service; repeatable [default: every database service]
    #[arg(long = "service", value_name = "SERVICE")]
    services: Vec<String>,
    /// gzip level, 1 (fastest) to 9 (smallest)
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    level: u32,
    /// Print a JSON summary (path, bytes, duration, entries, skipped volumes) on stdout
    #[arg(long)]
    json: bool,
    /// Write a clear archive even though x-xtask.encrypt names recipients
    #[arg(long)]
    no_encrypt: bool,
    /// Upload the archive to this remote once written (a name from x-xtask.remotes, or s3://…)
    #[arg(long, value_name = "REMOTE")]
    push: Option<String>,
    /// With --push: remove the local archive once the upload is complete
    #[arg(long, requires = "push")]
    no_keep_local: bool,
}

#[derive(Args)]
struct DirArg {
    /// Directory holding the archives [default: $XTASK_BACKUP_DIR, else backups/ in the workspace
    /// this xtask was built from, also for a stack given with -f elsewhere]
    #[arg(long = "output-dir", value_name = "DIR", env = "XTASK_BACKUP_DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn path(self) -> PathBuf {
        self.dir.unwrap_or_else(local::default_dir)
    }
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
    /// Back up this volume (name or compose key) whatever its priority; repeatable
    #[arg(long = "volume", value_name = "NAME")]
    volumes: Vec<String>,
    /// Back up every volume of the stack, regenerable and optional ones too
    #[arg(long, conflicts_with = "volumes")]
    all: bool,
    /// Leave this volume out; repeatable
    #[arg(long, value_name = "NAME")]
    exclude: Vec<String>,
    /// Stop the services using the copied volumes for a file-consistent copy (started again after)
    #[arg(long)]
    stop: bool,
    /// Never stop a database the tool cannot dump to copy its volume: report it NOT PROTECTED
    #[arg(long, conflicts_with = "stop")]
    no_stop: bool,
}

#[derive(Args)]
struct BackupDbArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
}

fn backup_options(a: ArchiveArgs, kind: backup::Kind, env: Option<&str>) -> backup::Options {
    backup::Options {
        databases: a.databases,
        services: a.services,
        tag: a.tag,
        level: a.level,
        environment: env.map(str::to_string),
        ..backup::Options::new(kind, a.output_dir.unwrap_or_else(local::default_dir))
    }
}

fn clean_opts(yes: bool, confirm: Option<String>, backup_first: bool, dir: Option<PathBuf>) -> clean::Options {
    clean::Options { yes, confirm, backup_first, dir: dir.unwrap_or_else(local::default_dir) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    let env_name = g.env.map(|e| e.to_possible_value().expect("no skipped variants").get_name().to_string());
    let selection = compose::Selection {
        files: g.files,
        env_overlay: env_name.clone(),
        project_name: g.project_name,
        project_dir: g.project_directory,
        profiles: g.profiles,
    };
    // Reading archives needs no engine.
    let offline = g.offline
        || matches!(
            cli.command,
            Command::Backups { .. }
                | Command::Verify(VerifyArgs { deep: false, .. })
                | Command::Prune(_)
                | Command::Push { .. }
                | Command::Pull { .. }
        );
    let mut ctx = context::Ctx::new(&selection, offline, g.dry_run, g.verbose, g.quiet)?;
    ctx.trust = context::Trust { allow_unsigned: g.allow_unsigned, allow_unencrypted: g.allow_unencrypted };
    dispatch(&ctx, cli.command, g.dry_run, env_name.as_deref())
}

/// Calls the task the command names.
fn dispatch(ctx: &context::Ctx, command: Command, dry_run: bool, env: Option<&str>) -> anyhow::Result<()> {
    match command {
        Command::Volumes { json } => volumes::run(ctx, json),
        Command::Status { json } => status::run(ctx, json),
        Command::Backup(b) => {
            let (json, delivery) = (b.archive.json, Delivery::of(&b.archive));
            let opts = backup::Options {
                volumes: b.volumes,
                all: b.all,
                exclude: b.exclude,
                stop: b.stop,
                no_stop: b.no_stop,
                ..backup_options(b.archive, backup::Kind::Full, env)
            };
            run_backup(ctx, opts, &delivery, dry_run, json)
        }
        Command::BackupDb(b) => {
            let (json, delivery) = (b.archive.json, Delivery::of(&b.archive));
            run_backup(ctx, backup_options(b.archive, backup::Kind::Db, env), &delivery, dry_run, json)
        }
        Command::Backups { remote: Some(r), json, .. } => offsite::list(ctx, &r, json),
        Command::Backups { dir, remote: None, json } => archives::list(&dir.path(), &ctx.stack.name, json),
        Command::Push { archive, latest, all, to, dir } => {
            run_push(ctx, archive, latest, all, &to, &dir.path(), dry_run)
        }
        Command::Pull { archive, latest: _, from, dir } => {
            let path = offsite::pull(ctx, &from, archive.as_deref(), &dir.path(), dry_run)?;
            if !dry_run {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Verify(v) => v.run(ctx),
        Command::Prune(p) => p.run(ctx, dry_run),
        Command::Restore(r) => {
            let json = r.json;
            run_restore(ctx, &r.options(), dry_run, json)
        }
        Command::Migrate { service, host, no_rollback, dir, command } => {
            let opts = migrate::Options { service, host, command, no_rollback, dir: dir.path() };
            run_migrate(ctx, &opts, dry_run)
        }
        Command::Clean | Command::CleanContainers => {
            clean::run(ctx, clean::Clean::Containers, &clean_opts(false, None, false, None))
        }
        Command::CleanLogs { yes } => clean::run(ctx, clean::Clean::Logs, &clean_opts(yes, None, false, None)),
        Command::CleanCache { yes } => clean::run(ctx, clean::Clean::Cache, &clean_opts(yes, None, false, None)),
        Command::CleanAll { confirm, backup_first, dir } => {
            clean::run(ctx, clean::Clean::All, &clean_opts(false, confirm, backup_first, Some(dir.path())))
        }
        Command::GenDocs => {
            let path = compose::workspace_root().join("docs/data-protection.md");
            std::fs::write(&path, clean::matrix_markdown())?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Up { services } => stack::up(ctx, &services),
        Command::Down => stack::down(ctx),
    }
}

impl VerifyArgs {
    fn run(self, ctx: &context::Ctx) -> anyhow::Result<()> {
        let which = match (self.remote, self.archive, self.latest) {
            (Some(remote), a, _) => {
                archives::Which::Remote { remote, file: a.map(|p| p.to_string_lossy().into_owned()) }
            }
            (None, Some(p), _) => archives::Which::One(p),
            (None, None, true) => archives::Which::Latest,
            (None, None, false) => archives::Which::All,
        };
        let rules = archive::Rules { allow_special: self.allow_special_files };
        archives::verify(ctx, &self.dir.path(), which, self.deep, rules, self.json)
    }
}

impl PruneArgs {
    fn run(self, ctx: &context::Ctx, dry_run: bool) -> anyhow::Result<()> {
        let r = retention::Retention {
            last: self.keep_last,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
        };
        match self.remote {
            Some(name) => offsite::prune(ctx, &name, &r, dry_run),
            None => archives::prune(ctx, &self.dir.path(), &r, dry_run),
        }
    }
}

impl RestoreArgs {
    fn options(self) -> restore::Options {
        let archive = if self.latest { None } else { self.archive };
        let remote = self.remote.map(|r| (r, archive.as_ref().map(|a| a.to_string_lossy().into_owned())));
        restore::Options {
            archive,
            only: self.only,
            yes: self.yes,
            force: self.force,
            no_safety_backup: self.no_safety_backup,
            allow_special: self.allow_special_files,
            in_place: self.in_place,
            dir: self.dir.path(),
            remote,
            expect_sha256: None,
        }
    }
}

/// Where a backup goes besides the local directory, and whether it is encrypted.
struct Delivery {
    no_encrypt: bool,
    push: Option<String>,
    keep_local: bool,
}

impl Delivery {
    fn of(a: &ArchiveArgs) -> Delivery {
        Delivery { no_encrypt: a.no_encrypt, push: a.push.clone(), keep_local: !a.no_keep_local }
    }
}

/// `backup` / `backup-db`: decide, show under `--dry-run`, else take the lock and write; then
/// push it when asked.
fn run_backup(
    ctx: &context::Ctx,
    mut opts: backup::Options,
    delivery: &Delivery,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    opts.no_encrypt = delivery.no_encrypt;
    opts.push = delivery.push.clone();
    opts.keep_local = delivery.keep_local;
    let plan = backup::prepare(ctx, &opts)?;
    if dry_run {
        print!("{}", plan.describe());
        return Ok(());
    }
    let dir = backup::prepare_dir(&opts.output_dir)?;
    let lock = Lock::acquire(&dir, &plan.project, &format!("backup ({})", plan.kind.as_str()))?;
    let summary = backup::execute(ctx, &plan, &opts, &lock)?;
    drop(lock);
    if !ctx.ui.quiet && !summary.skipped.is_empty() {
        eprintln!("not in this archive:");
        for s in summary.skipped.iter().filter(|s| !s.reason.starts_with(backup::UNPROTECTED)) {
            eprintln!("  {}: {}", s.name, s.reason);
        }
    }
    for s in summary.skipped.iter().filter(|s| s.reason.starts_with(backup::UNPROTECTED)) {
        eprintln!("warning: {}: {}", s.name, s.reason);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !ctx.ui.quiet {
        println!(
            "{} ({}, {} files, {} of data in {:.1} s)",
            summary.path.display(),
            ui::human_bytes(summary.bytes),
            summary.files,
            ui::human_bytes(summary.data_bytes),
            summary.duration_seconds
        );
    } else {
        println!("{}", summary.path.display());
    }
    Ok(())
}

/// `push`: the archives named, the newest or all of the project, to `remote`.
fn run_push(
    ctx: &context::Ctx,
    archive: Option<PathBuf>,
    latest: bool,
    all: bool,
    remote: &str,
    dir: &std::path::Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = match (archive, latest, all) {
        (Some(p), _, _) => vec![p],
        (None, true, _) => vec![local::latest(dir, &ctx.stack.name, |_| true)?],
        _ => local::scan(dir, &ctx.stack.name)?.into_iter().filter(|a| a.problem.is_none()).map(|a| a.path).collect(),
    };
    let items = offsite::push(ctx, remote, &files, dry_run)?;
    let uploaded = items.iter().filter(|i| i.action == "upload").count();
    let verb = if dry_run { "would upload" } else { "uploaded" };
    println!("{verb} {uploaded}, skipped {} (already there) to remote {remote}", items.len() - uploaded);
    Ok(())
}

/// `restore`: verify and decide, show what is replaced and confirm, then restore under the lock.
fn run_restore(ctx: &context::Ctx, opts: &restore::Options, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let prepared = restore::prepare(ctx, opts)?;
    if dry_run {
        print!("{}", prepared.describe(ctx)?);
        return Ok(());
    }
    // What is replaced is shown (and its sizes measured) only where it is asked about.
    let text = if opts.yes { String::new() } else { prepared.describe(ctx)? };
    ui::confirm(&text, ui::Confirm::YesNo { yes_flag: opts.yes })?;
    let lock = Lock::acquire(&backup::prepare_dir(&opts.dir)?, &prepared.plan.project, "restore")?;
    let outcome = restore::execute(ctx, &prepared, opts, &lock)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    println!("restored {} from {}", outcome.project, outcome.archive.display());
    if let Some(d) = outcome.downtime_seconds {
        println!("the services using the restored volumes were stopped for {d:.1} s");
    }
    match outcome.undo {
        Some(s) => println!("to undo this restore: {}", restore::undo_command(ctx, &s)),
        None if !opts.no_safety_backup => println!("nothing existed before that this restore replaced"),
        None => {}
    }
    Ok(())
}

/// `migrate`: backup, migration, rollback on failure; exits non-zero when the migration failed.
fn run_migrate(ctx: &context::Ctx, opts: &migrate::Options, dry_run: bool) -> anyhow::Result<()> {
    let plan = migrate::plan(ctx, opts)?;
    if dry_run {
        print!("{}", plan.describe());
        return Ok(());
    }
    let lock = Lock::acquire(&backup::prepare_dir(&opts.dir)?, &ctx.stack.name, "migrate")?;
    let o = migrate::run(ctx, &plan, &lock)?;
    let code = o.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "killed by a signal".into());
    match (o.succeeded, o.rolled_back) {
        (true, _) => {
            println!("the migration succeeded; the backup taken before it is {}", o.archive.display());
            Ok(())
        }
        (false, true) => anyhow::bail!(
            "the migration failed (exit {code}); the databases were restored from {} (kept)",
            o.archive.display()
        ),
        (false, false) => anyhow::bail!(
            "the migration failed (exit {code}); its state was kept (--no-rollback); to go back: {} --only db",
            restore::undo_command(ctx, &o.archive)
        ),
    }
}
