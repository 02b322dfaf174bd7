//! Attacks on the restore that stages a volume beside its `_data` (in the engine's directory
//! `…/volumes/NAME/`) and swaps it in by two renames, on the live engine. Each test names the
//! property it checks; those that show a problem fail on the commit they were written against
//! (762d71c + 3a6b208) and say why in their doc comment.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The engine's directory of `volume` (its `_data`), as `docker volume inspect` says.
fn data_dir(volume: &str) -> PathBuf {
    docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume]).trim().into()
}

/// Names in the directory holding `volume`'s `_data`.
fn beside(volume: &str) -> Vec<String> {
    let data = data_dir(volume);
    let mut names: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A container outside the stack, removed on drop.
struct Outside(String);

impl Outside {
    fn start(name: &str, volume: &str) -> Outside {
        let mount = format!("{volume}:/x");
        docker_ok(&["run", "-d", "--name", name, "-v", &mount, "xtask-test/busybox:local", "sleep", "600"]);
        Outside(name.to_string())
    }

    /// `sh -c SCRIPT` in it: stdout and stderr together.
    fn sh(&self, script: &str) -> String {
        let out = docker(&["exec", &self.0, "sh", "-c", &format!("{{ {script}; }} 2>&1")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// A stack with `backend` up, `old` in its media volume, and a backup of that: (stack, dir,
/// archive path, media volume).
fn backed_up(name: &str) -> (TestStack, TempDir, String, String) {
    let stack = TestStack::sample(name);
    let dir = TempDir::new(name);
    stack.xtask_ok(&["up", "backend"]);
    let media = stack.volume("backend-media");
    on_volume(&media, Access::Write, "echo archived > /v/a; mkdir -p /v/sub; echo deep > /v/sub/b");
    let archive = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    let path = archive["path"].as_str().unwrap().to_string();
    on_volume(&media, Access::Write, "echo changed > /v/a; touch /v/after-backup");
    (stack, dir, path, media)
}

/// FINDING 1 (data loss). A container outside the stack that mounts a restored volume (a
/// sidecar of another project sharing an external volume, a `docker run -v`) is not stopped by
/// the restore. With the copy staged beside `_data`, the swap renames the very directory that
/// container has mounted to `.xtask-old-PID`, then `.xtask-trash-PID`, and removes it once the
/// services are back: the container keeps running on a deleted directory, sees the old content,
/// and everything it writes after the restore is silently lost. (Staged inside the volume, as
/// before 762d71c, the same container sees the restored content and its writes land in the
/// volume.) The restore must either refuse a volume in use by a container it does not stop, or
/// not swap that volume by renaming `_data`.
#[test]
fn a_container_outside_the_stack_keeps_writing_into_the_restored_volume() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-outside");
    let outside = Outside::start(&format!("{}-outside", stack.project), &media);
    assert_eq!(outside.sh("cat /x/a"), "changed\n");
    let (ok, _, err) =
        stack.xtask(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    if !ok {
        // Refusing (nothing changed) is an acceptable answer.
        assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "changed\n", "{err}");
        return;
    }
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "archived\n", "{err}");
    let wrote = outside.sh("echo precious > /x/written-after-the-restore 2>&1; cat /x/a 2>&1; ls -a /x 2>&1; true");
    let in_volume = on_volume(&media, Access::ReadOnly, "ls /v");
    assert!(
        in_volume.contains("written-after-the-restore"),
        "the outside container lives on the removed old directory (it sees {wrote:?}); its write after the \
         restore is not in the volume ({in_volume:?})"
    );
}

/// A bind mount (same filesystem) over `_data`, removed on drop.
struct BoundOver {
    target: PathBuf,
    source: PathBuf,
}

impl Drop for BoundOver {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
        let _ = std::fs::remove_dir_all(&self.source);
    }
}

/// FINDING 2 (a swap that is not refused but fails). A volume whose `_data` is a mount point
/// of the same filesystem (an admin who moved the data elsewhere on the disk and bind-mounted
/// it back) passes the proof (same device as the parent, same inode as the helper's mount), so
/// its copy is staged beside `_data`; the first rename of the swap then fails (EBUSY: a mount
/// point) with an error that is not the "refused, nothing changed" exit, and the restore takes
/// the way back instead of working (staged inside the volume it would have). The proof should
/// also require that `_data` is not a mount point (mount id, or /proc/self/mountinfo).
#[test]
fn a_data_dir_that_is_a_mount_point_is_restored_or_refused_cleanly() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-mountpoint");
    let data = data_dir(&media);
    // Elsewhere on the same filesystem as the engine's directory.
    let source = data.parent().unwrap().parent().unwrap().parent().unwrap().join(format!("atk5-src-{}", stack.project));
    std::fs::create_dir_all(&source).unwrap();
    let copy = Command::new("cp").arg("-a").arg(format!("{}/.", data.display())).arg(&source).status().unwrap();
    assert!(copy.success());
    stack.compose(&["stop", "backend"]);
    let mounted = Command::new("mount").arg("--bind").arg(&source).arg(&data).status().unwrap();
    assert!(mounted.success());
    let _guard = BoundOver { target: data.clone(), source: source.clone() };
    stack.compose(&["start", "backend"]);
    let (ok, _, err) =
        stack.xtask(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    let now = on_volume(&media, Access::ReadOnly, "cat /v/a");
    let left = beside(&media);
    assert!(
        ok,
        "the restore failed on a volume it could have restored in place ({now:?} in it, {left:?} beside): {err}"
    );
    assert_eq!(now, "archived\n");
    assert_eq!(left, ["_data"], "nothing left beside the volume");
}

/// FINDING 3a (pid reuse). A restore cut off between its two renames leaves no `_data`; the
/// next data command is meant to finish the swap, but it settles only leftovers whose pid has
/// no live process (`/proc/PID`). After a reboot, or simply later, that pid belongs to another
/// process: the leftover is skipped for as long as that process lives, the volume stays without
/// `_data`, and every backup (and the services) fail to mount it. Here a `sleep` plays the
/// process that got the pid.
#[test]
fn a_half_done_swap_whose_pid_was_reused_is_still_finished() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("atk5-pidreuse");
    let dir = TempDir::new("atk5-pidreuse");
    stack.xtask_ok(&["up", "backend"]);
    stack.compose(&["stop"]);
    let media = stack.volume("backend-media");
    on_volume(&media, Access::Write, "echo old > /v/a");
    let data = data_dir(&media);
    let parent = data.parent().unwrap().to_path_buf();
    let mut other = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = other.id();
    let staged = parent.join(format!(".xtask-staging-{pid}"));
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("new.txt"), "new\n").unwrap();
    std::fs::rename(&data, parent.join(format!(".xtask-old-{pid}"))).unwrap();
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s()]);
    let left = beside(&media);
    let _ = other.kill();
    let _ = other.wait();
    assert!(ok, "a backup cannot finish a swap whose pid now belongs to another process ({left:?} beside): {err}");
    assert_eq!(left, ["_data"]);
}

/// FINDING 3b (stale content restored). Where the tool runs with a fixed pid (its own pid
/// namespace: a container that runs it as PID 1, `unshare --pid`, systemd's PrivatePIDs), a
/// restore killed while staging leaves `.xtask-staging-1`, and the next restore, pid 1 again,
/// takes it for its own: it is never removed and the new copy is extracted over what the
/// killed run had staged, so files that are not in the archive come back with it.
#[test]
fn a_restore_never_swaps_in_what_a_killed_run_with_the_same_pid_staged() {
    if !engine() {
        return;
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-samepid");
    let data = data_dir(&media);
    let staged = data.parent().unwrap().join(".xtask-staging-1");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("stale-from-a-killed-run"), "stale\n").unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).arg(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["--project-name", &stack.project]);
    for f in &stack.files {
        cmd.arg("--file").arg(f);
    }
    cmd.args(["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    cmd.envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let listing = on_volume(&media, Access::ReadOnly, "ls -A /v");
    assert!(out.status.success(), "{err}");
    assert!(
        !listing.contains("stale-from-a-killed-run"),
        "a file the archive does not hold was swapped in with the restore: {listing:?}\n{err}"
    );
}

/// HELD: an archive whose entries try to leave the staging directory beside `_data` (`..`,
/// `_data`-named entries, an absolute link followed by an entry under it) is refused by the
/// grammar before anything is written, and `_data` and the directory beside it are as before.
#[test]
fn names_aimed_at_the_directory_beside_data_are_refused() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-names");
    let before = on_volume(&media, Access::ReadOnly, "find /v | sort; cat /v/a");
    let genuine = load(Path::new(&path));
    let root = genuine
        .iter()
        .find(|e| e.name.ends_with(b"-backend-media/") && e.name.starts_with(b"volumes/"))
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .unwrap();
    let file = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(4);
        Entry { header: h, name: name.as_bytes().to_vec(), link: None, data: b"evil".to_vec() }
    };
    let link = |name: &str, to: &str, kind: tar::EntryType| {
        let mut e = file(name);
        e.header.set_entry_type(kind);
        e.header.set_size(0);
        e.data.clear();
        e.link = Some(to.as_bytes().to_vec());
        e
    };
    let attacks: Vec<(&str, Vec<Entry>)> = vec![
        ("dotdot", vec![file(&format!("{root}../_data/evil"))]),
        ("dotdot-sibling", vec![file(&format!("{root}sub/../../evil"))]),
        ("symlink-up-then-under", {
            vec![link(&format!("{root}up"), "../_data", tar::EntryType::Symlink), file(&format!("{root}up/evil"))]
        }),
        ("hardlink-out", vec![link(&format!("{root}h"), "../_data/a", tar::EntryType::Link)]),
        ("reserved-top", vec![file(&format!("{root}.xtask-old-1"))]),
    ];
    for (what, extra) in attacks {
        let mut entries = load(Path::new(&path));
        let at = content_end(&entries);
        for (i, e) in extra.into_iter().enumerate() {
            entries.insert(at + i, e);
        }
        let crafted = dir.0.join(format!("crafted-{what}.tar.gz"));
        save(&crafted, entries, true);
        let crafted = crafted.to_string_lossy().into_owned();
        let (ok, _, err) =
            stack.xtask(&["restore", &crafted, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
        assert!(!ok, "{what}: a crafted archive was restored: {err}");
        assert!(err.contains("problem: entry"), "{what}: refused by the grammar, before anything is written: {err}");
        assert_eq!(on_volume(&media, Access::ReadOnly, "find /v | sort; cat /v/a"), before, "{what}: {err}");
        assert_eq!(beside(&media), ["_data"], "{what}: {err}");
    }
}

/// Unmounts a path on drop (a test's own bind mount).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// FINDING 4 (a volume left without `_data` by the way back). When the second rename of a
/// swap beside `_data` fails (here the staged copy is made a mount point once staged, as a
/// helper killed by a daemon restart or the OOM killer would also cut it off), `_data` has
/// already become `.xtask-old-PID`. The restore takes the way back, which writes the safety
/// backup into the volume in place: mounting it fails (no `_data`), and recovery skips
/// leftovers of live pids, its own included. The restore ends with the volume unmountable and
/// its services down until another run comes. The way back should first settle its own swap
/// (rename `.xtask-old-PID` back to `_data` while the staged copy is still there).
#[test]
fn a_failed_second_rename_never_leaves_the_volume_without_data() {
    if !engine() {
        return;
    }
    use std::io::Read;
    let (stack, dir, path, media) = backed_up("atk5-secondrename");
    let data = data_dir(&media);
    let parent = data.parent().unwrap().to_path_buf();
    let mut child = stack.spawn(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    let mut stderr = child.stderr.take().unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&seen).contains("==> safety backup of what will be replaced") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "the restore ended before its safety backup: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let staged = parent.join(format!(".xtask-staging-{}", child.id()));
    assert!(staged.is_dir(), "staged beside _data: {:?}", beside(&media));
    assert!(Command::new("mount").arg("--bind").arg(&staged).arg(&staged).status().unwrap().success());
    let _unmount = Unmount(staged.clone());
    stderr.read_to_end(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let err = String::from_utf8_lossy(&seen).into_owned();
    let left = beside(&media);
    assert!(!status.success(), "the swap cannot have succeeded: {err}");
    assert!(data.is_dir(), "the restore ended with no _data ({left:?} beside): {err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "changed\n", "the way back put the old data back");
}

/// The flags `lsattr -d` shows for `path`.
fn attrs(path: &Path) -> String {
    let out = Command::new("lsattr").arg("-d").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// FINDING 5 (the volume's own directory replaced). What an administrator set on a volume's
/// `_data` itself (inode flags such as `chattr +A`/`+C`/`+P` with a project quota, ACLs, an
/// SELinux label, an fs-verity or encryption policy) belonged to the directory the swap
/// renames away: the restored `_data` is a new directory made by tar beside it, with none of
/// that. Staged inside the volume (before 762d71c) the root directory stayed. Here `chattr +A`
/// (no atime updates; ext4) stands for them: it is gone after the restore.
#[test]
fn the_flags_of_the_volumes_own_directory_survive_a_restore() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-attrs");
    let data = data_dir(&media);
    if !Command::new("chattr").arg("+A").arg(&data).status().is_ok_and(|s| s.success()) {
        return; // a filesystem without that flag
    }
    let before = attrs(&data);
    assert!(before.contains('A'), "{before}");
    stack.xtask_ok(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "archived\n");
    let after = attrs(&data);
    assert_eq!(after, before, "the flags set on the volume's _data are lost: it is a new directory");
}

/// FINDING 6 (the settling is not done by every command that mounts a volume). After a swap
/// beside `_data` cut off between its renames (its pid gone), only `backup` and the restore's
/// execution settle it. `restore --dry-run`, an interactive restore (its confirmation measures
/// the volumes first), `volumes` and `check` mount the volume before anything settles and fail
/// with the engine's "lstat …/_data: no such file or directory", which names neither the cause
/// nor the fix.
#[test]
fn commands_that_measure_a_half_swapped_volume_settle_it_or_say_what_to_do() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-halfcmds");
    stack.compose(&["stop"]);
    let data = data_dir(&media);
    let parent = data.parent().unwrap().to_path_buf();
    let pid = 4_194_304; // PID_MAX_LIMIT: never a live process
    let staged = parent.join(format!(".xtask-staging-{pid}"));
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(staged.join("new.txt"), "new\n").unwrap();
    std::fs::rename(&data, parent.join(format!(".xtask-old-{pid}"))).unwrap();
    let mut failed = Vec::new();
    for args in [vec!["restore", path.as_str(), "--dry-run", "--output-dir", dir.s()], vec!["volumes"], vec!["check"]] {
        let (code, _, err) = stack.xtask_code(&args);
        let raw = err.contains("no such file or directory") && !err.contains("interrupted restore");
        if raw {
            failed.push(format!("{args:?} exited {code}: {}", err.lines().last().unwrap_or("")));
        }
    }
    assert!(failed.is_empty(), "commands fail on the engine's mount error:\n{}", failed.join("\n"));
}

/// FINDING 7 (a service turns the staging beside `_data` off). The survey's output is three
/// sections split on "\n---"; the middle one lists names found in the volumes, which a service
/// chooses: a file named `.xtask-x` + newline + `---` ends that section early, the device and
/// inode lines fall into a section nobody reads, no volume is proven, and every volume of the
/// restore is staged inside itself (in the service's reach, the swap moving entries one by
/// one). Nothing worse: a name cannot hold `/`, so no forged `/v/N …` line. Fixed on this
/// branch: the names come last in the survey's output, read with `splitn(3, …)`.
#[test]
fn a_planted_name_does_not_turn_the_staging_beside_data_off() {
    if !engine() {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    let (stack, dir, path, media) = backed_up("atk5-sections");
    on_volume(&media, Access::Write, "touch \"/v/.xtask-x$(printf '\\n---')\"");
    let data = data_dir(&media);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (s, watched) = (stop.clone(), data.clone());
    let watcher = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !s.load(Ordering::SeqCst) {
            for e in std::fs::read_dir(&watched).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".xtask-staging-") {
                    seen.insert(name);
                }
            }
        }
        seen
    });
    let restored = stack.xtask(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert!(restored.0, "{}", restored.2);
    assert!(seen.is_empty(), "staged inside the volume because of a name a service planted: {seen:?}");
}

/// HELD: a swap beside `_data` cut off after its second rename (`.xtask-old-PID` beside the new
/// `_data`) or after the old content became `.xtask-trash-PID`: the next backup removes what is
/// left and leaves `_data`, the restored content, alone.
#[test]
fn a_swap_cut_off_after_its_second_rename_is_tidied_and_data_kept() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("atk5-late");
    let dir = TempDir::new("atk5-late");
    stack.xtask_ok(&["up", "backend"]);
    stack.compose(&["stop"]);
    let media = stack.volume("backend-media");
    on_volume(&media, Access::Write, "echo new > /v/a");
    let parent = data_dir(&media).parent().unwrap().to_path_buf();
    for (i, kind) in ["old", "trash"].iter().enumerate() {
        let pid = 4_194_300 + i; // near PID_MAX_LIMIT: no live process
        let left = parent.join(format!(".xtask-{kind}-{pid}"));
        std::fs::create_dir_all(left.join("sub")).unwrap();
        std::fs::write(left.join("sub/old.txt"), "old\n").unwrap();
        let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s()]);
        assert!(ok, "{kind}: {err}");
        assert_eq!(beside(&media), ["_data"], "{kind}: {err}");
        assert_eq!(on_volume(&media, Access::ReadOnly, "ls -A /v; cat /v/a"), "a\nnew\n", "{kind}");
    }
}

/// FINDING 1, inside the stack: a service that mounts a restored volume through `volumes_from`
/// is not one of the volume's users (those are found by the compose key of their mounts), so
/// the swap leaves it running, on the old `_data` that is then removed: it reads a directory
/// that no longer exists and cannot write.
#[test]
fn a_service_mounting_the_volume_through_volumes_from_sees_the_restored_data() {
    if !engine() {
        return;
    }
    let compose = r#"
services:
  app:
    image: xtask-test/busybox:local
    command: ["sleep", "600"]
    stop_grace_period: 1s
    volumes: [media:/m]
  sidecar:
    image: xtask-test/busybox:local
    command: ["sleep", "600"]
    stop_grace_period: 1s
    volumes_from: [app]
volumes:
  media: {name: "${VF_PREFIX}-media", labels: {xtask.role: uploads}}
"#;
    let (_project, stack) = stack_from("atk5-vfrom", compose, "VF_PREFIX");
    let dir = TempDir::new("atk5-vfrom-backups");
    stack.xtask_ok(&["up"]);
    let media = format!("{}-media", stack.project);
    on_volume(&media, Access::Write, "echo archived > /v/a");
    let archive = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    on_volume(&media, Access::Write, "echo changed > /v/a");
    let path = archive["path"].as_str().unwrap();
    let (ok, _, err) = stack.xtask(&["restore", path, "--only", "media", "--yes", "--output-dir", dir.s()]);
    assert!(ok, "{err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "archived\n");
    let sidecar = format!("{}-sidecar-1", stack.project);
    let out = docker(&["exec", &sidecar, "sh", "-c", "{ cat /m/a; echo kept > /m/b; } 2>&1"]);
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let now = on_volume(&media, Access::ReadOnly, "ls /v");
    assert!(
        seen == "archived\n" && now.contains('b'),
        "the sidecar sees {seen:?} and its write is not in the volume ({now:?})"
    );
}

/// FINDING 1, a paused service: only running services are stopped for the swap, so a service
/// the operator paused keeps its mount of the old `_data`; once unpaused it reads and writes a
/// removed directory.
#[test]
fn a_paused_service_sees_the_restored_data_once_unpaused() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-paused");
    stack.compose(&["pause", "backend"]);
    let (ok, _, err) =
        stack.xtask(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    let _ = stack.compose_cmd().args(["unpause", "backend"]).output();
    if !ok {
        assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "changed\n", "refused, nothing changed: {err}");
        return;
    }
    let backend = format!("{}-backend-1", stack.project);
    let out = docker(&["exec", &backend, "sh", "-c", "{ cat /app/media/a; echo kept > /app/media/b; } 2>&1"]);
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let now = on_volume(&media, Access::ReadOnly, "ls /v");
    assert!(
        seen == "archived\n" && now.contains('b'),
        "the unpaused service sees {seen:?} and its write is not in the volume ({now:?})"
    );
}

/// HELD: a volume whose `_data` is a symbolic link (to a directory beside it, as root could
/// make it) is not staged beside: the tool's walk refuses the link, the copy is staged inside
/// the volume, the restore succeeds, and the link and its target are left as they were.
#[test]
fn a_data_dir_that_is_a_symlink_is_restored_inside_the_volume() {
    if !engine() {
        return;
    }
    let (stack, dir, path, media) = backed_up("atk5-symdata");
    stack.compose(&["stop", "backend"]);
    let data = data_dir(&media);
    let real = data.parent().unwrap().join("real");
    std::fs::rename(&data, &real).unwrap();
    std::os::unix::fs::symlink("real", &data).unwrap();
    stack.compose(&["start", "backend"]);
    let (ok, _, err) =
        stack.xtask(&["restore", &path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    assert!(ok, "{err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/a"), "archived\n");
    assert_eq!(std::fs::read_link(&data).unwrap(), Path::new("real"), "the link is still there");
    assert_eq!(std::fs::read_to_string(real.join("a")).unwrap(), "archived\n", "restored through it, in place");
    assert_eq!(beside(&media), ["_data", "real"], "nothing staged beside it");
}
