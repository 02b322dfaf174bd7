//! What a user asks for, one module per task family: each a function over a [`crate::context::Ctx`]
//! and typed options. `catalog` lists, verifies and prunes the backup directory, `offsite` the
//! remotes; `backup`, `restore`, `clean` and `migrate` change data; `volumes`, `status` and
//! `stack` look and start. Composites call other tasks' entry points (a restore takes its
//! safety backup with `backup::take`), never their helpers: what several share is in `store`,
//! and in the two modules here that are no command: `engines` (each database engine's driver:
//! its dumps, restore steps and deep proof) and `deep` (`verify --deep`).

pub mod backup;
pub mod browse;
pub mod catalog;
pub mod check;
pub mod clean;
pub mod deep;
pub mod drill;
pub mod engines;
pub mod migrate;
pub mod offsite;
pub mod restore;
pub mod schedule;
pub mod stack;
pub mod status;
pub mod volumes;
