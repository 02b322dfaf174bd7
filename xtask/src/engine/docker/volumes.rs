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
