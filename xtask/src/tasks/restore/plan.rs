//! What a restore will replace, decided from the archive's metadata and today's compose file
//! alone (plain data, unit-tested): each archived volume's target in this stack, each bind's
//! declared place, each database service of the same engine.

use super::database::DbRestore;
use crate::archive::{self, Metadata};
use crate::engine::db::{self as dbengine, Detected};
use crate::model::compose::Project;
use crate::store::binds::StackBinds;
use crate::ui::human_bytes;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRestore {
    /// The volume's name inside the archive (`volumes/<archived>/`).
    pub archived: String,
    /// The volume it goes into now (same compose key, this stack's name for it).
    pub target: String,
    pub key: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    /// Services of this stack that mount it (or a bind inside it): stopped while it is replaced.
    pub services: Vec<String>,
    /// A bind's target: the host paths of this stack's binds inside it, restored as part of its
    /// tree; checked for symbolic links on the way once the new tree is in place, before the
    /// services start.
    pub inner: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    pub project: String,
    pub dbs: Vec<DbRestore>,
    pub volumes: Vec<VolumeRestore>,
    /// What a restore into this stack refuses, each with why: (item, why). All are listed at
    /// once; the rest of the archive is judged on its own and restored with `--skip-refused`.
    pub refused: Vec<(String, String)>,
    /// Archived binds left out because they lie inside another bind restored here, which holds
    /// them: (archived name, the outer bind's target).
    pub covered: Vec<(String, String)>,
}

/// Decides what the archive restores into this stack. Pure: no engine access.
pub fn plan(
    project: &Project,
    binds: &StackBinds,
    meta: &Metadata,
    only: &[String],
    force: bool,
) -> Result<RestorePlan> {
    if meta.project != project.name && !force {
        bail!(
            "the archive belongs to project {:?}, this stack is {:?}; pass --force to restore it into this stack anyway",
            meta.project,
            project.name
        );
    }
    for o in only.iter().filter(|o| *o != "db" && !o.starts_with("db:")) {
        if !meta.volumes.iter().any(|v| &v.name == o || &v.key == o || project.volume_name(&v.key) == Some(o.as_str()))
        {
            let have: Vec<&str> = meta.volumes.iter().map(|v| v.name.as_str()).collect();
            bail!("--only {o}: the archive holds no such volume (it holds: db, {})", have.join(", "));
        }
    }
    let (dbs, mut refused) = plan_databases(project, meta, only)?;
    let mut volumes = Vec::new();
    for v in &meta.volumes {
        if let Some(path) = &v.bind {
            let named = only.iter().any(|o| o == &v.name || o == path);
            if only.is_empty() || named {
                match plan_bind(binds, meta, v, path, named) {
                    Ok(r) => volumes.push(r),
                    Err(e) => refused.push((v.name.clone(), format!("{e:#}"))),
                }
            }
            continue;
        }
        // Only into a volume of this stack, by compose key: never a name the archive chose.
        let decl = project.volumes.iter().find(|d| d.key == v.key);
        let chosen =
            only.is_empty() || only.iter().any(|o| o == &v.name || o == &v.key || decl.is_some_and(|d| &d.name == o));
        if !chosen {
            continue;
        }
        let Some(decl) = decl else {
            let why = format!("compose key {:?} is not a volume of this stack: never restored, never created", v.key);
            refused.push((v.name.clone(), why));
            continue;
        };
        volumes.push(VolumeRestore {
            archived: v.name.clone(),
            target: decl.name.clone(),
            key: v.key.clone(),
            driver: decl.driver.clone().unwrap_or_else(|| "local".into()),
            labels: decl.labels.clone(),
            services: project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect(),
            inner: Vec::new(),
        });
    }
    let covered = leave_out_covered(&mut volumes);
    if dbs.is_empty() && volumes.is_empty() && refused.is_empty() {
        bail!("nothing to restore: the archive holds nothing that --only selects");
    }
    Ok(RestorePlan { project: project.name.clone(), dbs, volumes, refused, covered })
}

/// A restore target is a volume name, or a bind's host path (absolute: volume names never start
/// with `/`).
pub(super) fn is_bind(target: &str) -> bool {
    target.starts_with('/')
}

/// Binds whose target lies inside another bind's target the plan restores are part of its tree:
/// left out (restoring both would stage the inner one in a directory the outer swap moves
/// away). Returns them as (archived name, outer target).
fn leave_out_covered(volumes: &mut Vec<VolumeRestore>) -> Vec<(String, String)> {
    let outer_of = |t: &str, all: &[VolumeRestore]| {
        all.iter()
            .filter(|o| is_bind(&o.target) && o.target != t && Path::new(t).starts_with(&o.target))
            .map(|o| o.target.clone())
            .next()
    };
    let snapshot = volumes.clone();
    let mut covered = Vec::new();
    volumes.retain(|v| match outer_of(&v.target, &snapshot).filter(|_| is_bind(&v.target)) {
        Some(outer) => {
            covered.push((v.archived.clone(), outer));
            false
        }
        None => true,
    });
    covered
}

impl RestorePlan {
    /// Refuses the restore when the plan refuses items, naming every one of them at once (and
    /// saying the rest of the archive is not affected), unless `skip` (`--skip-refused`): then
    /// they are left out, named, and the rest is restored; nothing left is an error.
    pub fn check_refused(&self, archive: &Path, skip: bool) -> Result<()> {
        if self.refused.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.refused.iter().map(|(item, why)| format!("  - {item}: {why}")).collect();
        let what = format!(
            "a restore into this stack refuses {} item(s) of {}:\n{}",
            self.refused.len(),
            archive.display(),
            list.join("\n")
        );
        if !skip {
            bail!(
                "{what}\nthe rest of the archive is judged on its own: restore it without these with --skip-refused \
                 (or choose with --only); nothing was changed"
            );
        }
        if self.dbs.is_empty() && self.volumes.is_empty() {
            bail!("{what}\nnothing else to restore: nothing was changed");
        }
        eprintln!("warning: {what}\nleft out (--skip-refused); the rest is restored");
        Ok(())
    }
}

/// A bind goes back only into the bind this stack's compose file declares for its recorded
/// mounts (never a place the archive's path text chooses), never one holding the project or the
/// backup directory.
fn plan_bind(
    binds: &StackBinds,
    meta: &Metadata,
    v: &archive::VolumeInfo,
    path: &str,
    named: bool,
) -> Result<VolumeRestore> {
    let bind = binds.target_of(meta, v, path, named)?;
    let inside = crate::model::binds::inside(&binds.binds, &bind.host_path);
    let mut services: Vec<String> =
        bind.uses.iter().chain(inside.iter().flat_map(|b| b.uses.iter())).map(|u| u.service.clone()).collect();
    services.sort();
    services.dedup();
    Ok(VolumeRestore {
        archived: v.name.clone(),
        target: bind.host_path.clone(),
        key: bind.host_path.clone(),
        driver: "bind".into(),
        labels: BTreeMap::new(),
        services,
        inner: inside.iter().map(|b| b.host_path.clone()).collect(),
    })
}

/// The archive's database services `--only` selects (`db`: all; `db:SERVICE`: that one), each
/// into the service of this stack with the same name and engine, logging in as this stack's
/// compose file says (never as the archive says).
/// Returns the database services restored, and those refused as (`db:SERVICE`, why).
fn plan_databases(project: &Project, meta: &Metadata, only: &[String]) -> Result<(Vec<DbRestore>, Refused)> {
    let all = only.is_empty() || only.iter().any(|o| o == "db");
    for o in only.iter().filter_map(|o| o.strip_prefix("db:")) {
        if meta.database(o).is_none() {
            let have: Vec<String> = meta.databases.iter().map(|d| format!("db:{}", d.service)).collect();
            bail!("--only db:{o}: the archive holds no dump of service {o} (it holds: {})", have.join(", "));
        }
    }
    let mut dbs = Vec::new();
    let mut refused = Vec::new();
    for info in &meta.databases {
        if !all && !only.iter().any(|o| o.strip_prefix("db:") == Some(info.service.as_str())) {
            continue;
        }
        let item = format!("db:{}", info.service);
        let Some(svc) = project.services.iter().find(|s| s.name == info.service) else {
            refused.push((item, "dumps of a service this stack does not have".to_string()));
            continue;
        };
        if dbengine::detect(svc)? != Detected::Dump(info.engine) {
            let e = info.engine.as_str();
            refused.push((item, format!("{e} dumps, and service {} is not a {e} service in this stack", svc.name)));
            continue;
        }
        dbs.push(DbRestore { login: dbengine::login(svc, info.engine)?, info: info.clone() });
    }
    if dbs.is_empty() && refused.is_empty() && only.iter().any(|o| o == "db") {
        bail!("--only db: the archive holds no database dump");
    }
    Ok((dbs, refused))
}

/// Items a restore refuses, each with why.
type Refused = Vec<(String, String)>;

impl RestorePlan {
    /// What will be replaced, for the confirmation.
    pub fn describe(&self, archive: &Path, meta: &Metadata, sizes: &BTreeMap<String, u64>) -> String {
        let mut out = format!(
            "\nRestore into stack {} from {}\n  archive of project {}, made {}{}\n\nThis REPLACES:\n",
            self.project,
            archive.display(),
            meta.project,
            meta.created_at,
            meta.tag.as_ref().map(|t| format!(", tag {t}")).unwrap_or_default()
        );
        for db in &self.dbs {
            let names: Vec<&str> = db.info.databases.iter().map(|d| d.name.as_str()).collect();
            out.push_str(&match db.login.engine.record().single_dump {
                Some(_) => {
                    format!(
                        "  - the data of service {} (its dump piped into its xtask.load command)\n",
                        db.login.service
                    )
                }
                None => format!("  - databases {} in service {} (replaced)\n", names.join(", "), db.login.service),
            });
        }
        for (item, why) in &self.refused {
            out.push_str(&format!("  - {item}: NOT restored, refused: {why}\n"));
        }
        for (item, outer) in &self.covered {
            out.push_str(&format!("  - {item}: lies inside bind {outer}, restored as part of it\n"));
        }
        for v in &self.volumes {
            if !v.inner.is_empty() {
                out.push_str(&format!(
                    "  - bind {} holds the binds {}: restored with it, checked for symbolic links before their \
                     services start\n",
                    v.target,
                    v.inner.join(", ")
                ));
            }
            match sizes.get(&v.target) {
                Some(s) => {
                    out.push_str(&format!("  - volume {} (now {}) emptied and refilled\n", v.target, human_bytes(*s)))
                }
                None => out.push_str(&format!("  - volume {} (does not exist now) created and filled\n", v.target)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive;
    use crate::model::compose::Project;
    use crate::model::compose::Selection;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn no_binds() -> StackBinds {
        StackBinds {
            project_dir: "/nonexistent-project".into(),
            backup_dir: "/nonexistent-backups".into(),
            binds: Vec::new(),
            homes: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn sample() -> Project {
        Selection::default().resolve(&BTreeMap::new()).unwrap().parse_offline().unwrap()
    }

    fn meta(project: &str, volumes: &[(&str, &str)]) -> Metadata {
        let mut m = archive::Metadata::sample(project, volumes);
        m.databases = vec![archive::DbInfo {
            service: "db".into(),
            engine: archive::DbEngine::Postgres,
            volume: None,
            server_version: "15".into(),
            user: "app".into(),
            globals_entry: Some("databases/db/globals.sql".into()),
            databases: vec![],
        }];
        m
    }

    #[test]
    fn maps_archived_volumes_by_key_and_stops_their_users() {
        // Archived from the test environment, restored into the default one: same keys, new names.
        let m =
            meta("app", &[("app-backend-media", "app-test-backend-media"), ("app-redis-data", "app-test-redis-data")]);
        let p = plan(&sample(), &no_binds(), &m, &[], false).unwrap();
        assert_eq!(p.volumes[0].target, "app-backend-media");
        assert_eq!(p.volumes[0].archived, "app-test-backend-media");
        assert_eq!(p.volumes[0].services, ["backend"]);
        assert_eq!(p.volumes[1].services, ["redis"]);
        assert_eq!(p.dbs[0].login.service, "db");
        let text = p.describe(Path::new("a.tar.gz"), &m, &BTreeMap::from([("app-backend-media".to_string(), 2048)]));
        assert!(
            text.contains("app-backend-media (now 2.0 KiB)") && text.contains("app-redis-data (does not exist now)"),
            "{text}"
        );
    }

    #[test]
    fn only_selects_and_other_projects_need_force() {
        let m = meta("app", &[("app-backend-media", "app-backend-media"), ("app-redis-data", "app-redis-data")]);
        let only_db = plan(&sample(), &no_binds(), &m, &["db".into()], false).unwrap();
        assert!(only_db.volumes.is_empty() && only_db.dbs.len() == 1);
        let only_vol = plan(&sample(), &no_binds(), &m, &["app-redis-data".into()], false).unwrap();
        assert!(only_vol.dbs.is_empty());
        assert_eq!(only_vol.volumes.len(), 1);
        let err = plan(&sample(), &no_binds(), &m, &["nope".into()], false).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("app-redis-data"), "{err}");
        let other = meta("elsewhere", &[]);
        let err = plan(&sample(), &no_binds(), &other, &[], false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert!(plan(&sample(), &no_binds(), &other, &[], true).is_ok());
    }

    #[test]
    fn a_volume_outside_the_stack_is_refused() {
        // Archived under a key this stack does not have: never restored, never created.
        let m = meta("app", &[("app-backend-media", "app-backend-media"), ("intruder", "some-other-volume")]);
        let all = plan(&sample(), &no_binds(), &m, &[], false).unwrap();
        let err = format!("{:#}", all.check_refused(Path::new("a.tar.gz"), false).unwrap_err());
        assert!(err.contains("some-other-volume") && err.contains("not a volume of this stack"), "{err}");
        assert!(err.contains("--skip-refused") && err.contains("nothing was changed"), "{err}");
        // Asked to, the rest restores, the refused item named.
        assert!(all.check_refused(Path::new("a.tar.gz"), true).is_ok());
        assert_eq!(all.volumes.iter().map(|v| v.target.as_str()).collect::<Vec<_>>(), ["app-backend-media"]);
        assert!(all.describe(Path::new("a.tar.gz"), &m, &BTreeMap::new()).contains("some-other-volume: NOT restored"));
        // Left out with --only, the rest restores; the target is always the stack's own name.
        let p = plan(&sample(), &no_binds(), &m, &["app-backend-media".into()], false).unwrap();
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.volumes[0].target, "app-backend-media");
    }

    /// A drill's copy binds `/tmp/copy/data` where the live stack binds `/srv/live/data`: the
    /// live stack's archived bind goes into the copy's only through the tool's own map.
    #[test]
    fn a_drill_restores_the_live_bind_into_its_copy_by_the_tools_map_only() {
        use crate::model::compose::{Mount, MountKind};
        let mut p = sample();
        let mount = Mount {
            kind: MountKind::Bind,
            source: Some("/tmp/copy/data".into()),
            target: "/data".into(),
            read_only: false,
        };
        p.services.iter_mut().find(|s| s.name == "backend").unwrap().mounts.push(mount);
        let binds = crate::model::binds::binds(&p, &Default::default(), &|_| false);
        let mut m = meta("app", &[]);
        for (name, path) in [("binds/data", "/srv/live/data"), ("binds/other", "/srv/live/other")] {
            let mut v = archive::Metadata::sample("app", &[(path, name)]).volumes.remove(0);
            v.bind = Some(path.into());
            v.bind_mounts = vec![archive::BindMount { service: "backend".into(), target: "/data".into() }];
            m.volumes.push(v);
        }
        let without = plan(&p, &StackBinds { binds: binds.clone(), ..no_binds() }, &m, &[], false).unwrap();
        assert!(without.volumes.is_empty() && without.refused.len() == 2, "{:?}", without.refused);
        let moves = vec![("/srv/live/data".to_string(), "/tmp/copy/data".to_string())];
        let with = plan(&p, &StackBinds { binds, moves, ..no_binds() }, &m, &[], false).unwrap();
        let targets: Vec<&str> = with.volumes.iter().map(|v| v.target.as_str()).collect();
        assert_eq!(targets, ["/tmp/copy/data"]);
        let refused: Vec<&str> = with.refused.iter().map(|(item, _)| item.as_str()).collect();
        assert_eq!(refused, ["binds/other"], "a path the map does not name is matched as before");
    }

    /// A stack binding `/srv/q/conf` (backend) and `/srv/q/conf/auth` inside it (proxy), and a
    /// forged bind elsewhere: the outer one restores with the inner one as part of its tree
    /// (both services stopped, the inner path checked at the swap), an archived copy of the
    /// inner one is left out as covered, and every refused item is listed at once.
    #[test]
    fn a_bind_inside_another_is_restored_as_part_of_it_and_refusals_are_listed_together() {
        use crate::model::compose::{Mount, MountKind};
        let mut p = sample();
        let bind = |src: &str, target: &str| Mount {
            kind: MountKind::Bind,
            source: Some(src.into()),
            target: target.into(),
            read_only: false,
        };
        p.services.iter_mut().find(|s| s.name == "backend").unwrap().mounts.push(bind("/srv/q/conf", "/etc/x"));
        p.services.iter_mut().find(|s| s.name == "proxy").unwrap().mounts.push(bind("/srv/q/conf/auth", "/auth"));
        let stack = StackBinds { binds: crate::model::binds::binds(&p, &Default::default(), &|_| false), ..no_binds() };
        let mut m = meta("app", &[]);
        for (name, path, service, target) in [
            ("binds/q-conf", "/srv/q/conf", "backend", "/etc/x"),
            ("binds/conf-auth", "/srv/q/conf/auth", "proxy", "/auth"),
            ("binds/evil", "/srv/elsewhere", "backend", "/nowhere"),
            ("binds/evil2", "/srv/other", "proxy", "/nothing"),
        ] {
            let mut v = archive::Metadata::sample("app", &[(path, name)]).volumes.remove(0);
            v.bind = Some(path.into());
            v.bind_mounts = vec![archive::BindMount { service: service.into(), target: target.into() }];
            m.volumes.push(v);
        }
        let plan = plan(&p, &stack, &m, &[], false).unwrap();
        let outer: Vec<(&str, &[String], &[String])> =
            plan.volumes.iter().map(|v| (v.target.as_str(), &v.services[..], &v.inner[..])).collect();
        let (services, inner) = (["backend".to_string(), "proxy".to_string()], ["/srv/q/conf/auth".to_string()]);
        assert_eq!(outer, [("/srv/q/conf", &services[..], &inner[..])]);
        assert_eq!(plan.covered, [("binds/conf-auth".to_string(), "/srv/q/conf".to_string())]);
        let refused: Vec<&str> = plan.refused.iter().map(|(item, _)| item.as_str()).collect();
        assert_eq!(refused, ["binds/evil", "binds/evil2"], "every refused item at once");
        let err = format!("{:#}", plan.check_refused(Path::new("a.tar.gz"), false).unwrap_err());
        assert!(err.contains("/srv/elsewhere") && err.contains("/srv/other") && err.contains("2 item(s)"), "{err}");
        let text = plan.describe(Path::new("a.tar.gz"), &m, &BTreeMap::new());
        assert!(text.contains("holds the binds /srv/q/conf/auth") && text.contains("restored as part of it"), "{text}");
    }
}
