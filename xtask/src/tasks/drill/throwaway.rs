//! The throwaway copy of the stack a drill restores into, decided from the live stack's
//! `docker compose config --format json` alone (pure, unit-tested): its own project name, every
//! named volume and network under a scratch name (external ones too), every bind source
//! redirected into the drill's scratch directory, no published ports, no fixed container names
//! or addresses, nothing that joins a live container's namespaces, restart never. Nothing of
//! the live stack can be reached through the generated file but read-only secrets and configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// A bind source of the live stack and where the throwaway stack mounts it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The live host path (as `docker compose config` resolved it).
    pub live: String,
    /// Its place under the scratch directory.
    pub scratch: PathBuf,
    /// Every mount of it is read-only (configuration the service reads): its content is copied
    /// from the live path before the start, since an archive never holds it.
    pub read_only: bool,
    /// Lies inside another redirected bind (its place is inside that one's).
    pub nested: bool,
}

/// The throwaway stack: its compose document and what it creates.
#[derive(Debug, Clone, PartialEq)]
pub struct Throwaway {
    pub project: String,
    pub document: Value,
    /// (compose key, the live name, the scratch name) of every named volume.
    pub volumes: Vec<(String, String, String)>,
    /// The scratch names of its networks.
    pub networks: Vec<String>,
    pub binds: Vec<Redirect>,
}

/// Service keys dropped: published ports, fixed names, profiles (the config lists only the
/// active services), links to containers outside the stack and development watches (`links`
/// name services of the stack itself: kept).
const DROPPED_SERVICE_KEYS: [&str; 5] = ["ports", "container_name", "profiles", "external_links", "develop"];

/// The throwaway copy of the live stack described by `config` (the JSON of `docker compose
/// config --format json`): project `drill`, scratch directory `scratch`, the live project
/// directory `live_dir` (against which `x-xtask` paths are resolved).
pub fn throwaway(
    config: &Value,
    live_project: &str,
    drill: &str,
    scratch: &Path,
    live_dir: &Path,
) -> Result<Throwaway> {
    let mut doc = config.as_object().cloned().context("`docker compose config` did not print an object")?;
    doc.insert("name".into(), Value::String(drill.to_string()));
    let volumes = rename_volumes(&mut doc, drill)?;
    let networks = rename_networks(&mut doc, drill)?;
    let binds = redirects(&doc, scratch, live_dir)?;
    let services = doc.get_mut("services").and_then(Value::as_object_mut);
    for (name, service) in services.into_iter().flatten() {
        let s = service.as_object_mut().with_context(|| format!("service {name} is not an object"))?;
        isolate_service(name, s, live_project, &binds)?;
    }
    if let Some(block) = doc.remove("x-xtask") {
        doc.insert("x-xtask".into(), drill_settings(&block, live_dir, &binds));
    }
    Ok(Throwaway { project: drill.to_string(), document: Value::Object(doc), volumes, networks, binds })
}

/// Every top-level volume under `<drill>_<key>`: created by the throwaway stack (never external),
/// the local driver without options (a `driver_opts` device could be a live path); labels kept.
fn rename_volumes(doc: &mut Map<String, Value>, drill: &str) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let Some(volumes) = doc.get_mut("volumes").and_then(Value::as_object_mut) else { return Ok(out) };
    for (key, decl) in volumes.iter_mut() {
        let live = decl.get("name").and_then(Value::as_str).unwrap_or(key).to_string();
        let scratch = format!("{drill}_{key}");
        let mut fresh = Map::new();
        fresh.insert("name".into(), Value::String(scratch.clone()));
        if let Some(labels) = decl.get("labels") {
            fresh.insert("labels".into(), labels.clone());
        }
        *decl = Value::Object(fresh);
        out.push((key.clone(), live, scratch));
    }
    Ok(out)
}

/// Every network under `<drill>_<key>`, a plain bridge of its own (no external network, no
/// fixed subnet or bridge name that could clash with or join the live one); `internal` kept.
fn rename_networks(doc: &mut Map<String, Value>, drill: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(networks) = doc.get_mut("networks").and_then(Value::as_object_mut) else { return Ok(out) };
    for (key, decl) in networks.iter_mut() {
        let scratch = format!("{drill}_{key}");
        let mut fresh = Map::new();
        fresh.insert("name".into(), Value::String(scratch.clone()));
        for kept in ["internal", "labels"] {
            if let Some(v) = decl.get(kept) {
                fresh.insert(kept.into(), v.clone());
            }
        }
        *decl = Value::Object(fresh);
        out.push(scratch);
    }
    Ok(out)
}

/// The throwaway stack's project directory: a bind inside the live project directory keeps its
/// place relative to it there (so the restore knows it as the same bind of a moved checkout).
pub fn project_dir(scratch: &Path) -> PathBuf {
    scratch.join("project")
}

/// The bind sources of every service, each with its place in the scratch directory: under
/// [`project_dir`] at its place relative to the live project directory, else under
/// `scratch/binds/` numbered in path order; a source inside another one keeps its place inside
/// that one's.
fn redirects(doc: &Map<String, Value>, scratch: &Path, live_dir: &Path) -> Result<Vec<Redirect>> {
    let mut sources: BTreeMap<String, bool> = BTreeMap::new();
    let services = doc.get("services").and_then(Value::as_object);
    for (name, service) in services.into_iter().flatten() {
        for m in service.get("volumes").and_then(Value::as_array).into_iter().flatten() {
            if m.get("type").and_then(Value::as_str) != Some("bind") {
                continue;
            }
            let source = m.get("source").and_then(Value::as_str);
            let source = source.with_context(|| format!("service {name}: a bind mount without a source"))?;
            if !source.starts_with('/') {
                bail!("service {name}: bind source {source:?} is not an absolute path");
            }
            let read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let all_ro = sources.entry(source.to_string()).or_insert(true);
            *all_ro &= read_only;
        }
    }
    let mut out: Vec<Redirect> = Vec::new();
    for (i, (live, read_only)) in sources.into_iter().enumerate() {
        // Sorted, so an outer source comes before the sources inside it.
        let outer = out.iter().find(|o| !o.nested && Path::new(&live).starts_with(&o.live));
        let place = match outer {
            Some(o) => o.scratch.join(Path::new(&live).strip_prefix(&o.live).unwrap_or(Path::new(""))),
            None if Path::new(&live).starts_with(live_dir) => {
                project_dir(scratch).join(Path::new(&live).strip_prefix(live_dir).unwrap_or(Path::new("")))
            }
            None => {
                let base = Path::new(&live).file_name().map(|n| n.to_string_lossy().into_owned());
                scratch.join("binds").join(format!("{i}-{}", base.unwrap_or_else(|| "root".into())))
            }
        };
        out.push(Redirect { nested: outer.is_some(), live, scratch: place, read_only });
    }
    Ok(out)
}

/// One service made harmless to the live stack: see the module's header.
fn isolate_service(name: &str, s: &mut Map<String, Value>, live_project: &str, binds: &[Redirect]) -> Result<()> {
    for key in DROPPED_SERVICE_KEYS {
        s.remove(key);
    }
    s.insert("restart".into(), Value::String("no".into()));
    for key in ["network_mode", "pid", "ipc", "cgroup", "uts", "userns_mode"] {
        let value = s.get(key).and_then(Value::as_str).unwrap_or_default();
        if value.starts_with("container:") || (key == "network_mode" && value == "host") {
            bail!(
                "service {name} has {key}: {value}: a throwaway copy would share it with the live stack; a drill \
                 cannot run it"
            );
        }
    }
    for from in s.get("volumes_from").and_then(Value::as_array).into_iter().flatten() {
        if from.as_str().is_some_and(|f| f.starts_with("container:")) {
            bail!("service {name} mounts the volumes of a container outside the stack ({from}); a drill cannot run it");
        }
    }
    // A service built by the live stack runs the image that build made, never a new build.
    if s.remove("build").is_some() && !s.contains_key("image") {
        s.insert("image".into(), Value::String(format!("{live_project}-{name}")));
    }
    if let Some(networks) = s.get_mut("networks").and_then(Value::as_object_mut) {
        for attachment in networks.values_mut().filter_map(Value::as_object_mut) {
            attachment.remove("ipv4_address");
            attachment.remove("ipv6_address");
            attachment.remove("link_local_ips");
            attachment.remove("mac_address");
        }
    }
    s.remove("mac_address");
    for m in s.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        if m.get("type").and_then(Value::as_str) != Some("bind") {
            continue;
        }
        let source = m.get("source").and_then(Value::as_str).unwrap_or_default();
        let r = binds.iter().find(|r| r.live == source).context("a bind source not redirected")?;
        m["source"] = Value::String(r.scratch.to_string_lossy().into_owned());
    }
    Ok(())
}

/// The `x-xtask` block the throwaway stack reads: only what a restore needs (`sign`, `encrypt`,
/// with their key files absolute against the live project directory; `binds` under their
/// redirected paths). No remotes, notifiers, schedule or alerts: a drill's restore tells no one.
fn drill_settings(block: &Value, live_dir: &Path, binds: &[Redirect]) -> Value {
    let mut out = Map::new();
    for (key, file_key) in [("sign", "allowed_signers_file"), ("encrypt", "recipients_file")] {
        let Some(mut v) = block.get(key).cloned() else { continue };
        if let Some(file) = v.get(file_key).and_then(Value::as_str) {
            v[file_key] = Value::String(live_dir.join(file).to_string_lossy().into_owned());
        }
        out.insert(key.into(), v);
    }
    if let Some(map) = block.get("binds").and_then(Value::as_object) {
        let mut moved = Map::new();
        for (path, v) in map {
            let live = crate::model::compose::normalize(&live_dir.join(path));
            if let Some(r) = binds.iter().find(|r| Path::new(&r.live) == live) {
                moved.insert(r.scratch.to_string_lossy().into_owned(), v.clone());
            }
        }
        out.insert("binds".into(), Value::Object(moved));
    }
    Value::Object(out)
}

/// Every string of `v` (keys too) with `$` written `$$`, so Compose's interpolation reads it
/// back as it was.
pub fn escape_dollars(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('$', "$$")),
        Value::Array(items) => Value::Array(items.iter().map(escape_dollars).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.replace('$', "$$"), escape_dollars(v))).collect())
        }
        other => other.clone(),
    }
}

/// The strings of `v` holding a `$`, in document order: what interpolation could change.
pub fn dollar_strings(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_dollars(v, &mut out);
    out
}

fn collect_dollars(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains('$') => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_dollars(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if k.contains('$') {
                    out.push(k.clone());
                }
                collect_dollars(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live() -> Value {
        json!({
            "name": "shop",
            "networks": {"default": {"name": "shop_default", "ipam": {"config": [{"subnet": "10.9.0.0/24"}]}},
                         "edge": {"name": "proxy-net", "external": true}},
            "volumes": {
                "pg": {"name": "shop-pg", "labels": {"xtask.role": "database"}},
                "shared": {"name": "company-shared", "external": true},
                "nfs": {"name": "shop_nfs", "driver": "local", "driver_opts": {"type": "none", "o": "bind", "device": "/srv/live"}}
            },
            "services": {
                "db": {"image": "postgres:16", "container_name": "shop-db",
                       "ports": [{"target": 5432, "published": "5432"}],
                       "environment": {"PW": "a$$b"},
                       "networks": {"default": {"ipv4_address": "10.9.0.5"}},
                       "volumes": [{"type": "volume", "source": "pg", "target": "/var/lib/postgresql/data"}]},
                "web": {"build": {"context": "/srv/shop"}, "restart": "always", "profiles": ["web"],
                        "volumes": [
                            {"type": "bind", "source": "/srv/shop/media", "target": "/app/media"},
                            {"type": "bind", "source": "/srv/shop/media/thumbs", "target": "/app/thumbs"},
                            {"type": "bind", "source": "/srv/shop/nginx.conf", "target": "/etc/nginx.conf", "read_only": true},
                            {"type": "volume", "source": "shared", "target": "/shared"}]},
                "worker": {"image": "shop-worker",
                           "volumes": [{"type": "bind", "source": "/srv/shop/media", "target": "/media", "read_only": true},
                                       {"type": "bind", "source": "/var/shop-data", "target": "/d"}]}
            },
            "x-xtask": {"notify": ["https://hc-ping.com/x"], "remotes": {"off": {"url": "s3://b/p"}},
                        "sign": {"allowed_signers_file": "keys/signers"},
                        "binds": {"./media": {"role": "uploads"}, "/elsewhere": {"role": "config"}}}
        })
    }

    fn drill() -> Throwaway {
        throwaway(&live(), "shop", "shop-drill-7", Path::new("/tmp/d"), Path::new("/srv/shop")).unwrap()
    }

    #[test]
    fn no_published_ports_no_fixed_names_no_restart() {
        let t = drill();
        let text = t.document.to_string();
        assert!(!text.contains("ports") && !text.contains("container_name") && !text.contains("profiles"), "{text}");
        assert_eq!(t.document["name"], "shop-drill-7");
        for s in ["db", "web", "worker"] {
            assert_eq!(t.document["services"][s]["restart"], "no", "{s}");
        }
        assert!(!text.contains("10.9.0"), "no fixed subnet or address: {text}");
        assert_eq!(t.document["services"]["web"]["image"], "shop-web", "the live build's image, no new build");
        assert!(t.document["services"]["web"].get("build").is_none());
    }

    #[test]
    fn every_volume_and_network_gets_a_scratch_name_external_ones_too() {
        let t = drill();
        let names: Vec<(&str, &str, &str)> =
            t.volumes.iter().map(|(k, l, s)| (k.as_str(), l.as_str(), s.as_str())).collect();
        assert_eq!(
            names,
            [
                ("nfs", "shop_nfs", "shop-drill-7_nfs"),
                ("pg", "shop-pg", "shop-drill-7_pg"),
                ("shared", "company-shared", "shop-drill-7_shared")
            ]
        );
        let v = &t.document["volumes"];
        assert_eq!(v["shared"], json!({"name": "shop-drill-7_shared"}), "external no more");
        assert_eq!(v["nfs"], json!({"name": "shop-drill-7_nfs"}), "no driver options pointing at a live path");
        assert_eq!(v["pg"]["labels"]["xtask.role"], "database", "labels kept: the restore reads roles");
        assert_eq!(t.networks, ["shop-drill-7_default", "shop-drill-7_edge"]);
        assert_eq!(t.document["networks"]["edge"], json!({"name": "shop-drill-7_edge"}));
        let db_mount = &t.document["services"]["db"]["volumes"][0];
        assert_eq!(db_mount["source"], "pg", "services still name the compose key");
    }

    #[test]
    fn binds_go_into_the_scratch_directory_nested_ones_inside_their_outer_one() {
        let t = drill();
        let web = &t.document["services"]["web"]["volumes"];
        assert_eq!(web[0]["source"], "/tmp/d/project/media", "its place in the project directory kept");
        assert_eq!(web[1]["source"], "/tmp/d/project/media/thumbs");
        assert_eq!(web[2]["source"], "/tmp/d/project/nginx.conf");
        let worker = &t.document["services"]["worker"]["volumes"];
        assert_eq!(
            (&worker[0]["source"], &worker[1]["source"]),
            (&json!("/tmp/d/project/media"), &json!("/tmp/d/binds/3-shop-data"))
        );
        let ro: Vec<(&str, bool, bool)> = t.binds.iter().map(|r| (r.live.as_str(), r.read_only, r.nested)).collect();
        assert_eq!(
            ro,
            [
                ("/srv/shop/media", false, false),
                ("/srv/shop/media/thumbs", false, true),
                ("/srv/shop/nginx.conf", true, false),
                ("/var/shop-data", false, false)
            ],
            "read-only only when every mount of it is"
        );
        let text = t.document["services"].to_string();
        assert!(!text.contains("\"/srv/shop") && !text.contains("/var/shop-data\""), "no live bind left: {text}");
    }

    #[test]
    fn the_settings_keep_only_what_a_restore_reads() {
        let t = drill();
        let x = &t.document["x-xtask"];
        assert!(x.get("notify").is_none() && x.get("remotes").is_none(), "{x}");
        assert_eq!(x["sign"]["allowed_signers_file"], "/srv/shop/keys/signers");
        assert_eq!(x["binds"], json!({"/tmp/d/project/media": {"role": "uploads"}}));
    }

    #[test]
    fn what_would_share_the_live_stack_is_refused() {
        for (key, value) in [
            ("network_mode", json!("host")),
            ("network_mode", json!("container:shop-db")),
            ("pid", json!("container:x")),
            ("volumes_from", json!(["container:shop-db"])),
        ] {
            let mut c = live();
            c["services"]["db"][key] = value.clone();
            let e = throwaway(&c, "shop", "d", Path::new("/tmp/d"), Path::new("/srv")).unwrap_err();
            assert!(format!("{e:#}").contains("service db"), "{key} {value}: {e:#}");
        }
        let mut c = live();
        c["services"]["db"]["network_mode"] = json!("none");
        assert!(throwaway(&c, "shop", "d", Path::new("/tmp/d"), Path::new("/srv")).is_ok());
        let mut rel = live();
        rel["services"]["web"]["volumes"][0]["source"] = json!("media");
        assert!(throwaway(&rel, "shop", "d", Path::new("/tmp/d"), Path::new("/srv")).is_err());
    }

    #[test]
    fn dollars_are_escaped_everywhere_and_found() {
        let v = json!({"a": "x$y", "k$": ["$$", 1, {"b": "plain"}]});
        let e = escape_dollars(&v);
        assert_eq!(e, json!({"a": "x$$y", "k$$": ["$$$$", 1, {"b": "plain"}]}));
        assert_eq!(dollar_strings(&v), ["x$y", "k$", "$$"]);
        assert_eq!(drill().document["services"]["db"]["environment"]["PW"], "a$$b", "the transform itself keeps text");
    }
}
