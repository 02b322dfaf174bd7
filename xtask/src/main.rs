//! `cargo xtask`: owns the persistent data of the project's Docker Compose stack.
//! This file only parses the command line and dispatches; each task family has its module.

mod archive;
mod compose;
mod context;
mod docker;
mod plan;
mod roles;
mod stack;
mod status;
mod ui;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Start the stack (or the given services) and wait until healthy
    Up {
        /// Services to start [default: all]
        services: Vec<String>,
    },
    /// Remove the stack's containers and networks; volumes are kept
    Down,
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
    let selection = compose::Selection {
        files: g.files,
        env_overlay: g.env.map(|e| {
            e.to_possible_value()
                .expect("no skipped variants")
                .get_name()
                .to_string()
        }),
        project_name: g.project_name,
        project_dir: g.project_directory,
        profiles: g.profiles,
    };
    let ctx = context::Ctx::new(&selection, g.offline, g.dry_run, g.verbose, g.quiet)?;
    match cli.command {
        Command::Volumes { json } => volumes::run(&ctx, json),
        Command::Status { json } => status::run(&ctx, json),
        Command::Up { services } => stack::up(&ctx, &services),
        Command::Down => stack::down(&ctx),
    }
}
