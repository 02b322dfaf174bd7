//! The dump checker for an engine's dumps: the `dumpscan` crate (its own crate so that it runs
//! optimised in dev builds), chosen by the engine that made the dump.

pub use dumpscan::{Dialect, DumpStats};

use super::DbEngine;

/// A checker for a dump made by `engine`.
pub fn new(engine: DbEngine) -> DumpStats {
    DumpStats::new(engine.record().dialect)
}
