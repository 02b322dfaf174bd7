//! What the engine holds: its volumes' names, and their sizes on disk measured by a helper.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::Docker;

impl Docker {
    /// The names of every volume the engine has now.
    pub fn volume_names(&self) -> Result<Vec<String>> {
        let out = self.query(&self.cmd(["volume", "ls", "--quiet"])).context("list the engine's volumes")?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Sizes on disk of existing volumes, measured by one read-only helper container running
    /// `du -sk /v/0 /v/1 ...`. Callers pass only volumes that exist (a mount would create one).
    pub fn volume_sizes(&self, existing: &[&str]) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        if existing.is_empty() {
            return Ok(out);
        }
        let targets: Vec<String> = (0..existing.len()).map(|i| format!("/v/{i}")).collect();
        let mut command = vec!["du", "-s", "-k"];
        command.extend(targets.iter().map(String::as_str));
        let du = self.query(&self.helper_read_only(existing, &command)).context(
            "measure the volumes' sizes with a helper container (set XTASK_HELPER_IMAGE to another small image if this one cannot be pulled)",
        )?;
        for line in du.lines() {
            let mut parts = line.split_whitespace();
            let (Some(kib), Some(path)) = (parts.next(), parts.next()) else { continue };
            let Some(idx) = path.strip_prefix("/v/").and_then(|i| i.parse::<usize>().ok()) else { continue };
            if let (Ok(kib), Some(name)) = (kib.parse::<u64>(), existing.get(idx)) {
                out.insert(name.to_string(), kib * 1024);
            }
        }
        Ok(out)
    }
}

impl Docker {
    /// Where the engine keeps each of `volumes` that is a plain directory of its local driver
    /// (driver `local`, no mount options, `Mountpoint` ending in `/<name>/_data`): the volume
    /// name and that directory, as `docker volume inspect` says. Other volumes are left out
    /// (an NFS, tmpfs or bind option mounts something there; another driver keeps them elsewhere).
    pub fn volume_dirs(&self, volumes: &[&str]) -> Result<BTreeMap<String, String>> {
        if volumes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut args =
            vec!["volume", "inspect", "--format", "{{.Name}}\t{{.Driver}}\t{{len .Options}}\t{{.Mountpoint}}"];
        args.extend(volumes);
        let out = self.query(&self.cmd(args)).context("ask the engine where the volumes are kept")?;
        Ok(plain_volume_dirs(&out))
    }
}

impl Docker {
    /// Those of `volumes` that a container other than the tool's own helpers still mounts
    /// (running or paused: what `docker ps` lists). One query when none is.
    pub fn volumes_in_use(&self, volumes: &[String]) -> Result<Vec<String>> {
        let users = |of: &[String]| -> Result<bool> {
            let mut args = vec!["ps".to_string(), "--format".into(), "{{.Label \"xtask.helper\"}}".into()];
            for v in of {
                args.extend(["--filter".into(), format!("volume={v}")]);
            }
            let out = self.query(&self.cmd(args)).context("ask the engine which containers mount the volumes")?;
            Ok(out.lines().any(|helper| helper.trim() != "1"))
        };
        if volumes.is_empty() || !users(volumes)? {
            return Ok(Vec::new());
        }
        let mut busy = Vec::new();
        for v in volumes {
            if users(std::slice::from_ref(v))? {
                busy.push(v.clone());
            }
        }
        Ok(busy)
    }
}

/// The lines of [`Docker::volume_dirs`]'s inspect format that are plain local directories.
fn plain_volume_dirs(inspect: &str) -> BTreeMap<String, String> {
    let mut dirs = BTreeMap::new();
    for line in inspect.lines() {
        let mut fields = line.splitn(4, '\t');
        let (Some(name), Some("local"), Some("0"), Some(mountpoint)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if mountpoint.starts_with('/') && mountpoint.ends_with(&format!("/{name}/_data")) && !name.is_empty() {
            dirs.insert(name.to_string(), mountpoint.to_string());
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_local_volumes_have_a_directory() {
        let out = "a\tlocal\t0\t/var/lib/docker/volumes/a/_data\n\
                   nfs\tlocal\t3\t/var/lib/docker/volumes/nfs/_data\n\
                   other\tsome-plugin\t0\t/mnt/other\n\
                   odd\tlocal\t0\t/elsewhere/_data\n\
                   r\tlocal\t0\t/home/u/.local/share/docker/volumes/r/_data";
        let dirs = plain_volume_dirs(out);
        assert_eq!(dirs.keys().collect::<Vec<_>>(), ["a", "r"]);
        assert_eq!(dirs["a"], "/var/lib/docker/volumes/a/_data");
    }
}
