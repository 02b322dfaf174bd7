//! Staged volume restore: a volume's new content is extracted into a hidden directory inside
//! the same volume (`.xtask-staging-PID`, same filesystem) while its services keep running; only
//! when every volume is staged are the services stopped and each volume swapped by renames: the
//! current top-level entries move into `.xtask-old-PID`, the staged ones into the root (both in
//! batches, one `mv` per thousands of entries), and `.xtask-old-PID` becomes `.xtask-trash-PID`,
//! which is removed once the services are back (its removal takes time that is no downtime). A
//! swap refuses to begin unless every volume has its staged copy. Before the swap a failure or a signal just removes the staging: the volume
//! was never touched. The swap is idempotent (`.xtask-swap-PID` marks the end of its first half),
//! so a swap cut off by a crash is finished by the next restore, which also removes the staging
//! of restores that died before their swap. The names are reserved: archives may not hold them
//! and backups leave them out.

use anyhow::{Context, Result};

use super::docker::{Docker, Helper};
use crate::ui::Ui;

/// Top-level names in a volume that a restore uses while it swaps content in (`.xtask-staging-PID`,
/// `.xtask-old-PID`, `.xtask-swap-PID`, `.xtask-trash-PID`): an archive may not hold them
/// (`archive::grammar`); backups leave them out.
pub const RESERVED: [&str; 4] = [".xtask-staging-", ".xtask-old-", ".xtask-swap-", ".xtask-trash-"];

/// The reserved names one restore (process) uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub staging: String,
    pub old: String,
    pub swap: String,
    pub trash: String,
}

impl Names {
    pub fn of(pid: u32) -> Names {
        Names {
            staging: format!(".xtask-staging-{pid}"),
            old: format!(".xtask-old-{pid}"),
            swap: format!(".xtask-swap-{pid}"),
            trash: format!(".xtask-trash-{pid}"),
        }
    }
}

/// Run with the four names as $1 $2 $3 $4 and `fresh` or `finish` as $5, in the root of the one
/// volume mounted at `/v/0` (each target has a helper of its own: a link a service planted in its
/// volume can lead nowhere but into that same volume). A fixed script: nothing from an archive is
/// in it or its arguments. A fresh swap (a restore's, its services stopped) first requires the
/// staged copy to be a real directory and none of the other reserved names to exist (a service
/// could have planted a link there while it ran): else nothing changes (exit 98). Finishing one
/// an interrupted restore began takes what is there, never through a link. Entries move in
/// batches (`find -exec mv -t … {} +`): downtime grows with the entries only by a rename each.
const SWAP: &str = r#"set -e
s="$1"; o="$2"; k="$3"; t="$4"
cd /v/0
if [ "$5" = fresh ]; then
  if [ ! -d "$s" ] || [ -L "$s" ]; then
    echo "xtask: the staged copy $s is missing or not a directory (removed or replaced since it was made?): nothing was swapped" >&2
    exit 98
  fi
  for n in "$o" "$k" "$t"; do
    if [ -e "$n" ] || [ -L "$n" ]; then
      echo "xtask: $n exists before the swap began (planted by a service of the volume?): nothing was swapped" >&2
      exit 98
    fi
  done
fi
for n in "$o" "$k" "$t" "$s"; do
  if [ -L "$n" ]; then rm -f "$n"; fi
done
if [ -d "$s" ]; then
  [ -d "$o" ] || mkdir "$o"
  if [ ! -e "$k" ]; then
    find . -mindepth 1 -maxdepth 1 ! -name "$s" ! -name "$o" ! -name "$k" ! -name "$t" -exec mv -f -t "$o" -- {} +
    : > "$k"
  fi
  w=$(stat -c %Y "$s"); m=$(stat -c %a "$s"); u=$(stat -c %u:%g "$s")
  find "$s" -mindepth 1 -maxdepth 1 -exec mv -f -t . -- {} +
  rmdir "$s"
  chown "$u" . && chmod "$m" .
  if [ -e "$t" ]; then rm -rf "$o"; else mv "$o" "$t"; fi
  rm -f "$k"
  touch -d "@$w" .
else
  if [ -d "$o" ]; then if [ -e "$t" ]; then rm -rf "$o"; else mv "$o" "$t"; fi; fi
  rm -f "$k"
fi
"#;

/// Swaps the staged content of each of `targets` into place, each in a helper of its own with
/// only that target mounted, all at once (the services are stopped meanwhile, so the window
/// stays one container's start). Every target is tried; the failures are returned together (a
/// refused one is unchanged: exit 98).
pub fn swap(docker: &Docker, targets: &[&str], names: &Names) -> Result<()> {
    run_swap(docker, targets, names, "fresh")
}

/// Finishes the swaps an interrupted restore began (or cleans what it left) in `targets`.
fn finish_swap(docker: &Docker, targets: &[&str], names: &Names) -> Result<()> {
    run_swap(docker, targets, names, "finish")
}

fn run_swap(docker: &Docker, targets: &[&str], names: &Names, mode: &str) -> Result<()> {
    let command = ["sh", "-c", SWAP, "sh", &names.staging, &names.old, &names.swap, &names.trash, mode];
    let failed: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = targets
            .iter()
            .map(|target| {
                let h = Helper::writers(&[target], &command);
                (target, scope.spawn(move || docker.apply(&h.to_cmd())))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(target, run)| match run.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{target}: {e:#}")),
                Err(_) => Some(format!("{target}: the swap's thread panicked")),
            })
            .collect()
    });
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("swap the restored content into {}: {}", targets.join(", "), failed.join("; "))
}

/// Removes the staging of `target` (before its swap began) and any old content a finished swap
/// left to remove: the volume is as it was, or as the swap made it.
pub fn discard(docker: &Docker, target: &str, names: &Names) -> Result<()> {
    let (staged, trash) = (format!("/v/0/{}", names.staging), format!("/v/0/{}", names.trash));
    let mut h = Helper::writer(target, &["rm", "-rf", &staged, &trash]);
    h.stdin = false;
    docker.apply(&h.to_cmd()).with_context(|| format!("remove the staged copy in volume {target}"))
}

/// Removes the old content the swaps moved aside in `targets`. The services run again
/// meanwhile, and one of them may turn a directory of its own old content into a link while
/// `rm` walks it: so each target gets a helper of its own with nothing else mounted, and a link
/// can lead only into that same volume (which its service could change anyway), never into
/// another restored volume or bind. Every target is tried; the failures are returned together.
pub fn empty_trash(docker: &Docker, targets: &[&str], names: &Names) -> Result<()> {
    // The root keeps the mtime it has (the archived one, or a service's change since).
    let script = "set -e; if [ -e \"/v/0/$1\" ] || [ -L \"/v/0/$1\" ]; then w=$(stat -c %Y /v/0); \
                  rm -rf \"/v/0/$1\"; touch -d \"@$w\" /v/0; fi";
    let mut failed = Vec::new();
    for target in targets {
        let h = Helper::writers(&[target], &["sh", "-c", script, "sh", &names.trash]);
        if let Err(e) = docker.apply(&h.to_cmd()) {
            failed.push(format!("{target}: {e:#}"));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("remove the old content the swap moved aside: {}", failed.join("; "))
}

/// Leftovers of restores whose process is gone, in `volumes`: each volume with the pid and
/// whether its swap had begun (an `.xtask-old-PID` exists).
fn leftovers(docker: &Docker, volumes: &[&str]) -> Result<Vec<Leftover>> {
    if volumes.is_empty() {
        return Ok(Vec::new());
    }
    let cmd =
        docker.helper_read_only(volumes, &["find", "/v", "-mindepth", "2", "-maxdepth", "2", "-name", ".xtask-*"]);
    Ok(parse_leftovers(&docker.query(&cmd).context("look for what interrupted restores left")?, volumes))
}

/// A volume, the pid of the restore that died there, and whether its swap had begun.
type Leftover = (String, u32, bool);

/// `find` lines `/v/INDEX/.xtask-KIND-PID` as leftovers of processes that are gone.
fn parse_leftovers(found: &str, volumes: &[&str]) -> Vec<Leftover> {
    let mut leftovers: Vec<Leftover> = Vec::new();
    for line in found.lines() {
        let Some(rest) = line.strip_prefix("/v/") else { continue };
        let Some((idx, name)) = rest.split_once('/') else { continue };
        let (Ok(idx), Some((kind, pid))) = (idx.parse::<usize>(), name.rsplit_once('-')) else { continue };
        let (Some(volume), Ok(pid)) = (volumes.get(idx), pid.parse::<u32>()) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let swapping = kind == ".xtask-old";
        match leftovers.iter_mut().find(|(v, p, _)| v == volume && *p == pid) {
            Some(entry) => entry.2 |= swapping,
            None => leftovers.push((volume.to_string(), pid, swapping)),
        }
    }
    leftovers
}

/// Finishes the swaps and removes the staging that interrupted restores left in `volumes`;
/// says what it did, and returns how many it found.
pub fn recover(docker: &Docker, ui: &Ui, volumes: &[&str]) -> Result<usize> {
    let found = leftovers(docker, volumes)?;
    settle(docker, ui, &found)?;
    Ok(found.len())
}

fn settle(docker: &Docker, ui: &Ui, leftovers: &[Leftover]) -> Result<()> {
    for (volume, pid, swapping) in leftovers {
        let names = Names::of(*pid);
        if *swapping {
            ui.step(&format!("volume {volume}: finish the swap an interrupted restore (pid {pid}) had begun"));
            finish_swap(docker, &[volume.as_str()], &names)?;
            empty_trash(docker, &[volume.as_str()], &names)?;
        } else {
            ui.step(&format!("volume {volume}: remove the staged copy an interrupted restore (pid {pid}) left"));
            discard(docker, volume, &names)?;
        }
    }
    Ok(())
}

/// What one read-only helper saw in the target volumes that exist, before a restore: what
/// interrupted restores left there (settled by [`Survey::take`]), and the free space of each
/// one's filesystem and of the Docker host's storage (for volumes yet to be created).
pub struct Survey {
    leftovers: Vec<Leftover>,
    free: std::collections::BTreeMap<String, u64>,
    host_free: u64,
}

/// Run with the volumes' mount points as arguments. Fixed: nothing from an archive is in it.
const SURVEY: &str = r#"set -e
df -P -k / "$@"
echo ---
if [ $# -gt 0 ]; then find "$@" -mindepth 1 -maxdepth 1 -name '.xtask-*'; fi
"#;

/// The "Available" column (KiB) of a filesystem line of `df -P -k`, in bytes.
fn df_available(line: &str) -> Option<u64> {
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

impl Survey {
    /// Settles the leftovers it saw (then measures again: they took space) and returns itself.
    pub fn take(docker: &Docker, ui: &Ui, volumes: &[&str]) -> Result<Survey> {
        let survey = Survey::of(docker, volumes)?;
        if survey.leftovers.is_empty() {
            return Ok(survey);
        }
        settle(docker, ui, &survey.leftovers)?;
        Survey::of(docker, volumes)
    }

    fn of(docker: &Docker, volumes: &[&str]) -> Result<Survey> {
        let mounts: Vec<String> = (0..volumes.len()).map(|i| format!("/v/{i}")).collect();
        let mut command = vec!["sh", "-c", SURVEY, "sh"];
        command.extend(mounts.iter().map(String::as_str));
        let out = docker
            .query(&docker.helper_read_only(volumes, &command))
            .context("measure free space and look for what interrupted restores left (a helper container)")?;
        Survey::parse(&out, volumes)
    }

    /// The output of [`SURVEY`] run over `volumes`.
    fn parse(out: &str, volumes: &[&str]) -> Result<Survey> {
        let (df, found) = out.split_once("\n---").unwrap_or((out, ""));
        let unexpected = || anyhow::anyhow!("unexpected `df -P -k` output: {df:?}");
        let mut lines = df.lines().filter(|l| !l.trim().is_empty()).skip(1);
        let host_free = lines.next().and_then(df_available).ok_or_else(unexpected)?;
        let mut free = std::collections::BTreeMap::new();
        for v in volumes {
            free.insert(v.to_string(), lines.next().and_then(df_available).ok_or_else(unexpected)?);
        }
        Ok(Survey { leftovers: parse_leftovers(found, volumes), free, host_free })
    }

    /// Free bytes where `volume` is (None: a volume yet to be created, on the host's storage).
    pub fn free(&self, volume: Option<&str>) -> u64 {
        volume.and_then(|v| self.free.get(v)).copied().unwrap_or(self.host_free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_column() {
        assert_eq!(df_available("overlay 100 40 60 40% /v/0"), Some(60 * 1024));
        assert_eq!(df_available("nonsense"), None);
    }

    #[test]
    fn a_survey_reads_free_space_in_order_and_leftovers_of_dead_processes() {
        let out = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                   overlay 1000 100 900 10% /\n\
                   /dev/vda 2000 100 1900 5% /v/0\n\
                   /dev/vdb 3000 100 2900 3% /v/1\n\
                   ---\n\
                   /v/1/.xtask-staging-4000000\n\
                   /v/0/.xtask-old-4000001\n\
                   /v/0/.xtask-staging-4000001\n";
        let s = Survey::parse(out, &["a", "b"]).unwrap();
        assert_eq!((s.free(Some("a")), s.free(Some("b")), s.free(None)), (1900 * 1024, 2900 * 1024, 900 * 1024));
        assert_eq!(s.leftovers, [("b".to_string(), 4000000, false), ("a".to_string(), 4000001, true)]);
        let none =
            Survey::parse("Filesystem 1024-blocks Used Available Capacity Mounted on\noverlay 1 0 7 0% /\n---", &[]);
        assert_eq!(none.unwrap().free(None), 7 * 1024);
        assert!(Survey::parse("Filesystem\n---\n", &["a"]).is_err(), "a missing line is an error, not 0 bytes free");
    }

    #[test]
    fn names_are_reserved_and_per_process() {
        let n = Names::of(42);
        assert_eq!(
            (n.staging.as_str(), n.old.as_str(), n.swap.as_str()),
            (".xtask-staging-42", ".xtask-old-42", ".xtask-swap-42")
        );
        assert_eq!(n.trash, ".xtask-trash-42");
        for name in [&n.staging, &n.old, &n.swap, &n.trash] {
            assert!(RESERVED.iter().any(|r| name.starts_with(r)), "{name}");
        }
    }
}
