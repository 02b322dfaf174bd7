//! The compose model and its discovery: which files make up the stack, its project name,
//! its named volumes (named exactly as Docker Compose names them) and which services mount
//! them where. Two ways in that must agree: the direct parse of the files (`--offline`, no
//! Docker needed) and `docker compose config --format json` read from the engine.

mod interpolate;
mod load;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

pub use load::Env;

/// Which stack the user means: the global command-line options, before resolution.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub files: Vec<PathBuf>,
    pub env_overlay: Option<String>,
    pub project_name: Option<String>,
    pub project_dir: Option<PathBuf>,
    pub profiles: Vec<String>,
}

/// The resolved inputs every command shares: files, project directory, name, profiles, variables.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub project_dir: PathBuf,
    pub profiles: Vec<String>,
    pub env: Env,
}

/// A top-level `volumes:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDecl {
    /// The key under `volumes:` that services refer to.
    pub key: String,
    /// The engine's name for it: `name:`, the external name, or `<project>_<key>`.
    pub name: String,
    pub external: bool,
    pub driver: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The file that declared it last (for error messages).
    pub origin: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
    /// A volume mount without a source: Docker creates an anonymous volume.
    Anonymous,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// The volume key (for `Volume`) or host path (for `Bind`).
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    pub mounts: Vec<Mount>,
    /// The container's environment as declared (values interpolated; unset ones absent).
    pub environment: BTreeMap<String, String>,
    /// The service's labels (`xtask.engine`, `xtask.dump`, `xtask.load`, …).
    pub labels: BTreeMap<String, String>,
    /// Its `command:` as words (a string split at whitespace, quotes around a word dropped).
    pub command: Vec<String>,
}

/// The stack as far as its data is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    pub volumes: Vec<VolumeDecl>,
    pub services: Vec<Service>,
}

impl Project {
    #[cfg(test)]
    pub fn volume(&self, key: &str) -> Option<&VolumeDecl> {
        self.volumes.iter().find(|v| v.key == key)
    }

    /// The engine's name of the volume with compose key `key`.
    pub fn volume_name(&self, key: &str) -> Option<&str> {
        self.volumes.iter().find(|v| v.key == key).map(|v| v.name.as_str())
    }

    /// Every (service, mount) that mounts the named volume `key`.
    pub fn mounts_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a Service, &'a Mount)> + 'a {
        self.services.iter().flat_map(move |s| {
            s.mounts
                .iter()
                .filter(move |m| m.kind == MountKind::Volume && m.source.as_deref() == Some(key))
                .map(move |m| (s, m))
        })
    }
}

/// The directory holding the workspace (where `compose/` and `backups/` live by default).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

impl Stack {
    /// The variable names the stack's files and its `.env` interpolate (`$NAME`, `${NAME…}`),
    /// read line by line as Compose would (a line that fails to interpolate still names what it
    /// read up to its fault). Files that cannot be read name nothing: resolving said so already.
    pub fn interpolated_names(&self) -> Vec<String> {
        let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let record = |name: &str| {
            seen.borrow_mut().insert(name.to_string());
            None
        };
        let dotenv = self.project_dir.join(".env");
        for file in self.files.iter().chain(std::iter::once(&dotenv)) {
            for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
                let _ = interpolate::interpolate(line, &record);
            }
        }
        seen.into_inner().into_iter().collect()
    }
}

impl Selection {
    /// Resolves files, project directory, `.env`, profiles and project name like Compose does.
    /// [`Selection::resolve_in`] the run's directory (`crate::environment`).
    pub fn resolve(&self, process: &BTreeMap<String, String>) -> Result<Stack> {
        self.resolve_in(process, &crate::environment::cwd())
    }

    /// `process` holds the run's variables and `cwd` its directory (`crate::environment`).
    pub fn resolve_in(&self, process: &BTreeMap<String, String>, cwd: &Path) -> Result<Stack> {
        let cwd = cwd.to_path_buf();
        let mut files: Vec<PathBuf> = if !self.files.is_empty() {
            self.files.iter().map(|f| cwd.join(f)).collect()
        } else if let Some(list) = process.get("COMPOSE_FILE").filter(|s| !s.is_empty()) {
            let sep = process.get("COMPOSE_PATH_SEPARATOR").map(String::as_str).unwrap_or(":");
            list.split(sep).filter(|s| !s.is_empty()).map(|f| cwd.join(f)).collect()
        } else {
            vec![workspace_root().join("compose").join("compose.yaml")]
        };
        if let Some(env) = &self.env_overlay {
            let first = &files[0];
            let overlay = first.with_file_name(format!("compose.{env}.yaml"));
            if !overlay.is_file() {
                bail!("no overlay for --env {env}: {} does not exist", overlay.display());
            }
            files.push(overlay);
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| normalize(&f)).collect();
        for f in &files {
            if !f.is_file() {
                bail!("compose file {} not found: pass the stack's files with -f or set COMPOSE_FILE", f.display());
            }
        }
        let project_dir = match &self.project_dir {
            Some(d) => normalize(&cwd.join(d)),
            None => files[0].parent().map(Path::to_path_buf).unwrap_or(cwd),
        };
        let env = Env::load(&project_dir.join(".env"), process)?;
        let profiles = if !self.profiles.is_empty() {
            self.profiles.clone()
        } else {
            env.get("COMPOSE_PROFILES")
                .map(|p| p.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default()
        };
        let explicit = self.project_name.clone().or_else(|| env.get("COMPOSE_PROJECT_NAME").map(str::to_string));
        let name = match explicit.filter(|n| !n.is_empty()) {
            Some(n) => validate_name(&n, "the project name (-p / COMPOSE_PROJECT_NAME)")?,
            None => {
                // The top-level `name:` of the merged files, else the directory's name.
                let merged = load::load_files(&files, &env)?;
                match merged.doc.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    Some(n) => validate_name(n, "the top-level `name:`")?,
                    None => normalize_name(
                        &project_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
                    ),
                }
            }
        };
        Ok(Stack { name, files, project_dir, profiles, env })
    }
}

/// Removes `.` and `..` components without touching the file system (the one such function:
/// compose files, binds, key files and the drill's paths all use it).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A container path as Compose cleans it (Go's `path.Clean`): `/data/` is `/data`, `//a/./b` is `/a/b`.
pub fn clean_target(t: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if t.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

fn validate_name(n: &str, what: &str) -> Result<String> {
    let ok = n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!("{what} {n:?} is not valid: use lowercase letters, digits, '-' and '_', starting with a letter or digit");
    }
    Ok(n.to_string())
}

/// Compose's normalisation of a directory name into a project name.
fn normalize_name(n: &str) -> String {
    let s: String = n
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    s.trim_start_matches(['_', '-']).to_string()
}

impl Stack {
    /// The direct parse of the files: no Docker needed.
    /// Each service's `env_file` entries (a path, a list of paths, or `{path, required}`
    /// items, relative to the project directory; an included file's are absolute by now, made so
    /// against its own), under its `environment:`, which wins, as in Compose.
    /// `docker compose config` has done this already when the engine answers.
    fn apply_env_files(&self, doc: &Mapping, project: &mut Project) -> Result<()> {
        let Some(Value::Mapping(services)) = doc.get("services") else { return Ok(()) };
        for svc in project.services.iter_mut() {
            let Some(entry) = services.get(svc.name.as_str()).and_then(|s| s.get("env_file")) else { continue };
            let items: Vec<&Value> = match entry {
                Value::Sequence(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let (path, required) = match item {
                    Value::String(p) => (p.as_str(), true),
                    other => (
                        other.get("path").and_then(Value::as_str).unwrap_or_default(),
                        other.get("required").and_then(Value::as_bool).unwrap_or(true),
                    ),
                };
                let file = self.project_dir.join(path);
                if !file.is_file() && !required {
                    continue;
                }
                let vars = self.env.read_env_file(&file).with_context(|| format!("service {}", svc.name))?;
                for (k, v) in vars {
                    svc.environment.entry(k).or_insert(v);
                }
            }
        }
        Ok(())
    }

    pub fn parse_offline(&self) -> Result<Project> {
        let merged = load::load_files(&self.files, &self.env)?;
        let mut doc = merged.doc;
        filter_profiles(&mut doc, &self.profiles);
        let mut project = build_project(&self.name, &doc, &merged.origins)?;
        self.apply_env_files(&doc, &mut project)?;
        // Relative bind sources are relative to the project directory, as Compose resolves them
        // (an included file's were made absolute against its own when it was loaded).
        for m in project.services.iter_mut().flat_map(|s| s.mounts.iter_mut()) {
            if let (MountKind::Bind, Some(src)) = (m.kind, m.source.as_mut()) {
                if let Some(home) = src.strip_prefix('~').and(self.env.get("HOME")) {
                    *src = format!("{home}{}", &src[1..]);
                } else if src.starts_with('.') {
                    *src = normalize(&self.project_dir.join(&*src)).to_string_lossy().into_owned();
                }
            }
        }
        Ok(project)
    }
}

impl Stack {
    /// The top-level `x-xtask:` block of the merged compose files (the tool's own settings,
    /// kept beside the stack they are for), or None.
    pub fn settings(&self) -> Result<Option<Value>> {
        let merged = load::load_files(&self.files, &self.env)?;
        Ok(merged.doc.get("x-xtask").cloned())
    }
}

/// Builds the model from the JSON `docker compose config --format json` printed.
pub fn from_engine_config(project: &str, json: &str) -> Result<Project> {
    let value: Value =
        serde_yaml::from_str(json).context("parse the output of `docker compose config --format json`")?;
    let Value::Mapping(doc) = value else { bail!("`docker compose config` did not print an object") };
    let name = doc.get("name").and_then(Value::as_str).unwrap_or(project).to_string();
    build_project(&name, &doc, &BTreeMap::new())
}

/// Drops services whose `profiles` are not active (services without profiles always are).
fn filter_profiles(doc: &mut Mapping, active: &[String]) {
    let Some(Value::Mapping(services)) = doc.get_mut("services") else {
        return;
    };
    services.retain(|_, svc| match svc.get("profiles").and_then(Value::as_sequence) {
        None => true,
        Some(p) if p.is_empty() => true,
        Some(p) => active.iter().any(|a| a == "*" || p.iter().any(|x| x.as_str() == Some(a))),
    });
}

fn origin_of(origins: &BTreeMap<String, PathBuf>, key: &str) -> String {
    origins.get(key).map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

fn build_project(name: &str, doc: &Mapping, origins: &BTreeMap<String, PathBuf>) -> Result<Project> {
    let mut volumes = Vec::new();
    if let Some(v) = doc.get("volumes") {
        let Value::Mapping(decls) = v else { bail!("key volumes: must be a mapping") };
        for (k, decl) in decls {
            let key = load::key_str(k);
            let at = origin_of(origins, &format!("volumes.{key}"));
            volumes.push(
                volume_decl(name, &key, decl, origins.get(&format!("volumes.{key}")))
                    .with_context(|| format!("{at}key volumes.{key}"))?,
            );
        }
    }
    volumes.sort_by(|a, b| a.key.cmp(&b.key));
    let mut services = Vec::new();
    if let Some(Value::Mapping(svcs)) = doc.get("services") {
        for (k, svc) in svcs {
            let sname = load::key_str(k);
            let at = origin_of(origins, &format!("services.{sname}"));
            let image = svc.get("image").and_then(Value::as_str).map(str::to_string);
            let mut mounts = Vec::new();
            if let Some(list) = svc.get("volumes") {
                let Value::Sequence(items) = list else {
                    bail!("{at}key services.{sname}.volumes: must be a list");
                };
                for (i, item) in items.iter().enumerate() {
                    let m = parse_mount(item).with_context(|| format!("{at}key services.{sname}.volumes[{i}]"))?;
                    if m.kind == MountKind::Volume {
                        let src = m.source.as_deref().unwrap_or_default();
                        if !volumes.iter().any(|v| v.key == src) {
                            bail!(
                                "{at}key services.{sname}.volumes[{i}]: service \"{sname}\" mounts volume \"{src}\", \
                                 which is not declared under the top-level `volumes:` key; declare it there"
                            );
                        }
                    }
                    mounts.push(m);
                }
            }
            let environment = string_map(svc.get("environment"), false)
                .with_context(|| format!("{at}key services.{sname}.environment"))?;
            let labels =
                string_map(svc.get("labels"), true).with_context(|| format!("{at}key services.{sname}.labels"))?;
            let command = command_words(svc.get("command"));
            services.push(Service { name: sname, image, mounts, environment, labels, command });
        }
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    // Like `docker compose config`: a volume no active service mounts is not part of the stack.
    volumes.retain(|v| {
        services
            .iter()
            .any(|s| s.mounts.iter().any(|m| m.kind == MountKind::Volume && m.source.as_deref() == Some(&v.key)))
    });
    Ok(Project { name: name.to_string(), volumes, services })
}

/// A `command:` as words: a list as it is, a string split at whitespace with the quotes around a
/// word dropped (enough to find flags such as `--requirepass`; the tool never runs it).
fn command_words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => {
            s.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string()).collect()
        }
        _ => Vec::new(),
    }
}

/// `environment:` or `labels:` as Compose reads them: a mapping (null values left out, as unset)
/// or a list of `KEY=VALUE` (a bare `KEY` is an empty value in labels, unset in environment).
fn string_map(v: Option<&Value>, bare_is_empty: bool) -> Result<BTreeMap<String, String>> {
    Ok(match v {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Mapping(m)) => {
            m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (load::key_str(k), load::key_str(v))).collect()
        }
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| {
                let item = load::key_str(i);
                match item.split_once('=') {
                    Some((k, v)) => Some((k.to_string(), v.to_string())),
                    None => bare_is_empty.then(|| (item.clone(), String::new())),
                }
            })
            .collect(),
        Some(_) => bail!("must be a mapping or a list of KEY=VALUE"),
    })
}

fn volume_decl(project: &str, key: &str, decl: &Value, origin: Option<&PathBuf>) -> Result<VolumeDecl> {
    let empty = Mapping::new();
    let m = match decl {
        Value::Mapping(m) => m,
        Value::Null => &empty,
        _ => bail!("must be a mapping or empty"),
    };
    let explicit = m.get("name").and_then(Value::as_str).map(str::to_string);
    let (external, external_name) = match m.get("external") {
        None | Some(Value::Null) => (false, None),
        Some(Value::Bool(b)) => (*b, None),
        Some(Value::String(s)) if s == "true" || s == "false" => (s == "true", None),
        Some(Value::Mapping(e)) => (true, e.get("name").and_then(Value::as_str).map(str::to_string)),
        Some(_) => bail!("external: must be true, false or {{name: ...}}"),
    };
    let name = match (external, explicit.or(external_name)) {
        (_, Some(n)) => n,
        (true, None) => key.to_string(),
        (false, None) => format!("{project}_{key}"),
    };
    let labels = string_map(m.get("labels"), true).context("labels")?;
    Ok(VolumeDecl {
        key: key.to_string(),
        name,
        external,
        driver: m.get("driver").and_then(Value::as_str).map(str::to_string),
        labels,
        origin: origin.cloned(),
    })
}

/// The container path of a service `volumes:` entry, in short or long syntax.
pub(crate) fn mount_target(item: &Value) -> Option<String> {
    parse_mount(item).ok().map(|m| m.target)
}

/// Short syntax `[SOURCE:]TARGET[:MODE]` or the long syntax mapping.
fn parse_mount(item: &Value) -> Result<Mount> {
    match item {
        Value::String(s) => parse_short_mount(s),
        Value::Mapping(m) => {
            let kind = match m.get("type").and_then(Value::as_str).unwrap_or("volume") {
                "volume" => MountKind::Volume,
                "bind" => MountKind::Bind,
                "tmpfs" => MountKind::Tmpfs,
                _ => MountKind::Other,
            };
            let Some(target) = m.get("target").and_then(Value::as_str) else {
                bail!("a long-syntax mount needs a `target`");
            };
            let source = m.get("source").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
            let kind = if kind == MountKind::Volume && source.is_none() { MountKind::Anonymous } else { kind };
            let read_only = match m.get("read_only") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s == "true",
                _ => false,
            };
            Ok(Mount { kind, source, target: clean_target(target), read_only })
        }
        _ => bail!("a mount must be a string or a mapping"),
    }
}

fn parse_short_mount(s: &str) -> Result<Mount> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [t, m] if is_mode(m) && t.starts_with('/') => (None, *t, *m),
        [a, b] => (Some(*a), *b, ""),
        [a, b, m] => (Some(*a), *b, *m),
        _ => bail!("invalid mount {s:?}: expected [SOURCE:]TARGET[:MODE]"),
    };
    if target.is_empty() {
        bail!("invalid mount {s:?}: empty target");
    }
    let read_only = mode.split(',').any(|o| o == "ro");
    let kind = match source {
        None => MountKind::Anonymous,
        Some(src) if src.starts_with(['.', '/', '~']) => MountKind::Bind,
        Some(_) => MountKind::Volume,
    };
    Ok(Mount { kind, source: source.map(str::to_string), target: clean_target(target), read_only })
}

fn is_mode(s: &str) -> bool {
    s.split(',').all(|o| matches!(o, "ro" | "rw" | "z" | "Z" | "nocopy" | "cached" | "delegated" | "consistent"))
}

#[cfg(test)]
mod tests;
