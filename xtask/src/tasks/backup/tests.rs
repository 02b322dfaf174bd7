//! Backup planning on the sample stack's model: which volumes go in, which are skipped and why.

use super::*;
use crate::model::compose::Selection;

fn sample() -> Project {
    let s = Selection::default().resolve(&BTreeMap::new()).unwrap();
    s.parse_offline().unwrap()
}

fn opts(kind: Kind) -> Options {
    Options::new(kind, "/tmp".into())
}

fn names(p: &BackupPlan) -> Vec<&str> {
    p.volumes.iter().map(|v| v.name.as_str()).collect()
}

fn skipped(p: &BackupPlan, name: &str) -> String {
    p.skipped.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone()).unwrap_or_default()
}

#[test]
fn default_full_backup_takes_critical_and_important_and_dumps_the_database() {
    let p = plan(&sample(), &opts(Kind::Full)).unwrap();
    assert_eq!(names(&p), ["app-backend-media", "app-redis-data"]);
    let db = p.db.as_ref().unwrap();
    assert_eq!((db.service.as_str(), db.user.as_str(), db.volume.as_deref()), ("db", "app", Some("app-postgres-data")));
    assert_eq!(db.password.as_deref(), Some("app-dev-password"), "read from the service environment");
    assert_eq!(p.redis.as_ref().map(|r| r.service.as_str()), Some("redis"));
    assert!(skipped(&p, "app-postgres-data").contains("pg_dump"));
    assert!(skipped(&p, "app-backend-static").contains("regenerable"));
    assert!(skipped(&p, "app-proxy-logs").contains("optional"));
    assert!(p.describe().contains("skip app-frontend-node-modules"));
    assert!(!p.describe().contains("app-dev-password"), "the plan text never shows the password");
}

#[test]
fn all_volume_and_exclude_options() {
    let all = plan(&sample(), &Options { all: true, ..opts(Kind::Full) }).unwrap();
    assert_eq!(all.volumes.len(), 5, "every volume but the database one, which the dump stands for");
    let one = plan(&sample(), &Options { volumes: vec!["app-backend-static".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&one), ["app-backend-static"]);
    assert!(skipped(&one, "app-backend-media").contains("--volume"));
    let by_key = plan(&sample(), &Options { volumes: vec!["app-proxy-logs".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&by_key), ["app-proxy-logs"]);
    let ex = plan(&sample(), &Options { exclude: vec!["app-redis-data".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&ex), ["app-backend-media"]);
    assert!(ex.redis.is_none());
    let raw_db = plan(&sample(), &Options { volumes: vec!["app-postgres-data".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&raw_db), ["app-postgres-data"], "asked for by name, the raw volume is copied too");
    let err = plan(&sample(), &Options { volumes: vec!["nope".into()], ..opts(Kind::Full) }).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("cargo xtask volumes"), "{err}");
    let err = plan(&sample(), &Options { exclude: vec!["nope".into()], ..opts(Kind::Full) }).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn db_backup_dumps_only() {
    let p = plan(&sample(), &Options { databases: vec!["app".into()], ..opts(Kind::Db) }).unwrap();
    assert!(p.volumes.is_empty());
    assert!(p.redis.is_none());
    assert_eq!(p.db.unwrap().databases, ["app"]);
    let mut no_db = sample();
    no_db.services.retain(|s| s.name != "db");
    no_db.volumes.retain(|v| v.key != "app-postgres-data");
    let err = plan(&no_db, &opts(Kind::Db)).unwrap_err().to_string();
    assert!(err.contains("no PostgreSQL service"), "{err}");
}

#[test]
fn archive_names_carry_kind_time_and_a_clean_tag() {
    let n = archive_name(Kind::Db, Some("pre migration/1")).unwrap();
    assert!(n.starts_with("db_backup_") && n.ends_with("_pre-migration-1.tar.gz"), "{n}");
    let stamp = &n["db_backup_".len().."db_backup_".len() + 15];
    assert!(stamp.chars().enumerate().all(|(i, c)| if i == 8 { c == '_' } else { c.is_ascii_digit() }), "{stamp}");
    assert!(archive_name(Kind::Full, None).unwrap().starts_with("full_backup_"));
}

#[test]
fn tags_outside_the_name_set_are_refused_before_anything_runs() {
    let mut o = opts(Kind::Db);
    o.tag = Some("pre migration".into());
    let err = plan(&sample(), &o).unwrap_err().to_string();
    assert!(err.contains("--tag"), "{err}");
}

#[test]
fn the_database_can_be_left_out_and_its_volume_still_stands_for_it() {
    let mut o = opts(Kind::Full);
    o.dump_database = false;
    let p = plan(&sample(), &o).unwrap();
    assert!(p.db.is_none());
    assert!(p.volumes.iter().all(|v| v.key != "app-postgres-data"), "never copied raw by accident");
}

#[test]
fn a_second_postgresql_server_is_named_as_such() {
    let mut p = sample();
    let mut vol = p.volumes.iter().find(|v| v.key == "app-postgres-data").unwrap().clone();
    vol.key = "auth-db".into();
    vol.name = "app-auth-db".into();
    p.volumes.push(vol);
    let mut svc = p.services.iter().find(|s| s.name == "db").unwrap().clone();
    svc.name = "authdb".into();
    svc.mounts[0].source = Some("auth-db".into());
    p.services.push(svc);
    let plan = plan(&p, &opts(Kind::Full)).unwrap();
    assert_eq!(plan.db.as_ref().unwrap().service, "db", "the first is dumped");
    let why = skipped(&plan, "app-auth-db");
    assert!(why.contains("second PostgreSQL server (service authdb)") && !why.contains("other than"), "{why}");
}
