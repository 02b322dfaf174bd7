//! Real stacks' patterns end to end on the live engine: a Rails-like app (Mastodon's uploads in
//! `public/system`, a bind), Redis on a bind with its password in its command, a second Redis
//! in a volume with its password in another variable, a third with its password in its mounted
//! config file, and a Redis that keeps its data only in memory. Backup saves every Redis and copies the uploads; the memory-only one is named NOT
//! PROTECTED; after the data is lost, restore brings back every file and key.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

const COMPOSE: &str = r#"name: rails
services:
  web:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - ./public/system:/app/public/system
  redis:
    image: ${REDIS_IMAGE:-redis:7}
    command: ["redis-server", "--requirepass", "pw-one"]
    volumes:
      - ./redis:/data
  cache:
    image: ${REDIS_IMAGE:-redis:7}
    command: ["sh", "-c", "exec redis-server --appendonly yes --requirepass \"$$REDISPASS\""]
    environment:
      REDISPASS: pw-two
    volumes:
      - cache-data:/data
  queue:
    image: ${REDIS_IMAGE:-redis:7}
  jobs:
    image: ${REDIS_IMAGE:-redis:7}
    command: ["redis-server", "/usr/local/etc/redis/redis.conf"]
    volumes:
      - ./redis.conf:/usr/local/etc/redis/redis.conf:ro
      - jobs-data:/data
volumes:
  cache-data:
    name: ${RAILS_PREFIX}-cache-data
  jobs-data:
    name: ${RAILS_PREFIX}-jobs-data
"#;

fn redis(stack: &TestStack, service: &str, password: &str, args: &[&str]) -> String {
    let container = format!("{}-{service}-1", stack.project);
    let mut cmd = vec!["exec", "-e", "REDISCLI_AUTH", &container, "redis-cli"];
    cmd.extend(args);
    let out = std::process::Command::new("docker").args(&cmd).env("REDISCLI_AUTH", password).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_rails_like_stack_with_redis_everywhere_round_trips() {
    if !engine() {
        return;
    }
    let (project, stack) = stack_from("rails", COMPOSE, "RAILS_PREFIX");
    let upload = project.0.join("public/system/accounts/avatars/1.png");
    std::fs::create_dir_all(upload.parent().unwrap()).unwrap();
    std::fs::create_dir_all(project.0.join("redis")).unwrap();
    std::fs::write(&upload, b"avatar").unwrap();
    std::fs::write(project.0.join("redis.conf"), "dir /data\nrequirepass \"pw three\"\n").unwrap();
    let backups = TempDir::new("rails-backups");
    stack.xtask_ok(&["up"]);
    assert_eq!(redis(&stack, "redis", "pw-one", &["SET", "session:1", "alice"]), "OK");
    assert_eq!(redis(&stack, "cache", "pw-two", &["SET", "feed:1", "home"]), "OK");
    assert_eq!(redis(&stack, "jobs", "pw three", &["SET", "job:1", "mail"]), "OK");

    let inv = stack.xtask_json(&["volumes", "--json"]);
    let system = format!("{}/public/system", project.s());
    let v = inv["volumes"].as_array().unwrap().iter().find(|v| v["name"] == system.as_str()).unwrap();
    assert_eq!((v["role"].as_str(), v["priority"].as_str()), (Some("uploads"), Some("critical")), "{v}");
    assert!(v["role_reason"].as_str().unwrap().contains("upload"), "{v}");

    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    for service in ["redis", "cache", "jobs"] {
        assert!(err.contains(&format!("ask Redis ({service}) to save its data")), "{service}: {err}");
    }
    assert!(summary["unprotected"].to_string().contains("queue"), "{summary}");
    assert!(err.contains("NOT PROTECTED") && err.contains("queue"), "{err}");
    let archive = summary["path"].as_str().unwrap().to_string();

    std::fs::remove_file(&upload).unwrap();
    redis(&stack, "redis", "pw-one", &["DEL", "session:1"]);
    redis(&stack, "cache", "pw-two", &["DEL", "feed:1"]);
    redis(&stack, "jobs", "pw three", &["DEL", "job:1"]);
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert_eq!(std::fs::read(&upload).unwrap(), b"avatar", "the upload came back");
    assert_eq!(redis(&stack, "redis", "pw-one", &["GET", "session:1"]), "alice", "Redis on a bind");
    assert_eq!(redis(&stack, "cache", "pw-two", &["GET", "feed:1"]), "home", "Redis in a volume, AOF");
    assert_eq!(redis(&stack, "jobs", "pw three", &["GET", "job:1"]), "mail", "its password in its config file");
}

/// A database the tool cannot dump (a ClickHouse-like server: its volume labelled a database,
/// no engine the tool knows): backed up with only that server stopped for the copy, started
/// again, its data restored; with `--no-stop` NOT PROTECTED and not in the archive.
#[test]
fn an_undumpable_database_is_copied_with_its_server_stopped_or_named_not_protected() {
    if !engine() {
        return;
    }
    let compose = r#"name: events
services:
  events:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes: [event-data:/var/lib/events]
  web:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
volumes:
  event-data:
    name: ${EVENTS_PREFIX}-event-data
    labels: {xtask.role: database}
"#;
    let (_project, stack) = stack_from("events", compose, "EVENTS_PREFIX");
    let backups = TempDir::new("events-backups");
    stack.xtask_ok(&["up"]);
    let server = format!("{}-events-1", stack.project);
    let web = format!("{}-web-1", stack.project);
    docker_ok(&["exec", &server, "sh", "-c", "echo 42 > /var/lib/events/part.bin"]);
    let web_started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &web]);

    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(err.contains("stop events"), "only the server is stopped for the copy: {err}");
    assert!(!err.contains("NOT PROTECTED"), "{err}");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &server]).trim(), "true", "started again");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &web]), web_started, "web never stopped");
    let archive = summary["path"].as_str().unwrap().to_string();

    docker_ok(&["exec", &server, "sh", "-c", "echo 0 > /var/lib/events/part.bin"]);
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert_eq!(docker_ok(&["exec", &server, "cat", "/var/lib/events/part.bin"]).trim(), "42");

    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", backups.s(), "--json", "--no-stop"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let volume = stack.volume("event-data");
    assert!(summary["unprotected"].to_string().contains(&volume), "{summary}");
    assert!(!summary["volumes"].to_string().contains(&volume), "NOT PROTECTED is never copied too: {summary}");
}

/// A local tag of the test bed's busybox under a name the known-by-image table recognises
/// (a Kafka broker here), this test's own; removed when dropped (the tag only, not the image).
struct StandIn(String);

impl StandIn {
    fn tag(stack: &TestStack, kind: &str) -> StandIn {
        let busybox = stack.env.iter().find(|(k, _)| k == "APP_IMAGE").map(|(_, v)| v.clone()).unwrap();
        let name = format!("xtask-test/{kind}-{}:local", stack.project);
        docker_ok(&["tag", &busybox, &name]);
        StandIn(name)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "--no-prune", &self.0]);
    }
}

/// The metadata.json of a local (clear) archive.
fn metadata_of(archive: &str) -> serde_json::Value {
    let entry = load(std::path::Path::new(archive)).into_iter().find(|e| e.name == b"metadata.json").unwrap();
    serde_json::from_slice(&entry.data).unwrap()
}

fn consistency_of(meta: &serde_json::Value, volume: &str) -> String {
    let v = meta["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume).expect(volume);
    v["consistency"].as_str().unwrap().to_string()
}

/// A store no engine dumps, known by its image (a Kafka-like broker: busybox tagged with a
/// Kafka name): its data volume is copied with it stopped by `backup` and by restore's safety
/// backup alike (stop, safety copy, swap: both metadata say `stopped`), its log volume is logs,
/// not its database; the broker runs again after the restore, with the data restored.
#[test]
fn the_safety_backup_copies_an_undumpable_store_stopped_like_a_backup() {
    if !engine() {
        return;
    }
    let compose = r#"name: broker
services:
  kafka:
    image: ${KAFKA_IMAGE}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - kafka-data:/var/lib/kafka/data
      - kafka-log:/var/lib/kafka/log
  web:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
volumes:
  kafka-data:
    name: ${BROKER_PREFIX}-kafka-data
  kafka-log:
    name: ${BROKER_PREFIX}-kafka-log
"#;
    let (_project, mut stack) = stack_from("broker", compose, "BROKER_PREFIX");
    let image = StandIn::tag(&stack, "kafka");
    stack.env.push(("KAFKA_IMAGE".into(), image.0.clone()));
    let backups = TempDir::new("broker-backups");
    stack.xtask_ok(&["up"]);
    let (data, log) = (stack.volume("kafka-data"), stack.volume("kafka-log"));
    let inv = stack.xtask_json(&["volumes", "--json"]);
    let role = |name: &str| {
        let v = inv["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap().clone();
        (v["role"].as_str().unwrap().to_string(), v["role_reason"].as_str().unwrap().to_string())
    };
    assert_eq!(role(&data).0, "database", "{:?}", role(&data));
    assert_eq!(role(&log).0, "logs", "a log volume of the broker is not its database: {:?}", role(&log));
    let broker = format!("{}-kafka-1", stack.project);
    let web = format!("{}-web-1", stack.project);
    docker_ok(&["exec", &broker, "sh", "-c", "echo offset-42 > /var/lib/kafka/data/topic-0.log"]);

    let summary = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    let archive = summary["path"].as_str().unwrap().to_string();
    assert_eq!(consistency_of(&metadata_of(&archive), &data), "stopped");
    docker_ok(&["exec", &broker, "sh", "-c", "echo offset-99 > /var/lib/kafka/data/topic-0.log"]);
    let web_started = docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &web]);

    let (ok, out, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    let safety = outcome["undo"].as_str().expect("a safety backup").to_string();
    let meta = metadata_of(&safety);
    assert_eq!(consistency_of(&meta, &data), "stopped", "the safety backup is as consistent as a backup: {err}");
    let stop = err.find("stop kafka now").unwrap_or_else(|| panic!("stopped before the safety copy: {err}"));
    let copy = err.find("safety backup of what will be replaced").unwrap();
    let swap = err.find("swap the restored content").unwrap();
    assert!(stop < copy && copy < swap, "stop, safety copy, swap: {err}");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &broker]).trim(), "true", "runs again");
    assert_eq!(docker_ok(&["exec", &broker, "cat", "/var/lib/kafka/data/topic-0.log"]).trim(), "offset-42");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &web]), web_started, "web never stopped");
}

/// OpenProject keeps its attachments in `opdata:/var/openproject/assets`, shared by its web,
/// worker and cron services: no label, and `assets` alone never makes it regenerable, so
/// `backup` copies it (its plan says why it is kept) and a restore onto the stack wiped (its
/// containers and volume gone) brings every attachment back.
#[test]
fn an_attachments_volume_under_assets_is_backed_up_and_restored() {
    if !engine() {
        return;
    }
    let compose = r#"name: openproject
services:
  web:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes: [opdata:/var/openproject/assets]
  worker:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes: [opdata:/var/openproject/assets]
volumes:
  opdata:
    name: ${OP_PREFIX}-opdata
"#;
    let (_project, stack) = stack_from("openproject", compose, "OP_PREFIX");
    let backups = TempDir::new("openproject-backups");
    stack.xtask_ok(&["up"]);
    let web = format!("{}-web-1", stack.project);
    let files = "for i in $(seq 1 48); do mkdir -p /var/openproject/assets/files/attachment/file/$i && \
                 echo \"attachment $i\" > /var/openproject/assets/files/attachment/file/$i/doc.pdf; done";
    docker_ok(&["exec", &web, "sh", "-c", files]);
    let count = || docker_ok(&["exec", &web, "sh", "-c", "find /var/openproject/assets -type f | wc -l"]);
    assert_eq!(count().trim(), "48");

    let opdata = stack.volume("opdata");
    let inv = stack.xtask_json(&["volumes", "--json"]);
    let v = inv["volumes"].as_array().unwrap().iter().find(|v| v["name"] == opdata.as_str()).unwrap();
    assert_eq!((v["role"].as_str(), v["priority"].as_str()), (Some("data"), Some("important")), "{v}");
    let plan = stack.xtask_ok(&["backup", "--dry-run", "--output-dir", backups.s()]);
    assert!(
        plan.contains(&format!("copy volume {opdata}")) && plan.contains("kept since unsure of its role"),
        "{plan}"
    );
    let summary = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    assert!(summary["volumes"].to_string().contains(&opdata), "{summary}");
    let archive = summary["path"].as_str().unwrap().to_string();

    // Wiped as on a new machine: containers and volumes gone.
    stack.compose(&["down", "--volumes"]);
    assert!(!docker_ok(&["volume", "ls", "--quiet"]).lines().any(|v| v == opdata), "the volume is gone");
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    stack.xtask_ok(&["up"]);
    assert_eq!(count().trim(), "48", "every attachment came back");
    let one = docker_ok(&["exec", &web, "cat", "/var/openproject/assets/files/attachment/file/7/doc.pdf"]);
    assert_eq!(one.trim(), "attachment 7");
}

/// A MariaDB set up like the non-official images (an account with a host name, which the server
/// ignores under skip-name-resolve): `mariadb-dump --system=users` fails there, yet the backup
/// keeps every account the server can show, names the ignored one, and a restore brings the
/// users back.
#[test]
fn a_mariadb_with_accounts_it_ignores_is_backed_up_with_the_rest() {
    if !engine() {
        return;
    }
    let compose = r#"name: maria
services:
  maria:
    image: ${MARIADB_IMAGE:-mariadb:11}
    command: ["mariadbd", "--skip-name-resolve"]
    environment:
      MARIADB_ROOT_PASSWORD: root-pw
      MARIADB_DATABASE: app
    healthcheck:
      test: ["CMD", "mariadb-admin", "ping", "-uroot", "-proot-pw"]
      interval: 1s
      retries: 60
    volumes: [maria-data:/var/lib/mysql]
volumes:
  maria-data:
    name: ${MARIA_PREFIX}-maria-data
"#;
    let (_project, stack) = stack_from("maria", compose, "MARIA_PREFIX");
    let backups = TempDir::new("maria-backups");
    stack.xtask_ok(&["up"]);
    let sql = |q: &str| stack.exec("maria", &["mariadb", "-uroot", "-proot-pw", "-N", "-e", q], "").trim().to_string();
    sql("CREATE USER 'legacy'@'db.example.com' IDENTIFIED BY 'x'; CREATE USER 'reader'@'%' IDENTIFIED BY 'r'; \
         GRANT SELECT ON app.* TO 'reader'@'%'; FLUSH PRIVILEGES; CREATE TABLE app.t (id INT); INSERT INTO app.t VALUES (1)");
    let (ok, out, err) = stack.xtask(&["backup-db", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "the ignored account does not fail the backup: {err}");
    assert!(err.contains("not in the backup") && err.contains("'legacy'@'db.example.com'"), "{err}");
    let archive = serde_json::from_str::<serde_json::Value>(&out).unwrap()["path"].as_str().unwrap().to_string();
    sql("DROP USER 'reader'@'%'");
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    let grants = sql("SHOW GRANTS FOR 'reader'@'%'");
    assert!(grants.contains("GRANT SELECT ON `app`.*"), "the account and its grant came back: {grants}");
}

/// mailcow's shape: the database server mounts a volume its application also uses (a shared
/// directory, restored with the rest). The restore stops the server with the volume's other
/// users for the swap, starts it again before its dumps load, and every service ends running as
/// before: the rows and the file are back, and the restore says the services are as they were.
/// A failure after the database swap takes the way back and leaves the server running too.
#[test]
fn a_database_server_that_mounts_a_restored_volume_runs_for_its_load_and_after() {
    if !engine() {
        return;
    }
    let compose = r#"name: shared
services:
  db:
    image: ${POSTGRES_IMAGE:-postgres:16}
    environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: app-pw, POSTGRES_DB: app}
    volumes: [pgdata:/var/lib/postgresql/data, shared:/shared]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U app -d app"]
      interval: 1s
      retries: 60
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes: [shared:/shared]
volumes:
  pgdata: {name: "${SHARED_PREFIX}-pgdata"}
  shared: {name: "${SHARED_PREFIX}-shared", labels: {xtask.role: uploads}}
"#;
    let (_project, mut stack) = stack_from("sharedvol", compose, "SHARED_PREFIX");
    let dir = TempDir::new("sharedvol-backups");
    stack.xtask_ok(&["up"]);
    let psql = |stack: &TestStack, sql: &str| {
        stack.exec("db", &["psql", "-X", "-At", "-U", "app", "-d", "app", "-c", sql], "").trim().to_string()
    };
    psql(&stack, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 50)");
    stack.exec("app", &["sh", "-c", "echo genuine > /shared/file.txt"], "");
    let archive =
        stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"])["path"].as_str().unwrap().to_string();
    psql(&stack, "INSERT INTO t SELECT generate_series(51, 60)");
    stack.exec("app", &["sh", "-c", "echo later > /shared/file.txt"], "");
    let running = |stack: &TestStack| {
        let filter = format!("label=com.docker.compose.project={}", stack.project);
        let mut names: Vec<String> =
            docker_ok(&["ps", "--filter", &filter, "--filter", "status=running", "--format", "{{.Names}}"])
                .lines()
                .map(str::to_string)
                .collect();
        names.sort();
        names
    };
    let before = running(&stack);
    assert_eq!(before.len(), 2, "db and app run: {before:?}");
    // A failure right after the databases were swapped: the way back, and the server runs.
    stack.env.push(("XTASK_FAULT_AFTER".into(), "database-swap".into()));
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    stack.env.pop();
    assert!(!ok && err.contains("every service is as it was before (2 running)"), "{err}");
    assert_eq!(running(&stack), before, "the way back left every service running");
    assert_eq!(psql(&stack, "SELECT count(*) FROM t"), "60", "the state before the restore is back");
    // The restore itself.
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    assert!(ok, "{err}");
    assert!(err.contains("start db again: its databases load next"), "{err}");
    assert!(err.contains("every service is as it was before (2 running)"), "{err}");
    assert_eq!(running(&stack), before, "every service runs as before");
    assert_eq!(psql(&stack, "SELECT count(*) FROM t"), "50", "the archived rows");
    assert_eq!(stack.exec("app", &["cat", "/shared/file.txt"], ""), "genuine\n", "the archived file");
}
