//! `cargo xtask`: owns the persistent data of the project's Docker Compose stack. This file
//! parses the command line ([`cli`], the grammar) and calls the task the command names; every
//! task's behaviour, its lock, confirmation and output included, lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use xtask::context::{Ctx, Trust};
use xtask::tasks::{
    backup, browse, catalog, check, clean, drill, migrate, offsite, restore, schedule, stack, status, volumes,
};

mod cli;

use cli::{clean_options, migrate_options, Cli, Command, ScheduleCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            print_error(&err);
            ExitCode::FAILURE
        }
    }
}

fn print_error(err: &anyhow::Error) {
    // Errors may quote an archive's bytes (a tar reader's error names the entry): escaped.
    eprintln!("error: {}", xtask::ui::printable(&err.to_string()));
    for cause in err.chain().skip(1) {
        eprintln!("  because: {}", xtask::ui::printable(&cause.to_string()));
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A check that could not run at all (the engine unreachable, a broken file) is critical: a
    // monitor must not read it as a warning.
    let is_check = matches!(cli.command, Command::Check { .. });
    match run_command(cli) {
        Err(err) if is_check => {
            print_error(&err);
            Ok(ExitCode::from(2))
        }
        other => other,
    }
}

fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let offline = g.offline || !cli.command.needs_engine();
    let sh = xshell::Shell::new().context("read the current directory")?;
    let mut ctx = Ctx::new(&sh, &g.selection(), offline, g.dry_run, g.verbose, g.quiet)?;
    ctx.trust = Trust { allow_unsigned: g.allow_unsigned, allow_unencrypted: g.allow_unencrypted };
    if let Command::Check { dir, json, prometheus } = cli.command {
        // Its exit code is its verdict: 0 ok, 1 warning, 2 critical.
        let report = check::run(&ctx, &check::Options { dir: dir.path(), json, prometheus })?;
        return Ok(ExitCode::from(report.exit_code));
    }
    dispatch(&ctx, cli.command, g.dry_run, g.env_name()).map(|()| ExitCode::SUCCESS)
}

/// Calls the task the command names.
fn dispatch(ctx: &Ctx, command: Command, dry_run: bool, env: Option<String>) -> anyhow::Result<()> {
    match command {
        Command::Volumes { json } => volumes::run(ctx, json),
        Command::Status { json } => status::run(ctx, json),
        Command::Backup(b) => {
            let json = b.archive.json;
            backup::run(ctx, &b.options(env), dry_run, json).map(drop)
        }
        Command::BackupDb(b) => {
            let json = b.archive.json;
            backup::run(ctx, &b.options(env), dry_run, json).map(drop)
        }
        Command::Backups { remote: Some(r), json, .. } => offsite::list(ctx, &r, json),
        Command::Backups { dir, remote: None, json } => catalog::list(&dir.path(), &ctx.stack.name, json),
        Command::Push { pick, to, yes, dir } => {
            offsite::run_push(ctx, &pick.pick(), &to, &dir.path(), dry_run, yes).map(drop)
        }
        Command::Pull { archive, latest: _, from, dir } => {
            let path = offsite::pull(ctx, &from, archive.as_deref(), &dir.path(), dry_run)?;
            if !dry_run {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Verify(v) => {
            let (dir, which, deep, rules, json) = v.parts();
            catalog::verify(ctx, &dir, which, deep, rules, json)
        }
        Command::Prune(p) => match (p.retention(), p.remote) {
            (keep, Some(name)) => offsite::prune(ctx, &name, &keep, dry_run),
            (keep, None) => catalog::prune(ctx, &p.dir.path(), &keep, dry_run),
        },
        Command::Ls(a) => browse::ls(ctx, &a.options()?),
        Command::Cat(a) => browse::cat(ctx, &a.options()),
        Command::Diff(a) => browse::diff::run(ctx, &a.options()),
        Command::Restore(r) if r.paths.to.is_some() => {
            browse::to_dir::run(ctx, &r.to_dir().expect("--to given"), dry_run).map(drop)
        }
        Command::Restore(r) if !r.paths.paths.is_empty() => {
            let paths = r.paths.paths.clone();
            restore::paths::run(ctx, &r.options(), &paths, dry_run)
        }
        Command::Restore(r) => {
            let json = r.json;
            restore::run(ctx, &r.options(), dry_run, json).map(drop)
        }
        Command::Drill(d) => drill::run(ctx, &d.options(), dry_run).map(drop),
        Command::Migrate { service, host, no_rollback, dir, command } => {
            migrate::run(ctx, &migrate_options(service, host, no_rollback, dir, command), dry_run).map(drop)
        }
        Command::Clean | Command::CleanContainers => {
            clean::run(ctx, clean::Clean::Containers, &clean_options(false, None, false, None))
        }
        Command::CleanLogs { yes } => clean::run(ctx, clean::Clean::Logs, &clean_options(yes, None, false, None)),
        Command::CleanCache { yes } => clean::run(ctx, clean::Clean::Cache, &clean_options(yes, None, false, None)),
        Command::CleanAll { confirm, backup_first, dir } => {
            clean::run(ctx, clean::Clean::All, &clean_options(false, confirm, backup_first, Some(dir)))
        }
        Command::GenDocs => {
            println!("wrote {}", clean::write_docs()?.display());
            Ok(())
        }
        // Run by `run` before dispatch, for its exit code.
        Command::Check { .. } => anyhow::bail!("check is run with its own exit code, not dispatched"),
        Command::Schedule { action: ScheduleCommand::Install(args) } => schedule::install(ctx, &args.options(env)),
        Command::Schedule { action: ScheduleCommand::Show(place) } => schedule::show(ctx, &place.place()),
        Command::Schedule { action: ScheduleCommand::Remove(place) } => schedule::remove(ctx, &place.place()),
        Command::Up { services } => stack::up(ctx, &services),
        Command::Down => stack::down(ctx),
    }
}
