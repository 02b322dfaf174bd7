//! Offline discovery against the fixtures in `xtask/tests/fixtures` (the e2e tests check that
//! `docker compose config` agrees with the same fixtures).

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn stack(files: &[&str], profiles: &[&str]) -> Result<Stack> {
    let sel = Selection {
        files: files.iter().map(|f| fixtures().join(f)).collect(),
        profiles: profiles.iter().map(|p| p.to_string()).collect(),
        ..Selection::default()
    };
    sel.resolve(&BTreeMap::new())
}

fn parse(files: &[&str], profiles: &[&str]) -> Project {
    stack(files, profiles).unwrap().parse_offline().unwrap()
}

fn names(p: &Project) -> Vec<(&str, &str)> {
    p.volumes.iter().map(|v| (v.key.as_str(), v.name.as_str())).collect()
}

#[test]
fn basic_names_follow_compose_rules() {
    let p = parse(&["basic/compose.yaml"], &[]);
    assert_eq!(p.name, "fixture-basic", "COMPOSE_PROJECT_NAME from .env");
    assert_eq!(
        names(&p),
        [
            ("dbdata", "fixture-basic_dbdata"),
            ("legacy", "legacy-volume-name"),
            ("shared", "shared"),
            ("uploads", "fixture-basic-uploads"),
        ]
    );
    let legacy = p.volume("legacy").unwrap();
    assert!(legacy.external);
    assert!(p.volume("shared").unwrap().external);
    assert!(!p.volume("dbdata").unwrap().external);
    assert_eq!(p.volume("dbdata").unwrap().labels["com.example.team"], "core");
    assert_eq!(p.volume("dbdata").unwrap().driver.as_deref(), Some("local"));
}

#[test]
fn basic_mount_kinds_and_modes() {
    let p = parse(&["basic/compose.yaml"], &[]);
    let web = p.services.iter().find(|s| s.name == "web").unwrap();
    let kinds: Vec<_> = web.mounts.iter().map(|m| (m.kind, m.target.as_str(), m.read_only)).collect();
    assert_eq!(
        kinds,
        [
            (MountKind::Volume, "/srv/uploads", true),
            (MountKind::Volume, "/srv/shared", true),
            (MountKind::Anonymous, "/anonymous/cache", false),
            (MountKind::Tmpfs, "/tmp/scratch", false),
            (MountKind::Bind, "/var/log/web", false),
        ]
    );
    let bind = &web.mounts[4];
    assert_eq!(bind.source.as_deref(), Some(fixtures().join("basic/logs").to_str().unwrap()));
    let users: Vec<_> = p.mounts_of("uploads").map(|(s, m)| (s.name.as_str(), m.target.as_str())).collect();
    assert_eq!(users, [("web", "/srv/uploads"), ("worker", "/work/uploads")]);
}

#[test]
fn overlay_merges_with_reset_and_override() {
    let p = parse(&["overlay/compose.yaml", "overlay/compose.override.yaml"], &[]);
    assert_eq!(p.name, "fixture-overlay");
    // `cache` lost its only mount to data2 (same target), so it drops out like in `docker compose config`.
    assert_eq!(names(&p), [("data", "fixture-overlay_data"), ("data2", "fixture-overlay-second")]);
    let sidecar = p.services.iter().find(|s| s.name == "sidecar").unwrap();
    assert_eq!(sidecar.mounts.len(), 1, "!override replaced the list");
    assert_eq!(sidecar.mounts[0].target, "/other");
}

#[test]
fn extends_in_file_and_from_another_file() {
    let p = parse(&["extends/compose.yaml"], &[]);
    let child = p.services.iter().find(|s| s.name == "child").unwrap();
    let targets: Vec<_> = child.mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/own", "/also-own"]);
    assert_eq!(p.mounts_of("shared").next().unwrap().0.name, "from-file");
}

#[test]
fn include_brings_services_and_volumes() {
    let p = parse(&["include/compose.yaml"], &[]);
    assert_eq!(
        names(&p),
        [
            ("app-data", "fixture-include_app-data"),
            ("included-data", "fixture-include-logs"),
            ("tools-cache", "fixture-include_tools-cache"),
        ]
    );
    let services: Vec<_> = p.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(services, ["app", "helper", "included", "tools"]);
}

/// A service's binds as (source, target, read-only).
fn binds(p: &Project, service: &str) -> Vec<(String, String, bool)> {
    let svc = p.services.iter().find(|s| s.name == service).unwrap();
    svc.mounts
        .iter()
        .filter(|m| m.kind == MountKind::Bind)
        .map(|m| (m.source.clone().unwrap_or_default(), m.target.clone(), m.read_only))
        .collect()
}

fn env_of<'a>(p: &'a Project, service: &str, key: &str) -> Option<&'a str> {
    p.services.iter().find(|s| s.name == service).and_then(|s| s.environment.get(key)).map(String::as_str)
}

#[test]
fn included_files_resolve_paths_against_their_project_directory() {
    let p = parse(&["include/compose.yaml"], &[]);
    let at = |rel: &str| fixtures().join("include").join(rel).to_string_lossy().into_owned();
    // sub/compose.yaml (issue 31): `./extra.env` and `./logs` are sub/'s, not the main project's.
    assert_eq!(env_of(&p, "included", "INCLUDED_MODE"), Some("from-sub-extra-env"));
    assert_eq!(binds(&p, "included"), [(at("sub/logs"), "/srv/logs".into(), false)]);
    // tools/compose.yaml, included with project_directory tools/root: its service's env_file and
    // binds (short and long syntax) are tools/root's, not tools/'s; the include's own env_file
    // (tools/defaults.env) is the including directory's.
    assert_eq!(env_of(&p, "tools", "TOOLS_USER"), Some("from-tools-env"));
    assert_eq!(env_of(&p, "tools", "TOOLS_HOME"), Some("/opt/tools"), "a default from tools/defaults.env");
    assert_eq!(
        binds(&p, "tools"),
        [(at("tools/root/scripts"), "/scripts".into(), true), (at("tools/root/conf"), "/etc/tools".into(), false)]
    );
    // Its own include (helper.yaml) is found in tools/root too, and reads that directory's `.env`.
    assert_eq!(env_of(&p, "helper", "HELPER_MODE"), Some("from-tools-root-dotenv"));
    assert_eq!(binds(&p, "helper"), [(at("tools/root/helper-data"), "/data".into(), false)]);
}

#[test]
fn included_build_context_and_the_main_projects_variables_win() {
    let process = BTreeMap::from([("TOOLS_HOME".to_string(), "/from/the/shell".to_string())]);
    let sel = Selection { files: vec![fixtures().join("include/compose.yaml")], ..Selection::default() };
    let stack = sel.resolve(&process).unwrap();
    let p = stack.parse_offline().unwrap();
    assert_eq!(env_of(&p, "tools", "TOOLS_HOME"), Some("/from/the/shell"), "the include's env_file only fills gaps");
    let merged = load::load_files(&stack.files, &stack.env).unwrap();
    let context = fixtures().join("include/tools/root/ctx");
    assert_eq!(merged.doc["services"]["tools"]["build"], Value::from(context.to_string_lossy().into_owned()));
}

#[test]
fn profiles_select_services() {
    let p = parse(&["profiles/compose.yaml"], &[]);
    assert_eq!(names(&p), [("base", "fixture-profiles_base")]);
    let p = parse(&["profiles/compose.yaml"], &["debug"]);
    assert_eq!(p.services.len(), 2);
    assert_eq!(names(&p).len(), 2);
}

#[test]
fn anchors_and_merge_keys() {
    let p = parse(&["anchors/compose.yaml"], &[]);
    let a = p.services.iter().find(|s| s.name == "cache-a").unwrap();
    assert_eq!(a.image.as_deref(), Some("redis:7"));
    assert_eq!(p.mounts_of("cache").count(), 2);
    assert_eq!(p.mounts_of("node_modules").count(), 1);
}

#[test]
fn errors_name_the_file_and_key() {
    let err = |f: &str| format!("{:#}", stack(&[f], &[]).and_then(|s| s.parse_offline()).unwrap_err());
    let e = err("errors/bad-yaml.yaml");
    assert!(e.contains("bad-yaml.yaml") && e.contains("line"), "{e}");
    let e = err("errors/undeclared.yaml");
    assert!(e.contains("undeclared.yaml") && e.contains("services.app.volumes[0]") && e.contains("nowhere"), "{e}");
    let e = err("errors/required.yaml");
    assert!(e.contains("required.yaml") && e.contains("services.app.image") && e.contains("IMAGE"), "{e}");
    let e = err("errors/include-envfile.yaml");
    let missing = fixtures().join("errors/include-envfile/absent.env");
    assert!(e.contains(&format!("read the env_file {}", missing.display())) && e.contains("service sidecar"), "{e}");
    let e = err("errors/does-not-exist.yaml");
    assert!(e.contains("does-not-exist.yaml") && e.contains("-f"), "{e}");
}

#[test]
fn project_name_precedence_and_validation() {
    let sel = Selection {
        files: vec![fixtures().join("overlay/compose.yaml")],
        project_name: Some("from-cli".into()),
        ..Selection::default()
    };
    assert_eq!(sel.resolve(&BTreeMap::new()).unwrap().name, "from-cli");
    let env = BTreeMap::from([("COMPOSE_PROJECT_NAME".to_string(), "from-env".to_string())]);
    let sel = Selection { project_name: None, ..sel };
    assert_eq!(sel.resolve(&env).unwrap().name, "from-env");
    assert_eq!(sel.resolve(&BTreeMap::new()).unwrap().name, "fixture-overlay", "top-level name:");
    let bad = Selection { project_name: Some("Bad Name".into()), ..sel.clone() };
    assert!(bad.resolve(&BTreeMap::new()).unwrap_err().to_string().contains("Bad Name"));
    // No name anywhere: the directory's name, normalised.
    let sel = Selection { files: vec![fixtures().join("errors/undeclared.yaml")], ..Selection::default() };
    assert_eq!(sel.resolve(&BTreeMap::new()).unwrap().name, "errors");
    assert_eq!(normalize_name("My_App.v2"), "my_appv2");
}

#[test]
fn compose_file_env_and_overlay_selection() {
    let env = BTreeMap::from([(
        "COMPOSE_FILE".to_string(),
        format!(
            "{}:{}",
            fixtures().join("overlay/compose.yaml").display(),
            fixtures().join("overlay/compose.override.yaml").display()
        ),
    )]);
    let s = Selection::default().resolve(&env).unwrap();
    assert_eq!(s.files.len(), 2);
    let sample =
        Selection { env_overlay: Some("test".into()), ..Selection::default() }.resolve(&BTreeMap::new()).unwrap();
    assert!(sample.files[1].ends_with("compose/compose.test.yaml"));
    let missing = Selection { env_overlay: Some("nope".into()), ..Selection::default() };
    assert!(missing.resolve(&BTreeMap::new()).unwrap_err().to_string().contains("compose.nope.yaml"));
}

#[test]
fn sample_stack_has_six_named_volumes_per_environment() {
    for (env, prefix) in [(None, "app"), (Some("test"), "app-test"), (Some("prod"), "app-prod"), (Some("dev"), "app")] {
        let sel = Selection { env_overlay: env.map(str::to_string), ..Selection::default() };
        let p = sel.resolve(&BTreeMap::new()).unwrap().parse_offline().unwrap();
        let got: Vec<_> = p.volumes.iter().map(|v| v.name.clone()).collect();
        let want: Vec<_> =
            ["backend-media", "backend-static", "frontend-node-modules", "postgres-data", "proxy-logs", "redis-data"]
                .iter()
                .map(|s| format!("{prefix}-{s}"))
                .collect();
        assert_eq!(got, want, "env {env:?}");
    }
}

#[test]
fn short_mount_syntax() {
    let m = parse_short_mount("data:/x:ro,z").unwrap();
    assert_eq!(
        (m.kind, m.source.as_deref(), m.target.as_str(), m.read_only),
        (MountKind::Volume, Some("data"), "/x", true)
    );
    let m = parse_short_mount("/only:ro").unwrap();
    assert_eq!((m.kind, m.target.as_str(), m.read_only), (MountKind::Anonymous, "/only", true));
    assert_eq!(parse_short_mount("~/src:/src").unwrap().kind, MountKind::Bind);
    assert_eq!(parse_short_mount("../src:/src:rw").unwrap().kind, MountKind::Bind);
    assert!(parse_short_mount("a:b:c:d").is_err());
}

#[test]
fn mount_targets_are_cleaned_like_compose_does() {
    assert_eq!(clean_target("/data/"), "/data");
    assert_eq!(clean_target("//srv/./x/../y/"), "/srv/y");
    assert_eq!(clean_target("/"), "/");
    let m = parse_mount(&serde_yaml::from_str("{type: volume, source: v, target: /data/}").unwrap()).unwrap();
    assert_eq!(m.target, "/data");
    let m = parse_mount(&serde_yaml::Value::String("./b:/b/".into())).unwrap();
    assert_eq!(m.target, "/b");
}

#[test]
fn offline_reads_env_files_under_the_environment() {
    let p = parse(&["envfile/compose.yaml"], &[]);
    let db = p.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.environment.get("POSTGRES_USER").map(String::as_str), Some("fromfile"));
    assert_eq!(db.environment.get("POSTGRES_DB").map(String::as_str), Some("fromenvironment"), "environment wins");
}
