//! The `status` task: each service's state and health, the volume summary and the newest backup.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::context::Ctx;
use crate::tasks::volumes;
use crate::ui::{human_bytes, table};

#[derive(Debug, Serialize)]
pub struct Status {
    pub project: String,
    pub services: Vec<ServiceStatus>,
    pub volumes: volumes::Inventory,
    pub newest_backup: Option<BackupFile>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// Container state (running, exited...) or "not created".
    pub state: String,
    /// healthy, unhealthy, starting, or empty when the service has no health check.
    pub health: String,
    pub containers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupFile {
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// The newest archive of `project` in `dir` (files this tool wrote, read by their metadata).
pub fn newest_backup(dir: &Path, project: &str) -> Option<BackupFile> {
    let newest = crate::store::local::scan(dir, project).ok()?.into_iter().find(|a| a.problem.is_none())?;
    Some(BackupFile { path: newest.path, size_bytes: newest.size_bytes })
}

pub fn status(ctx: &Ctx) -> Result<Status> {
    let docker = ctx.docker()?;
    let inventory = volumes::inventory(ctx)?;
    let model = ctx.project()?.clone();
    let entries = crate::engine::services::ps(docker, &ctx.stack)?;
    let services = model
        .services
        .iter()
        .map(|s| {
            let mine: Vec<&crate::engine::services::PsEntry> = entries.iter().filter(|e| e.service == s.name).collect();
            ServiceStatus {
                service: s.name.clone(),
                state: mine.first().map(|e| e.state.clone()).unwrap_or_else(|| "not created".into()),
                health: mine.first().map(|e| e.health.clone()).unwrap_or_default(),
                containers: mine.iter().map(|e| e.name.clone()).collect(),
            }
        })
        .collect();
    Ok(Status {
        project: ctx.stack.name.clone(),
        services,
        volumes: inventory,
        newest_backup: newest_backup(&crate::store::local::default_dir(), &ctx.stack.name),
    })
}

pub fn run(ctx: &Ctx, json: bool) -> Result<()> {
    let st = status(ctx)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = st
        .services
        .iter()
        .map(|s| vec![s.service.clone(), s.state.clone(), s.health.clone(), s.containers.join(", ")])
        .collect();
    print!("Project {}\n\n{}", st.project, table(&["SERVICE", "STATE", "HEALTH", "CONTAINERS"], &rows));
    let v = &st.volumes;
    let existing = v.volumes.iter().filter(|x| x.exists == Some(true)).count();
    println!(
        "\nVolumes: {} declared, {existing} exist, {} on disk (details: cargo xtask volumes)",
        v.volumes.len(),
        human_bytes(v.total_size_bytes.unwrap_or(0))
    );
    match &st.newest_backup {
        Some(b) => println!("Newest backup: {} ({})", b.path.display(), human_bytes(b.size_bytes)),
        None => println!("Newest backup: none in {}", crate::store::local::default_dir().display()),
    }
    Ok(())
}
