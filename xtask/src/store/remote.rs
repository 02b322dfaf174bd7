//! The remotes as places that hold archives: a remote by its name in `x-xtask.remotes`, the
//! project's archives in it (a folder per project, `<url>/<project>/`) with their sidecars and
//! signatures, and the archive a reader streams from. Each archive there has a sidecar
//! `<file>.sha256` (`sha256sum -c` format) written only after its upload completed and its size
//! was checked: an archive without one is incomplete and never listed as good, pulled, verified
//! or restored. The bucket is untrusted: only names of the archive grammar are used, every byte
//! read back is checked against the sidecar's digest, and the trust policy decides what counts.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use time::OffsetDateTime;

use crate::archive::{self, hex};
use crate::context::Ctx;
use crate::engine::crypt;
use crate::engine::remote::Remote;
use crate::model::offsite;

/// A remote by its name in `x-xtask.remotes`, or given directly as `s3://…` / `rclone:…`.
pub fn open(ctx: &Ctx, name: &str) -> Result<Arc<Remote>> {
    let set = ctx.offsite()?;
    let spec = match set.remotes.get(name) {
        Some(s) => s.clone(),
        None if offsite::is_url(name) => offsite::remote(name, name, None, None, &ctx.stack.name)?,
        None => {
            let known: Vec<&str> = set.remotes.keys().map(String::as_str).collect();
            bail!(
                "no remote named {name:?} in x-xtask.remotes of the compose file (known: {}); add one \
                 (`remotes: {{{name}: {{url: \"s3://bucket/prefix\", endpoint: \"…\"}}}}`) or give an s3:// URL",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        }
    };
    Ok(Arc::new(Remote::open(&spec)?))
}

/// An archive in a remote folder.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteArchive {
    pub file: String,
    pub kind: &'static str,
    /// UTC, RFC 3339, from the file name.
    pub created_at: String,
    #[serde(skip)]
    pub created: OffsetDateTime,
    pub size_bytes: u64,
    /// Its sidecar's digest; None: incomplete (no sidecar) or dated in the future, never good.
    pub sha256: Option<String>,
    #[serde(skip)]
    pub digest: Option<[u8; 32]>,
    pub complete: bool,
    pub encrypted: bool,
    /// Its sidecar exists but does not count (it names another archive, holds more than one
    /// line…): in doubt, never used and never removed by prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_refused: Option<String>,
    /// The bytes of its `NAME.sig`, if the remote has one.
    #[serde(skip)]
    pub signature: Option<Vec<u8>>,
    /// Whether this host pushed it (its digest is in this host's record of pushes); None when
    /// this host recorded no push to this remote folder (a new machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<bool>,
    /// Why the reading policy (x-xtask.sign / encrypt) does not trust it; None: trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<String>,
}

impl RemoteArchive {
    /// Why `policy` does not trust this complete archive (None: it does).
    pub fn judge(&self, policy: &crate::store::trust::Policy) -> Option<String> {
        let digest = self.digest?;
        policy.untrusted(&self.file, self.size_bytes, digest, self.encrypted, self.signature.as_deref())
    }

    /// Without signatures (`x-xtask.sign` unset), why this archive must not outrank the ones
    /// this host pushed: it is not in this host's record of pushes, which has others.
    pub fn unknown(&self, policy: &crate::store::trust::Policy) -> Option<String> {
        (policy.signing.is_none() && self.known == Some(false)).then(|| {
            "not pushed from this host (its SHA-256 is not in this host's record of pushes; without x-xtask.sign \
             nothing else vouches for it)"
                .to_string()
        })
    }
}

/// The project's archives in `remote`, newest first, and the sidecars without an archive.
pub fn scan(remote: &Remote) -> Result<(Vec<RemoteArchive>, Vec<String>)> {
    let objects = remote.list()?;
    let has_sidecars = objects.iter().any(|o| o.name.ends_with(".sha256"));
    let sidecars = if has_sidecars { remote.sidecars()? } else { Default::default() };
    for (file, why) in &sidecars.refused {
        eprintln!("warning: {} refused: {why}; its archive is in doubt and never used", remote.shown(file));
    }
    let refused = |name: &str| {
        let own = format!("{name}.sha256");
        sidecars.refused.iter().find(|(f, _)| *f == own).map(|(_, why)| why.clone())
    };
    let mut out = Vec::new();
    let now = OffsetDateTime::now_utc();
    let pushed = crate::store::pushed::load(&remote.spec.root);
    for o in objects.iter().filter(|o| crate::store::local::is_our_name(&o.name)) {
        let Some(created) = crate::store::local::name_stamp(&o.name) else { continue };
        // A name dated in the future would always be "latest": never taken as good.
        let digest = sidecars.good.get(&o.name).copied().filter(|_| created <= now);
        let known = pushed.any().then(|| digest.is_some_and(|d| pushed.knows(&o.name, &d)));
        out.push(RemoteArchive {
            file: o.name.clone(),
            kind: crate::store::local::name_kind(&o.name),
            created_at: created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            created,
            size_bytes: o.size,
            sha256: digest.map(|d| hex(&d)),
            digest,
            complete: digest.is_some(),
            encrypted: o.name.ends_with(crypt::SUFFIX),
            sidecar_refused: refused(&o.name),
            signature: sidecars.signatures.get(&o.name).cloned(),
            known,
            untrusted: None,
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.file.cmp(&a.file)));
    let orphans = objects
        .iter()
        .filter_map(|o| o.name.strip_suffix(".sha256"))
        .filter(|a| crate::store::local::is_our_name(a) && !objects.iter().any(|o| o.name == *a))
        .map(|a| format!("{a}.sha256"))
        .collect();
    Ok((out, orphans))
}

/// The archive `file` (None: the newest complete one) of the remote, ready to stream.
pub fn pick(ctx: &Ctx, name: &str, file: Option<&str>) -> Result<archive::Source> {
    if let Some(vault) = crate::store::vault::lookup(ctx, name)? {
        return crate::store::vault::pick(ctx, &vault, file).map(|(src, _)| src);
    }
    pick_named(ctx, name, file).map(|(src, _)| src)
}

/// The reading policy without its `--allow-*` exceptions: for listing and retention, where
/// an exception would let an untrusted object count.
pub fn quiet_policy(ctx: &Ctx) -> Result<crate::store::trust::Policy> {
    let mut policy = crate::store::trust::Policy::of(ctx)?;
    policy.trust = Default::default();
    Ok(policy)
}

/// [`pick`], with the archive as the remote lists it. `--latest` is the newest complete
/// archive the reading policy trusts; a named one must be trusted too.
pub fn pick_named(ctx: &Ctx, name: &str, file: Option<&str>) -> Result<(archive::Source, RemoteArchive)> {
    let remote = open(ctx, name)?;
    let (archives, _) = scan(&remote)?;
    let policy = crate::store::trust::Policy::of(ctx)?;
    let found = match file {
        Some(f) => archives.iter().find(|a| a.file == f).with_context(|| {
            format!("remote {name} has no archive {f} of project {}; see `cargo xtask backups --remote {name}`", ctx.stack.name)
        })?,
        None => archives
            .iter()
            .filter(|a| a.complete)
            .find(|a| match a.judge(&policy).or_else(|| a.unknown(&policy)) {
                None => true,
                Some(why) => {
                    eprintln!("skip {}: {why}", remote.shown(&a.file));
                    false
                }
            })
            .with_context(|| {
                format!("remote {name} has no complete, trusted archive of project {}; push one with `cargo xtask push --latest --to {name}`", ctx.stack.name)
            })?,
    };
    let Some(digest) = found.digest else {
        bail!(
            "{}: incomplete (no .sha256 beside it: its push was interrupted); push it again",
            remote.shown(&found.file)
        );
    };
    if file.is_some() {
        if let Some(why) = found.judge(&policy) {
            bail!("{} is untrusted: {why}", remote.shown(&found.file));
        }
    }
    Ok((archive::Source::remote(remote.clone(), &found.file, digest)?, found.clone()))
}
