//! The tree form of `backup --push VAULT` (docs/design.md, "The deduplicated
//! tier"): which copied volumes and binds restic reads as file trees where they live, so its
//! parent snapshot lets it skip unchanged files by their metadata. A named volume is read at its
//! mountpoint when the engine is local and the volume is a plain directory of the local driver
//! (no mount options: a tmpfs or NFS volume is mounted only while a container uses it); a bind at
//! its host path when the engine is local. Both must be directories this user can read (root,
//! or the rootless engine's own user). Every other one stays in the stream form, said so.

use std::collections::BTreeMap;

use anyhow::Result;

use super::plan::{BackupPlan, VolumeChoice};
use crate::context::Ctx;

/// How one copied volume or bind goes into the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// A file tree read at this absolute host path.
    Tree(String),
    /// In the archive's tar stream, and why.
    Stream(String),
}

/// The tree form applies: a push into a restic repository (with a local archive kept, that one
/// holds every volume, and the repository's record is a second stream: `execute::write_record`).
pub fn wanted(plan: &BackupPlan) -> bool {
    plan.push_vault
}

/// The form of each of `volumes` (by name): pure, from whether the engine is local, the plain
/// directories the engine keeps volumes in (`dirs`) and whether a directory can be read.
pub fn choose(
    volumes: &[&VolumeChoice],
    local_engine: bool,
    dirs: &BTreeMap<String, String>,
    readable: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Form> {
    let form = |v: &VolumeChoice| -> Form {
        if !local_engine {
            return Form::Stream("the engine is not on this machine (DOCKER_HOST)".into());
        }
        let path = match &v.bind {
            Some(path) => path.clone(),
            None => match dirs.get(&v.name) {
                Some(dir) => dir.clone(),
                None => {
                    return Form::Stream(
                        "not a plain directory of the local driver (mount options or another driver)".into(),
                    )
                }
            },
        };
        if path.contains(',') || !path.starts_with('/') {
            return Form::Stream(format!("its path {path} cannot be named to restic as a tree"));
        }
        if !readable(&path) {
            return Form::Stream(format!("{path} cannot be read here (permissions)"));
        }
        Form::Tree(path)
    };
    volumes.iter().map(|v| (v.name.clone(), form(v))).collect()
}

/// [`choose`] on the live engine, each choice said as a step; the trees by volume name.
pub fn decide(ctx: &Ctx, plan: &BackupPlan, volumes: &[&VolumeChoice]) -> Result<BTreeMap<String, String>> {
    if !wanted(plan) || volumes.is_empty() {
        return Ok(BTreeMap::new());
    }
    let local = crate::engine::docker::helper::engine_is_local();
    let named: Vec<&str> = volumes.iter().filter(|v| v.bind.is_none()).map(|v| v.name.as_str()).collect();
    let dirs = if local { ctx.docker()?.volume_dirs(&named)? } else { BTreeMap::new() };
    let readable = |p: &str| std::fs::read_dir(p).is_ok();
    let mut trees = BTreeMap::new();
    for (name, form) in choose(volumes, local, &dirs, &readable) {
        match form {
            Form::Tree(path) => {
                ctx.ui.step(&format!("{name}: read by restic as a file tree at {path}"));
                trees.insert(name, path);
            }
            Form::Stream(why) => ctx.ui.step(&format!("{name}: in the stream form ({why})")),
        }
    }
    Ok(trees)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, bind: Option<&str>) -> VolumeChoice {
        VolumeChoice {
            key: name.into(),
            name: name.into(),
            role: crate::model::roles::Role::Uploads,
            priority: crate::model::roles::Priority::Critical,
            driver: "local".into(),
            labels: BTreeMap::new(),
            services: vec![],
            bind: bind.map(String::from),
            bind_mounts: vec![],
            stop_for_copy: vec![],
            unsure: None,
            holds: vec![],
        }
    }

    #[test]
    fn trees_only_where_the_files_can_be_read_here() {
        let (a, b, c, d) = (
            volume("p_media", None),
            volume("p_cache", None),
            volume("binds/1", Some("/srv/photos")),
            volume("binds/2", Some("/srv/locked")),
        );
        let dirs = BTreeMap::from([("p_media".to_string(), "/var/lib/docker/volumes/p_media/_data".to_string())]);
        let readable = |p: &str| p != "/srv/locked";
        let forms = choose(&[&a, &b, &c, &d], true, &dirs, &readable);
        assert_eq!(forms["p_media"], Form::Tree("/var/lib/docker/volumes/p_media/_data".into()));
        assert!(matches!(&forms["p_cache"], Form::Stream(why) if why.contains("plain directory")));
        assert_eq!(forms["binds/1"], Form::Tree("/srv/photos".into()));
        assert!(matches!(&forms["binds/2"], Form::Stream(why) if why.contains("permissions")));
        let remote = choose(&[&a, &c], false, &dirs, &readable);
        assert!(remote.values().all(|f| matches!(f, Form::Stream(why) if why.contains("DOCKER_HOST"))));
        let comma = volume("binds/3", Some("/srv/a,b"));
        assert!(matches!(&choose(&[&comma], true, &dirs, &readable)["binds/3"], Form::Stream(_)));
    }
}
