//! The off-site settings of the compose file's `x-xtask:` block: named remotes and encryption
//! recipients. Pure parsing: every value is checked against a strict shape, because each ends up
//! as an argument of `rclone` or `age` (never a shell, but an argument must not become a flag or
//! leak into rclone's connection-string syntax). Secrets never live here: credentials come from
//! the environment or the user's files (`AWS_*`, `~/.aws/credentials`, rclone's own config), the
//! age identity from `XTASK_AGE_IDENTITY`.
//!
//! ```yaml
//! x-xtask:
//!   remotes:
//!     offsite: {url: "s3://bucket/prefix", endpoint: "https://fra1.digitaloceanspaces.com", region: "fra1"}
//!     nas: {url: "rclone:mynas:backups"}      # any remote of the user's rclone config
//!     vault: {url: "restic:/srv/restic", password_file: "/etc/xtask/restic.pw"}  # deduplicated
//!   encrypt:
//!     recipients: ["age1…"]                   # public keys: safe to commit
//!     recipients_file: keys/backup.pub        # or a file of them, relative to the project directory
//!   sign:
//!     allowed_signers: ["ssh-ed25519 AAAA… backup@host"]   # OpenSSH public keys: safe to commit
//!     allowed_signers_file: keys/signers.pub  # or a file of them (one per line)
//!   compression: zstd:3                       # or gzip[:1-9], zstd[:1-19]; default zstd (level 3)
//! ```
//!
//! The signing key comes from the file `XTASK_SIGNING_KEY` names, never from here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

/// A remote as configured: where its archives live, in rclone's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The configured name (`offsite`), or the URL when given directly.
    pub name: String,
    /// The rclone path of the project's folder, e.g.
    /// `:s3,provider=Other,env_auth=true,endpoint='https://…':bucket/prefix/PROJECT`.
    pub root: String,
    /// The URL the user wrote (for messages).
    pub url: String,
}

/// Where archives are encrypted to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encryption {
    pub recipients: Vec<String>,
    pub recipients_file: Option<PathBuf>,
}

impl Encryption {
    pub fn enabled(&self) -> bool {
        !self.recipients.is_empty() || self.recipients_file.is_some()
    }
}

/// Who may sign archives: OpenSSH public keys (`TYPE BASE64 [COMMENT]`), given inline or in a
/// file read when a signature is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signing {
    pub allowed_signers: Vec<String>,
    pub allowed_signers_file: Option<PathBuf>,
}

/// A restic repository as a remote (`url: "restic:REPOSITORY"`): archives go in as snapshots of
/// their uncompressed tar stream, deduplicated and encrypted by restic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSpec {
    pub name: String,
    /// restic's repository string (`/srv/restic`, `s3:https://host/bucket/prefix`,
    /// `rclone:nas:restic`, `sftp:…`, `rest:…`): given to restic in `RESTIC_REPOSITORY`, never
    /// on its command line (a REST server's URL may hold a password).
    pub repository: String,
    /// The file holding the repository password; None: restic's own `RESTIC_PASSWORD_FILE` or
    /// `RESTIC_PASSWORD_COMMAND` from the environment. Never the password itself.
    pub password_file: Option<PathBuf>,
}

impl VaultSpec {
    /// The repository as it may be shown: a URL's password masked (`rest:https://user:***@host/`),
    /// as restic itself prints it.
    pub fn shown(&self) -> String {
        mask_userinfo(&self.repository)
    }
}

/// `scheme://user:password@host…` with the password replaced by `***`.
pub fn mask_userinfo(repository: &str) -> String {
    let Some(start) = repository.find("://").map(|i| i + 3) else { return repository.to_string() };
    let rest = &repository[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &repository[..start], &rest[at..])
        }
        None => repository.to_string(),
    }
}

/// The scheme of a restic repository remote's URL.
pub const RESTIC_SCHEME: &str = "restic:";

/// The parsed `x-xtask` off-site settings.
#[derive(Debug, Clone, Default)]
pub struct Offsite {
    pub remotes: BTreeMap<String, RemoteSpec>,
    /// Remotes that are restic repositories, by name.
    pub vaults: BTreeMap<String, VaultSpec>,
    pub encryption: Encryption,
    /// Set: every archive is signed when written and must carry a valid signature to be read.
    pub signing: Option<Signing>,
    /// `alerts`, `notify`, `schedule` and `retention` (model/alerts.rs).
    pub operations: super::alerts::Operations,
    /// `x-xtask.compression` (`zstd`, `zstd:3`, `gzip:9`): a backup's default; None: zstd.
    pub compression: Option<super::compression::Compression>,
}

fn text<'a>(v: &'a Value, key: &str, at: &str) -> Result<Option<&'a str>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("x-xtask.{at}.{key} must be a string"),
    }
}

/// Reads the off-site settings from the `x-xtask` block (None: no block).
pub fn parse(settings: Option<&Value>, project: &str, project_dir: &Path) -> Result<Offsite> {
    let mut out = Offsite::default();
    let Some(s) = settings else { return Ok(out) };
    if let Some(remotes) = s.get("remotes") {
        let map = remotes.as_mapping().context("x-xtask.remotes must be a mapping of names to {url: …}")?;
        for (k, v) in map {
            let name = k.as_str().context("x-xtask.remotes: every name must be a string")?;
            check_name(name).with_context(|| format!("x-xtask.remotes.{name}"))?;
            let at = format!("remotes.{name}");
            let url = text(v, "url", &at)?.with_context(|| format!("x-xtask.{at} has no url"))?;
            if let Some(repository) = url.strip_prefix(RESTIC_SCHEME) {
                let password_file = text(v, "password_file", &at)?.map(|f| project_dir.join(f));
                let spec = vault(name, repository, password_file).with_context(|| format!("x-xtask.{at}"))?;
                out.vaults.insert(name.to_string(), spec);
                continue;
            }
            let spec = remote(name, url, text(v, "endpoint", &at)?, text(v, "region", &at)?, project)
                .with_context(|| format!("x-xtask.{at}"))?;
            out.remotes.insert(name.to_string(), spec);
        }
    }
    if let Some(e) = s.get("encrypt") {
        out.encryption = encryption(e, project_dir).context("x-xtask.encrypt")?;
    }
    if let Some(v) = s.get("sign") {
        out.signing = Some(signing(v, project_dir).context("x-xtask.sign")?);
    }
    out.operations = super::alerts::parse(Some(s))?;
    match s.get("compression") {
        None | Some(Value::Null) => {}
        Some(Value::String(spec)) => out.compression = Some(spec.parse().context("x-xtask.compression")?),
        Some(_) => bail!("x-xtask.compression must be a string: zstd or gzip, optionally with a level (zstd:3)"),
    }
    Ok(out)
}

fn signing(v: &Value, project_dir: &Path) -> Result<Signing> {
    let mut sign = Signing::default();
    if let Some(list) = v.get("allowed_signers") {
        let list = list.as_sequence().context("allowed_signers must be a list of OpenSSH public keys")?;
        for k in list {
            let k = k.as_str().context("every allowed signer must be a string")?;
            sign.allowed_signers.push(check_public_key(k)?);
        }
    }
    if let Some(file) = text(v, "allowed_signers_file", "sign")? {
        sign.allowed_signers_file = Some(project_dir.join(file));
    }
    if sign.allowed_signers.is_empty() && sign.allowed_signers_file.is_none() {
        bail!("names neither allowed_signers nor allowed_signers_file");
    }
    Ok(sign)
}

/// An OpenSSH public key line, `TYPE BASE64 [COMMENT]`, as `ssh-keygen -y` or a `.pub` file
/// gives it; returned as `TYPE BASE64` (the comment dropped: it never reaches a signers file).
pub fn check_public_key(line: &str) -> Result<String> {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "sk-ssh-ed25519@openssh.com",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    ];
    let mut words = line.split_whitespace();
    let (kind, key) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let base64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
    if !TYPES.contains(&kind) || key.len() < 16 || !key.bytes().all(base64) {
        bail!("{line:?} is not an OpenSSH public key (`ssh-ed25519 AAAA… name`, as in a .pub file)");
    }
    Ok(format!("{kind} {key}"))
}

fn encryption(e: &Value, project_dir: &Path) -> Result<Encryption> {
    let mut enc = Encryption::default();
    if let Some(list) = e.get("recipients") {
        let list = list.as_sequence().context("recipients must be a list of age public keys (age1…)")?;
        for r in list {
            let r = r.as_str().context("every recipient must be a string")?;
            enc.recipients.push(check_recipient(r)?.to_string());
        }
    }
    if let Some(file) = text(e, "recipients_file", "encrypt")? {
        enc.recipients_file = Some(project_dir.join(file));
    }
    if !enc.enabled() {
        bail!("names neither recipients nor recipients_file");
    }
    Ok(enc)
}

/// An age X25519 recipient: `age1` and bech32 characters.
pub fn check_recipient(r: &str) -> Result<&str> {
    let ok =
        r.len() > 10 && r.starts_with("age1") && r[4..].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    if !ok {
        bail!("{r:?} is not an age public key (age1…, as `age-keygen -y KEYFILE` prints it)");
    }
    Ok(r)
}

fn check_name(name: &str) -> Result<()> {
    let first_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_ok || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("a remote's name may hold only letters, digits, - and _, starting with a letter or digit");
    }
    Ok(())
}

fn check_path(path: &str, what: &str) -> Result<()> {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." || !seg.bytes().all(ok_byte) {
            bail!("{what} {path:?}: only letters, digits, '-', '_', '.' and '/' between names are accepted");
        }
    }
    Ok(())
}

/// A restic repository remote: the repository string must be one line of printable text that
/// restic cannot read as an option (it goes into `RESTIC_REPOSITORY`, not argv).
pub fn vault(name: &str, repository: &str, password_file: Option<PathBuf>) -> Result<VaultSpec> {
    if repository.is_empty() || repository.starts_with('-') || repository.chars().any(char::is_control) {
        bail!(
            "url restic:{:?}: write restic:REPOSITORY as restic names it (/srv/restic, s3:https://host/bucket/prefix, rclone:remote:path)",
            mask_userinfo(repository)
        );
    }
    Ok(VaultSpec { name: name.to_string(), repository: repository.to_string(), password_file })
}

/// The URL schemes a remote may have: the one list `remote` parses and the command line accepts
/// in place of a remote's name.
pub const URL_SCHEMES: [&str; 2] = ["s3://", "rclone:"];

/// Whether `name` is a remote's URL rather than its name in `x-xtask.remotes`.
pub fn is_url(name: &str) -> bool {
    URL_SCHEMES.iter().any(|s| name.starts_with(s))
}

/// `s3://bucket/prefix` (with an optional endpoint and region) or `rclone:NAME:path`, as the
/// rclone path of `project`'s folder in it.
pub fn remote(
    name: &str,
    url: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    project: &str,
) -> Result<RemoteSpec> {
    let [s3, rclone] = URL_SCHEMES;
    let base = if let Some(rest) = url.strip_prefix(s3) {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            bail!("url {url:?}: {bucket:?} is not an S3 bucket name (3-63 of a-z, 0-9, '-', '.')");
        }
        check_path(prefix, "url")?;
        let mut params = vec!["s3".to_string(), "env_auth=true".to_string()];
        match endpoint {
            Some(e) => {
                check_endpoint(e)?;
                params.push("provider=Other".into());
                params.push(format!("endpoint='{e}'"));
            }
            None => params.push("provider=AWS".into()),
        }
        if let Some(r) = region {
            if r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                bail!("region {r:?}: only letters, digits and '-'");
            }
            params.push(format!("region={r}"));
        }
        format!(":{}:{}", params.join(","), join(bucket, prefix))
    } else if let Some(rest) = url.strip_prefix(rclone) {
        let (remote, path) = rest.split_once(':').with_context(|| format!("url {url:?}: write rclone:REMOTE:path"))?;
        check_name(remote).with_context(|| format!("url {url:?}: the rclone remote's name"))?;
        check_path(path, "url")?;
        format!("{remote}:{}", path.trim_matches('/'))
    } else {
        bail!("url {url:?}: write s3://bucket/prefix or rclone:REMOTE:path");
    };
    check_path(project, "project name")?;
    Ok(RemoteSpec { name: name.to_string(), root: join(&base, project), url: url.to_string() })
}

fn join(a: &str, b: &str) -> String {
    let b = b.trim_matches('/');
    match (a.ends_with(':') || a.ends_with('/'), b.is_empty()) {
        (_, true) => a.trim_end_matches('/').to_string(),
        (true, false) => format!("{a}{b}"),
        (false, false) => format!("{a}/{b}"),
    }
}

fn check_endpoint(e: &str) -> Result<()> {
    let rest = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:/[]".contains(&b)) && !r.starts_with('/')
    });
    if !ok {
        bail!("endpoint {e:?}: write http(s)://host[:port][/path] (letters, digits, '-', '.', ':', '/')");
    }
    Ok(())
}

impl Offsite {
    /// Why the configuration is refused when a file of trusted keys lies inside one of the
    /// stack's bind mounts (`host_paths`, absolute): whoever can write the bind (its service, or
    /// a restore of it) could add a key. Compared as written and with links resolved.
    pub fn key_file_in_bind(&self, host_paths: &[&str]) -> Option<String> {
        let files = [
            ("x-xtask.sign.allowed_signers_file", self.signing.as_ref().and_then(|s| s.allowed_signers_file.as_ref())),
            ("x-xtask.encrypt.recipients_file", self.encryption.recipients_file.as_ref()),
        ];
        for (key, file) in files.iter().filter_map(|(k, f)| f.map(|f| (k, f))) {
            let forms = [Some(crate::model::compose::normalize(file)), file.canonicalize().ok()];
            for bind in host_paths {
                let binds =
                    [Some(crate::model::compose::normalize(Path::new(bind))), Path::new(bind).canonicalize().ok()];
                let inside = forms.iter().flatten().any(|f| binds.iter().flatten().any(|b| f.starts_with(b)));
                if inside {
                    return Some(format!(
                        "{key} {} lies inside the bind mount {bind}: its service, or a restore of it, could \
                         make a key trusted; keep the file outside every bind",
                        file.display()
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn compression_is_a_checked_string() {
        let o = parse(Some(&yaml("compression: gzip:9")), "p", Path::new("/p")).unwrap();
        assert_eq!(o.compression.map(|c| c.to_string()).as_deref(), Some("gzip:9"));
        assert_eq!(parse(Some(&yaml("remotes: {}")), "p", Path::new("/p")).unwrap().compression, None);
        for (bad, says) in [
            ("compression: zstd:25", "zstd level 25 is out of range"),
            ("compression: brotli", "unknown compression \"brotli\""),
            ("compression: 3", "must be a string"),
            ("compression: [zstd]", "must be a string"),
        ] {
            let e = format!("{:#}", parse(Some(&yaml(bad)), "p", Path::new("/p")).unwrap_err());
            assert!(e.starts_with("x-xtask.compression") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_repository_url_is_shown_without_its_password() {
        assert_eq!(mask_userinfo("rest:https://alice:S3CRET@h:8000/repo"), "rest:https://alice:***@h:8000/repo");
        assert_eq!(mask_userinfo("rest:https://h/a@b"), "rest:https://h/a@b", "an @ in the path is no userinfo");
        assert_eq!(mask_userinfo("/srv/restic"), "/srv/restic");
    }

    #[test]
    fn restic_remotes_are_vaults_with_a_password_file_never_a_password() {
        let text =
            "remotes: {vault: {url: 'restic:s3:https://h/b/p', password_file: keys/pw}, nas: {url: 'rclone:n:b'}}";
        let o = parse(Some(&yaml(text)), "p", Path::new("/proj")).unwrap();
        let v = &o.vaults["vault"];
        assert_eq!(
            (v.repository.as_str(), v.password_file.as_deref()),
            ("s3:https://h/b/p", Some(Path::new("/proj/keys/pw")))
        );
        assert!(o.remotes.contains_key("nas") && !o.remotes.contains_key("vault"), "a vault is not an rclone remote");
        for bad in ["restic:", "restic:-o=x", "restic:/srv/r\\testic"] {
            let e = parse(Some(&yaml(&format!("remotes: {{v: {{url: \"{bad}\"}}}}"))), "p", Path::new("/p"));
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn signers_are_openssh_public_keys_and_nothing_else() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKPFbHg1DrQSVo2M4PHwjYyF8zfWnUqZCo+uxvCHOpO";
        let o = parse(
            Some(&yaml(&format!("sign: {{allowed_signers: ['{key} backup@host'], allowed_signers_file: k.pub}}"))),
            "p",
            Path::new("/proj"),
        )
        .unwrap();
        let s = o.signing.unwrap();
        assert_eq!(s.allowed_signers, vec![key.to_string()], "the comment is dropped");
        assert_eq!(s.allowed_signers_file.as_deref(), Some(Path::new("/proj/k.pub")));
        for bad in [
            "sign: {}",
            "sign: {allowed_signers: ['cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA']}",
            "sign: {allowed_signers: ['ssh-ed25519 AAAA\"; rm -rf /']}",
            "sign: {allowed_signers: ['ssh-dss AAAAB3NzaC1kc3MAAACBAP']}",
        ] {
            let e = parse(Some(&yaml(bad)), "p", Path::new("/p"));
            assert!(e.is_err(), "{bad}");
        }
        assert!(parse(Some(&yaml("remotes: {}")), "p", Path::new("/p")).unwrap().signing.is_none());
    }

    #[test]
    fn a_file_of_trusted_keys_inside_a_bind_is_refused() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKPFbHg1DrQSVo2M4PHwjYyF8zfWnUqZCo+uxvCHOpO";
        let block = format!(
            "sign: {{allowed_signers: ['{key}'], allowed_signers_file: ./conf/../data/signers.pub}}\n\
             encrypt: {{recipients_file: keys/r.txt}}"
        );
        let o = parse(Some(&yaml(&block)), "p", Path::new("/proj")).unwrap();
        let why = o.key_file_in_bind(&["/proj/data"]).unwrap();
        assert!(why.contains("allowed_signers_file") && why.contains("/proj/data"), "{why}");
        let why = o.key_file_in_bind(&["/proj/keys"]).unwrap();
        assert!(why.contains("recipients_file"), "{why}");
        assert_eq!(o.key_file_in_bind(&["/proj/dat", "/srv", "/proj/conf"]), None, "by path components, not text");
    }

    #[test]
    fn s3_urls_become_rclone_paths_of_the_project_folder() {
        let r = remote("o", "s3://bucket/a/b/", Some("http://127.0.0.1:8333"), Some("us-east-1"), "app").unwrap();
        assert_eq!(
            r.root,
            ":s3,env_auth=true,provider=Other,endpoint='http://127.0.0.1:8333',region=us-east-1:bucket/a/b/app"
        );
        let r = remote("o", "s3://bucket", None, None, "app").unwrap();
        assert_eq!(r.root, ":s3,env_auth=true,provider=AWS:bucket/app");
        let r = remote("n", "rclone:mynas:backups/x", None, None, "app").unwrap();
        assert_eq!(r.root, "mynas:backups/x/app");
    }

    #[test]
    fn values_that_could_break_out_of_the_connection_string_are_refused() {
        for (url, endpoint) in [
            ("s3://bucket/a", Some("http://h',provider=x")),
            ("s3://bucket/a", Some("http://h,x=1")),
            ("s3://bucket/a", Some("file:///etc")),
            ("s3://bucket/../x", None),
            ("s3://Bu/x", None),
            ("s3://bucket/a b", None),
            ("rclone:-x:path", None),
            ("rclone:nas", None),
            ("ftp://x", None),
        ] {
            assert!(remote("o", url, endpoint, None, "app").is_err(), "{url} {endpoint:?} accepted");
        }
        assert!(remote("o", "s3://bucket", None, Some("x,y"), "app").is_err());
    }

    #[test]
    fn settings_parse_remotes_and_recipients() {
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let s = yaml(&format!(
            "remotes: {{offsite: {{url: 's3://b1b/p', endpoint: 'https://s3.example.com', region: fra1}}}}\n\
             encrypt: {{recipients: ['{key}'], recipients_file: keys/pub.txt}}"
        ));
        let o = parse(Some(&s), "app", Path::new("/proj")).unwrap();
        assert_eq!(o.remotes["offsite"].url, "s3://b1b/p");
        assert_eq!(o.encryption.recipients, vec![key.to_string()]);
        assert_eq!(o.encryption.recipients_file.as_deref(), Some(Path::new("/proj/keys/pub.txt")));
        let bad = yaml("encrypt: {recipients: ['-o/tmp/x']}");
        let e = format!("{:#}", parse(Some(&bad), "app", Path::new("/p")).unwrap_err());
        assert!(e.contains("x-xtask.encrypt") && e.contains("not an age public key"), "{e}");
        let bad = yaml("remotes: {offsite: {endpoint: x}}");
        assert!(format!("{:#}", parse(Some(&bad), "app", Path::new("/p")).unwrap_err()).contains("has no url"));
        assert!(parse(None, "app", Path::new("/p")).unwrap().remotes.is_empty());
    }
}
