//! Everything a database had comes back on a new machine (issue 32 §5), end to end on the live
//! engine: a PostgreSQL database owned by an application role, with its connection limit,
//! comment, privileges (REVOKE from PUBLIC, GRANT CONNECT to another role), its own setting and
//! a role's setting in it, backed up, the stack wiped with its volumes (`docker compose down
//! --volumes`), restored: each property as it was, also after a restore over it and one
//! `--in-place`; a setting only a superuser may set is named, not given back; a database closed
//! to connections is named at backup. MariaDB: a database's
//! default character set and collation come back, and the users replay adds no second
//! `GRANT PROXY`.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;

const PG_COMPOSE: &str = r#"name: dbprops
services:
  db:
    image: ${POSTGRES_IMAGE:-postgres:16}
    environment:
      POSTGRES_USER: app
      POSTGRES_PASSWORD: app-pw
      POSTGRES_DB: app
    volumes: [pg-data:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U app -d app"]
      interval: 1s
      retries: 60
volumes:
  pg-data:
    name: ${DBPROPS_PREFIX}-pg-data
"#;

/// `sql` on psql's stdin as `app` in database `db` (one statement at a time, stopping at an error).
fn pg(stack: &TestStack, db: &str, sql: &str) -> String {
    let args = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", db];
    stack.exec("db", &args, sql).trim().to_string()
}

/// Every property of d2 the issue names, as the catalogs say, and its data with its owner.
fn d2_properties(stack: &TestStack) -> Vec<String> {
    vec![
        pg(
            stack,
            "app",
            "SELECT pg_get_userbyid(datdba) || ' limit ' || datconnlimit || ' acl ' || coalesce(datacl::text, '-') \
             || ' allowconn ' || datallowconn FROM pg_database WHERE datname = 'd2';",
        ),
        pg(stack, "app", "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'd2';"),
        pg(
            stack,
            "app",
            "SELECT coalesce(r.rolname, '(database)') || ' ' || s.setconfig::text FROM pg_db_role_setting s \
             JOIN pg_database d ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole \
             WHERE d.datname = 'd2' ORDER BY 1;",
        ),
        pg(stack, "d2", "SELECT tableowner || ' ' || (SELECT count(*) FROM x.t) FROM pg_tables WHERE tablename = 't';"),
    ]
}

fn seed_pg(stack: &TestStack) {
    pg(
        stack,
        "app",
        "CREATE ROLE approle LOGIN PASSWORD 'approle-pw';\nCREATE ROLE other LOGIN PASSWORD 'other-pw';\n\
         CREATE ROLE nobody LOGIN PASSWORD 'nobody-pw';\n\
         CREATE DATABASE d2 OWNER approle CONNECTION LIMIT 7;\n\
         ALTER DATABASE d2 SET work_mem = '8MB';\n\
         ALTER ROLE approle IN DATABASE d2 SET search_path = x;\n\
         COMMENT ON DATABASE d2 IS 'the app''s second database';\n\
         REVOKE ALL ON DATABASE d2 FROM PUBLIC;\n\
         GRANT CONNECT ON DATABASE d2 TO other;\n\
         ALTER ROLE other IN DATABASE d2 SET log_min_duration_statement = 250;\n\
         CREATE DATABASE closed;\nALTER DATABASE closed WITH ALLOW_CONNECTIONS false;\n",
    );
    pg(
        stack,
        "d2",
        "SET ROLE approle;\nCREATE SCHEMA x;\nCREATE TABLE x.t (id int);\n\
         INSERT INTO x.t SELECT generate_series(1, 42);\n",
    );
}

#[test]
fn a_postgres_database_owned_by_a_role_comes_back_with_everything_it_had_on_a_new_machine() {
    if !engine() {
        return;
    }
    let (_project, stack) = stack_from("dbprops-pg", PG_COMPOSE, "DBPROPS_PREFIX");
    let backups = TempDir::new("dbprops-pg-backups");
    stack.compose(&["up", "--detach", "--wait"]);
    seed_pg(&stack);
    let mut before = d2_properties(&stack);
    assert!(before[0].starts_with("approle limit 7 acl {"), "{before:?}");
    assert!(before[2].contains("work_mem=8MB") && before[2].contains("search_path=x"), "{before:?}");
    // Only a superuser may set this one: an archive does not get to, the restore names it.
    let superuser_only = "other {log_min_duration_statement=250}";
    assert!(before[2].contains(superuser_only), "{before:?}");
    before[2] = before[2].lines().filter(|l| *l != superuser_only).collect::<Vec<_>>().join("\n");

    let (ok, out, err) = stack.xtask(&["backup-db", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let skipped = summary["skipped"].to_string();
    assert!(skipped.contains("db/closed") && skipped.contains("ALLOW_CONNECTIONS false"), "named: {skipped}");
    assert!(err.contains("db/closed"), "said at backup time: {err}");
    let archive = summary["path"].as_str().unwrap().to_string();

    // A new machine: the stack and its volumes gone, started empty.
    stack.compose(&["down", "--volumes", "--timeout", "5"]);
    stack.compose(&["up", "--detach", "--wait"]);
    assert_eq!(pg(&stack, "app", "SELECT count(*) FROM pg_database WHERE datname = 'd2';"), "0");
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert!(ok, "{err}");
    assert_eq!(d2_properties(&stack), before, "owner, limit, ACL, comment, settings and data as they were");
    assert!(err.contains("log_min_duration_statement") && err.contains("only a superuser may set it"), "{err}");

    // Over a live d2 changed since (the swap), then --in-place: the archive's properties again.
    pg(
        &stack,
        "app",
        "ALTER DATABASE d2 OWNER TO app;\nALTER DATABASE d2 RESET ALL;\nGRANT ALL ON DATABASE d2 TO PUBLIC;\n\
         ALTER DATABASE d2 CONNECTION LIMIT -1;\nCOMMENT ON DATABASE d2 IS 'changed';\n",
    );
    assert_ne!(d2_properties(&stack), before);
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert_eq!(d2_properties(&stack), before, "after a restore over a live d2");
    pg(&stack, "app", "ALTER DATABASE d2 OWNER TO app;\nALTER ROLE approle IN DATABASE d2 RESET ALL;\n");
    stack.xtask_ok(&["restore", &archive, "--yes", "--in-place", "--output-dir", backups.s()]);
    assert_eq!(d2_properties(&stack), before, "after --in-place");
    let nobody = "SELECT has_database_privilege('nobody', 'd2', 'CONNECT') || ' ' \
                  || has_database_privilege('other', 'd2', 'CONNECT');";
    assert_eq!(pg(&stack, "app", nobody), "false true", "PUBLIC revoked, other granted");
}

const MARIA_COMPOSE: &str = r#"name: dbprops
services:
  maria:
    image: ${MARIADB_IMAGE:-mariadb:11}
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
    name: ${DBPROPS_PREFIX}-maria-data
"#;

#[test]
fn a_mariadb_database_keeps_its_character_set_and_root_keeps_one_proxy_grant() {
    if !engine() {
        return;
    }
    let (_project, stack) = stack_from("dbprops-my", MARIA_COMPOSE, "DBPROPS_PREFIX");
    let backups = TempDir::new("dbprops-my-backups");
    stack.compose(&["up", "--detach", "--wait"]);
    let sql = |q: &str| stack.exec("maria", &["mariadb", "-uroot", "-proot-pw", "-N", "-e", q], "").trim().to_string();
    sql("CREATE DATABASE x CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; \
         CREATE DATABASE y CHARACTER SET latin1 COLLATE latin1_german1_ci; \
         CREATE TABLE x.t (s VARCHAR(10)); INSERT INTO x.t VALUES ('a'), ('b')");
    let charsets = || {
        sql("SELECT schema_name, default_character_set_name, default_collation_name FROM information_schema.schemata \
             WHERE schema_name IN ('x', 'y') ORDER BY 1")
    };
    let before = charsets();
    assert_eq!(before, "x\tutf8mb4\tutf8mb4_unicode_ci\ny\tlatin1\tlatin1_german1_ci");
    let proxies = || sql("SELECT COUNT(*) FROM mysql.proxies_priv");
    let fresh = proxies();
    let archive =
        |out: &str| serde_json::from_str::<serde_json::Value>(out).unwrap()["path"].as_str().unwrap().to_string();
    let first = archive(&stack.xtask_ok(&["backup-db", "--output-dir", backups.s(), "--json"]));

    stack.compose(&["down", "--volumes", "--timeout", "5"]);
    stack.compose(&["up", "--detach", "--wait"]);
    assert_eq!(sql("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('x', 'y')"), "0");
    stack.xtask_ok(&["restore", &first, "--yes", "--output-dir", backups.s()]);
    assert_eq!(charsets(), before, "each database's default character set and collation came back");
    assert_eq!(sql("SELECT COUNT(*) FROM x.t"), "2");
    assert_eq!(proxies(), fresh, "the users replay added no second proxy grant");
    // And a second round trip still holds one GRANT PROXY line for root.
    let second = archive(&stack.xtask_ok(&["backup-db", "--output-dir", backups.s(), "--json"]));
    stack.xtask_ok(&["restore", &second, "--yes", "--output-dir", backups.s()]);
    assert_eq!(proxies(), fresh);
    let grants = sql("SHOW GRANTS FOR 'root'@'localhost'");
    assert_eq!(grants.matches("GRANT PROXY").count(), 1, "{grants}");
    assert_eq!(charsets(), before);
}
