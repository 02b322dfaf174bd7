//! Staged volume restore: a volume's new content is extracted, while its services keep running,
//! into a hidden directory on the same filesystem, and swapped in by renames once every target
//! is staged and the services are stopped. Two places, chosen per volume ([`Staging`]):
//! - **beside the volume** (a plain directory of the local driver that the tool sees on this
//!   host, proven to be the volume's own by device and inode): the staging is
//!   `<engine's volumes>/NAME/.xtask-staging-PID`, next to `_data` and out of the services'
//!   reach, and the swap is two renames whatever the volume holds (`_data` → `.xtask-old-PID`,
//!   the staging → `_data`): downtime constant in entries, and a backup never reads a staging.
//! - **inside the volume** (anything else: another driver, a remote engine, a user who cannot
//!   see the engine's directory, binds): `.xtask-staging-PID` in the volume's root; the current
//!   top-level entries move into `.xtask-old-PID`, the staged ones into the root (both in
//!   batches, one `mv` per thousands of entries).
//!
//! Either way `.xtask-old-PID` then becomes `.xtask-trash-PID`, which is removed once the
//! services are back (its removal takes time that is no downtime). A
//! swap refuses to begin unless every volume has its staged copy. Before the swap a failure or a signal just removes the staging: the volume
//! was never touched. The swap is idempotent (`.xtask-swap-PID` marks the end of its first half),
//! so a swap cut off by a crash is finished by the next restore, which also removes the staging
//! of restores that died before their swap. The names are reserved: archives may not hold them
//! and backups leave them out.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::docker::{engine_is_local, Docker, Helper};
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

/// Where one restore stages and swaps each target: its reserved names, and the volumes staged
/// beside their `_data` rather than inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub names: Names,
    /// Volume name → the engine's directory holding its `_data` (see the module's header).
    beside: BTreeMap<String, String>,
    /// Volumes staged beside `_data` that are swapped inside it all the same: a container this
    /// restore did not stop still mounts them ([`Staging::keep_inside`]).
    moved: std::collections::BTreeSet<String>,
}

impl Staging {
    /// This process's names, and the places the survey proved.
    pub fn of(pid: u32, survey: &Survey) -> Staging {
        Staging { names: Names::of(pid), beside: survey.beside.clone(), moved: Default::default() }
    }

    /// Marks `targets` (staged beside their `_data`) to be swapped inside it: a container still
    /// mounts the directory, and two renames would leave it on the old one, deleted afterwards
    /// (a container outside the stack, a `volumes_from` user, a paused one). The staged copy
    /// moves into the volume first (one rename), then the swap inside takes its entries.
    pub fn keep_inside(&mut self, targets: &[String]) {
        self.moved.extend(targets.iter().filter(|t| self.beside.contains_key(*t)).cloned());
    }

    /// The targets staged beside their `_data`.
    pub fn beside(&self) -> Vec<&str> {
        self.beside.keys().map(String::as_str).collect()
    }

    /// Where `target`'s staged copy is written (mounted at `/v/0`, the copy under
    /// `names.staging`): the directory beside its `_data`, else the target itself.
    pub fn place<'a>(&'a self, target: &'a str) -> &'a str {
        self.beside.get(target).map_or(target, String::as_str)
    }

    /// Every target with where its copy is staged: (target, place).
    pub fn places<'a>(&'a self, targets: &[&'a str]) -> Vec<Place<'a>> {
        targets
            .iter()
            .map(|t| {
                let how = match (self.beside.contains_key(*t), self.moved.contains(*t)) {
                    (false, _) => How::Inside,
                    (true, false) => How::Beside,
                    (true, true) => How::Moved,
                };
                Place { target: t, at: self.place(t), how }
            })
            .collect()
    }

    /// Where the old content of `targets` is once swapped: inside the volume when the swap was.
    fn trash_places<'a>(&'a self, targets: &[&'a str]) -> Vec<Place<'a>> {
        let inside = |p: Place<'a>| Place { target: p.target, at: p.target, how: How::Inside };
        self.places(targets).into_iter().map(|p| if p.how == How::Moved { inside(p) } else { p }).collect()
    }
}

/// A target, the directory its helper mounts at `/v/0`, and how it is swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub target: &'a str,
    pub at: &'a str,
    pub how: How,
}

/// How a target's copy is staged and swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Staged and swapped inside the volume (or bind): [`SWAP`].
    Inside,
    /// Staged beside `_data` and swapped by two renames: [`SWAP_BESIDE`].
    Beside,
    /// Staged beside `_data`, moved into it, swapped inside: [`MOVE_IN`] then [`SWAP`].
    Moved,
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
cd "${6:-/v/0}"
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

/// [`SWAP`] for a copy staged beside the volume: run in the engine's directory of the volume
/// (finishing, it does nothing unless the swap began: `_data` moved aside or missing)
/// (mounted at `/v/0`, holding `_data`), two renames whatever the volume holds. A fresh swap
/// requires the staged copy and `_data` to be real directories and the other names absent (exit
/// 98). Between the renames `_data` is missing: an interrupted swap is finished by the next run
/// (`.xtask-old-PID` present), never undone. The root keeps the staged copy's owner, mode and
/// mtime (the archive's).
const SWAP_BESIDE: &str = r#"set -e
s="$1"; o="$2"; t="$4"
cd /v/0
if [ "$5" = fresh ]; then
  if [ ! -d "$s" ] || [ -L "$s" ] || [ ! -d _data ] || [ -L _data ]; then
    echo "xtask: the staged copy $s or the volume's _data is missing or not a directory: nothing was swapped" >&2
    exit 98
  fi
  for n in "$o" "$t"; do
    if [ -e "$n" ] || [ -L "$n" ]; then
      echo "xtask: $n exists before the swap began: nothing was swapped" >&2
      exit 98
    fi
  done
fi
if [ "$5" = finish ] && { [ -e _data ] || [ -L _data ]; } && [ ! -e "$o" ] && [ ! -L "$o" ]; then
  exit 0
fi
if [ -d "$s" ] && [ ! -L "$s" ]; then
  w=$(stat -c %Y "$s")
  if [ -d _data ] && [ ! -L _data ] && [ ! -e "$o" ]; then mv -f -- _data "$o"; fi
  if [ ! -e _data ]; then
    if ! mv -f -- "$s" _data; then
      mv -f -- "$o" _data
      echo "xtask: the staged copy could not be renamed in: the old content is back in place" >&2
      exit 1
    fi
    touch -d "@$w" _data
  fi
fi
if [ ! -e _data ] && [ ! -L _data ] && [ -d "$o" ]; then mv -f -- "$o" _data; fi
if [ -d "$o" ] && [ ! -L "$o" ]; then if [ -e "$t" ]; then rm -rf -- "$o"; else mv -f -- "$o" "$t"; fi; fi
"#;

/// Run before [`SWAP`] (with `/v/0/_data` as its root) for a copy staged beside `_data` that
/// must be swapped inside it ([`How::Moved`]): a fresh swap first requires the staged copy and
/// `_data` to be real directories and the name free inside (exit 98), then moves the copy in.
const MOVE_IN: &str = r#"set -e
if [ "$5" = fresh ]; then
  if [ ! -d "/v/0/$1" ] || [ -L "/v/0/$1" ] || [ ! -d /v/0/_data ] || [ -L /v/0/_data ]; then
    echo "xtask: the staged copy $1 or the volume's _data is missing or not a directory: nothing was swapped" >&2
    exit 98
  fi
  if [ -e "/v/0/_data/$1" ] || [ -L "/v/0/_data/$1" ]; then
    echo "xtask: $1 exists in the volume before the swap began (planted by a service?): nothing was swapped" >&2
    exit 98
  fi
  mv -f -- "/v/0/$1" "/v/0/_data/$1"
fi
"#;

/// Swaps the staged content of each of `targets` into place, each in a helper of its own with
/// only that target mounted, all at once (the services are stopped meanwhile, so the window
/// stays one container's start). Every target is tried; the failures are returned together (a
/// refused one is unchanged: exit 98).
pub fn swap(docker: &Docker, targets: &[&str], staging: &Staging) -> Result<()> {
    run_swap(docker, &staging.places(targets), &staging.names, "fresh")
}

/// Finishes the swaps an interrupted restore began (or cleans what it left) in `places`.
fn finish_swap(docker: &Docker, places: &[Place], names: &Names) -> Result<()> {
    run_swap(docker, places, names, "finish")
}

fn run_swap(docker: &Docker, places: &[Place], names: &Names, mode: &str) -> Result<()> {
    let failed: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = places
            .iter()
            .map(|place| {
                let script = match place.how {
                    How::Inside => SWAP.to_string(),
                    How::Beside => SWAP_BESIDE.to_string(),
                    How::Moved => format!("{MOVE_IN}\n{SWAP}"),
                };
                let root = if place.how == How::Moved { "/v/0/_data" } else { "/v/0" };
                let n = names;
                let command = ["sh", "-c", script.as_str(), "sh", &n.staging, &n.old, &n.swap, &n.trash, mode, root];
                let h = Helper::writers(&[place.at], &command);
                (place.target, scope.spawn(move || docker.apply(&h.to_cmd())))
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
    let targets: Vec<&str> = places.iter().map(|p| p.target).collect();
    anyhow::bail!("swap the restored content into {}: {}", targets.join(", "), failed.join("; "))
}

/// Removes the staging of `target` (before its swap began) and any old content a finished swap
/// left to remove: the volume is as it was, or as the swap made it.
pub fn discard(docker: &Docker, target: &str, staging: &Staging) -> Result<()> {
    discard_at(docker, target, staging.place(target), &staging.names)
}

fn discard_at(docker: &Docker, target: &str, at: &str, names: &Names) -> Result<()> {
    let (staged, trash) = (format!("/v/0/{}", names.staging), format!("/v/0/{}", names.trash));
    let mut h = Helper::writer(at, &["rm", "-rf", &staged, &trash]);
    h.stdin = false;
    docker.apply(&h.to_cmd()).with_context(|| format!("remove the staged copy in volume {target}"))
}

/// Removes the old content the swaps moved aside in `targets`. The services run again
/// meanwhile, and one of them may turn a directory of its own old content into a link while
/// `rm` walks it: so each target gets a helper of its own with nothing else mounted, and a link
/// can lead only into that same volume (which its service could change anyway), never into
/// another restored volume or bind. Every target is tried; the failures are returned together.
pub fn empty_trash(docker: &Docker, targets: &[&str], staging: &Staging) -> Result<()> {
    empty_trash_at(docker, &staging.trash_places(targets), &staging.names)
}

/// Before a way back: each volume this restore swapped beside its `_data` has a `_data` again
/// (a helper killed between the two renames left none: the swap is finished, or the old content
/// put back), so that the way back can mount it.
pub fn settle_own(docker: &Docker, staging: &Staging) -> Result<()> {
    let targets = staging.beside();
    let places: Vec<Place> = staging.places(&targets).into_iter().filter(|p| p.how == How::Beside).collect();
    finish_swap(docker, &places, &staging.names)
}

fn empty_trash_at(docker: &Docker, places: &[Place], names: &Names) -> Result<()> {
    // The root keeps the mtime it has (the archived one, or a service's change since).
    let script = "set -e; if [ -e \"/v/0/$1\" ] || [ -L \"/v/0/$1\" ]; then w=$(stat -c %Y /v/0); \
                  rm -rf \"/v/0/$1\"; touch -d \"@$w\" /v/0; fi";
    let mut failed = Vec::new();
    for place in places {
        let h = Helper::writers(&[place.at], &["sh", "-c", script, "sh", &names.trash]);
        if let Err(e) = docker.apply(&h.to_cmd()) {
            failed.push(format!("{}: {e:#}", place.target));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!("remove the old content the swap moved aside: {}", failed.join("; "))
}

/// What a restore whose process is gone left in one place: the target, where (the volume's
/// root or the directory beside its `_data`), its pid, and whether its swap had begun (an
/// `.xtask-old-PID` exists).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leftover {
    target: String,
    at: String,
    how: How,
    pid: u32,
    swapping: bool,
}

/// Leftovers in `places` (each mounted read-only), looked for by one helper.
fn leftovers_in(docker: &Docker, places: &[Place]) -> Result<Vec<Leftover>> {
    if places.is_empty() {
        return Ok(Vec::new());
    }
    let mounts: Vec<&str> = places.iter().map(|p| p.at).collect();
    let cmd =
        docker.helper_read_only(&mounts, &["find", "/v", "-mindepth", "2", "-maxdepth", "2", "-name", ".xtask-*"]);
    Ok(parse_leftovers(&docker.query(&cmd).context("look for what interrupted restores left")?, places, false))
}

/// Whether the restore that named its leftovers with `pid` still runs: a live process of this
/// tool (its `comm`; a pid reused by another program does not keep a half-done swap from being
/// finished). `own_is_gone`: this process has made nothing yet (a restore's start), so names
/// with its own pid are a killed run's that had the same pid (a pid namespace of its own).
fn still_runs(pid: u32, own_is_gone: bool) -> bool {
    if pid == std::process::id() {
        return !own_is_gone;
    }
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// `find` lines `/v/INDEX/.xtask-KIND-PID` as leftovers of processes that are gone
/// ([`still_runs`]).
fn parse_leftovers(found: &str, places: &[Place], own_is_gone: bool) -> Vec<Leftover> {
    let mut leftovers: Vec<Leftover> = Vec::new();
    for line in found.lines() {
        let Some(rest) = line.strip_prefix("/v/") else { continue };
        let Some((idx, name)) = rest.split_once('/') else { continue };
        if !name.starts_with(".xtask-") {
            continue;
        }
        let (Ok(idx), Some((kind, pid))) = (idx.parse::<usize>(), name.rsplit_once('-')) else { continue };
        let (Some(place), Ok(pid)) = (places.get(idx), pid.parse::<u32>()) else { continue };
        if still_runs(pid, own_is_gone) {
            continue;
        }
        let swapping = kind == ".xtask-old";
        match leftovers.iter_mut().find(|l| l.at == place.at && l.pid == pid) {
            Some(entry) => entry.swapping |= swapping,
            None => leftovers.push(Leftover {
                target: place.target.to_string(),
                at: place.at.to_string(),
                how: place.how,
                pid,
                swapping,
            }),
        }
    }
    leftovers
}

/// Finishes the swaps and removes the staging that interrupted restores left beside the
/// `_data` of `volumes` (no helper: this process lists those directories); first, before
/// anything mounts the volumes. Says what it did, and returns how many it found.
pub fn recover_beside(docker: &Docker, ui: &Ui, volumes: &[&str]) -> Result<usize> {
    settle_beside(docker, ui, &candidates(docker, volumes)?, false)
}

/// Finishes the swaps and removes the staging that interrupted restores left inside `volumes`
/// (one read-only helper looks); says what it did, and returns how many it found.
pub fn recover(docker: &Docker, ui: &Ui, volumes: &[&str]) -> Result<usize> {
    let found = leftovers_in(docker, &inside(volumes))?;
    settle(docker, ui, &found)?;
    Ok(found.len())
}

/// The sizes of `volumes` ([`Docker::volume_sizes`]); when a volume cannot be mounted because
/// an interrupted restore left it without its `_data` (a swap beside it cut off between its two
/// renames), the error says so and which command finishes that swap. Changes nothing.
pub fn sizes(docker: &Docker, volumes: &[&str]) -> Result<BTreeMap<String, u64>> {
    docker.volume_sizes(volumes).map_err(|e| match half_swapped(docker, volumes) {
        Ok(found) if !found.is_empty() => e.context(format!(
            "volume {} left without its data directory by an interrupted restore: run `cargo xtask backup` \
             or `cargo xtask restore …` (without --dry-run), which finish that swap before anything else",
            found.join(", ")
        )),
        _ => e,
    })
}

/// Those of `volumes` whose `_data` is missing beside an `.xtask-old-PID` of a killed restore
/// (listed by this process in the engine's directories; none with a remote engine).
fn half_swapped(docker: &Docker, volumes: &[&str]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for (volume, (parent, data)) in candidates(docker, volumes)? {
        let missing = std::fs::symlink_metadata(&data).is_err();
        let entries = std::fs::read_dir(&parent).with_context(|| format!("list {parent}"))?;
        let old = entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".xtask-old-"));
        if missing && old {
            found.push(volume);
        }
    }
    Ok(found)
}

/// Each volume, staged inside itself.
fn inside<'a>(volumes: &[&'a str]) -> Vec<Place<'a>> {
    volumes.iter().map(|v| Place { target: v, at: v, how: How::Inside }).collect()
}

/// The directory beside `_data` of each of `volumes` that is a plain local directory this
/// process sees on this host (None of them with a remote engine). Not yet proven to be the
/// volume's own: [`Survey`] does that before a staging goes there.
fn candidates(docker: &Docker, volumes: &[&str]) -> Result<BTreeMap<String, (String, String)>> {
    if !engine_is_local() || stage_in_volume() {
        return Ok(BTreeMap::new());
    }
    let volumes: Vec<&str> = volumes.iter().copied().filter(|v| !v.starts_with('/')).collect();
    let dirs = docker.volume_dirs(&volumes)?;
    Ok(dirs
        .into_iter()
        .filter_map(|(volume, data)| {
            let parent = data.strip_suffix("/_data")?.to_string();
            crate::files::dir_identity(std::path::Path::new(&parent))?;
            Some((volume, (parent, data)))
        })
        .collect())
}

/// A test hook, in debug builds only: `XTASK_STAGE_IN_VOLUME=1` stages every volume inside
/// itself, so the end-to-end tests prove that place too on a machine where both are possible.
fn stage_in_volume() -> bool {
    cfg!(debug_assertions) && std::env::var_os("XTASK_STAGE_IN_VOLUME").is_some_and(|v| v == "1")
}

/// Settles what interrupted restores left beside the `_data` of the volumes in `dirs` (only the
/// engine and this tool write there; this process lists them itself, no helper needed), before
/// anything mounts the volumes: a swap cut off between its two renames left no `_data`, which
/// a mount would fail on. Returns how many it found.
fn settle_beside(
    docker: &Docker,
    ui: &Ui,
    dirs: &BTreeMap<String, (String, String)>,
    own_is_gone: bool,
) -> Result<usize> {
    let places: Vec<Place> =
        dirs.iter().map(|(v, (parent, _))| Place { target: v, at: parent, how: How::Beside }).collect();
    let mut found = String::new();
    for (i, place) in places.iter().enumerate() {
        let entries = std::fs::read_dir(place.at).with_context(|| format!("list {}", place.at))?;
        for name in entries.flatten().map(|e| e.file_name()) {
            found.push_str(&format!("/v/{i}/{}\n", name.to_string_lossy()));
        }
    }
    let found = parse_leftovers(&found, &places, own_is_gone);
    settle(docker, ui, &found)?;
    Ok(found.len())
}

fn settle(docker: &Docker, ui: &Ui, leftovers: &[Leftover]) -> Result<()> {
    for l in leftovers {
        let names = Names::of(l.pid);
        let (volume, pid) = (&l.target, l.pid);
        let place = [Place { target: &l.target, at: &l.at, how: l.how }];
        if l.swapping {
            ui.step(&format!("volume {volume}: finish the swap an interrupted restore (pid {pid}) had begun"));
            finish_swap(docker, &place, &names)?;
            empty_trash_at(docker, &place, &names)?;
        } else {
            ui.step(&format!("volume {volume}: remove the staged copy an interrupted restore (pid {pid}) left"));
            discard_at(docker, volume, &l.at, &names)?;
        }
    }
    Ok(())
}

/// What one read-only helper saw in the target volumes that exist, before a restore: what
/// interrupted restores left there (settled by [`Survey::take`]), the free space of each
/// one's filesystem and of the Docker host's storage (for volumes yet to be created), and which
/// volumes are staged beside their `_data` ([`Staging`]).
pub struct Survey {
    leftovers: Vec<Leftover>,
    free: BTreeMap<String, u64>,
    host_free: u64,
    /// Device and inode of each volume's root as a helper mounts it.
    roots: BTreeMap<String, (u64, u64)>,
    beside: BTreeMap<String, String>,
}

/// Run with the volumes' mount points as arguments. Fixed: nothing from an archive is in it.
/// The names found in the volumes come last: a service chooses them (a newline and `---` in a
/// name must not end a section that the tool reads after it).
const SURVEY: &str = r#"set -e
df -P -k / "$@"
echo ---
if [ $# -gt 0 ]; then stat -c '%n %d:%i' "$@"; fi
echo ---
if [ $# -gt 0 ]; then find "$@" -mindepth 1 -maxdepth 1 -name '.xtask-*'; fi
"#;

/// The "Available" column (KiB) of a filesystem line of `df -P -k`, in bytes.
fn df_available(line: &str) -> Option<u64> {
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

impl Survey {
    /// Settles the leftovers it saw (then measures again: they took space), proves which
    /// volumes can be staged beside their `_data`, and returns itself.
    pub fn take(docker: &Docker, ui: &Ui, volumes: &[&str]) -> Result<Survey> {
        let dirs = candidates(docker, volumes)?;
        settle_beside(docker, ui, &dirs, true)?;
        let mut survey = Survey::of(docker, volumes)?;
        if !survey.leftovers.is_empty() {
            settle(docker, ui, &survey.leftovers)?;
            survey = Survey::of(docker, volumes)?;
        }
        survey.beside = proven_beside(&dirs, &survey.roots);
        Ok(survey)
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
        let mut sections = out.splitn(3, "\n---");
        let (df, stats, found) = (sections.next().unwrap_or(""), sections.next(), sections.next().unwrap_or(""));
        let unexpected = || anyhow::anyhow!("unexpected `df -P -k` output: {df:?}");
        let mut lines = df.lines().filter(|l| !l.trim().is_empty()).skip(1);
        let host_free = lines.next().and_then(df_available).ok_or_else(unexpected)?;
        let mut free = BTreeMap::new();
        for v in volumes {
            free.insert(v.to_string(), lines.next().and_then(df_available).ok_or_else(unexpected)?);
        }
        let leftovers = parse_leftovers(found, &inside(volumes), true);
        let roots = stats.map(|s| parse_roots(s, volumes)).unwrap_or_default();
        Ok(Survey { leftovers, free, host_free, roots, beside: BTreeMap::new() })
    }

    /// Free bytes where `volume` is (None: a volume yet to be created, on the host's storage).
    pub fn free(&self, volume: Option<&str>) -> u64 {
        volume.and_then(|v| self.free.get(v)).copied().unwrap_or(self.host_free)
    }
}

/// `stat -c '%n %d:%i'` lines `/v/INDEX DEV:INO` by volume.
fn parse_roots(stats: &str, volumes: &[&str]) -> BTreeMap<String, (u64, u64)> {
    let mut roots = BTreeMap::new();
    for line in stats.lines() {
        let Some((mount, id)) = line.trim().split_once(' ') else { continue };
        let Some(volume) = mount.strip_prefix("/v/").and_then(|i| i.parse::<usize>().ok()).and_then(|i| volumes.get(i))
        else {
            continue;
        };
        let Some((dev, ino)) = id.split_once(':') else { continue };
        if let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse()) {
            roots.insert(volume.to_string(), (dev, ino));
        }
    }
    roots
}

/// The candidates whose `_data`, resolved by this process without following links, is the
/// very directory a helper mounts as the volume, on the same filesystem as its parent (a
/// `_data` that is a mount point of its own is not renamed).
fn proven_beside(
    candidates: &BTreeMap<String, (String, String)>,
    roots: &BTreeMap<String, (u64, u64)>,
) -> BTreeMap<String, String> {
    let id = |p: &str| crate::files::dir_identity(std::path::Path::new(p));
    let mount_points = mount_points();
    candidates
        .iter()
        .filter(|(volume, (parent, data))| {
            let (Some(root), Some(data_id), Some(parent_id)) = (roots.get(*volume), id(data), id(parent)) else {
                return false;
            };
            // `_data` carries nothing of its own that a new directory would lose (flags, ACLs,
            // labels: compared with its parent, which Docker made alike).
            let attrs = |p: &str| crate::files::dir_attributes(std::path::Path::new(p));
            let plain = attrs(data).is_some_and(|a| Some(a) == attrs(parent));
            *root == data_id && parent_id.0 == data_id.0 && !mount_points.contains(data.as_str()) && plain
        })
        .map(|(volume, (parent, _))| (volume.clone(), parent.clone()))
        .collect()
}

/// The mount points of this process's mount namespace (`/proc/self/mountinfo`, field 5, with
/// its octal escapes undone): a `_data` that is one (a bind mount of the same filesystem) cannot
/// be renamed.
fn mount_points() -> std::collections::BTreeSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape_mount_point).collect()
}

/// `\040` and the other octal escapes of mountinfo as the bytes they stand for.
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
                   ---\n\
                   /v/1/.xtask-staging-4000000\n\
                   /v/0/.xtask-old-4000001\n\
                   /v/0/.xtask-staging-4000001\n";
        let s = Survey::parse(out, &["a", "b"]).unwrap();
        assert_eq!((s.free(Some("a")), s.free(Some("b")), s.free(None)), (1900 * 1024, 2900 * 1024, 900 * 1024));
        let seen: Vec<(&str, u32, bool)> = s.leftovers.iter().map(|l| (l.target.as_str(), l.pid, l.swapping)).collect();
        assert_eq!(seen, [("b", 4000000, false), ("a", 4000001, true)]);
        assert!(s.roots.is_empty(), "an empty stat section: no roots");
        let none =
            Survey::parse("Filesystem 1024-blocks Used Available Capacity Mounted on\noverlay 1 0 7 0% /\n---", &[]);
        assert_eq!(none.unwrap().free(None), 7 * 1024);
        assert!(Survey::parse("Filesystem\n---\n", &["a"]).is_err(), "a missing line is an error, not 0 bytes free");
    }

    #[test]
    fn a_name_planted_in_a_volume_cannot_end_the_sections_read_after_it() {
        let out = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                   overlay 1000 100 900 10% /\n\
                   /dev/vda 2000 100 1900 5% /v/0\n\
                   ---\n\
                   /v/0 64768:131\n\
                   ---\n\
                   /v/0/.xtask-x\n\
                   ---\n\
                   /v/0/.xtask-old-4000001\n";
        let s = Survey::parse(out, &["a"]).unwrap();
        assert_eq!(s.roots.get("a"), Some(&(64768, 131)));
        assert_eq!(s.leftovers.iter().map(|l| l.pid).collect::<Vec<_>>(), [4000001]);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_point("/var/lib/docker/volumes/a\\040b/_data"), "/var/lib/docker/volumes/a b/_data");
        assert_eq!(unescape_mount_point("/plain"), "/plain");
        assert!(mount_points().contains("/"), "the root is a mount point");
    }

    #[test]
    fn a_leftover_of_a_pid_that_runs_another_program_is_gone() {
        assert!(still_runs(std::process::id(), false));
        assert!(!still_runs(std::process::id(), true), "at a restore's start its own pid names a killed run");
        assert!(!still_runs(1, false), "pid 1 runs another program");
        assert!(!still_runs(4_194_304, false), "no such process");
    }

    #[test]
    fn roots_by_mount_index() {
        let roots = parse_roots("\n/v/0 64768:131\n/v/1 64768:77\n/v/9 1:1\nnoise\n", &["a", "b"]);
        assert_eq!(roots.into_iter().collect::<Vec<_>>(), [("a".into(), (64768, 131)), ("b".into(), (64768, 77))]);
    }

    #[test]
    fn only_the_volumes_own_directory_is_staged_beside_it() {
        let dir = std::env::temp_dir().join(format!("xtask-beside-{}", std::process::id()));
        let (parent, data) = (dir.join("v"), dir.join("v/_data"));
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&data, dir.join("link")).unwrap();
        let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let real = crate::files::dir_identity(&data).unwrap();
        let candidates: BTreeMap<String, (String, String)> = [
            ("good".to_string(), (s(&parent), s(&data))),
            ("other".to_string(), (s(&parent), s(&data))),
            ("linked".to_string(), (s(&dir), s(&dir.join("link")))),
            ("unmounted".to_string(), (s(&parent), s(&data))),
        ]
        .into();
        let roots: BTreeMap<String, (u64, u64)> =
            [("good".into(), real), ("other".into(), (real.0, real.1 + 1)), ("linked".into(), real)].into();
        let beside = proven_beside(&candidates, &roots);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(beside.into_iter().collect::<Vec<_>>(), [("good".to_string(), s(&parent))]);
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
