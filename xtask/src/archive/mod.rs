//! The archive format, version 4 (docs/archive-format.md): one zstd (the default, seekable:
//! [`frames`], [`index`], [`seekable`]) or gzip
//! stream ([`compression`]) holding one tar;
//! `metadata.json` first, then `databases/<service>/…` dumps, `volumes/<volume-name>/…` and
//! `binds/<id>/…` files, and `SHA256SUMS` last (`sha256sum -c` format); the whole optionally
//! encrypted by age (`….tar.zst.age`). Its parts: [`metadata`] (what an archive says about itself),
//! [`writer`] (written atomically), [`source`] (read from one open file or a remote),
//! [`verify`] (the one pass, by the strict [`grammar`]), [`digest`], and [`extract`] (restore's
//! staging from the same pass).

pub mod compression;
pub mod digest;
pub mod dumpstats;
pub mod extract;
pub mod frames;
pub mod grammar;
pub mod index;
mod inflate;
pub mod listing;
pub mod metadata;
pub mod pgz;
pub mod seekable;
pub mod signature;
pub mod sink;
pub mod source;
pub mod tap;
pub mod trees;
pub mod verify;
pub mod writer;

pub use crate::model::db::DbEngine;
pub use compression::{Codec, Compression};
pub use digest::*;
pub use metadata::*;
pub use source::*;
pub use verify::*;
pub use writer::*;

pub use inflate::Inflated;
#[cfg(test)]
mod attack6_tests;
#[cfg(test)]
mod tests;
