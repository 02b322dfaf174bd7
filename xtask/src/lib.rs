//! The data of a Docker Compose stack, kept safe: discovery of its named volumes, backups into
//! verified archives, restores and cleans. `main.rs` is the `cargo xtask` command line over this
//! library; another repository's xtask can call the same tasks.
//!
//! The layers, each a folder:
//! - [`model`]: the stack as its compose files describe it (volumes, services, roles).
//! - [`engine`]: the live Docker engine and the CLIs the tool drives (the one place that runs
//!   processes), the services, the database engines, the staged swap of volumes.
//! - [`archive`]: the archive format: writing, the strict grammar, verification, extraction.
//! - [`context`]: what every task receives (the stack, its model and settings, the engine).
//! - [`store`]: where archives are kept (the backup directory, remotes), who made them (trust)
//!   and what retention keeps; shared by the tasks, below them.
//! - [`tasks`]: what a user asks for, as functions over a [`context::Ctx`] and typed options,
//!   returning typed results.
//!
//! Beside them: [`environment`], [`files`], [`signals`] and [`ui`] at the bottom (they import nothing of the
//! crate), [`lock`] beside the model, [`plan`] beside the archive and the context. Each layer
//! imports only from those below it; the test in `floors_tests.rs` checks it (docs/design.md).
//!
//! Another repository's xtask composing a backup and a restore (the lock is taken once and
//! passed on as proof; every step returns what it did):
//!
//! ```no_run
//! use xtask::{context::Ctx, lock::Lock, model::compose::Selection, tasks::{backup, restore}};
//!
//! fn main() -> anyhow::Result<()> {
//!     // The caller's shell: its directory and the variables set on it reach the compose files,
//!     // the tool's own settings and every command it runs (`environment`).
//!     let sh = xshell::Shell::new()?;
//!     sh.set_var("COMPOSE_PROFILES", "db");
//!     let ctx = Ctx::new(&sh, &Selection::default(), false, false, false, false)?;
//!     let dir = backup::prepare_dir("backups".as_ref())?;
//!     let lock = Lock::acquire(&dir, &ctx.stack.name, "backup and restore")?;
//!     let archive = backup::take(&ctx, &backup::Options::new(backup::Kind::Full, dir.clone()), &lock)?;
//!     let opts = restore::Options::new(archive.path, dir);
//!     let prepared = restore::prepare(&ctx, &opts)?;
//!     println!("{}", prepared.describe(&ctx)?);
//!     let outcome = restore::execute(&ctx, &prepared, &opts, &lock)?;
//!     println!("undo with: cargo xtask restore {:?} --yes", outcome.undo);
//!     Ok(())
//! }
//! ```

pub mod archive;
pub mod context;
pub mod engine;
pub mod environment;
pub mod files;
pub mod lock;
pub mod model;
pub mod plan;
pub mod signals;
pub mod store;
pub mod tasks;
pub mod ui;

#[cfg(test)]
mod floors_tests;
