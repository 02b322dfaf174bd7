//! The clean family: `clean` / `clean-containers` (containers and networks; every volume stays),
//! `clean-logs`, `clean-cache` (the volumes with that role, after a yes/no), `clean-all`
//! (containers, networks and every stack volume, after typing `DELETE EVERYTHING`, optionally
//! after a full backup). Targets come from the volumes' roles, never from names, and never
//! include a volume outside the stack or an external one. The same code generates the data
//! protection matrix in docs/data-protection.md.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::context::Ctx;
use crate::engine::docker::Docker;
use crate::lock::Lock;
use crate::model::compose::{Project, Stack};
use crate::model::roles::{self, Priority, Role, ROLES};
use crate::plan::Plan;
use crate::tasks::{backup, status};
use crate::ui::{confirm, human_bytes, Confirm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clean {
    Containers,
    Logs,
    Cache,
    All,
}

pub const ALL_CLEANS: [Clean; 4] = [Clean::Containers, Clean::Logs, Clean::Cache, Clean::All];
pub const DELETE_PHRASE: &str = "DELETE EVERYTHING";

impl Clean {
    pub fn command(self) -> &'static str {
        match self {
            Clean::Containers => "clean / clean-containers",
            Clean::Logs => "clean-logs",
            Clean::Cache => "clean-cache",
            Clean::All => "clean-all",
        }
    }

    /// The roles whose volumes this command removes.
    pub fn removes(self, role: Role) -> bool {
        match self {
            Clean::Containers => false,
            Clean::Logs => role == Role::Logs,
            Clean::Cache => role == Role::Cache,
            Clean::All => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub role: Role,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPlan {
    pub kind: Clean,
    pub targets: Vec<Target>,
    /// External volumes with a matching role: not the stack's to delete.
    pub kept_external: Vec<String>,
    pub steps: Plan,
}

/// Decides what `kind` removes, given which volumes exist now. Pure: builds commands only.
pub fn plan(docker: &Docker, stack: &Stack, project: &Project, existing: &[String], kind: Clean) -> Result<CleanPlan> {
    let mut targets = Vec::new();
    let mut kept_external = Vec::new();
    for v in &project.volumes {
        let c = roles::classify(project, v)?;
        if !kind.removes(c.role) {
            continue;
        }
        if v.external {
            kept_external.push(v.name.clone());
            continue;
        }
        if !existing.contains(&v.name) {
            continue;
        }
        let mut services: Vec<String> = project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect();
        services.dedup();
        targets.push(Target { name: v.name.clone(), role: c.role, services });
    }
    let mut steps = Plan::default();
    match kind {
        Clean::Containers | Clean::All => {
            steps = steps.step(
                format!("remove the containers and networks of stack {}", stack.name),
                docker.compose(stack, ["down", "--remove-orphans"]),
            );
        }
        Clean::Logs | Clean::Cache => {
            let mut users: Vec<String> = targets.iter().flat_map(|t| t.services.clone()).collect();
            users.sort();
            users.dedup();
            if !users.is_empty() {
                let mut args = vec!["rm".to_string(), "--stop".into(), "--force".into()];
                args.extend(users.iter().cloned());
                steps = steps.step(
                    format!(
                        "remove the containers of {} (they use the volumes; `cargo xtask up` recreates them)",
                        users.join(", ")
                    ),
                    docker.compose(stack, args),
                );
            }
        }
    }
    for t in &targets {
        steps = steps.step(
            format!("remove volume {} (role {})", t.name, t.role.as_str()),
            docker.cmd(["volume", "rm", t.name.as_str()]),
        );
    }
    Ok(CleanPlan { kind, targets, kept_external, steps })
}

/// The data protection matrix: which command removes or keeps which role, and what a default
/// backup does with it. Generated from `Clean::removes` and the roles' default priorities.
/// `gen-docs`: writes the protection matrix to docs/data-protection.md of this workspace.
pub fn write_docs() -> Result<std::path::PathBuf> {
    let path = crate::model::compose::workspace_root().join("docs/data-protection.md");
    std::fs::write(&path, matrix_markdown()).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

pub fn matrix_markdown() -> String {
    let mut out = String::from(
        "# Data protection matrix\n\n\
         Generated from the code that plans the cleans (`xtask/src/clean.rs`); a unit test fails when\n\
         this file and the code disagree. Regenerate with `cargo xtask gen-docs`.\n\n\
         Which command removes the volumes of which role (see docs/volume-labels.md), and what a\n\
         default `cargo xtask backup` does with them (bind mounts of that role alike). External\n\
         volumes are never removed.\n\n\
         Bind mounts (host directories) are never removed by any clean, whatever their role:\n\
         `clean-all` removes containers, networks and named volumes only, and says which binds it\n\
         left. A backup copies a bind of a critical or important role under `binds/<id>/`; a bind\n\
         that is a system path (`/var/run/docker.sock`, `/proc`, `/etc/…`) is never read, and a\n\
         single file or read-only mount is configuration, never copied.\n\n",
    );
    out.push_str("| role | default priority |");
    for c in ALL_CLEANS {
        out.push_str(&format!(" `{}` |", c.command()));
    }
    out.push_str(" default `backup` |\n| --- | --- |");
    for _ in ALL_CLEANS {
        out.push_str(" --- |");
    }
    out.push_str(" --- |\n");
    for role in ROLES {
        out.push_str(&format!("| {} | {} |", role.as_str(), role.default_priority().as_str()));
        for c in ALL_CLEANS {
            out.push_str(if c.removes(role) { " **removed** |" } else { " kept |" });
        }
        let backup = match (role, role.default_priority()) {
            (Role::Database, _) => "dumped (its engine's dump), volume or bind not copied",
            (_, Priority::Critical | Priority::Important) => "copied",
            _ => "skipped (`--all` or `--volume` to include)",
        };
        out.push_str(&format!(" {backup} |\n"));
    }
    out.push_str(
        "\nConfirmation: `clean` and `clean-containers` remove no data and do not ask; `clean-logs` and\n\
         `clean-cache` ask yes/no (`--yes` for scripts); `clean-all` needs the typed phrase\n\
         `DELETE EVERYTHING` (without a terminal: `--confirm \"DELETE EVERYTHING\"`; `--yes` is not\n\
         enough) and can take a full backup first (`--backup-first`, which aborts the clean if the\n\
         backup fails). Every clean supports `--dry-run`.\n",
    );
    out
}

pub struct Options {
    pub yes: bool,
    pub confirm: Option<String>,
    pub backup_first: bool,
    pub dir: std::path::PathBuf,
}

pub fn run(ctx: &Ctx, kind: Clean, opts: &Options) -> Result<()> {
    let docker = ctx.docker()?;
    let project = ctx.project()?.clone();
    let existing: Vec<String> =
        docker.query(&docker.cmd(["volume", "ls", "--quiet"]))?.lines().map(str::to_string).collect();
    let plan = plan(docker, &ctx.stack, &project, &existing, kind)?;
    let names: Vec<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
    let sizes = crate::engine::staging::sizes(docker, &names)?;
    let text = describe(&plan, &sizes, &opts.dir, &ctx.stack.name);
    if docker.dry_run() {
        // The text lists every step and its command already: print it once, run nothing.
        print!("{text}");
        return Ok(());
    }
    match kind {
        Clean::Containers => {}
        Clean::Logs | Clean::Cache if plan.targets.is_empty() => {}
        Clean::Logs | Clean::Cache => confirm(&text, Confirm::YesNo { yes_flag: opts.yes })?,
        Clean::All => confirm(
            &text,
            Confirm::Phrase { phrase: DELETE_PHRASE, given: opts.confirm.as_deref(), flag: "--confirm" },
        )?,
    }
    let dir = crate::store::local::prepare_dir(&opts.dir)?;
    // Held until the clean is done: no backup or restore of the project runs meanwhile.
    let lock = Lock::acquire(&dir, &ctx.stack.name, kind.command())?;
    docker.remove_orphan_helpers()?;
    if opts.backup_first {
        ctx.ui.step("full backup first (--backup-first)");
        let bopts =
            backup::Options { tag: Some("pre-clean".into()), ..backup::Options::new(backup::Kind::Full, dir.clone()) };
        let s =
            backup::take(ctx, &bopts, &lock).context("the backup before the clean failed, so nothing was removed")?;
        println!("backup: {}", s.path.display());
    }
    // What was confirmed is done as far as it safely can: a step that fails (a network the engine
    // cannot remove, say) does not keep the others from running.
    let failed = plan.steps.execute_all(docker, &ctx.ui);
    let volume_failed = |t: &Target| failed.iter().any(|(s, _)| s.cmd.args.last() == Some(&t.name));
    for t in plan.targets.iter().filter(|t| !volume_failed(t)) {
        println!("removed volume {} ({})", t.name, t.role.as_str());
    }
    if kind == Clean::Cache && !plan.targets.is_empty() {
        println!("the cache comes back empty on the next `cargo xtask up` and refills as the application uses it");
    }
    if plan.targets.is_empty() && kind != Clean::Containers {
        println!("no volume to remove");
    }
    if kind != Clean::Containers {
        for b in ctx.binds()?.iter().filter(|b| b.never.is_none()) {
            println!("kept bind mount {} ({}): a clean never removes host directories", b.host_path, b.role_name());
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let left: Vec<String> = failed.iter().map(|(s, e)| format!("\n  - {}: {e:#}\n      {}", s.what, s.cmd)).collect();
    bail!(
        "{} of {} steps failed, the others were done; left:{}\nfix what is named, then run `cargo xtask {}` again \
         to finish",
        failed.len(),
        plan.steps.steps.len(),
        left.concat(),
        kind.command()
    )
}

fn describe(plan: &CleanPlan, sizes: &BTreeMap<String, u64>, dir: &Path, project: &str) -> String {
    let mut out = String::new();
    if plan.kind == Clean::All {
        out.push_str(&format!(
            "\n!!! WARNING: clean-all deletes the containers, networks and EVERY volume of stack {project} !!!\n\n"
        ));
    } else {
        out.push_str(&format!("\n{} on stack {project}:\n", plan.kind.command()));
    }
    for t in &plan.targets {
        let size = sizes.get(&t.name).map(|s| human_bytes(*s)).unwrap_or_else(|| "?".into());
        out.push_str(&format!("  - volume {} ({}, {size})\n", t.name, t.role.as_str()));
    }
    for e in &plan.kept_external {
        out.push_str(&format!("  - volume {e} is external: kept\n"));
    }
    if plan.kind == Clean::All {
        match status::newest_backup(dir, project) {
            Some(b) => {
                out.push_str(&format!("\nNewest backup: {} ({})\n", b.path.display(), human_bytes(b.size_bytes)))
            }
            None => out.push_str(&format!("\nThere is NO backup in {} (use --backup-first)\n", dir.display())),
        }
    }
    out.push_str("\nSteps:\n");
    out.push_str(&plan.steps.describe());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::compose::Selection;

    fn setup() -> (Stack, Project, Vec<String>) {
        let stack = Selection::default().resolve(&BTreeMap::new()).unwrap();
        let project = stack.parse_offline().unwrap();
        let existing = project.volumes.iter().map(|v| v.name.clone()).chain(["someone-elses".to_string()]).collect();
        (stack, project, existing)
    }

    fn targets(kind: Clean) -> Vec<String> {
        let (stack, project, existing) = setup();
        plan(&Docker::for_plans(), &stack, &project, &existing, kind)
            .unwrap()
            .targets
            .into_iter()
            .map(|t| t.name)
            .collect()
    }

    #[test]
    fn each_clean_targets_its_roles_only() {
        assert!(targets(Clean::Containers).is_empty());
        assert_eq!(targets(Clean::Logs), ["app-proxy-logs"]);
        assert_eq!(targets(Clean::Cache), ["app-redis-data"]);
        let all = targets(Clean::All);
        assert_eq!(all.len(), 6);
        assert!(!all.contains(&"someone-elses".to_string()), "never a volume outside the stack");
    }

    #[test]
    fn plans_stop_users_first_and_never_remove_missing_volumes() {
        let (stack, project, _) = setup();
        let p = plan(&Docker::for_plans(), &stack, &project, &["app-redis-data".into()], Clean::All).unwrap();
        let cmds: Vec<String> = p.steps.steps.iter().map(|s| s.cmd.to_string()).collect();
        assert!(cmds[0].ends_with("down --remove-orphans"), "{cmds:?}");
        assert_eq!(cmds[1], "docker volume rm app-redis-data");
        assert_eq!(cmds.len(), 2);
        let p = plan(&Docker::for_plans(), &stack, &project, &["app-redis-data".into()], Clean::Cache).unwrap();
        assert!(p.steps.steps[0].cmd.to_string().ends_with("rm --stop --force redis"));
    }

    #[test]
    fn the_data_protection_matrix_in_docs_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/data-protection.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            doc == matrix_markdown(),
            "docs/data-protection.md disagrees with xtask/src/clean.rs: run `cargo xtask gen-docs` and commit"
        );
    }
}
