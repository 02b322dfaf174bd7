//! `cargo xtask migrate` on the live engine: a migration that succeeds keeps its change and the
//! pre-migration archive; one that creates a table, inserts rows, changes existing ones and then
//! exits 1 leaves the database exactly as before (every table's row count and checksum), exits
//! non-zero, and keeps its archive too.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

/// Every table of the app database with its row count and a checksum of its rows.
fn tables(db: &str) -> Vec<String> {
    let names = psql(
        db,
        "app",
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    names
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            let sql = format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '-') FROM \"{t}\" x");
            format!("{t}={}", psql(db, "app", &sql))
        })
        .collect()
}

#[test]
fn a_failed_migration_is_rolled_back_and_a_good_one_kept() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("migrate");
    let dir = TempDir::new("migrate");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 200) g;");

    // --dry-run says what it would do and does nothing.
    let plan = stack.xtask_ok(&["migrate", "--service", "db", "--dry-run", "--output-dir", dir.s(), "--", "true"]);
    assert!(plan.contains("pre-migration") && plan.contains("restore the databases"), "{plan}");
    assert!(dir.names().is_empty(), "--dry-run wrote nothing");

    let good = "psql -X -q -v ON_ERROR_STOP=1 -U app -d app -c 'CREATE TABLE added (id int); INSERT INTO added VALUES (1), (2)'";
    let out = stack.xtask_ok(&["migrate", "--service", "db", "--output-dir", dir.s(), "--", "sh", "-c", good]);
    assert!(out.contains("the migration succeeded"), "{out}");
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM added"), "2", "a good migration is kept");
    let before = tables(&db);
    assert_eq!(before.len(), 2);

    let bad = "psql -X -q -v ON_ERROR_STOP=1 -U app -d app -c \
        \"CREATE TABLE broken (id int); INSERT INTO broken SELECT generate_series(1, 50); UPDATE items SET name = name || 'x'; DELETE FROM added\" \
        && exit 1";
    let (ok, _, err) = stack.xtask(&["migrate", "--service", "db", "--output-dir", dir.s(), "--", "sh", "-c", bad]);
    assert!(!ok, "a failed migration exits non-zero");
    assert!(err.contains("the migration failed (exit 1)") && err.contains("restored"), "{err}");
    assert_eq!(tables(&db), before, "every table's rows are as before the failed migration");
    let archives: Vec<String> = dir.names().into_iter().filter(|n| n.ends_with("_pre-migration.tar.zst")).collect();
    assert_eq!(archives.len(), 2, "both pre-migration archives are kept: {archives:?}");

    // --no-rollback keeps the failed state.
    let (ok, _, err) =
        stack.xtask(&["migrate", "--service", "db", "--no-rollback", "--output-dir", dir.s(), "--", "sh", "-c", bad]);
    assert!(!ok && err.contains("--no-rollback"), "{err}");
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM broken"), "50", "the failed state was kept");
}

/// The rollback reads exactly the archive the migration's backup wrote: one replaced while the
/// migration ran (here by the migration itself) is refused, and nothing from it is loaded.
#[test]
fn a_rollback_refuses_an_archive_swapped_during_the_migration() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("migswap");
    let dir = TempDir::new("migswap");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 20);");
    let old = stack.xtask_json(&["backup-db", "--output-dir", dir.s(), "--tag", "old", "--json"]);
    let old = old["path"].as_str().unwrap().to_string();
    psql(&db, "app", "CREATE TABLE later_only (id int); INSERT INTO later_only VALUES (1)");
    let swap = format!("for f in {}/*_pre-migration.tar.zst; do cp {old} \"$f\"; done; exit 1", dir.s());
    let (ok, _, err) = stack.xtask(&["migrate", "--host", "--output-dir", dir.s(), "--", "sh", "-c", &swap]);
    assert!(!ok && err.contains("not the archive this run wrote"), "{err}");
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM later_only"), "1", "nothing of the swapped archive was loaded");
}
