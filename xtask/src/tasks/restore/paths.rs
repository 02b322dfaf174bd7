//! `restore ARCHIVE --path VOLUME/PATH …` into the live volume: single files or directories put
//! back with every rule of a full restore. The plan is the full restore's ([`plan`] with the
//! volumes the paths lie in: declared targets only, binds only where the compose file puts
//! them, refused items named); the archive is verified whole first ([`Verified::check`]) and
//! only the entries asked for are extracted (each matched again against what was verified)
//! into the volume's `.xtask-staging-PID`, while its services run. A safety backup of the
//! volume is taken, then only the users of that volume are stopped and each path is swapped
//! in by renames: the live one moved into `.xtask-trash-PID`, the staged one into its place
//! (its missing parent directories created); nothing else in the volume is touched. Services
//! that do not come back (or not healthy) take the way back: the old paths renamed back. The
//! undo command restores the same paths from the safety backup. The names are the reserved
//! ones of the full restore, so backups leave them out and a later restore removes what a
//! killed one left (a kill -9 inside the swap's renames can leave a path missing: the undo
//! command, printed before the swap, puts it back).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::execute::{safety_backup, SafetyTaken};
use super::*;
use crate::archive::extract;
use crate::archive::listing::{self, Selector};
use crate::engine::services::{self, ServiceGuard};
use crate::signals;

/// The swap of the paths given as arguments after the staging's and the trash's names, run in
/// a helper with only the volume mounted at `/v/0` (a fixed script: the paths are arguments,
/// never script text). Refuses (exit 98, nothing changed) unless the staging is a real
/// directory holding every path, the trash name is free, and every parent of a path in the
/// live volume is a real directory or missing (never a link).
const PATH_SWAP: &str = r#"set -e
s="$1"; t="$2"; shift 2
cd /v/0
if [ ! -d "$s" ] || [ -L "$s" ] || [ -e "$t" ] || [ -L "$t" ]; then
  echo "xtask: the staged copy $s is missing, or $t exists: nothing was swapped" >&2; exit 98
fi
for p in "$@"; do
  [ -e "$s/$p" ] || [ -L "$s/$p" ] || { echo "xtask: $p was not staged: nothing was swapped" >&2; exit 98; }
  d=$(dirname -- "$p")
  while [ "$d" != . ]; do
    if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
      echo "xtask: $d in the volume is not a directory (a link?): nothing was swapped" >&2; exit 98
    fi
    d=$(dirname -- "$d")
  done
done
mkdir "$t"
for p in "$@"; do
  d=$(dirname -- "$p")
  if [ -e "./$p" ] || [ -L "./$p" ]; then mkdir -p -- "$t/$d"; mv -f -- "./$p" "$t/$p"; fi
  mkdir -p -- "./$d"
  mv -f -- "$s/$p" "./$p"
done
rm -rf -- "$s"
"#;

/// The way back of [`PATH_SWAP`]: each path's old content renamed back from the trash (a path
/// that did not exist before is removed).
const PATH_BACK: &str = r#"set -e
t="$1"; shift
cd /v/0
for p in "$@"; do
  rm -rf -- "./$p"
  if [ -e "$t/$p" ] || [ -L "$t/$p" ]; then mv -f -- "$t/$p" "./$p"; fi
done
rm -rf -- "$t"
"#;

/// The paths asked for, per target: (archived volume, target, paths below its root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsIn {
    pub archived: String,
    pub target: String,
    pub rels: Vec<String>,
}

/// Each path as (archived volume name, path below its root), a path below another one left
/// out. Refuses a dump, a volume's root (restore it with `--only VOLUME`) and a name that is
/// not UTF-8 (it travels to a helper as an argument).
pub fn split_paths(selector: &Selector) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let roots = selector.roots();
    for root in roots {
        if roots.iter().any(|r| r != root && listing::is_at_or_below(root, r)) {
            continue;
        }
        let text = std::str::from_utf8(root).context("a --path that is not UTF-8")?;
        let parts: Vec<&str> = text.splitn(3, '/').collect();
        let volume = match parts[..] {
            ["volumes", v, _] => v.to_string(),
            ["binds", id, _] => crate::archive::bind_name(id),
            ["volumes" | "binds", _] => {
                bail!("--path {}: a whole volume; restore it with --only {}", listing::shown(root), parts[1])
            }
            _ => bail!(
                "--path {}: only files and directories of volumes and binds are restored by path \
                 (a database with --only db:SERVICE)",
                listing::shown(root)
            ),
        };
        out.entry(volume).or_default().push(parts[2].to_string());
    }
    Ok(out)
}

/// Decides a path restore: the archive opened and its metadata read, the full restore's plan
/// for the volumes the paths lie in (every refusal named, nothing skipped), each target there.
fn prepare(ctx: &Ctx, opts: &Options, selector: &Selector) -> Result<(Prepared, Vec<PathsIn>)> {
    let docker = ctx.docker()?;
    let dir = prepare_dir(&opts.dir)?;
    let mut src = open_source(ctx, opts, &dir)?;
    let meta = archive::read_metadata_from(&src).with_context(|| format!("read {}", src.path.display()))?;
    let by_volume = split_paths(selector)?;
    let only: Vec<String> = by_volume.keys().cloned().collect();
    let plan = plan(&ctx.model()?.0, &StackBinds::of(ctx, &opts.dir)?, &meta, &only, opts.force)?;
    plan.check_refused(&src.path, false)?;
    refuse_linked_binds(&plan)?;
    // A tree-form archive in restic: only the trees of these volumes are read.
    src.only_volumes(plan.volumes.iter().map(|v| v.archived.clone()).collect());
    let meta = src.as_read(meta);
    let existing = docker.volume_names()?;
    let mut paths = Vec::new();
    for v in &plan.volumes {
        if !target_exists(docker, &existing, &v.target)? {
            bail!("{} does not exist: a path is restored into an existing volume (restore it whole)", v.target);
        }
        let rels = by_volume.get(&v.archived).cloned().unwrap_or_default();
        paths.push(PathsIn { archived: v.archived.clone(), target: v.target.clone(), rels });
    }
    let present = plan.volumes.iter().map(|v| v.target.clone()).collect();
    let path = src.path.clone();
    Ok((Prepared { path, meta, plan, present, src, verified: None, dir }, paths))
}

/// What a path restore replaces, for the confirmation and `--dry-run`.
fn describe(p: &Prepared, paths: &[PathsIn]) -> String {
    let mut out = format!("\nRestore paths into stack {} from {}\n", p.plan.project, p.path.display());
    for t in paths {
        let users = p.plan.volumes.iter().find(|v| v.target == t.target).map(|v| v.services.join(", "));
        out.push_str(&format!(
            "  volume {} (its users stopped for the swap: {}):\n",
            t.target,
            users.unwrap_or_default()
        ));
        for rel in &t.rels {
            out.push_str(&format!("    {} replaced\n", listing::escaped(rel.as_bytes())));
        }
    }
    out
}

/// `cargo xtask restore ARCHIVE --path VOLUME/PATH …`: see the module's header.
pub fn run(ctx: &Ctx, opts: &Options, paths: &[String], dry_run: bool) -> Result<()> {
    let selector = Selector::parse(paths)?;
    let (p, targets) = prepare(ctx, opts, &selector)?;
    if dry_run {
        print!("{}", describe(&p, &targets));
        return Ok(());
    }
    let text = if opts.yes { String::new() } else { describe(&p, &targets) };
    ui::confirm(&text, ui::Confirm::YesNo { yes_flag: opts.yes })?;
    let lock = Lock::acquire(&prepare_dir(&opts.dir)?, &p.plan.project, "restore")?;
    lock.covers(&p.dir, &p.plan.project)?;
    ctx.ui.step(&format!("verify {}", p.path.display()));
    let verified = Verified::check(p.src.duplicate()?, Rules { allow_special: opts.allow_special })?;
    // The plan (which bind or volume each path is written into) was made from a first read.
    if verified.meta() != &p.meta {
        bail!("{} changed since its metadata was read: nothing was changed", p.path.display());
    }
    for root in selector.roots() {
        if !verified.report.manifest.contains_key(root) {
            bail!("{} holds no entry {}: nothing was changed", p.path.display(), listing::shown(root));
        }
    }
    let docker = ctx.docker()?;
    let names: Vec<&str> = targets.iter().map(|t| t.target.as_str()).collect();
    crate::engine::staging::Survey::take(docker, &ctx.ui, &names)?;
    let staging = crate::engine::staging::Names::of(std::process::id());
    signals::install()?;
    let mut guard = ServiceGuard::new(docker, &ctx.stack);
    guard.remember()?;
    let staged = stage(ctx, &verified, &selector, &targets, &staging.staging);
    let safety = staged.and_then(|()| match opts.no_safety_backup {
        true => Ok(SafetyTaken { safety: None, stopped_at: None }),
        false => safety_backup(ctx, &p, &lock, &mut guard),
    });
    let SafetyTaken { safety, .. } = match safety {
        Ok(s) => s,
        Err(e) => {
            discard(ctx, &targets, &staging);
            let e = e.context("nothing was replaced: the volumes are as they were");
            return Err(match guard.restore(&ctx.ui) {
                Ok(()) => e,
                Err(r) => e.context(format!("and putting the services back failed: {r:#}")),
            });
        }
    };
    let undo = safety.as_ref().map(|s| undo(ctx, &s.path, paths));
    if let Some(u) = &undo {
        ctx.ui.step(&format!("should this restore be cut off (kill -9), undo it with: {u}"));
    }
    swap_and_start(ctx, &p, &targets, &staging, guard, undo.as_deref())?;
    println!("restored {} path(s) into {} from {}", paths.len(), names.join(", "), p.path.display());
    match undo {
        Some(u) => println!("to undo this restore: {u}"),
        None => println!("no safety backup (--no-safety-backup): this restore cannot be undone"),
    }
    Ok(())
}

/// The undo command: the same paths from the safety backup.
fn undo(ctx: &Ctx, safety: &Path, paths: &[String]) -> String {
    let quoted = |o: &str| format!("'{}'", o.replace('\'', "'\\''"));
    let each: String = paths.iter().map(|p| format!(" --path {}", quoted(p))).collect();
    format!("{}{each}", undo_command(ctx, safety, &[]))
}

/// Extracts the paths asked for into each target's staging directory (services running).
fn stage(ctx: &Ctx, v: &Verified, selector: &Selector, targets: &[PathsIn], staging: &str) -> Result<()> {
    let docker = ctx.docker()?;
    let under = format!("{staging}/");
    for t in targets {
        signals::check()?;
        ctx.ui.step(&format!("stage {} of volume {} (its services keep running)", t.rels.join(", "), t.target));
        let wanted = |n: &[u8]| selector.matches(n);
        extract::fill_volume_selected(docker, v, &t.archived, &t.target, under.as_bytes(), &wanted, &mut |_| {})
            .with_context(|| format!("stage the paths of volume {}", t.target))?;
    }
    Ok(())
}

/// Removes this restore's staging and trash from each target (nothing was swapped).
fn discard(ctx: &Ctx, targets: &[PathsIn], names: &crate::engine::staging::Names) {
    let Ok(docker) = ctx.docker() else { return };
    let _calm = signals::Suspended::begin();
    for t in targets {
        let (s, tr) = (format!("/v/0/{}", names.staging), format!("/v/0/{}", names.trash));
        if let Err(e) = docker.apply(&docker.helper_writer(&t.target, &["rm", "-rf", &s, &tr])) {
            eprintln!("warning: remove the staged paths in {}: {e:#}; the next restore removes them", t.target);
        }
    }
}

/// Runs `script` with `args` then the target's paths in a helper on the target.
fn on_target(docker: &crate::engine::docker::Docker, t: &PathsIn, script: &str, args: &[&str]) -> Result<()> {
    let mut command = vec!["sh", "-c", script, "sh"];
    command.extend_from_slice(args);
    command.extend(t.rels.iter().map(String::as_str));
    docker.apply(&docker.helper_writer(&t.target, &command)).with_context(|| format!("volume {}", t.target))
}

/// Stops the users, swaps every path in, starts them and waits for their health; on a failure
/// after the swap began, the old paths go back (and the services with them).
fn swap_and_start(
    ctx: &Ctx,
    p: &Prepared,
    targets: &[PathsIn],
    names: &crate::engine::staging::Names,
    mut guard: ServiceGuard,
    undo: Option<&str>,
) -> Result<()> {
    let docker = ctx.docker()?;
    let mut users: Vec<String> = p.plan.volumes.iter().flat_map(|v| v.services.clone()).collect();
    users.sort();
    users.dedup();
    refuse_linked_binds(&p.plan)?;
    guard.stop_for(&users, "for the swap", &ctx.ui)?;
    let mut swapped = Vec::new();
    let done = (|| -> Result<Vec<String>> {
        let calm = signals::Suspended::begin();
        for t in targets {
            ctx.ui.step(&format!("swap {} into volume {}", t.rels.join(", "), t.target));
            on_target(docker, t, PATH_SWAP, &[&names.staging, &names.trash])?;
            swapped.push(t);
        }
        super::execute::fault_after("path-swap")?;
        drop(calm);
        let running = guard.start_stopped(&ctx.ui)?;
        services::wait_until_up(docker, &running, &ctx.ui).context("the services did not come back healthy")?;
        Ok(running)
    })();
    if let Err(e) = done {
        let _calm = signals::Suspended::begin();
        eprintln!("the restore failed or was interrupted: taking the way back");
        let back: Result<()> = swapped.iter().try_for_each(|t| on_target(docker, t, PATH_BACK, &[&names.trash]));
        discard(ctx, targets, names);
        let restarted = guard.restore_checked(&ctx.ui);
        return Err(match (back, restarted) {
            (Ok(()), Ok(s)) => e.context(format!("the restore failed; the old paths are back; {s}")),
            (Err(b), _) | (_, Err(b)) => e.context(format!(
                "the restore failed and so did the way back ({b:#}); {}",
                undo.map_or("no safety backup".to_string(), |u| format!("undo with: {u}"))
            )),
        });
    }
    for t in targets {
        let trash = format!("/v/0/{}", names.trash);
        if let Err(e) = docker.apply(&docker.helper_writer(&t.target, &["rm", "-rf", &trash])) {
            eprintln!("warning: the old paths in {} were not removed ({e:#}); the next restore removes them", t.target);
        }
    }
    ctx.ui.step(&guard.restore_checked(&ctx.ui).context("the paths are in place, but")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_by_volume_and_refuse_roots_and_dumps() {
        let s = Selector::parse(&["media/a/b".into(), "media/a".into(), "binds/srv-x/conf".into(), "media/z".into()]);
        let split = split_paths(&s.unwrap()).unwrap();
        let expected = BTreeMap::from([
            ("binds/srv-x".to_string(), vec!["conf".to_string()]),
            ("media".to_string(), vec!["a".to_string(), "z".to_string()]),
        ]);
        assert_eq!(split, expected, "a path below another is part of it");
        for (bad, says) in [("media", "--only media"), ("databases/db/app.sql", "--only db:SERVICE")] {
            let e = split_paths(&Selector::parse(&[bad.into()]).unwrap()).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
