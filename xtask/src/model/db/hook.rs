//! A service's own dump hook as data: no image of its own (the label `xtask.dump` says it),
//! one opaque dump named `dump` per service, no tables the tool can count.

use super::{DbEngine, Dialect, Record};

pub const RECORD: Record = Record {
    engine: DbEngine::Hook,
    name: "hook",
    images: &[],
    globals_file: None,
    single_dump: Some("dump"),
    dialect: Dialect::Opaque,
    dump_tool: "the dump hook",
    globals_what: "",
    each_what: "output of the xtask.dump command",
    globals_words: "",
    is_table: |_| false,
};
