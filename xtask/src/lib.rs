//! The data of a Docker Compose stack, kept safe: discovery of its named volumes, backups into
//! verified archives, restores and cleans. `main.rs` is the `cargo xtask` command line over this
//! library; another repository's xtask can call the same tasks.
//!
//! The layers, each a folder:
//! - [`model`]: the stack as its compose files describe it (volumes, services, roles).
//! - [`engine`]: the live Docker engine: the one place that runs processes, services, PostgreSQL.
//! - [`archive`]: the archive format: writing, the strict grammar, verification, extraction.
//! - [`tasks`]: what a user asks for, as functions over a [`context::Ctx`] and typed options,
//!   returning typed results.

pub mod archive;
pub mod context;
pub mod engine;
pub mod lock;
pub mod model;
pub mod plan;
pub mod signals;
pub mod tasks;
pub mod ui;
