//! Backup planning on the sample stack's model: which volumes go in, which are skipped and why.

use super::plan::bind_id;
use super::*;
use crate::archive::DbEngine;
use crate::engine::db::Secret;
use crate::model::binds::Bind;
use crate::model::compose::Selection;
use crate::model::compose::{MountKind, Project};
use crate::store::local::archive_name;
use std::collections::BTreeMap;

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
    let p = plan(&sample(), &[], &opts(Kind::Full)).unwrap();
    assert_eq!(names(&p), ["app-backend-media", "app-redis-data"]);
    assert_eq!(p.dbs.len(), 1);
    let db = &p.dbs[0];
    let l = &db.login;
    assert_eq!((l.service.as_str(), l.user.as_str(), db.volume.as_deref()), ("db", "app", Some("app-postgres-data")));
    assert_eq!(l.password, Some(Secret::Value("app-dev-password".into())), "read from the service environment");
    assert_eq!(p.redis.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(), ["redis"]);
    assert_eq!(p.redis[0].volumes, ["app-redis-data"]);
    assert!(skipped(&p, "app-postgres-data").contains("dump of its databases"));
    assert!(skipped(&p, "app-backend-static").contains("regenerable"));
    assert!(skipped(&p, "app-proxy-logs").contains("optional"));
    assert!(p.describe().contains("skip app-frontend-node-modules"));
    assert!(!p.describe().contains("app-dev-password"), "the plan text never shows the password");
    assert!(p.describe().contains("compress the tar stream with zstd level 3 (….tar.zst)"), "{}", p.describe());
    let gz = BackupPlan { compression: "gzip:9".parse().unwrap(), ..p };
    assert!(gz.describe().contains("with gzip level 9 (….tar.gz)"), "{}", gz.describe());
}

#[test]
fn all_volume_and_exclude_options() {
    let all = plan(&sample(), &[], &Options { all: true, ..opts(Kind::Full) }).unwrap();
    assert_eq!(all.volumes.len(), 5, "every volume but the database one, which the dump stands for");
    let one =
        plan(&sample(), &[], &Options { volumes: vec!["app-backend-static".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&one), ["app-backend-static"]);
    assert!(skipped(&one, "app-backend-media").contains("--volume"));
    let by_key = plan(&sample(), &[], &Options { volumes: vec!["app-proxy-logs".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&by_key), ["app-proxy-logs"]);
    let ex = plan(&sample(), &[], &Options { exclude: vec!["app-redis-data".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&ex), ["app-backend-media"]);
    assert!(ex.redis.is_empty());
    let raw_db =
        plan(&sample(), &[], &Options { volumes: vec!["app-postgres-data".into()], ..opts(Kind::Full) }).unwrap();
    assert_eq!(names(&raw_db), ["app-postgres-data"], "asked for by name, the raw volume is copied too");
    let err =
        plan(&sample(), &[], &Options { volumes: vec!["nope".into()], ..opts(Kind::Full) }).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("cargo xtask volumes"), "{err}");
    let err =
        plan(&sample(), &[], &Options { exclude: vec!["nope".into()], ..opts(Kind::Full) }).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn db_backup_dumps_only() {
    let p = plan(&sample(), &[], &Options { databases: vec!["app".into()], ..opts(Kind::Db) }).unwrap();
    assert!(p.volumes.is_empty());
    assert!(p.redis.is_empty());
    assert_eq!(p.dbs[0].databases, ["app"]);
    let mut no_db = sample();
    no_db.services.retain(|s| s.name != "db");
    no_db.volumes.retain(|v| v.key != "app-postgres-data");
    let err = plan(&no_db, &[], &opts(Kind::Db)).unwrap_err().to_string();
    assert!(err.contains("no database service"), "{err}");
}

#[test]
fn archive_names_carry_kind_time_and_a_clean_tag() {
    let n = archive_name(Kind::Db, Some("pre migration/1"), crate::archive::Codec::Gzip).unwrap();
    assert!(n.starts_with("db_backup_") && n.ends_with("_pre-migration-1.tar.gz"), "{n}");
    let stamp = &n["db_backup_".len().."db_backup_".len() + 15];
    assert!(stamp.chars().enumerate().all(|(i, c)| if i == 8 { c == '_' } else { c.is_ascii_digit() }), "{stamp}");
    let z = archive_name(Kind::Full, None, crate::archive::Codec::Zstd).unwrap();
    assert!(z.starts_with("full_backup_") && z.ends_with(".tar.zst"), "{z}");
}

#[test]
fn tags_outside_the_name_set_are_refused_before_anything_runs() {
    let mut o = opts(Kind::Db);
    o.tag = Some("pre migration".into());
    let err = plan(&sample(), &[], &o).unwrap_err().to_string();
    assert!(err.contains("--tag"), "{err}");
}

#[test]
fn the_database_can_be_left_out_and_its_volume_still_stands_for_it() {
    let mut o = opts(Kind::Full);
    o.dump_database = false;
    let p = plan(&sample(), &[], &o).unwrap();
    assert!(p.dbs.is_empty());
    assert!(p.volumes.iter().all(|v| v.key != "app-postgres-data"), "never copied raw by accident");
}

/// The sample stack plus a second PostgreSQL server (`authdb` on volume `app-auth-db`), a
/// MariaDB, and a service whose database engine the tool does not know (`mongo`).
fn many_databases() -> Project {
    let mut p = sample();
    let base = p.volumes.iter().find(|v| v.key == "app-postgres-data").unwrap().clone();
    let db = p.services.iter().find(|s| s.name == "db").unwrap().clone();
    for (svc, key, image, env) in [
        ("authdb", "auth-db", "postgres:16", vec![]),
        ("maria", "maria-data", "mariadb:11", vec![("MARIADB_ROOT_PASSWORD_FILE", "/run/secrets/root")]),
        ("mongo", "mongo-data", "mongo:7", vec![]),
    ] {
        let mut vol = base.clone();
        (vol.key, vol.name) = (key.into(), format!("app-{key}"));
        vol.labels.clear();
        p.volumes.push(vol);
        let mut s = db.clone();
        (s.name, s.image) = (svc.into(), Some(image.into()));
        s.mounts[0].source = Some(key.into());
        s.environment = env.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        p.services.push(s);
    }
    p.services.sort_by(|a, b| a.name.cmp(&b.name));
    p
}

#[test]
fn every_database_service_is_dumped_and_the_rest_said_loudly() {
    let p = plan(&many_databases(), &[], &opts(Kind::Full)).unwrap();
    let dumped: Vec<(&str, DbEngine)> = p.dbs.iter().map(|d| (d.login.service.as_str(), d.login.engine)).collect();
    assert_eq!(dumped, [("authdb", DbEngine::Postgres), ("db", DbEngine::Postgres), ("maria", DbEngine::Mariadb)]);
    assert_eq!(p.dbs[0].login.user, "postgres", "POSTGRES_USER unset: the image's default");
    assert_eq!(p.dbs[2].login.password, Some(Secret::File("/run/secrets/root".into())));
    for v in ["app-auth-db", "app-maria-data", "app-postgres-data"] {
        assert!(skipped(&p, v).contains("dump of its databases"), "{v}: {}", skipped(&p, v));
    }
    // A database no engine can dump: copied with its server stopped, never both copied and NOT
    // PROTECTED; with --no-stop NOT PROTECTED and not copied.
    let mongo = p.volumes.iter().find(|v| v.name == "app-mongo-data").expect("copied");
    assert_eq!(mongo.stop_for_copy, ["mongo"]);
    assert_eq!(skipped(&p, "app-mongo-data"), "", "not also skipped");
    assert!(p.describe().contains("stopping mongo meanwhile"), "{}", p.describe());
    let no_stop = plan(&many_databases(), &[], &Options { no_stop: true, ..opts(Kind::Full) }).unwrap();
    let mongo = skipped(&no_stop, "app-mongo-data");
    assert!(mongo.starts_with(UNPROTECTED) && mongo.contains("mongo") && mongo.contains("xtask.dump"), "{mongo}");
    assert!(!names(&no_stop).contains(&"app-mongo-data"), "NOT PROTECTED and copied are never both said");
    // Asked for by name (as restore's safety backup asks), it is still copied with its server
    // stopped; with --no-stop as well, live, as asked.
    let asked = Options { volumes: vec!["app-mongo-data".into()], ..opts(Kind::Full) };
    let raw = plan(&many_databases(), &[], &asked).unwrap();
    assert_eq!(names(&raw), ["app-mongo-data"]);
    assert_eq!(raw.volumes[0].stop_for_copy, ["mongo"], "the safety backup is as consistent as a backup");
    let live = plan(&many_databases(), &[], &Options { no_stop: true, ..asked }).unwrap();
    assert_eq!((names(&live), live.volumes[0].stop_for_copy.len()), (vec!["app-mongo-data"], 0));
    // --service narrows the dumps; a name that is no database service is refused.
    let one = plan(&many_databases(), &[], &Options { services: vec!["maria".into()], ..opts(Kind::Db) }).unwrap();
    assert_eq!(one.dbs.len(), 1);
    let err =
        plan(&many_databases(), &[], &Options { services: vec!["backend".into()], ..opts(Kind::Db) }).unwrap_err();
    assert!(err.to_string().contains("--service backend"), "{err}");
}

#[test]
fn a_hook_labels_a_service_as_dumpable() {
    let mut p = many_databases();
    let mongo = p.services.iter_mut().find(|s| s.name == "mongo").unwrap();
    mongo.labels.insert("xtask.dump".into(), "mongodump --archive".into());
    mongo.labels.insert("xtask.load".into(), "mongorestore --archive --drop".into());
    let plan = plan(&p, &[], &opts(Kind::Full)).unwrap();
    let hook = plan.dbs.iter().find(|d| d.login.service == "mongo").unwrap();
    assert_eq!(hook.login.engine, DbEngine::Hook);
    assert_eq!(hook.login.dump_cmd.as_deref(), Some("mongodump --archive"));
    assert!(!skipped(&plan, "app-mongo-data").starts_with(UNPROTECTED));
    assert!(plan.describe().contains("dump service mongo with its xtask.dump command"), "{}", plan.describe());
}

#[test]
fn a_database_whose_data_is_a_bind_mount_or_nowhere_is_dumped_too() {
    use crate::model::compose::{Mount, MountKind};
    let mut p = sample();
    let mut immich = p.services.iter().find(|s| s.name == "db").unwrap().clone();
    immich.name = "immich-db".into();
    immich.mounts = vec![Mount {
        kind: MountKind::Bind,
        source: Some("/srv/immich/postgres".into()),
        target: "/var/lib/postgresql/data".into(),
        read_only: false,
    }];
    let mut bare = immich.clone();
    bare.name = "scratch-db".into();
    bare.mounts.clear();
    p.services.extend([immich, bare]);
    p.services.sort_by(|a, b| a.name.cmp(&b.name));
    let plan = plan(&p, &[], &opts(Kind::Db)).unwrap();
    let dumped: Vec<(&str, Option<&str>)> =
        plan.dbs.iter().map(|d| (d.login.service.as_str(), d.volume.as_deref())).collect();
    assert_eq!(dumped, [("db", Some("app-postgres-data")), ("immich-db", None), ("scratch-db", None)]);
}

/// The sample stack plus an Immich-like set of binds: photos (data), the database's data in a
/// bind, a config file, the Docker socket, logs, and a tmpfs.
fn with_binds() -> (Project, Vec<Bind>) {
    use crate::model::compose::Mount;
    let mut p = sample();
    let bind = |src: &str, target: &str, ro: bool| Mount {
        kind: MountKind::Bind,
        source: Some(src.into()),
        target: target.into(),
        read_only: ro,
    };
    let db = p.services.iter_mut().find(|s| s.name == "db").unwrap();
    db.mounts.push(bind("/srv/immich/pgdata", "/var/lib/postgresql/data", false));
    let backend = p.services.iter_mut().find(|s| s.name == "backend").unwrap();
    backend.mounts.push(bind("/srv/immich/library", "/data", false));
    backend.mounts.push(bind("/srv/immich/app.conf", "/etc/app.conf", true));
    backend.mounts.push(bind("/var/run/docker.sock", "/var/run/docker.sock", false));
    backend.mounts.push(bind("/srv/immich/logs", "/var/log/app", false));
    backend.mounts.push(Mount { kind: MountKind::Tmpfs, source: None, target: "/scratch".into(), read_only: false });
    let binds = crate::model::binds::binds(&p, &Default::default(), &|path| path.ends_with(".conf"));
    (p, binds)
}

#[test]
fn binds_are_backed_up_by_priority_and_the_rest_is_said() {
    let (p, binds) = with_binds();
    let plan = plan(&p, &binds, &opts(Kind::Full)).unwrap();
    let library = plan.volumes.iter().find(|v| v.bind.as_deref() == Some("/srv/immich/library")).unwrap();
    assert_eq!((library.name.as_str(), library.key.as_str()), ("binds/immich-library", "/srv/immich/library"));
    assert_eq!(library.services, ["backend"]);
    assert_eq!(plan.volumes.iter().filter(|v| v.bind.is_some()).count(), 1, "{:?}", plan.volumes);
    assert!(skipped(&plan, "/srv/immich/pgdata").contains("dump of service db"));
    assert!(skipped(&plan, "/srv/immich/app.conf").contains("configuration"));
    assert!(skipped(&plan, "/var/run/docker.sock").contains("system path"));
    assert!(skipped(&plan, "/srv/immich/logs").contains("priority optional"));
    assert!(skipped(&plan, "backend:/scratch").contains("ephemeral"));
    // --volume and --exclude take bind paths.
    let logs = plan_with(&p, &binds, Options { volumes: vec!["/srv/immich/logs".into()], ..opts(Kind::Full) });
    assert_eq!(logs.volumes.iter().map(|v| v.source()).collect::<Vec<_>>(), ["/srv/immich/logs"]);
    let none = plan_with(&p, &binds, Options { exclude: vec!["/srv/immich/library".into()], ..opts(Kind::Full) });
    assert!(none.volumes.iter().all(|v| v.bind.is_none()));
    assert_eq!(bind_id("/"), "bind");
    assert_eq!(bind_id("/a b/.x"), "a-b-.x");
}

fn plan_with(p: &Project, binds: &[Bind], o: Options) -> BackupPlan {
    plan(p, binds, &o).unwrap()
}

/// Every Redis is saved before its data is copied, a bind's too, each logged in by its own
/// convention; a Redis whose data lives nowhere is named NOT PROTECTED.
#[test]
fn every_redis_is_saved_wherever_its_data_lives() {
    use crate::model::compose::Mount;
    let mut p = sample();
    let redis = p.services.iter().find(|s| s.name == "redis").unwrap().clone();
    let mut on_bind = redis.clone();
    on_bind.name = "sessions".into();
    on_bind.mounts = vec![Mount {
        kind: MountKind::Bind,
        source: Some("/srv/app/redis".into()),
        target: "/data".into(),
        read_only: false,
    }];
    on_bind.environment = [("REDISPASS".to_string(), "s3cret".to_string())].into();
    let mut in_memory = redis.clone();
    in_memory.name = "queue".into();
    in_memory.mounts.clear();
    in_memory.command = vec!["redis-server".into(), "--requirepass".into(), "q".into()];
    p.services.extend([on_bind, in_memory]);
    p.services.sort_by(|a, b| a.name.cmp(&b.name));
    let binds = crate::model::binds::binds(&p, &Default::default(), &|_| false);
    let plan = plan(&p, &binds, &opts(Kind::Full)).unwrap();
    let saved: Vec<(&str, Vec<String>, String)> =
        plan.redis.iter().map(|r| (r.service.as_str(), r.volumes.clone(), r.auth.source())).collect();
    assert_eq!(
        saved,
        [
            (
                "redis",
                vec!["app-redis-data".to_string()],
                "no password (none of the usual variables is set)".to_string()
            ),
            ("sessions", vec!["binds/app-redis".to_string()], "REDISPASS".to_string()),
        ]
    );
    assert!(skipped(&plan, "queue").starts_with(UNPROTECTED), "{:?}", plan.skipped);
    assert!(!plan.describe().contains("s3cret"), "the plan text never shows the password");
}

/// OpenProject's attachments live in `opdata:/var/openproject/assets`: a path word alone never
/// makes a volume regenerable, so it is copied, and the plan says why.
#[test]
fn an_attachments_volume_under_assets_is_copied_and_the_plan_says_why() {
    let mut p = sample();
    let mut vol = p.volumes.iter().find(|v| v.key == "app-backend-static").unwrap().clone();
    (vol.key, vol.name) = ("opdata".into(), "openproject_opdata".into());
    vol.labels.clear();
    p.volumes.push(vol);
    let mut web = p.services.iter().find(|s| s.name == "backend").unwrap().clone();
    (web.name, web.image) = ("web".into(), Some("openproject/openproject:14-slim".into()));
    web.mounts = vec![crate::model::compose::Mount {
        kind: MountKind::Volume,
        source: Some("opdata".into()),
        target: "/var/openproject/assets".into(),
        read_only: false,
    }];
    p.services.push(web);
    let plan = plan(&p, &[], &opts(Kind::Full)).unwrap();
    let op = plan.volumes.iter().find(|v| v.name == "openproject_opdata").expect("copied by default");
    assert_eq!((op.role, op.priority), (crate::model::roles::Role::Data, crate::model::roles::Priority::Important));
    let text = plan.describe();
    assert!(text.contains("kept since unsure of its role") && text.contains("/var/openproject/assets"), "{text}");
    assert!(!text.contains("app-backend-media (uploads, critical) read-only\n      kept"), "a labelled volume: sure");
}

/// A store no engine dumps on a bind (a MinIO's data directory): copied with the services that
/// bind it stopped, like such a volume; with --no-stop NOT PROTECTED.
#[test]
fn an_undumpable_store_on_a_bind_is_copied_with_its_users_stopped() {
    use crate::model::compose::Mount;
    let mut p = sample();
    let mut minio = p.services.iter().find(|s| s.name == "backend").unwrap().clone();
    (minio.name, minio.image) = ("minio".into(), Some("minio/minio:latest".into()));
    minio.mounts =
        vec![Mount { kind: MountKind::Bind, source: Some("/srv/s3".into()), target: "/data".into(), read_only: false }];
    p.services.push(minio);
    let binds = crate::model::binds::binds(&p, &Default::default(), &|_| false);
    let plan = plan(&p, &binds, &opts(Kind::Full)).unwrap();
    let s3 = plan.volumes.iter().find(|v| v.bind.as_deref() == Some("/srv/s3")).expect("copied");
    assert_eq!(s3.stop_for_copy, ["minio"]);
    assert!(plan.describe().contains("stopping minio meanwhile"), "{}", plan.describe());
    let no_stop = plan_with(&p, &binds, Options { no_stop: true, ..opts(Kind::Full) });
    assert!(skipped(&no_stop, "/srv/s3").starts_with(UNPROTECTED), "{:?}", no_stop.skipped);
}

/// A bind inside another copied bind (mailcow's `./data/conf/dovecot` and a directory and a
/// file inside it): copied once, as part of the outer tree, whose users include the inner
/// one's; the plan says so; named with --volume, the inner one is copied on its own.
#[test]
fn a_bind_inside_another_is_copied_as_part_of_it() {
    use crate::model::compose::Mount;
    let mut p = sample();
    let bind = |src: &str, target: &str| Mount {
        kind: MountKind::Bind,
        source: Some(src.into()),
        target: target.into(),
        read_only: false,
    };
    let backend = p.services.iter_mut().find(|s| s.name == "backend").unwrap();
    backend.mounts.push(bind("/srv/mail/conf", "/etc/dovecot"));
    backend.mounts.push(bind("/srv/mail/conf/auth/x.php", "/usr/lib/x.php"));
    let proxy = p.services.iter_mut().find(|s| s.name == "proxy").unwrap();
    proxy.mounts.push(bind("/srv/mail/conf/sieve", "/sieve"));
    let binds = crate::model::binds::binds(&p, &Default::default(), &|path| path.ends_with(".php"));
    let plan = plan(&p, &binds, &opts(Kind::Full)).unwrap();
    let copied: Vec<&str> = plan.volumes.iter().filter_map(|v| v.bind.as_deref()).collect();
    assert_eq!(copied, ["/srv/mail/conf"]);
    let conf = plan.volumes.iter().find(|v| v.bind.is_some()).unwrap();
    assert_eq!(conf.services, ["backend", "proxy"]);
    assert_eq!(conf.holds, ["/srv/mail/conf/auth/x.php", "/srv/mail/conf/sieve"]);
    assert!(skipped(&plan, "/srv/mail/conf/sieve").contains("part of it"), "{:?}", plan.skipped);
    assert!(plan.describe().contains("holds the binds /srv/mail/conf/auth/x.php, /srv/mail/conf/sieve"));
    let named = plan_with(&p, &binds, Options { volumes: vec!["/srv/mail/conf/sieve".into()], ..opts(Kind::Full) });
    assert_eq!(named.volumes.iter().filter_map(|v| v.bind.as_deref()).collect::<Vec<_>>(), ["/srv/mail/conf/sieve"]);
}
