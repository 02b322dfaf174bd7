//! Staged volume restore: a volume's new content is extracted into a hidden directory inside
//! the same volume (`.xtask-staging-PID`, same filesystem) while its services keep running; only
//! when every volume is staged are the services stopped and each volume swapped by renames: the
//! current top-level entries move into `.xtask-old-PID`, the staged ones into the root, the old
//! ones are removed. Before the swap a failure or a signal just removes the staging: the volume
//! was never touched. The swap is idempotent (`.xtask-swap-PID` marks the end of its first half),
//! so a swap cut off by a crash is finished by the next restore, which also removes the staging
//! of restores that died before their swap. The names are reserved: archives may not hold them
//! and backups leave them out.

use anyhow::{Context, Result};

use crate::context::Ctx;
use crate::engine::docker::{Docker, Helper};

/// The reserved names one restore (process) uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub staging: String,
    pub old: String,
    pub swap: String,
}

impl Names {
    pub fn of(pid: u32) -> Names {
        Names {
            staging: format!(".xtask-staging-{pid}"),
            old: format!(".xtask-old-{pid}"),
            swap: format!(".xtask-swap-{pid}"),
        }
    }
}

/// Run in the volume's root with the three names as $1 $2 $3. A fixed script: nothing from an
/// archive is in it or its arguments.
const SWAP: &str = r#"set -e
cd /v/0
s="$1"; o="$2"; k="$3"
mkdir -p "$o"
if [ -d "$s" ]; then
  if [ ! -e "$k" ]; then
    for e in * .[!.]* ..?*; do
      if [ ! -e "$e" ] && [ ! -L "$e" ]; then continue; fi
      case "$e" in "$s"|"$o"|"$k") continue ;; esac
      mv -f -- "$e" "$o/"
    done
    : > "$k"
  fi
  t=$(stat -c %Y "$s"); m=$(stat -c %a "$s"); u=$(stat -c %u:%g "$s")
  for e in "$s"/* "$s"/.[!.]* "$s"/..?*; do
    if [ ! -e "$e" ] && [ ! -L "$e" ]; then continue; fi
    mv -f -- "$e" ./
  done
  rmdir "$s"
  chown "$u" . && chmod "$m" .
  rm -rf "$o" "$k"
  touch -d "@$t" .
else
  rm -rf "$o" "$k"
fi
"#;

/// Swaps the staged content of `target` into place (or finishes a swap that was cut off).
pub fn swap(docker: &Docker, target: &str, names: &Names) -> Result<()> {
    let mut h = Helper::writer(target, &["sh", "-c", SWAP, "sh", &names.staging, &names.old, &names.swap]);
    h.stdin = false;
    docker.apply(&h.to_cmd()).with_context(|| format!("swap the restored content into volume {target}"))
}

/// Removes the staging of `target` (before its swap began): the volume is as it was.
pub fn discard(docker: &Docker, target: &str, names: &Names) -> Result<()> {
    let path = format!("/v/0/{}", names.staging);
    let mut h = Helper::writer(target, &["rm", "-rf", &path]);
    h.stdin = false;
    docker.apply(&h.to_cmd()).with_context(|| format!("remove the staged copy in volume {target}"))
}

/// Leftovers of restores whose process is gone, in `volumes`: each volume with the pid and
/// whether its swap had begun (an `.xtask-old-PID` exists).
fn leftovers(docker: &Docker, volumes: &[&str]) -> Result<Vec<(String, u32, bool)>> {
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let cmd =
        docker.helper_read_only(volumes, &["find", "/v", "-mindepth", "2", "-maxdepth", "2", "-name", ".xtask-*"]);
    let mut found = Vec::new();
    for line in docker.query(&cmd).context("look for what interrupted restores left")?.lines() {
        let Some(rest) = line.strip_prefix("/v/") else { continue };
        let Some((idx, name)) = rest.split_once('/') else { continue };
        let (Ok(idx), Some((kind, pid))) = (idx.parse::<usize>(), name.rsplit_once('-')) else { continue };
        let (Some(volume), Ok(pid)) = (volumes.get(idx), pid.parse::<u32>()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let swapping = kind == ".xtask-old";
        match found.iter_mut().find(|(v, p, _): &&mut (String, u32, bool)| v == volume && *p == pid) {
            Some(entry) => entry.2 |= swapping,
            None => found.push((volume.to_string(), pid, swapping)),
        }
    }
    Ok(found)
}

/// Finishes the swaps and removes the staging that interrupted restores left in `volumes`;
/// says what it did.
pub fn recover(ctx: &Ctx, volumes: &[&str]) -> Result<()> {
    let docker = ctx.docker()?;
    for (volume, pid, swapping) in leftovers(docker, volumes)? {
        let names = Names::of(pid);
        if swapping {
            ctx.ui.step(&format!("volume {volume}: finish the swap an interrupted restore (pid {pid}) had begun"));
            swap(docker, &volume, &names)?;
        } else {
            ctx.ui.step(&format!("volume {volume}: remove the staged copy an interrupted restore (pid {pid}) left"));
            discard(docker, &volume, &names)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_reserved_and_per_process() {
        let n = Names::of(42);
        assert_eq!(
            (n.staging.as_str(), n.old.as_str(), n.swap.as_str()),
            (".xtask-staging-42", ".xtask-old-42", ".xtask-swap-42")
        );
        for name in [&n.staging, &n.old, &n.swap] {
            assert!(crate::archive::grammar::RESERVED.iter().any(|r| name.starts_with(r)), "{name}");
        }
    }
}
