//! End to end on the live engine: the sample stack comes up from the test bed's images and
//! `volumes` / `status` describe it; the direct parse and `docker compose config` agree on
//! every fixture (an included file's relative paths too); bad input and an unreachable daemon
//! give clear errors.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::Value;
use xtask::model::compose::{from_engine_config, Project, Selection};

fn by_name<'a>(inv: &'a Value, name: &str) -> &'a Value {
    inv["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {inv}"))
}

#[test]
fn sample_stack_volumes_and_status_on_the_live_engine() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("found");
    // Before `up`: declared, not there, and listing must not create anything.
    let inv = stack.xtask_json(&["volumes", "--json"]);
    assert_eq!(inv["project"], stack.project.as_str());
    assert_eq!(inv["volumes"].as_array().unwrap().len(), 6);
    assert!(inv["volumes"].as_array().unwrap().iter().all(|v| v["exists"] == false));
    assert!(docker_ok(&["volume", "ls", "--quiet"]).lines().all(|v| !v.starts_with(&stack.project)));

    stack.xtask_ok(&["up"]);
    // Put a known amount of data into the uploads volume through the running backend.
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&["exec", &backend, "sh", "-c", "head -c 3145728 /dev/urandom > /app/media/upload.bin"]);

    let inv = stack.xtask_json(&["volumes", "--json"]);
    let expect = [
        ("postgres-data", "database", "critical", "db", "/var/lib/postgresql/data"),
        ("redis-data", "cache", "important", "redis", "/data"),
        ("backend-media", "uploads", "critical", "backend", "/app/media"),
        ("backend-static", "static", "regenerable", "backend", "/app/staticfiles"),
        ("frontend-node-modules", "dependencies", "regenerable", "frontend", "/app/node_modules"),
        ("proxy-logs", "logs", "optional", "proxy", "/var/log/nginx"),
    ];
    for (suffix, role, priority, service, target) in expect {
        let v = by_name(&inv, &stack.volume(suffix));
        assert_eq!(v["key"], format!("app-{suffix}"));
        assert_eq!((v["role"].as_str(), v["priority"].as_str()), (Some(role), Some(priority)), "{v}");
        assert_eq!(v["role_inferred"], false);
        assert_eq!(v["exists"], true, "{v}");
        assert_eq!(v["driver"], "local");
        assert_eq!(v["external"], false);
        assert!(
            v["mounts"].as_array().unwrap().iter().any(|m| m["service"] == service && m["target"] == target),
            "{v}"
        );
        let containers = v["containers"].as_array().unwrap();
        assert!(containers.iter().any(|c| c == &Value::from(format!("{}-{service}-1", stack.project))), "{v}");
    }
    let media = by_name(&inv, &stack.volume("backend-media"))["size_bytes"].as_u64().unwrap();
    assert!(media >= 3 * 1024 * 1024, "media size {media} counts the 3 MiB upload");
    let pg = by_name(&inv, &stack.volume("postgres-data"))["size_bytes"].as_u64().unwrap();
    assert!(pg > 10 * 1024 * 1024, "an initialised cluster is tens of MiB, got {pg}");
    let static_mounts = &by_name(&inv, &stack.volume("backend-static"))["mounts"];
    assert!(static_mounts.as_array().unwrap().iter().any(|m| m["service"] == "proxy" && m["read_only"] == true));
    let total = inv["total_size_bytes"].as_u64().unwrap();
    assert!(total >= media + pg);

    let text = stack.xtask_ok(&["volumes"]);
    assert!(text.contains(&stack.volume("postgres-data")) && text.contains("Total: 6 volumes, 6 exist"), "{text}");

    let st = stack.xtask_json(&["status", "--json"]);
    let services = st["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    for s in services {
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["health"], "healthy", "{s}");
    }

    // `down --dry-run` changes nothing; `down` keeps every volume and its data.
    let printed = stack.xtask_ok(&["down", "--dry-run"]);
    assert!(printed.contains("docker compose --project-name") && printed.contains(" down"), "{printed}");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &backend]).trim(), "true");
    stack.xtask_ok(&["down"]);
    let inv = stack.xtask_json(&["volumes", "--json"]);
    for v in inv["volumes"].as_array().unwrap() {
        assert_eq!(v["exists"], true, "down must keep {v}");
        assert_eq!(v["containers"].as_array().unwrap().len(), 0);
    }
    assert_eq!(by_name(&inv, &stack.volume("backend-media"))["size_bytes"].as_u64().unwrap(), media);
    let st = stack.xtask_json(&["status", "--json"]);
    assert!(st["services"].as_array().unwrap().iter().all(|s| s["state"] == "not created"));
}

/// The fields both ways in must agree on.
fn static_view(inv: &Value) -> Vec<Value> {
    inv["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            serde_json::json!({
                "key": v["key"], "name": v["name"], "external": v["external"], "role": v["role"],
                "priority": v["priority"], "mounts": v["mounts"],
                "driver": if v["external"] == true { Value::Null } else { v["driver"].clone() },
            })
        })
        .collect()
}

#[test]
fn offline_parse_and_compose_config_agree_on_every_fixture() {
    if !engine() {
        return;
    }
    let f = fixtures();
    let w = workspace();
    let cases: Vec<(Vec<std::path::PathBuf>, Vec<&str>)> = vec![
        (vec![f.join("basic/compose.yaml")], vec![]),
        (vec![f.join("overlay/compose.yaml"), f.join("overlay/compose.override.yaml")], vec![]),
        (vec![f.join("extends/compose.yaml")], vec![]),
        (vec![f.join("include/compose.yaml")], vec![]),
        (vec![f.join("profiles/compose.yaml")], vec![]),
        (vec![f.join("profiles/compose.yaml")], vec!["--profile", "debug"]),
        (vec![f.join("anchors/compose.yaml")], vec![]),
        (vec![f.join("envfile/compose.yaml")], vec![]),
        (vec![w.join("compose/compose.yaml")], vec![]),
        (vec![w.join("compose/compose.yaml")], vec!["--env", "dev"]),
        (vec![w.join("compose/compose.yaml")], vec!["--env", "test"]),
        (vec![w.join("compose/compose.yaml")], vec!["--env", "prod"]),
    ];
    let listed = || docker_ok(&["volume", "ls", "--quiet"]).lines().map(str::to_string).collect::<Vec<_>>();
    let before = listed();
    let mut seen = Vec::new();
    for (files, extra) in cases {
        let mut args: Vec<String> = Vec::new();
        for file in &files {
            args.push("--file".into());
            args.push(file.to_string_lossy().into_owned());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["volumes".to_string(), "--json".to_string()]);
        let run = |offline: bool| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
            cmd.args(&args);
            if offline {
                cmd.arg("--offline");
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{args:?} offline={offline}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        let (offline, engine) = (run(true), run(false));
        assert_eq!(offline["project"], engine["project"], "{args:?}");
        assert_eq!(static_view(&offline), static_view(&engine), "{args:?}");
        assert!(!static_view(&offline).is_empty(), "{args:?}");
        assert_eq!(offline["volumes"][0]["exists"], Value::Null, "offline knows nothing of the engine");
        for v in engine["volumes"].as_array().unwrap().iter().filter(|v| v["kind"] == "volume") {
            let name = v["name"].as_str().unwrap().to_string();
            assert_eq!(v["exists"], before.contains(&name), "{v}");
            seen.push(name);
        }
    }
    let after = listed();
    for name in seen {
        assert_eq!(before.contains(&name), after.contains(&name), "listing created or removed {name}");
    }
}

/// Issue 31: an included file's `env_file` and binds resolve against its own project directory
/// (`project_directory`, else its own directory), its variables default from the include's
/// `env_file` or that directory's `.env`. The whole model of every service, environment
/// included, is what `docker compose config` makes of the same files.
#[test]
fn included_files_paths_agree_with_compose_config() {
    if !engine() {
        return;
    }
    let file = fixtures().join("include/compose.yaml");
    let selection = Selection { files: vec![file.clone()], ..Selection::default() };
    let offline = selection.resolve(&std::env::vars().collect()).unwrap().parse_offline().unwrap();
    let json = docker_ok(&["compose", "--file", file.to_str().unwrap(), "config", "--format", "json"]);
    let engine = from_engine_config(&offline.name, &json).unwrap();
    assert_eq!(offline.services, engine.services);
    let names = |p: &Project| p.volumes.iter().map(|v| (v.key.clone(), v.name.clone())).collect::<Vec<_>>();
    assert_eq!(names(&offline), names(&engine));
    // Not vacuous: the env files and binds of the included files are there, absolute.
    let tools = engine.services.iter().find(|s| s.name == "tools").unwrap();
    assert_eq!(tools.environment.get("TOOLS_USER").map(String::as_str), Some("from-tools-env"), "{tools:?}");
    let conf = fixtures().join("include/tools/root/conf");
    assert!(tools.mounts.iter().any(|m| m.source.as_deref() == conf.to_str()), "{tools:?}");
}

#[test]
fn bad_compose_files_name_the_file_and_key_online_and_offline() {
    if !engine() {
        return;
    }
    let f = fixtures();
    let cases = [
        ("bad-yaml.yaml", vec!["bad-yaml.yaml", "line"]),
        ("undeclared.yaml", vec!["undeclared.yaml", "services.app.volumes[0]", "nowhere"]),
        ("required.yaml", vec!["required.yaml", "services.app.image", "IMAGE"]),
    ];
    for (file, needles) in cases {
        for offline in [true, false] {
            let path = f.join("errors").join(file);
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
            cmd.arg("--file").arg(&path).args(["volumes"]).env_remove("IMAGE");
            if offline {
                cmd.arg("--offline");
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{file}: {err}");
            assert!(err.starts_with("error: "), "{err}");
            assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
            for n in &needles {
                assert!(err.contains(n), "{file} (offline={offline}): {n:?} missing from: {err}");
            }
        }
    }
}

#[test]
fn unreachable_daemon_and_offline_mode() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["volumes"])
        .env("DOCKER_HOST", "unix:///nonexistent/xtask-test.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the Docker daemon") && err.contains("--offline"), "{err}");
    // The same command offline needs no daemon at all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["volumes", "--offline", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/xtask-test.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv["volumes"].as_array().unwrap().len(), 6);
    // Commands that must talk to the engine say so under --offline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask")).args(["status", "--offline"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --offline"));
}
