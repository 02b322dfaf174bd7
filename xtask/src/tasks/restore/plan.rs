//! What a restore will replace, decided from the archive's metadata and today's compose file
//! alone (plain data, unit-tested): each archived volume's target in this stack, each bind's
//! declared place, each database service of the same engine.

use super::database::DbRestore;
use crate::archive::{self, Metadata};
use crate::engine::db::{self as dbengine, Detected};
use crate::model::compose::Project;
use crate::store::binds::StackBinds;
use crate::ui::human_bytes;
use anyhow::{bail, Context, Result};
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
    /// Services of this stack that mount it: stopped while it is replaced.
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    pub project: String,
    pub dbs: Vec<DbRestore>,
    pub volumes: Vec<VolumeRestore>,
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
    let dbs = plan_databases(project, meta, only)?;
    let mut volumes = Vec::new();
    for v in &meta.volumes {
        if let Some(path) = &v.bind {
            let named = only.iter().any(|o| o == &v.name || o == path);
            if only.is_empty() || named {
                volumes.push(plan_bind(binds, meta, v, path, named)?);
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
        let decl = decl.with_context(|| {
            format!(
                "the archive's volume {} (compose key {:?}) is not a volume of this stack: refused; \
                 leave it out with --only",
                v.name, v.key
            )
        })?;
        let target = decl.name.clone();
        volumes.push(VolumeRestore {
            archived: v.name.clone(),
            target,
            key: v.key.clone(),
            driver: decl.driver.clone().unwrap_or_else(|| "local".into()),
            labels: decl.labels.clone(),
            services: project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect(),
        });
    }
    if dbs.is_empty() && volumes.is_empty() {
        bail!("nothing to restore: the archive holds nothing that --only selects");
    }
    Ok(RestorePlan { project: project.name.clone(), dbs, volumes })
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
    let bind = binds
        .target_of(meta, v, path, named)
        .with_context(|| format!("the archive's {}: refused (leave it out with --only)", v.name))?;
    Ok(VolumeRestore {
        archived: v.name.clone(),
        target: bind.host_path.clone(),
        key: bind.host_path.clone(),
        driver: "bind".into(),
        labels: BTreeMap::new(),
        services: bind.uses.iter().map(|u| u.service.clone()).collect(),
    })
}

/// The archive's database services `--only` selects (`db`: all; `db:SERVICE`: that one), each
/// into the service of this stack with the same name and engine, logging in as this stack's
/// compose file says (never as the archive says).
fn plan_databases(project: &Project, meta: &Metadata, only: &[String]) -> Result<Vec<DbRestore>> {
    let all = only.is_empty() || only.iter().any(|o| o == "db");
    for o in only.iter().filter_map(|o| o.strip_prefix("db:")) {
        if meta.database(o).is_none() {
            let have: Vec<String> = meta.databases.iter().map(|d| format!("db:{}", d.service)).collect();
            bail!("--only db:{o}: the archive holds no dump of service {o} (it holds: {})", have.join(", "));
        }
    }
    let mut dbs = Vec::new();
    for info in &meta.databases {
        if !all && !only.iter().any(|o| o.strip_prefix("db:") == Some(info.service.as_str())) {
            continue;
        }
        let svc = project.services.iter().find(|s| s.name == info.service).with_context(|| {
            format!(
                "the archive's databases came from service {:?}, which this stack does not have; leave them out \
                 with --only",
                info.service
            )
        })?;
        if dbengine::detect(svc)? != Detected::Dump(info.engine) {
            bail!(
                "the archive holds {} dumps of service {}, which is not a {} service in this stack: refused",
                info.engine.as_str(),
                svc.name,
                info.engine.as_str()
            );
        }
        dbs.push(DbRestore { login: dbengine::login(svc, info.engine)?, info: info.clone() });
    }
    if dbs.is_empty() && only.iter().any(|o| o == "db") {
        bail!("--only db: the archive holds no database dump");
    }
    Ok(dbs)
}

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
        for v in &self.volumes {
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
        let err = plan(&sample(), &no_binds(), &m, &[], false).unwrap_err().to_string();
        assert!(err.contains("some-other-volume") && err.contains("not a volume of this stack"), "{err}");
        // Left out with --only, the rest restores; the target is always the stack's own name.
        let p = plan(&sample(), &no_binds(), &m, &["app-backend-media".into()], false).unwrap();
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.volumes[0].target, "app-backend-media");
    }
}
