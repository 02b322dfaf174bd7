//! Dump scanners, a crate of their own so they run optimised even in dev builds (every dump byte
//! of a backup and a verify goes through them; see the workspace's `[profile.dev.package]`).
//!
//! Reads a dump as it streams past, by its dialect. A plain-format `pg_dump`: the rows each
//! table's `COPY` block holds, whether pg_dump's completion trailer is there (a dump without it
//! is incomplete), and whether anything in it would make psql do more than send SQL (see
//! [`SqlScan`]). A `mariadb-dump`: the same facts through [`MyScan`]. A hook's dump is opaque:
//! only its size is known (its command's exit status says whether it is complete).

use std::collections::BTreeMap;

pub mod myscan;
pub mod sqlscan;

pub use myscan::MyScan;
pub use sqlscan::SqlScan;

/// Which client will read the dump, so how it is lexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// psql reading a plain-format pg_dump.
    #[default]
    Postgres,
    /// the mariadb/mysql client reading mariadb-dump/mysqldump output.
    Mysql,
    /// bytes only the service's own load command reads.
    Opaque,
}

pub const TRAILER: &str = "-- PostgreSQL database dump complete";

#[derive(Debug, Default)]
pub struct DumpStats {
    dialect: Dialect,
    my: MyScan,
    partial: Vec<u8>,
    in_copy: Option<String>,
    pub tables: BTreeMap<String, u64>,
    pub complete: bool,
    pub bytes: u64,
    /// The psql lexer's view of the same bytes: the first thing that is not plain SQL.
    pub scan: SqlScan,
}

impl DumpStats {
    pub fn new(dialect: Dialect) -> DumpStats {
        DumpStats { dialect, ..DumpStats::default() }
    }

    /// Rows per table, as the dump holds them.
    pub fn tables(&self) -> &BTreeMap<String, u64> {
        match self.dialect {
            Dialect::Mysql => &self.my.tables,
            Dialect::Postgres | Dialect::Opaque => &self.tables,
        }
    }

    /// Whether the dump ends with its tool's completion trailer (a hook's: always).
    pub fn complete(&self) -> bool {
        match self.dialect {
            Dialect::Postgres => self.complete,
            Dialect::Mysql => self.my.complete,
            Dialect::Opaque => true,
        }
    }

    /// The first thing in it that the loading client would take as more than SQL.
    pub fn violation(&self) -> Option<&str> {
        match self.dialect {
            Dialect::Postgres => self.scan.violation.as_deref(),
            Dialect::Mysql => self.my.violation.as_deref(),
            Dialect::Opaque => None,
        }
    }

    /// The first statement that reaches beyond the database it is loaded into (another
    /// database, the server or cluster, files, programs): a dump never holds one.
    pub fn beyond(&self) -> Option<&str> {
        match self.dialect {
            Dialect::Postgres => self.scan.beyond.as_deref(),
            Dialect::Mysql => self.my.beyond.as_deref(),
            Dialect::Opaque => None,
        }
    }

    /// The first statement about roles, users, grants or passwords: only the roles/users dump
    /// may hold one.
    pub fn accounts(&self) -> Option<&str> {
        match self.dialect {
            Dialect::Postgres => self.scan.accounts.as_deref(),
            Dialect::Mysql => self.my.accounts.as_deref(),
            Dialect::Opaque => None,
        }
    }

    /// Why a dump with these statements may not be loaded: `roles_dump` for the roles/users
    /// dump (account statements are its content), else a database's dump. None: it may.
    pub fn out_of_bounds(&self, roles_dump: bool) -> Option<String> {
        if let Some(s) = self.beyond() {
            return Some(format!("the statement `{s}` reaches beyond the database it is loaded into"));
        }
        match self.accounts() {
            Some(s) if !roles_dump => {
                Some(format!("the statement `{s}` changes roles or users, which only the roles dump may"))
            }
            _ => None,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        match self.dialect {
            Dialect::Postgres => {}
            Dialect::Mysql => return self.my.feed(data),
            Dialect::Opaque => return,
        }
        self.scan.feed(data);
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&data[..nl]);
            } else {
                self.partial.extend_from_slice(&data[..nl]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            }
            data = &data[nl + 1..];
        }
        // Keep a bounded tail only: long data lines need not be held to be counted.
        if self.partial.len() < 4096 {
            let room = 4096 - self.partial.len();
            self.partial.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    fn line(&mut self, line: &[u8]) {
        if let Some(table) = &self.in_copy {
            if line == b"\\." {
                self.in_copy = None;
            } else {
                *self.tables.entry(table.clone()).or_default() += 1;
            }
            return;
        }
        if line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
            let text = String::from_utf8_lossy(&line[5..]);
            let name = text.split(" (").next().unwrap_or_default();
            let name = name.strip_suffix(" FROM stdin;").unwrap_or(name).to_string();
            self.tables.entry(name.clone()).or_default();
            self.in_copy = Some(name);
        } else if line == TRAILER.as_bytes() {
            self.complete = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_copy_rows_across_chunk_boundaries() {
        let dump = "--\n-- PostgreSQL database dump\n--\nCOPY public.items (id, name) FROM stdin;\n1\ta\n2\tb\\nc\n\\.\n\
                    COPY \"odd schema\".\"T\" (x) FROM stdin;\n\\.\nCOPY public.empty FROM stdin;\n\\.\n--\n-- PostgreSQL database dump complete\n--\n";
        for split in [1, 3, 7, dump.len()] {
            let mut s = DumpStats::default();
            for chunk in dump.as_bytes().chunks(split) {
                s.feed(chunk);
            }
            assert!(s.complete);
            assert_eq!(s.tables["public.items"], 2);
            assert_eq!(s.tables["\"odd schema\".\"T\""], 0);
            assert_eq!(s.tables["public.empty"], 0);
            assert_eq!(s.bytes, dump.len() as u64);
        }
    }

    #[test]
    fn missing_trailer_means_incomplete() {
        let mut s = DumpStats::default();
        s.feed(b"COPY public.items (id) FROM stdin;\n1\n2\n");
        assert!(!s.complete);
        assert_eq!(s.tables["public.items"], 2);
    }
}
