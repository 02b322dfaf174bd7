//! What a user asks for, one module per task family: each a function over a [`crate::context::Ctx`]
//! and typed options. `catalog` is the backup directory (list, verify, prune); `backup`,
//! `restore` and `clean` change data; `volumes`, `status` and `stack` look and start.

pub mod backup;
pub mod catalog;
pub mod clean;
pub mod migrate;
pub mod offsite;
pub mod restore;
pub mod stack;
pub mod status;
pub mod trust;
pub mod volumes;
