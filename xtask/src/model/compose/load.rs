//! Reading compose files the way Docker Compose does: YAML with anchors and merge keys,
//! interpolation, `extends`, `include` (an included file's relative paths made absolute against
//! its own project directory, its variables' defaults from the include's `env_file` or that
//! directory's `.env`), the merge of several files in order with the `!reset` / `!override` tags,
//! and the `.env` file. Produces one merged YAML document.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

use super::interpolate::interpolate;

/// The variables interpolation sees: the process environment over the project's `.env` file.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// `dotenv` (if it exists) overlaid by `process`, which wins as in Compose.
    pub fn load(dotenv: &Path, process: &BTreeMap<String, String>) -> Result<Env> {
        let mut vars = BTreeMap::new();
        if dotenv.is_file() {
            let text = std::fs::read_to_string(dotenv).with_context(|| format!("read {}", dotenv.display()))?;
            parse_dotenv(&text, process, &mut vars).with_context(|| format!("parse {}", dotenv.display()))?;
        }
        vars.extend(process.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Env { vars })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// A service's `env_file`: its `KEY=VALUE` lines read like the project's `.env`
    /// (interpolated with these variables).
    pub fn read_env_file(&self, file: &Path) -> Result<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(file).with_context(|| format!("read the env_file {}", file.display()))?;
        let mut out = BTreeMap::new();
        parse_dotenv(&text, &self.vars, &mut out).with_context(|| format!("parse the env_file {}", file.display()))?;
        Ok(out)
    }

    /// The variables an included file sees: these, and for the names they leave unset, the
    /// values in `files` (the include's `env_file`s, else its project directory's `.env`).
    fn with_defaults(&self, files: &[PathBuf]) -> Result<Env> {
        let mut vars = BTreeMap::new();
        for f in files {
            let text = std::fs::read_to_string(f).with_context(|| format!("read the env file {}", f.display()))?;
            parse_dotenv(&text, &self.vars, &mut vars)
                .with_context(|| format!("parse the env file {}", f.display()))?;
        }
        vars.extend(self.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Env { vars })
    }
}

/// `KEY=VALUE` lines; `export` prefixes, comments, single quotes (literal) and double quotes
/// (escapes and interpolation), like Compose's dotenv reader.
fn parse_dotenv(text: &str, process: &BTreeMap<String, String>, out: &mut BTreeMap<String, String>) -> Result<()> {
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=VALUE, found {raw:?}", n + 1);
        };
        let key = key.trim().to_string();
        let value = value.trim();
        let lookup = |k: &str| process.get(k).or_else(|| out.get(k)).cloned();
        let value = if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            let unescaped = inner.replace("\\n", "\n").replace("\\\"", "\"");
            interpolate(&unescaped, &lookup).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?
        } else {
            let bare = value.split(" #").next().unwrap_or("").trim_end();
            interpolate(bare, &lookup).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?
        };
        out.insert(key, value);
    }
    Ok(())
}

/// The merged document and, for each `services.NAME` / `volumes.KEY`, the last file defining it.
#[derive(Debug, Default)]
pub struct Merged {
    pub doc: Mapping,
    pub origins: BTreeMap<String, PathBuf>,
}

/// Loads `files` in order and merges them as `docker compose -f a -f b` does.
pub fn load_files(files: &[PathBuf], env: &Env) -> Result<Merged> {
    let mut merged = Merged::default();
    for file in files {
        let doc = load_one(file, file.parent().unwrap_or(Path::new(".")), env, 0)?;
        record_origins(&doc, file, &mut merged.origins);
        let base = Value::Mapping(std::mem::take(&mut merged.doc));
        merged.doc = match merge(base, Value::Mapping(doc), &mut Vec::new()) {
            Value::Mapping(m) => m,
            _ => Mapping::new(),
        };
    }
    strip_tags(&mut merged.doc);
    Ok(merged)
}

fn record_origins(doc: &Mapping, file: &Path, origins: &mut BTreeMap<String, PathBuf>) {
    for section in ["services", "volumes"] {
        if let Some(Value::Mapping(m)) = doc.get(section) {
            for key in m.keys().filter_map(Value::as_str) {
                origins.insert(format!("{section}.{key}"), file.to_path_buf());
            }
        }
    }
}

/// Parses one file: YAML (anchors, `<<` merge keys), interpolation, then `extends` and `include`.
/// `dir` is what the paths of its `include:` entries are relative to.
fn load_one(file: &Path, dir: &Path, env: &Env, depth: usize) -> Result<Mapping> {
    if depth > 16 {
        bail!("{}: include or extends nested more than 16 levels deep (a cycle?)", file.display());
    }
    let mut doc = read_interpolated(file, env)?;
    resolve_extends(&mut doc, file, env, depth)?;
    if let Some(includes) = doc.remove("include") {
        merge_includes(&mut doc, &includes, (file, dir), env, depth)?;
    }
    Ok(doc)
}

/// Reads and parses a file, applies merge keys and interpolates every string value.
pub fn read_interpolated(file: &Path, env: &Env) -> Result<Mapping> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("read compose file {} (pass the right one with -f)", file.display()))?;
    let mut value: Value = serde_yaml::from_str(&text).with_context(|| format!("{}: invalid YAML", file.display()))?;
    value.apply_merge().with_context(|| format!("{}: invalid YAML merge key (<<)", file.display()))?;
    let mut path = Vec::new();
    interpolate_tree(&mut value, &mut path, file, env)?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => bail!("{}: a compose file must be a mapping at the top level", file.display()),
    }
}

fn interpolate_tree(value: &mut Value, path: &mut Vec<String>, file: &Path, env: &Env) -> Result<()> {
    match value {
        Value::String(s) => {
            let lookup = |k: &str| env.get(k).map(str::to_string);
            *s = interpolate(s, &lookup)
                .map_err(|e| anyhow::anyhow!("{}: key {}: {e}", file.display(), path.join(".")))?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate_tree(item, path, file, env)?;
                path.pop();
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                path.push(key_str(k));
                interpolate_tree(v, path, file, env)?;
                path.pop();
            }
        }
        Value::Tagged(t) => interpolate_tree(&mut t.value, path, file, env)?,
        _ => {}
    }
    Ok(())
}

pub fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// Replaces each service's `extends` by the merge of the service it names and its own keys.
fn resolve_extends(doc: &mut Mapping, file: &Path, env: &Env, depth: usize) -> Result<()> {
    let Some(Value::Mapping(services)) = doc.get("services").cloned() else {
        return Ok(());
    };
    let mut resolved = Mapping::new();
    for name in services.keys() {
        let name = key_str(name);
        let svc = resolve_service(&name, &services, file, env, depth, &mut Vec::new())?;
        resolved.insert(Value::String(name), svc);
    }
    doc.insert(Value::from("services"), Value::Mapping(resolved));
    Ok(())
}

fn resolve_service(
    name: &str,
    services: &Mapping,
    file: &Path,
    env: &Env,
    depth: usize,
    seen: &mut Vec<String>,
) -> Result<Value> {
    let here = format!("{}#{name}", file.display());
    if seen.contains(&here) {
        bail!("{}: services.{name}.extends: circular extends ({})", file.display(), seen.join(" -> "));
    }
    seen.push(here);
    let Some(svc) = services.get(name) else {
        bail!("{}: service \"{name}\" not found (named by an extends)", file.display());
    };
    let mut svc = svc.clone();
    let ext = match &mut svc {
        Value::Mapping(m) => m.remove("extends"),
        Value::Null => None,
        _ => bail!("{}: services.{name} must be a mapping", file.display()),
    };
    let Some(ext) = ext else { return Ok(svc) };
    let (base_name, base_file) = match &ext {
        Value::String(s) => (s.clone(), None),
        Value::Mapping(m) => {
            let Some(service) = m.get("service").and_then(Value::as_str) else {
                bail!("{}: services.{name}.extends needs a `service` key", file.display());
            };
            (service.to_string(), m.get("file").and_then(Value::as_str).map(|f| relative_to(file, f)))
        }
        _ => bail!("{}: services.{name}.extends must be a service name or a mapping", file.display()),
    };
    let base = match base_file {
        Some(other) => {
            if depth > 16 {
                bail!("{}: extends nested too deeply", file.display());
            }
            let other_doc = read_interpolated(&other, env)
                .with_context(|| format!("{}: services.{name}.extends.file", file.display()))?;
            let Some(Value::Mapping(other_services)) = other_doc.get("services") else {
                bail!("{}: services.{name}.extends: {} has no services", file.display(), other.display());
            };
            resolve_service(&base_name, other_services, &other, env, depth + 1, seen)?
        }
        None => resolve_service(&base_name, services, file, env, depth, seen)?,
    };
    let mut path = vec!["services".to_string(), name.to_string()];
    Ok(merge(base, svc, &mut path))
}

/// Merges the models of `include` entries into `doc`; a resource defined on both sides is an error.
/// `at` is the including file and the directory its include paths are relative to.
fn merge_includes(doc: &mut Mapping, includes: &Value, at: (&Path, &Path), env: &Env, depth: usize) -> Result<()> {
    let (file, dir) = at;
    let Value::Sequence(entries) = includes else {
        bail!("{}: key include: must be a list", file.display());
    };
    for (i, entry) in entries.iter().enumerate() {
        let key = || format!("{}: key include[{i}]", file.display());
        let inc = Include::read(entry, dir, env).with_context(key)?;
        let mut included = Value::Mapping(Mapping::new());
        for path in &inc.paths {
            let sub = load_one(path, &inc.dir, &inc.env, depth + 1).with_context(key)?;
            included = merge(included, Value::Mapping(sub), &mut Vec::new());
        }
        let Value::Mapping(mut included) = included else {
            continue;
        };
        strip_tags(&mut included);
        resolve_paths(&mut included, &inc.dir);
        add_included(doc, included).with_context(key)?;
    }
    Ok(())
}

/// Copies the resources of an included model into `doc`, refusing any defined on both sides.
fn add_included(doc: &mut Mapping, mut included: Mapping) -> Result<()> {
    for section in ["services", "volumes", "networks", "secrets", "configs"] {
        let Some(Value::Mapping(theirs)) = included.remove(section) else {
            continue;
        };
        let ours = doc.entry(Value::from(section)).or_insert_with(|| Value::Mapping(Mapping::new()));
        let Value::Mapping(ours) = ours else { continue };
        for (k, v) in theirs {
            if ours.contains_key(&k) {
                bail!("{section}.{} is defined both here and in the included file", key_str(&k));
            }
            ours.insert(k, v);
        }
    }
    Ok(())
}

/// One `include:` entry as Compose reads it.
struct Include {
    /// Its files, merged in order.
    paths: Vec<PathBuf>,
    /// The project directory their relative paths resolve against: `project_directory`, else
    /// the first file's directory.
    dir: PathBuf,
    /// The including file's variables, then its `env_file`s (else that directory's `.env`) for
    /// the names those leave unset.
    env: Env,
}

impl Include {
    /// Reads `entry` (a path, or `{path, project_directory, env_file}`), relative to `dir`.
    fn read(entry: &Value, dir: &Path, env: &Env) -> Result<Include> {
        let (paths, project_dir, env_files) = match entry {
            Value::String(s) => (vec![s.clone()], None, Vec::new()),
            Value::Mapping(m) => (
                path_list(m.get("path")).context("path")?,
                m.get("project_directory").and_then(Value::as_str),
                path_list(m.get("env_file")).context("env_file")?,
            ),
            _ => bail!("must be a path or a mapping"),
        };
        let paths: Vec<PathBuf> = paths.iter().map(|p| under(dir, p)).collect();
        let Some(first) = paths.first() else { bail!("needs a `path`") };
        let project_dir = match project_dir {
            Some(d) => under(dir, d),
            None => first.parent().unwrap_or(dir).to_path_buf(),
        };
        let env_files: Vec<PathBuf> = if env_files.is_empty() {
            Some(project_dir.join(".env")).filter(|f| f.is_file()).into_iter().collect()
        } else {
            env_files.iter().map(|f| under(dir, f)).collect()
        };
        let env = env.with_defaults(&env_files)?;
        Ok(Include { paths, dir: project_dir, env })
    }
}

/// A path or a list of paths (none when absent).
fn path_list(v: Option<&Value>) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Sequence(items)) => {
            items.iter().map(|i| i.as_str().map(str::to_string).context("must be a path or a list of paths")).collect()
        }
        Some(_) => bail!("must be a path or a list of paths"),
    }
}

/// `p` against `dir` (unless absolute), without `.` and `..`.
fn under(dir: &Path, p: &str) -> PathBuf {
    super::normalize(&dir.join(p))
}

/// Makes an included model's relative paths absolute against its project directory, as Compose
/// does before merging it (the including project would otherwise read them against its own):
/// `env_file` entries, bind mount sources and build contexts.
fn resolve_paths(doc: &mut Mapping, dir: &Path) {
    let Some(Value::Mapping(services)) = doc.get_mut("services") else { return };
    for svc in services.values_mut().filter_map(Value::as_mapping_mut) {
        match svc.get_mut("env_file") {
            Some(Value::Sequence(items)) => items.iter_mut().for_each(|i| resolve_env_file(i, dir)),
            Some(item) => resolve_env_file(item, dir),
            None => {}
        }
        if let Some(Value::Sequence(mounts)) = svc.get_mut("volumes") {
            mounts.iter_mut().for_each(|m| resolve_bind(m, dir));
        }
        match svc.get_mut("build") {
            Some(Value::String(context)) => absolutize(context, dir),
            Some(Value::Mapping(build)) => {
                if let Some(Value::String(context)) = build.get_mut("context") {
                    absolutize(context, dir);
                }
            }
            _ => {}
        }
    }
}

/// An `env_file` item: a path or `{path, required}`.
fn resolve_env_file(item: &mut Value, dir: &Path) {
    match item {
        Value::String(p) => absolutize(p, dir),
        Value::Mapping(m) => {
            if let Some(Value::String(p)) = m.get_mut("path") {
                absolutize(p, dir);
            }
        }
        _ => {}
    }
}

/// A service `volumes:` item: a short-syntax bind (`./src:/target`) or a long-syntax `type: bind`.
fn resolve_bind(item: &mut Value, dir: &Path) {
    match item {
        Value::String(s) => {
            if let Some((src, rest)) = s.split_once(':').filter(|(src, _)| src.starts_with('.')) {
                *s = format!("{}:{rest}", under(dir, src).display());
            }
        }
        Value::Mapping(m) if m.get("type").and_then(Value::as_str) == Some("bind") => {
            if let Some(Value::String(src)) = m.get_mut("source") {
                absolutize(src, dir);
            }
        }
        _ => {}
    }
}

/// Makes `p` absolute against `dir`; absolute paths, `~` paths and remote (URL) ones stay.
fn absolutize(p: &mut String, dir: &Path) {
    if !(p.is_empty() || p.starts_with(['/', '~']) || p.contains("://") || p.starts_with("git@")) {
        *p = under(dir, p).to_string_lossy().into_owned();
    }
}

fn relative_to(file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn tag_is(v: &Value, name: &str) -> bool {
    matches!(v, Value::Tagged(t) if t.tag == name)
}

/// Compose's merge: mappings merge key by key, `!reset` removes, `!override` replaces,
/// service `volumes` merge by target, `environment`/`labels` merge as maps, command-like
/// lists are replaced and other lists appended.
pub fn merge(base: Value, over: Value, path: &mut Vec<String>) -> Value {
    if tag_is(&over, "override") {
        let Value::Tagged(t) = over else { unreachable!() };
        return t.value;
    }
    let last = path.last().map(String::as_str).unwrap_or("");
    match (base, over) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            for (k, ov) in o {
                if tag_is(&ov, "reset") {
                    b.remove(&k);
                    continue;
                }
                path.push(key_str(&k));
                let bv = b.remove(&k).unwrap_or(Value::Null);
                let merged = merge(bv, ov, path);
                path.pop();
                b.insert(k, merged);
            }
            Value::Mapping(b)
        }
        (b, o) if matches!(last, "environment" | "labels") && (is_seq(&b) || is_seq(&o)) => {
            merge(as_map(b), as_map(o), path)
        }
        (Value::Sequence(b), Value::Sequence(o)) => {
            if path.len() == 3 && path[0] == "services" && last == "volumes" {
                merge_by_target(b, o)
            } else if matches!(last, "command" | "entrypoint" | "test") {
                Value::Sequence(o)
            } else {
                let mut all = b;
                for item in o {
                    if !all.contains(&item) {
                        all.push(item);
                    }
                }
                Value::Sequence(all)
            }
        }
        (_, o) => o,
    }
}

fn is_seq(v: &Value) -> bool {
    matches!(v, Value::Sequence(_))
}

/// `["A=1", "B"]` -> `{A: "1", B: null}`; mappings pass through.
fn as_map(v: Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let s = key_str(&item);
                match s.split_once('=') {
                    Some((k, v)) => m.insert(Value::from(k), Value::from(v)),
                    None => m.insert(Value::from(s), Value::Null),
                };
            }
            Value::Mapping(m)
        }
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    }
}

fn merge_by_target(base: Vec<Value>, over: Vec<Value>) -> Value {
    let mut all = base;
    for item in over {
        let target = super::mount_target(&item);
        match all.iter().position(|b| target.is_some() && super::mount_target(b) == target) {
            Some(i) => all[i] = item,
            None => all.push(item),
        }
    }
    Value::Sequence(all)
}

/// Drops tags left after merging: `!reset` with nothing under it removes the key, other tags keep their value.
fn strip_tags(m: &mut Mapping) {
    let reset: Vec<Value> = m.iter().filter(|(_, v)| tag_is(v, "reset")).map(|(k, _)| k.clone()).collect();
    for k in reset {
        m.remove(&k);
    }
    for v in m.values_mut() {
        strip_value(v);
    }
}

fn strip_value(v: &mut Value) {
    if let Value::Tagged(t) = v {
        *v = std::mem::replace(&mut t.value, Value::Null);
    }
    match v {
        Value::Mapping(m) => strip_tags(m),
        Value::Sequence(s) => s.iter_mut().for_each(strip_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        let mut v: Value = serde_yaml::from_str(s).unwrap();
        v.apply_merge().unwrap();
        v
    }

    #[test]
    fn mappings_merge_and_reset_removes() {
        let base = yaml("services: {a: {image: x, ports: ['1:1'], environment: [A=1]}}");
        let over = yaml("services: {a: {ports: !reset [], environment: {B: '2'}}}");
        let Value::Mapping(mut m) = merge(base, over, &mut Vec::new()) else { panic!() };
        strip_tags(&mut m);
        let a = &m["services"]["a"];
        assert_eq!(a["image"], "x");
        assert!(a.get("ports").is_none());
        assert_eq!(a["environment"]["A"], "1");
        assert_eq!(a["environment"]["B"], "2");
    }

    #[test]
    fn override_replaces_instead_of_merging() {
        let base = yaml("services: {a: {volumes: [d1:/one, d2:/two]}}");
        let over = yaml("services: {a: {volumes: !override [d3:/three]}}");
        let merged = merge(base, over, &mut Vec::new());
        assert_eq!(merged["services"]["a"]["volumes"], yaml("[d3:/three]"));
    }

    #[test]
    fn service_volumes_merge_by_target() {
        let base = yaml("services: {a: {volumes: [d1:/one, d2:/two]}}");
        let over = yaml("services: {a: {volumes: [{type: volume, source: d9, target: /two}, d3:/three:ro]}}");
        let merged = merge(base, over, &mut Vec::new());
        let vols = merged["services"]["a"]["volumes"].as_sequence().unwrap();
        assert_eq!(vols.len(), 3);
        assert_eq!(vols[1]["source"], "d9");
    }

    #[test]
    fn command_is_replaced_not_appended() {
        let base = yaml("services: {a: {command: [a, b]}}");
        let over = yaml("services: {a: {command: [c]}}");
        assert_eq!(merge(base, over, &mut Vec::new())["services"]["a"]["command"], yaml("[c]"));
    }

    #[test]
    fn include_entry_directories_and_env_files() {
        let dir = Path::new("/stack");
        let inc = Include::read(&yaml("sub/compose.yaml"), dir, &Env::default()).unwrap();
        assert_eq!((inc.paths, inc.dir), (vec![PathBuf::from("/stack/sub/compose.yaml")], PathBuf::from("/stack/sub")));
        let entry = yaml("{path: [a/one.yaml, a/two.yaml], project_directory: ./b/../c}");
        let inc = Include::read(&entry, dir, &Env::default()).unwrap();
        assert_eq!((inc.paths.len(), inc.dir), (2, PathBuf::from("/stack/c")));
        // An include's env_file is relative to the including file's directory and must exist.
        let entry = yaml("{path: a.yaml, project_directory: x, env_file: vars.env}");
        let err = format!("{:#}", Include::read(&entry, dir, &Env::default()).err().unwrap());
        assert!(err.contains("read the env file /stack/vars.env"), "{err}");
        let err = format!("{:#}", Include::read(&yaml("{env_file: v.env}"), dir, &Env::default()).err().unwrap());
        assert!(err.contains("needs a `path`"), "{err}");
    }

    #[test]
    fn included_paths_resolve_but_absolute_home_and_named_ones_stay() {
        let Value::Mapping(mut doc) = yaml(
            "services: {s: {env_file: [a.env, {path: ../b.env, required: false}], build: {context: 'https://x/y.git'},
             volumes: ['.:/here', 'named:/n', '/abs:/abs', '~/h:/h', {type: bind, source: c, target: /c},
                       {type: volume, source: v, target: /v}]}}",
        ) else {
            panic!()
        };
        resolve_paths(&mut doc, Path::new("/p/inc"));
        let want = yaml(
            "{env_file: [/p/inc/a.env, {path: /p/b.env, required: false}], build: {context: 'https://x/y.git'},
             volumes: ['/p/inc:/here', 'named:/n', '/abs:/abs', '~/h:/h', {type: bind, source: /p/inc/c, target: /c},
                       {type: volume, source: v, target: /v}]}",
        );
        assert_eq!(doc["services"]["s"], want);
    }

    #[test]
    fn dotenv_quotes_comments_and_interpolation() {
        let text = "# comment\nexport A=1\nB='lit $A'\nC=\"x${A}y\"\nD=plain # trailing\nE=${A}-${NOPE:-d}\n";
        let mut out = BTreeMap::new();
        parse_dotenv(text, &BTreeMap::new(), &mut out).unwrap();
        assert_eq!(out["A"], "1");
        assert_eq!(out["B"], "lit $A");
        assert_eq!(out["C"], "x1y");
        assert_eq!(out["D"], "plain");
        assert_eq!(out["E"], "1-d");
        let err = parse_dotenv("NOEQUALS\n", &BTreeMap::new(), &mut BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
