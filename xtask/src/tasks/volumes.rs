//! The `volumes` task: every mount of the stack's services. Named volumes with their role,
//! priority, driver, whether they exist, their size on disk (measured by the engine through a
//! throwaway helper container), the services that mount them and the containers using them
//! now; bind mounts the same way (`kind: bind`, the host path; system paths and configuration
//! marked as never copied); tmpfs and anonymous volumes as ephemeral.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::context::Ctx;
use crate::engine::docker::Docker;
use crate::model::compose::{self, Project};
use crate::model::{binds, roles};
use crate::ui::{human_bytes, table};

#[derive(Debug, Serialize)]
pub struct Inventory {
    pub project: String,
    pub volumes: Vec<VolumeReport>,
    /// Sum of the sizes of the volumes that exist; null offline.
    pub total_size_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct VolumeReport {
    /// "volume", "bind", "tmpfs" or "anonymous".
    pub kind: &'static str,
    /// For a bind: the host path (also its key and name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Why a backup never copies it (a system path, configuration, ephemeral), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub never: Option<String>,
    pub key: String,
    pub name: String,
    pub external: bool,
    pub role: &'static str,
    pub role_inferred: bool,
    /// Why it has this role: its label, `x-xtask.binds`, or what the inference saw.
    pub role_reason: String,
    pub priority: &'static str,
    pub priority_inferred: bool,
    pub driver: Option<String>,
    pub exists: Option<bool>,
    pub size_bytes: Option<u64>,
    pub mounts: Vec<MountReport>,
    /// Containers (running or not) that use the volume now; null offline.
    pub containers: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct MountReport {
    pub service: String,
    pub target: String,
    pub read_only: bool,
}

/// What the engine knows about one volume.
#[derive(Debug, Default)]
struct EngineVolume {
    driver: String,
    size: Option<u64>,
    containers: Vec<String>,
}

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Driver")]
    driver: String,
}

fn engine_facts(docker: &Docker, names: &[&str]) -> Result<BTreeMap<String, EngineVolume>> {
    let listed = docker.query(&docker.cmd(["volume", "ls", "--quiet"])).context("list the engine's volumes")?;
    let listed: BTreeSet<&str> = listed.lines().collect();
    let existing: Vec<&str> = names.iter().copied().filter(|n| listed.contains(n)).collect();
    let mut facts = BTreeMap::new();
    if existing.is_empty() {
        return Ok(facts);
    }
    let mut args = vec!["volume", "inspect"];
    args.extend(&existing);
    let inspected: Vec<Inspect> =
        serde_json::from_str(&docker.query(&docker.cmd(args)).context("inspect the volumes")?)
            .context("parse `docker volume inspect` output")?;
    for i in inspected {
        facts.insert(i.name, EngineVolume { driver: i.driver, ..EngineVolume::default() });
    }
    for (name, size) in crate::engine::staging::sizes(docker, &existing)? {
        facts.entry(name).or_default().size = Some(size);
    }
    for name in &existing {
        let filter = format!("volume={name}");
        let out = docker.query(&docker.cmd(["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"]))?;
        facts.entry(name.to_string()).or_default().containers = out.lines().map(str::to_string).collect();
    }
    Ok(facts)
}

/// Builds the inventory; engine facts are filled only when online.
pub fn inventory(ctx: &Ctx) -> Result<Inventory> {
    let project = ctx.project()?.clone();
    let names: Vec<&str> = project.volumes.iter().map(|v| v.name.as_str()).collect();
    let facts = match ctx.online() {
        Some(docker) => Some(engine_facts(docker, &names)?),
        None => None,
    };
    let mut volumes = Vec::new();
    for v in &project.volumes {
        let c = roles::classify(&project, v)?;
        let fact = facts.as_ref().and_then(|f| f.get(&v.name));
        let declared_driver = v.driver.clone().or_else(|| (!v.external).then(|| "local".to_string()));
        volumes.push(VolumeReport {
            kind: "volume",
            host_path: None,
            never: None,
            key: v.key.clone(),
            name: v.name.clone(),
            external: v.external,
            role: c.role.as_str(),
            role_inferred: c.role_inferred,
            role_reason: c.role_reason.clone(),
            priority: c.priority.as_str(),
            priority_inferred: c.priority_inferred,
            driver: fact.map(|f| f.driver.clone()).or(declared_driver),
            exists: facts.as_ref().map(|f| f.contains_key(&v.name)),
            size_bytes: fact.and_then(|f| f.size),
            mounts: project
                .mounts_of(&v.key)
                .map(|(s, m)| MountReport { service: s.name.clone(), target: m.target.clone(), read_only: m.read_only })
                .collect(),
            containers: facts.as_ref().map(|_| fact.map(|f| f.containers.clone()).unwrap_or_default()),
        });
    }
    volumes.extend(bind_reports(ctx, &ctx.binds()?)?);
    volumes.extend(ephemeral_reports(&project));
    let total_size_bytes = facts.as_ref().map(|_| volumes.iter().filter_map(|v| v.size_bytes).sum());
    Ok(Inventory { project: project.name, volumes, total_size_bytes })
}

fn bind_reports(ctx: &Ctx, binds: &[binds::Bind]) -> Result<Vec<VolumeReport>> {
    let sizes = match ctx.online() {
        Some(docker) => {
            let mut present = Vec::new();
            for b in binds.iter().filter(|b| b.never.is_none()) {
                if docker.host_dir_exists(&b.host_path)? {
                    present.push(b.host_path.as_str());
                }
            }
            Some(crate::engine::staging::sizes(docker, &present)?)
        }
        None => None,
    };
    Ok(binds
        .iter()
        .map(|b| VolumeReport {
            kind: "bind",
            host_path: Some(b.host_path.clone()),
            never: b.never.clone(),
            key: b.host_path.clone(),
            name: b.host_path.clone(),
            external: false,
            role: b.role_name(),
            role_inferred: b.inferred,
            role_reason: b.never.clone().unwrap_or_else(|| b.role_reason.clone()),
            priority: if b.never.is_some() { "none" } else { b.priority.as_str() },
            priority_inferred: b.inferred,
            driver: None,
            exists: match &sizes {
                Some(s) if b.never.is_none() => Some(s.contains_key(&b.host_path)),
                _ => Some(std::path::Path::new(&b.host_path).exists()),
            },
            size_bytes: sizes.as_ref().and_then(|s| s.get(&b.host_path).copied()),
            mounts: b
                .uses
                .iter()
                .map(|u| MountReport { service: u.service.clone(), target: u.target.clone(), read_only: u.read_only })
                .collect(),
            containers: None,
        })
        .collect())
}

fn ephemeral_reports(project: &Project) -> Vec<VolumeReport> {
    let mut out = Vec::new();
    for s in &project.services {
        for m in &s.mounts {
            let kind = match m.kind {
                compose::MountKind::Tmpfs => "tmpfs",
                compose::MountKind::Anonymous => "anonymous",
                _ => continue,
            };
            let name = format!("{}:{}", s.name, m.target);
            out.push(VolumeReport {
                kind,
                host_path: None,
                never: Some(format!("{kind}: ephemeral, gone with its container")),
                key: name.clone(),
                name,
                external: false,
                role: "ephemeral",
                role_inferred: true,
                role_reason: "tmpfs or anonymous: gone with its container".into(),
                priority: "none",
                priority_inferred: true,
                driver: None,
                exists: None,
                size_bytes: None,
                mounts: vec![MountReport { service: s.name.clone(), target: m.target.clone(), read_only: m.read_only }],
                containers: None,
            });
        }
    }
    out
}

/// The human table.
pub fn render(inv: &Inventory) -> String {
    let rows: Vec<Vec<String>> = inv
        .volumes
        .iter()
        .map(|v| {
            let mark = |inferred: bool| if inferred { "*" } else { "" };
            let users: Vec<String> = v
                .mounts
                .iter()
                .map(|m| format!("{}:{}{}", m.service, m.target, if m.read_only { " (ro)" } else { "" }))
                .collect();
            vec![
                format!("{}{}", v.name, if v.external { " (external)" } else { "" }),
                v.kind.to_string(),
                format!("{}{}", v.role, mark(v.role_inferred)),
                format!("{}{}", v.priority, mark(v.priority_inferred)),
                v.driver.clone().unwrap_or_else(|| "-".into()),
                match v.exists {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "?".into(),
                },
                v.size_bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
                users.join(", "),
                v.containers.as_ref().map(|c| c.join(", ")).unwrap_or_else(|| "?".into()),
            ]
        })
        .collect();
    let count = |k: &[&str]| inv.volumes.iter().filter(|v| k.contains(&v.kind)).count();
    let mut out = format!(
        "Project {}: {} volumes, {} binds, {} ephemeral mounts\n\n",
        inv.project,
        count(&["volume"]),
        count(&["bind"]),
        count(&["tmpfs", "anonymous"])
    );
    out.push_str(&table(
        &["VOLUME / PATH", "KIND", "ROLE", "PRIORITY", "DRIVER", "EXISTS", "SIZE", "MOUNTED BY", "CONTAINERS"],
        &rows,
    ));
    let existing = inv.volumes.iter().filter(|v| v.exists == Some(true)).count();
    match inv.total_size_bytes {
        Some(total) => out.push_str(&format!(
            "\nTotal: {} volumes, {existing} exist, {} on disk\n",
            inv.volumes.len(),
            human_bytes(total)
        )),
        None => {
            out.push_str(&format!("\nTotal: {} volumes (offline: existence and sizes unknown)\n", inv.volumes.len()))
        }
    }
    for v in inv.volumes.iter().filter(|v| v.kind == "bind") {
        if let Some(why) = &v.never {
            out.push_str(&format!("never copied: {}: {why}\n", v.name));
        }
    }
    if inv.volumes.iter().any(|v| v.kind == "volume" && (v.role_inferred || v.priority_inferred)) {
        out.push_str("* inferred (no xtask.role / xtask.priority label on the volume; see docs/volume-labels.md)\n");
    }
    for v in inv.volumes.iter().filter(|v| v.role_inferred && v.never.is_none()) {
        out.push_str(&format!("  {}: {} because {}\n", v.name, v.role, v.role_reason));
    }
    out
}

pub fn run(ctx: &Ctx, json: bool) -> Result<()> {
    let inv = inventory(ctx)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inv)?);
    } else {
        print!("{}", render(&inv));
    }
    Ok(())
}
