//! The command line's grammar (clap): every command and option with its help text, and how each
//! parsed command becomes a task's typed options. No policy lives here: what a command does,
//! including its lock, confirmation and output, is its task's `run` in the library, so another
//! repository's xtask calling the library gets the same behaviour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use xtask::archive::Rules;
use xtask::model::alerts::Cadence;
use xtask::model::compose::Selection;
use xtask::store::{local, retention::Retention};
use xtask::tasks::{backup, browse, catalog, clean, drill, migrate, restore, schedule};

/// Back up, verify, restore and clean the named volumes of the project's Docker Compose stack.
#[derive(Parser)]
#[command(name = "cargo xtask", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command name.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Compose file of the stack; repeat to merge several in order
    /// [default: $COMPOSE_FILE, else compose/compose.yaml in this workspace]
    #[arg(short = 'f', long = "file", value_name = "FILE", global = true)]
    pub files: Vec<PathBuf>,
    /// Add the environment's overlay, compose.<ENV>.yaml next to the first file
    #[arg(long, value_enum, global = true)]
    pub env: Option<Environment>,
    /// Compose project name [default: $COMPOSE_PROJECT_NAME, the files' `name:`, or the directory's name]
    #[arg(short = 'p', long, value_name = "NAME", global = true)]
    pub project_name: Option<String>,
    /// Project directory [default: the first compose file's directory]
    #[arg(long, value_name = "DIR", global = true)]
    pub project_directory: Option<PathBuf>,
    /// Enable a Compose profile; repeatable [default: $COMPOSE_PROFILES]
    #[arg(long = "profile", value_name = "PROFILE", global = true)]
    pub profiles: Vec<String>,
    /// Read the compose files directly and ask the Docker engine nothing
    #[arg(long, global = true)]
    pub offline: bool,
    /// Print each docker command that would change something instead of running it
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Print each docker command before running it, and its output
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print only results and errors, no progress lines
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Read archives without a valid signature although x-xtask.sign is set (restore, verify,
    /// pull, --latest, prune count them); loud, for recovery only
    #[arg(long, global = true)]
    pub allow_unsigned: bool,
    /// Read clear archives although x-xtask.encrypt is set; for archives made before encryption
    #[arg(long, global = true)]
    pub allow_unencrypted: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Environment {
    Dev,
    Test,
    Prod,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[command(flatten)]
        pick: ArchivePick,
        /// The remote: a name from x-xtask.remotes, or s3://… / rclone:…
        #[arg(long, value_name = "REMOTE")]
        to: String,
        /// Create the remote's restic repository if it does not exist yet (restic init)
        #[arg(long)]
        yes: bool,
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
    /// Re-read archives: compression and tar integrity, every checksum, metadata, path safety, dumps
    Verify(VerifyArgs),
    /// Delete old archives by a retention policy; never the newest verified one, never other files
    Prune(PruneArgs),
    /// Restore an archive: verified first, confirmed, with a safety backup and an undo command
    Restore(RestoreArgs),
    /// List what an archive holds, file by file (those under VOLUME/PATH), each checked
    Ls(LsArgs),
    /// Print one file of an archive to stdout, checked against its SHA-256 (text only to a terminal)
    Cat(CatArgs),
    /// What changed between two archives: files added, removed and changed per volume, and row counts
    Diff(DiffArgs),
    /// Restore drill: the archive restored into a throwaway copy of the stack (own project, scratch
    /// volumes and binds, no published ports), every service started and waited for, the
    /// x-xtask.drill.check command run; prints and records the time to recover, then removes the copy
    Drill(DrillArgs),
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
    /// One pass over what a person on call wants to know: filesystems, growth, backup, deep
    /// verify and remote ages, unprotected data (thresholds: x-xtask.alerts); exit 0 ok,
    /// 1 warning, 2 critical
    Check {
        #[command(flatten)]
        dir: DirArg,
        /// Print the report as one JSON object
        #[arg(long)]
        json: bool,
        /// Also write the metrics as a node_exporter textfile (atomically), e.g.
        /// /var/lib/prometheus/node-exporter/xtask.prom
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
    /// Run the backup, its prunes and the restore drill on a schedule: systemd timers, or cron
    /// lines where systemd does not run
    Schedule {
        #[command(subcommand)]
        action: ScheduleCommand,
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

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Write (atomically) and enable a service and a timer for the nightly backup (then prune,
    /// with the retention of x-xtask.retention) and for the drill (verify --latest --deep);
    /// without systemd, print the cron lines
    Install(ScheduleInstallArgs),
    /// Show the units or cron lines this project's schedule has, and the next runs
    Show(PlaceArgs),
    /// Stop and remove the units or cron lines `schedule install` wrote (only those)
    Remove(PlaceArgs),
}

#[derive(Args)]
pub struct ScheduleInstallArgs {
    /// Time of the nightly backup, HH:MM local time [default: x-xtask.schedule.at, else 03:15]
    #[arg(long, value_name = "HH:MM")]
    pub at: Option<String>,
    /// Also push each backup to this remote (and prune it, and drill from it)
    #[arg(long, value_name = "REMOTE")]
    pub push: Option<String>,
    /// How often the drill runs, an hour after the backup [default: x-xtask.schedule.drill, else monthly]
    #[arg(long, value_enum)]
    pub drill: Option<DrillCadence>,
    /// The program the units run, by absolute path [default: this one]
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub place: PlaceArgs,
    #[command(flatten)]
    pub dir: DirArg,
}

/// Where a schedule lives.
#[derive(Args)]
pub struct PlaceArgs {
    /// Your own units (~/.config/systemd/user) or crontab instead of the system's
    #[arg(long)]
    pub user: bool,
    /// Cron instead of systemd: /etc/cron.d/xtask-PROJECT (root), or your crontab with --user
    #[arg(long)]
    pub cron: bool,
    /// Write the files into this directory instead and ask no scheduler (staging, an image)
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DrillCadence {
    Weekly,
    Monthly,
}

impl PlaceArgs {
    pub fn place(self) -> schedule::Place {
        schedule::Place { user: self.user, cron: self.cron, into: self.into }
    }
}

impl ScheduleInstallArgs {
    pub fn options(self, env: Option<String>) -> schedule::Options {
        schedule::Options {
            at: self.at,
            push: self.push,
            drill: self.drill.map(|d| match d {
                DrillCadence::Weekly => Cadence::Weekly,
                DrillCadence::Monthly => Cadence::Monthly,
            }),
            place: self.place.place(),
            binary: self.binary,
            dir: self.dir.path(),
            env,
        }
    }
}

/// `ARCHIVE | --latest | --all`: which archives of the backup directory a command reads.
#[derive(Args)]
pub struct ArchivePick {
    /// The archive (with --remote: its file name there)
    #[arg(required_unless_present_any = ["latest", "all"], conflicts_with_all = ["latest", "all"])]
    pub archive: Option<PathBuf>,
    /// The newest archive of the project
    #[arg(long, conflicts_with = "all")]
    pub latest: bool,
    /// Every sound archive of the project
    #[arg(long)]
    pub all: bool,
}

impl ArchivePick {
    pub fn pick(self) -> local::Pick {
        match (self.archive, self.latest) {
            (Some(p), _) => local::Pick::One(p),
            (None, true) => local::Pick::Latest,
            (None, false) => local::Pick::All,
        }
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub pick: ArchivePick,
    /// Also prove it loads: SQL dumps into a throwaway server of the service's image, volumes into scratch volumes
    #[arg(long)]
    pub deep: bool,
    /// Accept device nodes and FIFOs inside volumes (refused by default)
    #[arg(long)]
    pub allow_special_files: bool,
    /// Verify an archive of this remote, streamed without a local copy (ARCHIVE is its file name)
    #[arg(long, value_name = "REMOTE", conflicts_with = "all")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print the reports as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DrillArgs {
    /// The archive to drill (with --remote: its file name in the remote)
    #[arg(value_name = "ARCHIVE", required_unless_present = "latest")]
    pub archive: Option<PathBuf>,
    /// The newest archive of the project (not a safety backup)
    #[arg(long, conflicts_with = "archive")]
    pub latest: bool,
    /// Drill an archive of this remote (downloaded into the drill's scratch directory first)
    #[arg(long, value_name = "REMOTE")]
    pub remote: Option<String>,
    /// Leave the throwaway stack running afterwards (the command that removes it is printed)
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub dir: DirArg,
    /// Print the outcome as JSON on stdout (also when the drill fails)
    #[arg(long)]
    pub json: bool,
}

impl DrillArgs {
    pub fn options(self) -> drill::Options {
        drill::Options {
            archive: self.archive,
            remote: self.remote,
            dir: self.dir.path(),
            keep: self.keep,
            json: self.json,
        }
    }
}

#[derive(Args)]
pub struct PruneArgs {
    /// Keep the N newest archives
    #[arg(long, value_name = "N", env = "XTASK_KEEP_LAST", default_value_t = 3)]
    pub keep_last: usize,
    /// Keep the newest archive of each of the last D days that have one
    #[arg(long, value_name = "D", env = "XTASK_KEEP_DAILY", default_value_t = 7)]
    pub keep_daily: usize,
    /// Keep the newest archive of each of the last W weeks that have one
    #[arg(long, value_name = "W", env = "XTASK_KEEP_WEEKLY", default_value_t = 4)]
    pub keep_weekly: usize,
    /// Keep the newest archive of each of the last M months that have one
    #[arg(long, value_name = "M", env = "XTASK_KEEP_MONTHLY", default_value_t = 6)]
    pub keep_monthly: usize,
    /// Prune the archives in this remote instead of the local ones
    #[arg(long, value_name = "REMOTE")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The archive to restore
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub archive: Option<PathBuf>,
    /// Restore the newest archive of the project
    #[arg(long)]
    pub latest: bool,
    /// Restore only `db` (every database service), `db:SERVICE` or the named volume; repeatable
    /// [default: everything in the archive]
    #[arg(long, value_name = "db|db:SERVICE|VOLUME")]
    pub only: Vec<String>,
    /// Do not ask: for scripts (without a terminal, restore refuses unless given)
    #[arg(long)]
    pub yes: bool,
    /// Restore an archive made for another project into this one
    #[arg(long)]
    pub force: bool,
    /// Skip the backup of what is replaced (the restore then cannot be undone)
    #[arg(long)]
    pub no_safety_backup: bool,
    /// Leave out what a restore into this stack refuses (each named) and restore the rest
    #[arg(long)]
    pub skip_refused: bool,
    /// Accept device nodes and FIFOs inside volumes (refused by default)
    #[arg(long)]
    pub allow_special_files: bool,
    /// Empty each volume and fill it in place instead of staging the new copy beside the
    /// current one (for a disk without room for both; the safety backup is then the way back)
    #[arg(long)]
    pub in_place: bool,
    /// Print the outcome (archive, undo archive, downtime) as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Stream the archive from this remote (ARCHIVE is its file name there)
    #[arg(long, value_name = "REMOTE")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub paths: PathArgs,
}

/// Where and how archives are written.
#[derive(Args)]
pub struct ArchiveArgs {
    /// Directory for archives [default: $XTASK_BACKUP_DIR, else backups/ in the workspace this
    /// xtask was built from, also for a stack given with -f elsewhere]
    #[arg(long, value_name = "DIR", env = "XTASK_BACKUP_DIR")]
    pub output_dir: Option<PathBuf>,
    /// Label recorded in the archive and added to its file name, e.g. pre-migration
    #[arg(long)]
    pub tag: Option<String>,
    /// Dump only this database; repeatable [default: every database of each server]
    #[arg(long = "database", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Dump only this database service; repeatable [default: every database service]
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Compression: zstd or gzip, optionally with a level (zstd:3, gzip:9) [default:
    /// x-xtask.compression, else zstd at level 3]
    #[arg(long, value_name = "CODEC[:LEVEL]")]
    pub compression: Option<xtask::archive::Compression>,
    /// The level of the chosen compression: zstd 1 (fastest) to 19 (smallest), gzip 1 to 9
    /// [default: zstd 3, gzip 6]
    #[arg(long)]
    pub level: Option<i32>,
    /// Print a JSON summary (path, bytes, duration, entries, skipped volumes) on stdout
    #[arg(long)]
    pub json: bool,
    /// Write a clear archive even though x-xtask.encrypt names recipients
    #[arg(long)]
    pub no_encrypt: bool,
    /// Upload the archive to this remote once written (a name from x-xtask.remotes, or s3://…)
    #[arg(long, value_name = "REMOTE")]
    pub push: Option<String>,
    /// With --push: remove the local archive once the upload is complete
    #[arg(long, requires = "push")]
    pub no_keep_local: bool,
    /// With --push to a restic repository that does not exist yet: create it (restic init)
    #[arg(long, requires = "push")]
    pub yes: bool,
}

#[derive(Args)]
pub struct DirArg {
    /// Directory holding the archives [default: $XTASK_BACKUP_DIR, else backups/ in the workspace
    /// this xtask was built from, also for a stack given with -f elsewhere]
    #[arg(long = "output-dir", value_name = "DIR", env = "XTASK_BACKUP_DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    pub fn path(self) -> PathBuf {
        self.dir.unwrap_or_else(local::default_dir)
    }
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Back up this volume (name or compose key) whatever its priority; repeatable
    #[arg(long = "volume", value_name = "NAME")]
    pub volumes: Vec<String>,
    /// Back up every volume of the stack, regenerable and optional ones too
    #[arg(long, conflicts_with = "volumes")]
    pub all: bool,
    /// Leave this volume out; repeatable
    #[arg(long, value_name = "NAME")]
    pub exclude: Vec<String>,
    /// Stop the services using the copied volumes for a file-consistent copy (started again after)
    #[arg(long)]
    pub stop: bool,
    /// Never stop a database the tool cannot dump to copy its volume: report it NOT PROTECTED
    #[arg(long, conflicts_with = "stop")]
    pub no_stop: bool,
}

#[derive(Args)]
pub struct BackupDbArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,
}

impl Global {
    /// The compose files, overlay, project and profiles that select the stack.
    pub fn selection(&self) -> Selection {
        Selection {
            files: self.files.clone(),
            env_overlay: self.env_name(),
            project_name: self.project_name.clone(),
            project_dir: self.project_directory.clone(),
            profiles: self.profiles.clone(),
        }
    }

    /// `--env` as its name (`dev`, `test`, `prod`).
    pub fn env_name(&self) -> Option<String> {
        self.env.map(|e| e.to_possible_value().expect("no skipped variants").get_name().to_string())
    }
}

impl Command {
    /// Whether the command needs the Docker engine: reading archives needs none.
    pub fn needs_engine(&self) -> bool {
        !matches!(
            self,
            Command::Backups { .. }
                | Command::Verify(VerifyArgs { deep: false, .. })
                | Command::Prune(_)
                | Command::Push { .. }
                | Command::Pull { .. }
                | Command::Schedule { .. }
                | Command::Ls(_)
                | Command::Cat(_)
                | Command::Diff(_)
        )
    }
}

impl ArchiveArgs {
    fn options(self, kind: backup::Kind, env: Option<String>) -> backup::Options {
        backup::Options {
            databases: self.databases,
            services: self.services,
            tag: self.tag,
            compression: self.compression,
            level: self.level,
            environment: env,
            no_encrypt: self.no_encrypt,
            push: self.push,
            keep_local: !self.no_keep_local,
            create_remote: self.yes,
            ..backup::Options::new(kind, self.output_dir.unwrap_or_else(local::default_dir))
        }
    }
}

impl BackupArgs {
    pub fn options(self, env: Option<String>) -> backup::Options {
        backup::Options {
            volumes: self.volumes,
            all: self.all,
            exclude: self.exclude,
            stop: self.stop,
            no_stop: self.no_stop,
            ..self.archive.options(backup::Kind::Full, env)
        }
    }
}

impl BackupDbArgs {
    pub fn options(self, env: Option<String>) -> backup::Options {
        self.archive.options(backup::Kind::Db, env)
    }
}

impl VerifyArgs {
    /// What to verify, where, and how: (dir, which, deep, rules, json).
    pub fn parts(self) -> (PathBuf, catalog::Which, bool, Rules, bool) {
        let which = match (self.remote, self.pick.pick()) {
            (Some(remote), local::Pick::One(p)) => {
                catalog::Which::Remote { remote, file: Some(p.to_string_lossy().into_owned()) }
            }
            (Some(remote), _) => catalog::Which::Remote { remote, file: None },
            (None, local::Pick::One(p)) => catalog::Which::One(p),
            (None, local::Pick::Latest) => catalog::Which::Latest,
            (None, local::Pick::All) => catalog::Which::All,
        };
        (self.dir.path(), which, self.deep, Rules { allow_special: self.allow_special_files }, self.json)
    }
}

impl PruneArgs {
    pub fn retention(&self) -> Retention {
        Retention { last: self.keep_last, daily: self.keep_daily, weekly: self.keep_weekly, monthly: self.keep_monthly }
    }
}

impl RestoreArgs {
    pub fn options(self) -> restore::Options {
        let archive = if self.latest { None } else { self.archive };
        let remote = self.remote.map(|r| (r, archive.as_ref().map(|a| a.to_string_lossy().into_owned())));
        restore::Options {
            archive,
            only: self.only,
            yes: self.yes,
            force: self.force,
            no_safety_backup: self.no_safety_backup,
            skip_refused: self.skip_refused,
            allow_special: self.allow_special_files,
            in_place: self.in_place,
            dir: self.dir.path(),
            remote,
            expect_sha256: None,
        }
    }
}

/// `clean`'s options from a command's flags.
pub fn clean_options(yes: bool, confirm: Option<String>, backup_first: bool, dir: Option<DirArg>) -> clean::Options {
    clean::Options { yes, confirm, backup_first, dir: dir.map(DirArg::path).unwrap_or_else(local::default_dir) }
}

/// `migrate`'s options from its flags.
pub fn migrate_options(
    service: Option<String>,
    host: bool,
    no_rollback: bool,
    dir: DirArg,
    command: Vec<String>,
) -> migrate::Options {
    migrate::Options { service, host, command, no_rollback, dir: dir.path() }
}

/// `restore --path VOLUME/PATH … [--to DIR]`: single paths instead of whole volumes.
#[derive(Args)]
pub struct PathArgs {
    /// Restore only this file or directory of the archive (as `ls` shows it); repeatable
    #[arg(long = "path", value_name = "VOLUME/PATH", conflicts_with_all = ["only", "in_place", "skip_refused", "json"])]
    pub paths: Vec<String>,
    /// Write the paths into this host directory (created private, 0700; an existing one must
    /// be empty: nothing is overwritten) instead of the live volume
    #[arg(long, value_name = "DIR", requires = "paths")]
    pub to: Option<PathBuf>,
}

/// `ARCHIVE | --latest` with `--remote`, for the commands that look into one archive.
#[derive(Args)]
pub struct OneArchive {
    /// Read the archive from this remote (ARCHIVE is its file name there)
    #[arg(long, value_name = "REMOTE")]
    pub remote: Option<String>,
    #[command(flatten)]
    pub dir: DirArg,
}

impl OneArchive {
    fn which(self, archive: Option<PathBuf>) -> browse::Which {
        browse::Which { archive, remote: self.remote, dir: self.dir.path() }
    }
}

#[derive(Args)]
pub struct LsArgs {
    /// The archive (with --remote: its file name there); with --latest, the path to list
    #[arg(value_name = "ARCHIVE", required_unless_present = "latest")]
    pub archive: Option<String>,
    /// List only this entry and what is below it: VOLUME, VOLUME/PATH, binds/ID/…, databases/…
    #[arg(value_name = "VOLUME/PATH")]
    pub path: Option<String>,
    /// The newest archive of the project
    #[arg(long)]
    pub latest: bool,
    /// Type, mode, owner, size and mtime of each entry
    #[arg(long)]
    pub long: bool,
    /// Print one JSON object (entries with their SHA-256)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: OneArchive,
}

impl LsArgs {
    pub fn options(self) -> anyhow::Result<browse::LsOptions> {
        let (archive, path) = match (self.latest, self.archive, self.path) {
            (true, _, Some(_)) => anyhow::bail!("ls --latest takes one path, not an archive and a path"),
            (true, path, None) => (None, path),
            (false, archive, path) => (archive.map(PathBuf::from), path),
        };
        Ok(browse::LsOptions { which: self.from.which(archive), path, long: self.long, json: self.json })
    }
}

#[derive(Args)]
pub struct CatArgs {
    /// The archive (with --remote: its file name there)
    pub archive: PathBuf,
    /// The file: VOLUME/PATH as `ls` shows it
    #[arg(value_name = "VOLUME/PATH")]
    pub path: String,
    #[command(flatten)]
    pub from: OneArchive,
}

impl CatArgs {
    pub fn options(self) -> browse::CatOptions {
        browse::CatOptions { which: self.from.which(Some(self.archive)), path: self.path }
    }
}

#[derive(Args)]
pub struct DiffArgs {
    /// The older archive (with --remote: its file name there)
    #[arg(value_name = "A")]
    pub before: PathBuf,
    /// The newer archive
    #[arg(value_name = "B")]
    pub after: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: OneArchive,
}

impl DiffArgs {
    pub fn options(self) -> browse::diff::Options {
        let (remote, dir) = (self.from.remote, self.from.dir.path());
        let which = |a: PathBuf| browse::Which { archive: Some(a), remote: remote.clone(), dir: dir.clone() };
        browse::diff::Options { before: which(self.before), after: which(self.after), json: self.json }
    }
}

impl RestoreArgs {
    /// `restore --path … --to DIR`'s options (None: no --to).
    pub fn to_dir(&self) -> Option<browse::to_dir::Options> {
        let to = self.paths.to.clone()?;
        let archive = if self.latest { None } else { self.archive.clone() };
        Some(browse::to_dir::Options {
            which: browse::Which {
                archive,
                remote: self.remote.clone(),
                dir: self.dir.dir.clone().unwrap_or_else(local::default_dir),
            },
            paths: self.paths.paths.clone(),
            to,
            allow_special: self.allow_special_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A usage pattern of the README (`verify ARCHIVE\|--latest\|--all [--deep]`) as every
    /// command line it stands for: `a|b` and `[x | y]` alternatives, optional groups, placeholders
    /// (upper case) given a sample value, `…` (any other options) left out.
    fn expand(pattern: &str) -> Vec<Vec<String>> {
        let pattern = pattern.replace("\\|", "|");
        let mut lines: Vec<Vec<String>> = vec![Vec::new()];
        let mut rest = pattern.as_str();
        while let Some(c) = rest.trim_start().chars().next() {
            rest = rest.trim_start();
            let choices: Vec<Vec<String>> = if c == '[' {
                let end = rest.find(']').expect("a closing bracket");
                let group = &rest[1..end];
                rest = &rest[end + 1..];
                let mut options: Vec<Vec<String>> = group.split(" | ").flat_map(expand).collect();
                options.push(Vec::new());
                options
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                let word = &rest[..end];
                rest = &rest[end..];
                word.split('|').map(sample).map(|w| w.into_iter().collect()).collect()
            };
            lines = lines.iter().flat_map(|l| choices.iter().map(move |c| [l.clone(), c.clone()].concat())).collect();
        }
        lines
    }

    fn sample(word: &str) -> Option<String> {
        let bare = word.trim_end_matches(['…', '.']);
        if bare.is_empty() {
            return None;
        }
        let placeholder = bare.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        Some(match bare {
            "ARCHIVE" => "backups/full_backup_20260101_000000.tar.zst".into(),
            "COMMAND" => "true".into(),
            _ if placeholder => "x".into(),
            _ => bare.into(),
        })
    }

    #[test]
    fn every_command_line_in_the_readme_parses() {
        let readme = include_str!("../../README.md");
        let spans = readme.split('`').skip(1).step_by(2).filter_map(|s| s.strip_prefix("cargo xtask "));
        let lines: Vec<Vec<String>> = spans.flat_map(expand).collect();
        assert!(lines.len() >= 30, "the README's command table was found ({} lines)", lines.len());
        for line in &lines {
            let argv = std::iter::once("cargo xtask".to_string()).chain(line.iter().cloned());
            if let Err(e) = Cli::try_parse_from(argv) {
                let shown =
                    matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion);
                assert!(shown, "README: `cargo xtask {}` does not parse: {e}", line.join(" "));
            }
        }
        assert!(expand("verify ARCHIVE\\|--latest [--deep]").len() == 4);
    }
}
