//! A PostgreSQL database's own properties, which `pg_dump` without `--create` does not carry:
//! its owner, connection limit, comment, privileges on the database (`datacl`) and settings
//! (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`). Read at backup into the
//! metadata ([`read`]), given back to the restored database in the swap, `--in-place` and the
//! way back ([`apply`]). What the archive says reaches SQL only as hex, decoded and quoted by the
//! server (`format('%I')`, `quote_literal`): never as SQL text, a shell word or a connection
//! string. A setting only a superuser may set, or one this server does not know, is not given
//! back by the tool (a forged archive must not get what the dump's own role could not): it is
//! named, with the statement to run by hand.

use anyhow::{bail, Context, Result};

use super::psql::Psql;
use crate::archive::{DbGrant, DbProperties, DbSetting, Skipped};

/// Hex of `s`'s bytes.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(h: &str) -> Result<String> {
    let bytes: Vec<u8> = (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect::<Option<_>>()
        .with_context(|| format!("the server answered {h:?}, not hex"))?;
    String::from_utf8(bytes).context("the server answered text that is not UTF-8")
}

/// `s` as an SQL expression of type text that holds nothing but hex digits.
fn text(s: &str) -> String {
    format!("pg_catalog.convert_from(pg_catalog.decode('{}', 'hex'), 'UTF8')", hex(s))
}

/// The query whose rows [`parse`] reads, for database `name` (a checked name: no quote).
fn query_sql(name: &str) -> String {
    let h = |e: &str| format!("pg_catalog.encode(pg_catalog.convert_to({e}, 'UTF8'), 'hex')");
    format!(
        "SELECT 'owner|' || {owner} FROM pg_catalog.pg_database WHERE datname = '{name}' \
         UNION ALL SELECT 'limit|' || datconnlimit FROM pg_catalog.pg_database WHERE datname = '{name}' \
         UNION ALL SELECT 'comment|' || {comment} FROM pg_catalog.pg_database WHERE datname = '{name}' \
           AND pg_catalog.shobj_description(oid, 'pg_database') IS NOT NULL \
         UNION ALL SELECT 'acl|' FROM pg_catalog.pg_database WHERE datname = '{name}' AND datacl IS NOT NULL \
         UNION ALL SELECT 'grant|' || CASE WHEN a.grantee = 0 THEN '' ELSE {grantee} END || '|' \
           || a.privilege_type || '|' || a.is_grantable FROM pg_catalog.pg_database d, \
           pg_catalog.aclexplode(d.datacl) a WHERE d.datname = '{name}' \
         UNION ALL (SELECT 'setting|' || coalesce({role}, '') || '|' || {config} \
           FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase \
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole, \
           pg_catalog.unnest(s.setconfig) WITH ORDINALITY c(item, n) WHERE d.datname = '{name}' \
           ORDER BY s.setrole, c.n)",
        owner = h("pg_catalog.pg_get_userbyid(datdba)"),
        comment = h("pg_catalog.shobj_description(oid, 'pg_database')"),
        grantee = h("pg_catalog.pg_get_userbyid(a.grantee)"),
        role = h("r.rolname"),
        config = h("c.item"),
    )
}

/// The properties of database `name`, by `query` (one SQL query's rows, `-At`).
pub fn read(query: impl Fn(&str) -> Result<String>, name: &str) -> Result<DbProperties> {
    parse(&query(&query_sql(name))?).with_context(|| format!("read the properties of database {name}"))
}

/// The rows of [`query_sql`] as properties.
fn parse(rows: &str) -> Result<DbProperties> {
    let mut p = DbProperties::default();
    let role = |h: &str| -> Result<Option<String>> { Ok(Some(unhex(h)?).filter(|r| !r.is_empty())) };
    for row in rows.lines() {
        let fields: Vec<&str> = row.split('|').collect();
        match fields[..] {
            ["owner", h] => p.owner = Some(unhex(h)?),
            ["limit", n] => p.connection_limit = Some(n.parse().context("a connection limit")?),
            ["comment", h] => p.comment = Some(unhex(h)?),
            ["acl", ""] => p.grants = Some(p.grants.take().unwrap_or_default()),
            ["grant", to, privilege, grantable] => p.grants.get_or_insert_with(Vec::new).push(DbGrant {
                to: role(to)?,
                privilege: privilege.to_string(),
                grantable: grantable == "true",
            }),
            ["setting", r, item] => {
                let item = unhex(item)?;
                let (name, value) = item.split_once('=').with_context(|| format!("setting {item:?}"))?;
                p.settings.push(DbSetting { role: role(r)?, name: name.into(), value: value.into() });
            }
            _ => bail!("unexpected row {row:?}"),
        }
    }
    Ok(p)
}

/// The databases `pg_dump` cannot read or the backup does not take (not allowing connections,
/// or templates), but template0 and template1: named, never skipped in silence.
pub fn not_dumped(query: impl Fn(&str) -> Result<String>, service: &str) -> Result<Vec<Skipped>> {
    let sql = "SELECT pg_catalog.encode(pg_catalog.convert_to(datname, 'UTF8'), 'hex') || '|' || datallowconn \
               FROM pg_catalog.pg_database WHERE (NOT datallowconn OR datistemplate) \
               AND datname NOT IN ('template0', 'template1') ORDER BY datname";
    let mut skipped = Vec::new();
    for row in query(sql)?.lines() {
        let Some((name, allows)) = row.split_once('|') else { continue };
        let name: String = unhex(name)?.escape_debug().take(200).collect();
        let reason = if allows == "false" {
            "does not allow connections (ALLOW_CONNECTIONS false), so pg_dump cannot read it: NOT in the \
             archive; to back it up, ALTER DATABASE … WITH ALLOW_CONNECTIONS true first"
        } else {
            "is a template (IS_TEMPLATE true): not in the archive; to back it up, ALTER DATABASE … WITH \
             IS_TEMPLATE false first"
        };
        skipped.push(Skipped { name: format!("{service}/{name}"), reason: format!("PostgreSQL database {reason}") });
    }
    Ok(skipped)
}

/// The parameters whose values are lists of names (pg_dump's `variable_is_guc_list_quote`):
/// their stored value is split into its elements to be set again.
const LIST_PARAMETERS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// A stored list value split as PostgreSQL's `SplitGUCList` does (elements separated by commas,
/// a `"quoted"` one with `""` for a quote; case kept); None when it is not such a list.
fn split_list(value: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = value.trim_start();
    if rest.is_empty() {
        return Some(out);
    }
    loop {
        let (item, after) = if let Some(q) = rest.strip_prefix('"') {
            let mut item = String::new();
            let mut chars = q.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') if q[i + 1..].starts_with('"') => {
                        item.push('"');
                        chars.next();
                    }
                    (i, '"') => break i + 1,
                    (_, c) => item.push(c),
                }
            };
            (item, &q[end..])
        } else {
            let end = rest.find(|c: char| c == ',' || c.is_whitespace()).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        if item.is_empty() && !rest.starts_with('"') {
            return None;
        }
        out.push(item);
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// The SQL expression (text) of a setting's value as `SET … TO` takes it: each element of a
/// list parameter a literal of its own, any other value one literal.
fn value_sql(s: &DbSetting) -> String {
    let items = match LIST_PARAMETERS.contains(&s.name.to_ascii_lowercase().as_str()) {
        true => split_list(&s.value).unwrap_or_else(|| vec![s.value.clone()]),
        false => vec![s.value.clone()],
    };
    if items.is_empty() {
        return "''''''".into();
    }
    let literals: Vec<String> = items.iter().map(|v| format!("pg_catalog.quote_literal({})", text(v))).collect();
    format!("pg_catalog.concat_ws(', ', {})", literals.join(", "))
}

/// What the live server says about the roles and parameters a database's properties name.
#[derive(Debug, Default)]
pub struct Known {
    /// Roles that exist.
    pub roles: Vec<String>,
    /// Parameter name (lower case) -> its context (`user`, `superuser`, …) on this server.
    pub contexts: std::collections::BTreeMap<String, String>,
}

/// Whether setting `s` is given back, or why not.
fn refused(s: &DbSetting, known: &Known) -> Option<String> {
    if let Some(r) = s.role.as_ref().filter(|r| !known.roles.contains(r)) {
        return Some(format!("the role {r:?} does not exist"));
    }
    match known.contexts.get(&s.name.to_ascii_lowercase()).map(String::as_str) {
        Some("user") => None,
        Some(context) => Some(format!("only a superuser may set it (context {context}), and an archive does not")),
        None if s.name.contains('.') => None,
        None => Some("this server does not know the parameter".into()),
    }
}

/// `SELECT format(…) \gexec`: the statement `sql` formats, run.
fn exec(sql: String) -> String {
    format!("SELECT pg_catalog.format({sql}) \\gexec\n")
}

/// The script (run in `template1` as the stack's user) that gives database `db` the properties
/// `p`, and what it leaves out, said. `db` has the privileges of a new database when it runs.
pub fn script(db: &str, p: &DbProperties, known: &Known) -> (String, Vec<String>) {
    let (d, mut script, mut left_out) = (text(db), String::from("SET search_path = pg_catalog;\n"), Vec::new());
    match p.owner.as_ref() {
        Some(o) if known.roles.contains(o) => {
            script.push_str(&exec(format!("'ALTER DATABASE %I OWNER TO %I', {d}, {}", text(o))))
        }
        Some(o) => left_out.push(format!("owner {o:?}: the role does not exist; the database keeps its owner")),
        None => {}
    }
    if let Some(n) = p.connection_limit {
        script.push_str(&exec(format!("'ALTER DATABASE %I WITH CONNECTION LIMIT {n}', {d}")));
    }
    if p.owner.is_some() {
        // Recorded by this version: no comment recorded is none.
        let comment = p.comment.as_deref().map_or("NULL".to_string(), text);
        script.push_str(&exec(format!("'COMMENT ON DATABASE %I IS %L', {d}, {comment}")));
    }
    if let Some(grants) = &p.grants {
        script.push_str(&grants_sql(&d, grants, known, &mut left_out));
    }
    for s in &p.settings {
        if let Some(why) = refused(s, known) {
            let whose = s.role.as_ref().map_or(String::new(), |r| format!(" of role {r:?}"));
            left_out.push(format!("setting {}{whose} = {:?}: {why}", s.name, s.value));
            continue;
        }
        let (name, value) = (text(&s.name), value_sql(s));
        script.push_str(&exec(match &s.role {
            None => format!("'ALTER DATABASE %I SET %I TO %s', {d}, {name}, {value}"),
            Some(r) => format!("'ALTER ROLE %I IN DATABASE %I SET %I TO %s', {}, {d}, {name}, {value}", text(r)),
        }));
    }
    (script, left_out)
}

/// The privileges on database `d` (an SQL expression) exactly as `grants`: everything PUBLIC and
/// the owner hold revoked, then each grant given (to a role that exists).
fn grants_sql(d: &str, grants: &[DbGrant], known: &Known, left_out: &mut Vec<String>) -> String {
    let mut sql = exec(format!("'REVOKE ALL ON DATABASE %I FROM PUBLIC', {d}"));
    sql.push_str(&format!(
        "SELECT pg_catalog.format('REVOKE ALL ON DATABASE %I FROM %I', datname, pg_catalog.pg_get_userbyid(datdba)) \
         FROM pg_catalog.pg_database WHERE datname = {d} \\gexec\n"
    ));
    for g in grants {
        let privilege = match g.privilege.as_str() {
            p @ ("CONNECT" | "CREATE" | "TEMPORARY") => p,
            other => {
                left_out.push(format!("privilege {other:?}: not a privilege on a database"));
                continue;
            }
        };
        let (to, option) = match &g.to {
            // Grant options go to roles only.
            None => ("'PUBLIC'".to_string(), ""),
            Some(r) if known.roles.contains(r) => {
                (format!("pg_catalog.quote_ident({})", text(r)), if g.grantable { " WITH GRANT OPTION" } else { "" })
            }
            Some(r) => {
                left_out.push(format!("{privilege} to {r:?}: the role does not exist"));
                continue;
            }
        };
        sql.push_str(&exec(format!("'GRANT {privilege} ON DATABASE %I TO %s{option}', {d}, {to}")));
    }
    sql
}

/// The roles and parameters the properties name, as this server knows them.
fn known(psql: &Psql, p: &DbProperties) -> Result<Known> {
    let roles: Vec<&String> = p.owner.iter().chain(p.grants.iter().flatten().filter_map(|g| g.to.as_ref())).collect();
    let roles: Vec<&String> = roles.into_iter().chain(p.settings.iter().filter_map(|s| s.role.as_ref())).collect();
    let array = |items: Vec<String>| format!("ARRAY[{}]::text[]", items.join(", "));
    let sql = format!(
        "SELECT 'role|' || i FROM pg_catalog.unnest({}) WITH ORDINALITY t(r, i) \
         WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = t.r) \
         UNION ALL SELECT 'context|' || s.name || '|' || s.context FROM pg_catalog.pg_settings s \
         WHERE s.name = ANY ({})",
        array(roles.iter().map(|r| text(r)).collect()),
        array(p.settings.iter().map(|s| pg_catalog_lower(&s.name)).collect()),
    );
    let mut known = Known::default();
    for row in psql.rows("template1", &sql)? {
        match row.split('|').collect::<Vec<_>>()[..] {
            ["role", i] => {
                let role = i.parse::<usize>().ok().and_then(|i| i.checked_sub(1)).and_then(|i| roles.get(i));
                known.roles.extend(role.map(|r| r.to_string()));
            }
            ["context", name, context] => {
                known.contexts.insert(name.to_string(), context.to_string());
            }
            _ => {}
        }
    }
    Ok(known)
}

fn pg_catalog_lower(name: &str) -> String {
    format!("pg_catalog.lower({})", text(name))
}

/// What staging decides for a database's recorded properties, run in the swap.
pub struct Prepared {
    /// The script (in `template1`) that gives them to the database under its live name.
    pub script: String,
    /// The recorded owner, when that role exists.
    pub owner: Option<String>,
}

/// Decides, with what the live server knows now, how database `db` gets the properties `p`;
/// names what it leaves out.
pub fn prepare(psql: &Psql, db: &str, p: &DbProperties) -> Result<Prepared> {
    let known = known(psql, p)?;
    let (script, left_out) = script(db, p, &known);
    for what in &left_out {
        eprintln!("warning: database {db} of {}: not restored: {what}", psql.db.login.service);
    }
    Ok(Prepared { script, owner: p.owner.clone().filter(|o| known.roles.contains(o)) })
}

/// Gives the database `db` (live now, with the privileges of a new database) the properties
/// the archive recorded; names what it leaves out.
pub fn apply(psql: &Psql, db: &str, p: &DbProperties) -> Result<()> {
    let prepared = prepare(psql, db, p)?;
    psql.run("template1", &prepared.script, &[])
        .with_context(|| format!("give database {db} its owner, privileges and settings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_databases_properties_are_read_from_hex_rows() {
        let rows = format!(
            "owner|{}\nlimit|7\ncomment|{}\nacl|\ngrant||TEMPORARY|false\ngrant|{}|CONNECT|true\n\
             setting||{}\nsetting|{}|{}\n",
            hex("app role"),
            hex("it's | odd\nline"),
            hex("reader"),
            hex("work_mem=8MB"),
            hex("approle"),
            hex("search_path=\"$user\", x=y"),
        );
        let p = parse(&rows).unwrap();
        assert_eq!(p.owner.as_deref(), Some("app role"));
        assert_eq!((p.connection_limit, p.comment.as_deref()), (Some(7), Some("it's | odd\nline")));
        let grants = p.grants.unwrap();
        assert_eq!(grants[0], DbGrant { to: None, privilege: "TEMPORARY".into(), grantable: false });
        assert_eq!(grants[1], DbGrant { to: Some("reader".into()), privilege: "CONNECT".into(), grantable: true });
        assert_eq!(p.settings[0], DbSetting { role: None, name: "work_mem".into(), value: "8MB".into() });
        assert_eq!(p.settings[1].value, "\"$user\", x=y");
        assert_eq!(parse("acl|\n").unwrap().grants, Some(vec![]), "all revoked is not the default");
        assert_eq!(parse("limit|-1\n").unwrap().grants, None, "no acl row: the default");
        assert!(parse("owner|zz\n").is_err() && parse("evil\n").is_err());
    }

    #[test]
    fn list_parameters_are_split_as_postgres_does() {
        assert_eq!(split_list("\"$user\", public").unwrap(), ["$user", "public"]);
        assert_eq!(split_list("x").unwrap(), ["x"]);
        assert_eq!(split_list("\"a \"\"q\"\", b\",C").unwrap(), ["a \"q\", b", "C"]);
        assert_eq!(split_list("").unwrap(), Vec::<String>::new());
        assert!(split_list("a b").is_none() && split_list("\"open").is_none() && split_list("a,,b").is_none());
    }

    #[test]
    fn the_script_holds_archive_text_only_as_hex() {
        let evil = "x'); DROP DATABASE app; --\\";
        let p = DbProperties {
            owner: Some(evil.into()),
            connection_limit: Some(7),
            comment: Some(evil.into()),
            grants: Some(vec![
                DbGrant { to: None, privilege: "CONNECT".into(), grantable: false },
                DbGrant { to: Some(evil.into()), privilege: "CREATE".into(), grantable: true },
                DbGrant { to: Some("gone".into()), privilege: "CONNECT".into(), grantable: false },
            ]),
            settings: vec![
                DbSetting { role: None, name: "work_mem".into(), value: evil.into() },
                DbSetting { role: Some(evil.into()), name: "search_path".into(), value: "\"$user\", x".into() },
                DbSetting { role: None, name: "session_preload_libraries".into(), value: "evil".into() },
                DbSetting { role: None, name: "app.tenant".into(), value: "t1".into() },
                DbSetting { role: None, name: "no_such".into(), value: "1".into() },
            ],
            ..Default::default()
        };
        let contexts = [("work_mem", "user"), ("search_path", "user"), ("session_preload_libraries", "superuser")];
        let known = Known {
            roles: vec![evil.into()],
            contexts: contexts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let (sql, left_out) = script("d2", &p, &known);
        assert!(!sql.contains("DROP") && !sql.contains("--") && !sql.contains("$user"), "{sql}");
        assert!(sql.contains("'ALTER DATABASE %I OWNER TO %I'") && sql.contains("CONNECTION LIMIT 7"), "{sql}");
        assert!(sql.contains("'GRANT CREATE ON DATABASE %I TO %s WITH GRANT OPTION'"), "{sql}");
        assert!(sql.contains("'GRANT CONNECT ON DATABASE %I TO %s', ") && sql.contains("'PUBLIC'"), "{sql}");
        assert_eq!(sql.matches("SET %I TO %s").count(), 3, "work_mem, the role's search_path, app.tenant: {sql}");
        assert_eq!(sql.matches("quote_literal").count(), 4, "search_path's two elements apart: {sql}");
        assert_eq!(left_out.len(), 3, "{left_out:?}");
        assert!(left_out.iter().any(|l| l.contains("\"gone\"")));
        assert!(left_out.iter().any(|l| l.contains("session_preload_libraries") && l.contains("superuser")));
        assert!(left_out.iter().any(|l| l.contains("no_such")));
    }
}
