//! PostgreSQL as data: the images that run it, plain-SQL `pg_dump` per database with
//! `pg_dumpall --globals-only` for the roles, and the table names its dumps give.

use super::{DbEngine, Dialect, Record};

pub const RECORD: Record = Record {
    engine: DbEngine::Postgres,
    name: "postgres",
    images: &["postgres", "postgis", "timescaledb", "pgvecto"],
    globals_file: Some("globals.sql"),
    single_dump: None,
    dialect: Dialect::Postgres,
    dump_tool: "pg_dump",
    globals_what: "PostgreSQL roles and tablespaces (pg_dumpall --globals-only)",
    each_what: "plain SQL pg_dump",
    globals_words: "roles",
    is_table: is_table_name,
};

/// A table as pg_dump `--quote-all-identifiers` names it: `"schema"."table"`, each part 1 to 63
/// bytes without `"` or control characters, so it can stand in SQL as it is.
pub fn is_table_name(s: &str) -> bool {
    let part = |p: &str| {
        let inner = p.strip_prefix('"').and_then(|p| p.strip_suffix('"'));
        inner.is_some_and(|i| !i.is_empty() && i.len() <= 63 && !i.chars().any(|c| c == '"' || c.is_control()))
    };
    match s.split_once("\".\"") {
        Some((a, b)) => part(&format!("{a}\"")) && part(&format!("\"{b}")),
        None => false,
    }
}
