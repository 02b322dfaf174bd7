//! `cargo xtask diff A B`: what changed from archive A to archive B. Files per volume (bind,
//! dump directory): added, removed, and changed by content digest or metadata (type, link
//! target, mode, owner; a file's mtime; a directory's mtime changes with its entries and is
//! left out), and each database's row counts from the two metadata files. [`compare`] and
//! [`rows`] are pure; [`run`] reads the two archives (each once).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::{open, Which, READ_ONLY};
use crate::archive::grammar::Kind;
use crate::archive::index::Entry;
use crate::archive::listing::{self, Access};
use crate::archive::Metadata;
use crate::context::Ctx;

/// What changed in one volume (bind, a service's dumps).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

/// One entry in both archives that differs, and in what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub name: String,
    /// `type`, `content`, `target`, `mode`, `owner`, `mtime`.
    pub what: Vec<&'static str>,
}

/// One database's rows in A and B, and the tables whose counts differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseRows {
    pub service: String,
    pub database: String,
    /// None: the database is not in that archive.
    pub rows_before: Option<u64>,
    pub rows_after: Option<u64>,
    pub tables: Vec<TableRows>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRows {
    pub table: String,
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// The group an archive name belongs to: `volumes/NAME` → `NAME`, `binds/ID`, `databases/SERVICE`.
fn group_of(name: &[u8]) -> String {
    let mut parts = name.splitn(3, |&b| b == b'/');
    let top = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default();
    let key = if top == b"volumes" { second.to_vec() } else { [top, b"/", second].concat() };
    listing::escaped(&key)
}

/// What differs between two entries of the same name (empty: nothing).
pub fn differences(a: &Entry, b: &Entry) -> Vec<&'static str> {
    if a.kind != b.kind {
        return vec!["type"];
    }
    let mut what = Vec::new();
    if a.sha256 != b.sha256 || a.size != b.size {
        what.push("content");
    }
    if a.link != b.link {
        what.push("target");
    }
    if a.mode != b.mode {
        what.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        what.push("owner");
    }
    if a.kind != Kind::Dir && a.mtime != b.mtime {
        what.push("mtime");
    }
    what
}

/// Per volume, what changed from `before` (entries by archive name) to `after` (in its order).
/// Volumes without a change are left out.
pub fn compare(mut before: BTreeMap<Vec<u8>, Entry>, after: &[Entry]) -> BTreeMap<String, VolumeDiff> {
    let mut out: BTreeMap<String, VolumeDiff> = BTreeMap::new();
    for b in after {
        let group = out.entry(group_of(&b.name)).or_default();
        match before.remove(&b.name) {
            None => group.added.push(listing::shown(&b.name)),
            Some(a) => {
                let what = differences(&a, b);
                if !what.is_empty() {
                    group.changed.push(Changed { name: listing::shown(&b.name), what });
                }
            }
        }
    }
    for name in before.keys() {
        out.entry(group_of(name)).or_default().removed.push(listing::shown(name));
    }
    out.retain(|_, d| !(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty()));
    out
}

/// Every database of either metadata with its rows in each, the tables whose counts differ.
pub fn rows(before: &Metadata, after: &Metadata) -> Vec<DatabaseRows> {
    type Tables = BTreeMap<String, u64>;
    let by_db = |m: &Metadata| -> BTreeMap<(String, String), Tables> {
        let dbs = m.databases.iter().flat_map(|s| s.databases.iter().map(move |d| (s, d)));
        dbs.map(|(s, d)| ((s.service.clone(), d.name.clone()), d.tables.clone())).collect()
    };
    let (a, b) = (by_db(before), by_db(after));
    let keys: std::collections::BTreeSet<&(String, String)> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let (ta, tb) = (a.get(key), b.get(key));
        let names: std::collections::BTreeSet<&String> = ta.iter().chain(tb.iter()).flat_map(|t| t.keys()).collect();
        let tables = names
            .into_iter()
            .map(|t| TableRows {
                table: t.clone(),
                before: ta.and_then(|m| m.get(t)).copied(),
                after: tb.and_then(|m| m.get(t)).copied(),
            })
            .filter(|t| t.before != t.after)
            .collect();
        out.push(DatabaseRows {
            service: key.0.clone(),
            database: key.1.clone(),
            rows_before: ta.map(|t| t.values().sum()),
            rows_after: tb.map(|t| t.values().sum()),
            tables,
        });
    }
    out
}

/// `diff`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    pub before: Which,
    pub after: Which,
    pub json: bool,
}

/// One side as it was read.
#[derive(Debug, Serialize)]
struct Side {
    archive: String,
    #[serde(flatten)]
    access: Access,
}

/// The whole outcome (`--json`).
#[derive(Debug, Serialize)]
struct Outcome {
    before: Side,
    after: Side,
    volumes: BTreeMap<String, VolumeDiff>,
    databases: Vec<DatabaseRows>,
}

/// `cargo xtask diff A B`: both archives read (each verified), then the differences printed.
pub fn run(ctx: &Ctx, opts: &Options) -> Result<()> {
    let (src_a, gate_a) = open(ctx, &opts.before)?;
    let mut before = BTreeMap::new();
    let listed_a = listing::entries(&src_a, READ_ONLY, &*gate_a, &mut |e| {
        before.insert(e.name.clone(), e.clone());
        Ok(())
    })?;
    let (src_b, gate_b) = open(ctx, &opts.after)?;
    let mut after = Vec::new();
    let listed_b = listing::entries(&src_b, READ_ONLY, &*gate_b, &mut |e| {
        after.push(e.clone());
        Ok(())
    })?;
    let outcome = Outcome {
        volumes: compare(before, &after),
        databases: rows(&listed_a.metadata, &listed_b.metadata),
        before: Side { archive: src_a.path.display().to_string(), access: listed_a.access },
        after: Side { archive: src_b.path.display().to_string(), access: listed_b.access },
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    for side in [&outcome.before, &outcome.after] {
        ctx.ui.step(&format!("{}: {}", side.archive, side.access.describe()));
    }
    print!("{}", text(&outcome));
    Ok(())
}

fn text(o: &Outcome) -> String {
    let mut out = format!("--- {}\n+++ {}\n", o.before.archive, o.after.archive);
    if o.volumes.is_empty() {
        out.push_str("no file changed\n");
    }
    for (volume, d) in &o.volumes {
        out.push_str(&format!("{volume}:\n"));
        d.added.iter().for_each(|n| out.push_str(&format!("  + {n}\n")));
        d.removed.iter().for_each(|n| out.push_str(&format!("  - {n}\n")));
        d.changed.iter().for_each(|c| out.push_str(&format!("  ~ {} ({})\n", c.name, c.what.join(", "))));
    }
    let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
    for db in &o.databases {
        let (a, b) = (count(db.rows_before), count(db.rows_after));
        out.push_str(&format!("database {}/{}: {a} -> {b} rows\n", db.service, db.database));
        for t in &db.tables {
            out.push_str(&format!("  {}: {} -> {}\n", t.table, count(t.before), count(t.after)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: u8) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: Kind::File,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 100,
            link: None,
            sha256: Some([content; 32]),
            at: 0,
        }
    }

    fn dir(name: &str, mtime: u64) -> Entry {
        Entry { kind: Kind::Dir, size: 0, sha256: None, mode: 0o755, mtime, ..file(name, 0) }
    }

    #[test]
    fn added_removed_and_changed_per_volume() {
        let before: Vec<Entry> = vec![
            dir("volumes/media", 1),
            file("volumes/media/same", 1),
            file("volumes/media/edited", 1),
            file("volumes/media/gone", 1),
            Entry { mode: 0o600, ..file("volumes/media/chmod", 1) },
            file("binds/conf/a", 1),
            file("volumes/logs/touched", 1),
        ];
        let after: Vec<Entry> = vec![
            dir("volumes/media", 2),
            file("volumes/media/same", 1),
            file("volumes/media/edited", 2),
            file("volumes/media/new", 1),
            file("volumes/media/chmod", 1),
            file("binds/conf/a", 1),
            Entry { mtime: 200, ..file("volumes/logs/touched", 1) },
            dir("volumes/media/d\x1bx", 1),
        ];
        let map = before.into_iter().map(|e| (e.name.clone(), e)).collect();
        let d = compare(map, &after);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["logs", "media"], "binds/conf did not change: left out");
        let media = &d["media"];
        assert_eq!(media.added, ["media/new", "media/d\\x1bx"]);
        assert_eq!(media.removed, ["media/gone"]);
        let changed: Vec<(&str, &[&str])> = media.changed.iter().map(|c| (c.name.as_str(), &c.what[..])).collect();
        assert_eq!(changed, [("media/edited", &["content"][..]), ("media/chmod", &["mode"][..])]);
        assert_eq!(d["logs"].changed[0].what, ["mtime"]);
        let link = Entry { kind: Kind::Symlink, sha256: None, size: 0, link: Some(b"x".to_vec()), ..file("v/l", 0) };
        assert_eq!(differences(&file("v/l", 1), &link), ["type"]);
        assert_eq!(
            differences(&link, &Entry { link: Some(b"y".to_vec()), uid: 1, ..link.clone() }),
            ["target", "owner"]
        );
    }

    #[test]
    fn row_counts_per_database_with_the_tables_that_changed() {
        let with = |rows: &[(&str, u64)], extra: bool| {
            let mut m = Metadata::sample("app", &[]);
            let tables = rows.iter().map(|(t, n)| (t.to_string(), *n)).collect();
            let mut dbs = vec![crate::archive::DbDump {
                name: "app".into(),
                entry: "databases/db/app.sql".into(),
                tables,
                properties: None,
            }];
            if extra {
                dbs.push(crate::archive::DbDump {
                    name: "other".into(),
                    entry: "databases/db/other.sql".into(),
                    tables: Default::default(),
                    properties: None,
                });
            }
            m.databases = vec![crate::archive::DbInfo {
                service: "db".into(),
                engine: crate::archive::DbEngine::Postgres,
                volume: None,
                server_version: "16".into(),
                user: "app".into(),
                globals_entry: None,
                databases: dbs,
            }];
            m
        };
        let a = with(&[("\"public\".\"items\"", 300), ("\"public\".\"same\"", 5)], true);
        let b = with(&[("\"public\".\"items\"", 250), ("\"public\".\"same\"", 5), ("\"public\".\"new\"", 1)], false);
        let r = rows(&a, &b);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].database.as_str(), r[0].rows_before, r[0].rows_after), ("app", Some(305), Some(256)));
        let t: Vec<(&str, Option<u64>, Option<u64>)> =
            r[0].tables.iter().map(|t| (t.table.as_str(), t.before, t.after)).collect();
        assert_eq!(t, [("\"public\".\"items\"", Some(300), Some(250)), ("\"public\".\"new\"", None, Some(1))]);
        assert_eq!((r[1].database.as_str(), r[1].rows_before, r[1].rows_after), ("other", Some(0), None));
    }
}
