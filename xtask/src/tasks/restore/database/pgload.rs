//! The role a staged PostgreSQL load runs as. A dump from an archive is SQL its author chose,
//! and no scanner can tell every statement that runs code (a function called by `CREATE TABLE
//! … AS`, an index expression, a column default): so a staged load never runs as the stack's
//! user, often a superuser. It runs as a throwaway role `xtask_load_PID`, made for it: LOGIN and
//! nothing else (no superuser, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS; member of no
//! role but the implicit `pg_database_owner` of its own copy), a random password that reaches psql only through its environment. It owns the staged
//! database and nothing else, so whatever the dump does, it does as the owner of that copy.
//!
//! What such a role may not do, the tool does as the stack's user, from lines read strictly:
//! - `ALTER … OWNER TO role;` and `ALTER DEFAULT PRIVILEGES FOR ROLE …;` lines are held back
//!   from the load and replayed after it when [`handover_line`] matches them (one statement of
//!   that one form: no string, comment, dollar quote, second action or expression); a line
//!   that does not match is not replayed, its object stays with the database's owner, and the
//!   restore says so.
//! - an extension the dump creates that the live database already has (in `public`) is
//!   created in the staged copy first; an archive cannot bring in an extension only a superuser
//!   may create (the error says how to add it to the live database). `COMMENT ON EXTENSION`
//!   lines are dropped (an extension sets its own), as is initdb's own comment on `public`.
//!
//! After the row counts are checked as that role, everything it still owns is reassigned to the
//! live database's owner (the stack's user when there is none) and the role is dropped.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::postgres::Psql;
use super::DbRestore;
use crate::archive::extract::Spooled;
use crate::archive::DbDump;
use crate::context::Ctx;
use crate::engine::db::Secret;

/// What [`filter_dump`] held back from the load, or noted on its way.
#[derive(Debug, Default, PartialEq)]
pub struct HeldBack {
    /// Ownership and default-privilege lines [`handover_line`] accepts, in dump order.
    pub handover: Vec<String>,
    /// Such lines it does not accept (not replayed; reported).
    pub unmatched: Vec<String>,
    /// The extensions the dump creates (names of at most 63 of `[A-Za-z0-9_-]`).
    pub extensions: Vec<String>,
}

/// What the filter does with one line that is whole statements.
#[derive(Debug, PartialEq)]
enum LineUse {
    Load,
    HandOver,
    Drop,
    Extension(String),
}

fn classify(line: &str) -> LineUse {
    if line.starts_with("ALTER DEFAULT PRIVILEGES ") || line.starts_with("ALTER ") && line.contains(" OWNER TO ") {
        return LineUse::HandOver;
    }
    // The comment initdb gives `public`, which only its owner may set (before PostgreSQL 15: the
    // bootstrap superuser).
    let public_comment =
        ["\"public\"", "public"].map(|p| format!("COMMENT ON SCHEMA {p} IS 'standard public schema';"));
    if line.starts_with("COMMENT ON EXTENSION ") || public_comment.iter().any(|c| c == line) {
        return LineUse::Drop;
    }
    let ext = line.strip_prefix("CREATE EXTENSION ").map(|r| r.strip_prefix("IF NOT EXISTS ").unwrap_or(r));
    match ext.and_then(|r| r.split([' ', ';']).next()).map(|n| n.trim_matches('"')) {
        Some(name) if is_extension_name(name) => LineUse::Extension(name.to_string()),
        _ => LineUse::Load,
    }
}

fn is_extension_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A token of a line [`handover_line`] reads.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word, upper-cased (keywords, unquoted names, numbers).
    Word(String),
    /// A `"quoted"` identifier.
    Quoted,
    Sym(u8),
}

/// The tokens of one line, or None when it holds anything but words, quoted identifiers and
/// plain punctuation: a string, a dollar quote, a comment, a backslash, a psql variable, a
/// control character, or a `;` before its end.
fn tokens(line: &str) -> Option<Vec<Tok>> {
    let body = line.strip_suffix(';')?.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'"' {
            let mut j = i + 1;
            loop {
                match (body.get(j), body.get(j + 1)) {
                    (Some(b'"'), Some(b'"')) => j += 2,
                    (Some(b'"'), _) => break,
                    (Some(c), _) if *c >= 0x20 => j += 1,
                    _ => return None,
                }
            }
            out.push(Tok::Quoted);
            i = j + 1;
        } else if b.is_ascii_alphanumeric() || b == b'_' {
            let end =
                body[i..].iter().position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).map_or(body.len(), |n| i + n);
            out.push(Tok::Word(line[i..end].to_ascii_uppercase()));
            i = end;
        } else if b == b' ' {
            i += 1;
        } else if b"(),.[]*+<>=~!@#%^&|?`/-".contains(&b) {
            if matches!((b, body.get(i + 1)), (b'-', Some(b'-')) | (b'/', Some(b'*'))) {
                return None;
            }
            out.push(Tok::Sym(b));
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// What may follow `ALTER` in an ownership line: the object kinds of one database.
const OWNED_KINDS: &[&[&str]] = &[
    &["MATERIALIZED", "VIEW"],
    &["FOREIGN", "TABLE"],
    &["TEXT", "SEARCH", "CONFIGURATION"],
    &["TEXT", "SEARCH", "DICTIONARY"],
    &["LARGE", "OBJECT"],
    &["OPERATOR", "CLASS"],
    &["OPERATOR", "FAMILY"],
    &["TABLE"],
    &["SEQUENCE"],
    &["VIEW"],
    &["FUNCTION"],
    &["PROCEDURE"],
    &["ROUTINE"],
    &["AGGREGATE"],
    &["TYPE"],
    &["DOMAIN"],
    &["SCHEMA"],
    &["COLLATION"],
    &["CONVERSION"],
    &["STATISTICS"],
    &["PUBLICATION"],
    &["SERVER"],
    &["OPERATOR"],
];

fn is_name(t: &Tok) -> bool {
    matches!(t, Tok::Quoted | Tok::Word(_))
}

/// Whether `line` (without its newline) is exactly one statement of these forms, which run no
/// code and reach nothing beyond the database they are run in:
/// `ALTER <kind> <name>[(<argument types>)] [USING <method>] OWNER TO <role>;` (a name is one or
/// two identifiers; an operator's may end in symbols; a large object's is its number), or
/// `ALTER DEFAULT PRIVILEGES FOR ROLE …;` of words, identifiers and commas only.
pub fn handover_line(line: &str) -> bool {
    let Some(toks) = tokens(line) else { return false };
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => w.as_str(),
        _ => "",
    };
    if word(0) != "ALTER" {
        return false;
    }
    if (word(1), word(2), word(3), word(4)) == ("DEFAULT", "PRIVILEGES", "FOR", "ROLE") {
        return toks[5..].iter().all(|t| is_name(t) || *t == Tok::Sym(b','));
    }
    let Some(kind) = OWNED_KINDS.iter().find(|k| k.iter().enumerate().all(|(i, w)| word(i + 1) == *w)) else {
        return false;
    };
    let n = toks.len();
    if n < kind.len() + 5 || (word(n - 3), word(n - 2)) != ("OWNER", "TO") || !is_name(&toks[n - 1]) {
        return false;
    }
    designator(&toks[1 + kind.len()..n - 3], kind)
}

/// The object part of an ownership line: a one- or two-part name (an operator's may be symbols,
/// a large object's a number), then for routines and operators one argument list without
/// nested parentheses, then for operator classes and families `USING <method>`.
fn designator(toks: &[Tok], kind: &[&str]) -> bool {
    let operator = kind == ["OPERATOR"];
    let mut i = 0;
    let using = |t: &Tok| matches!(t, Tok::Word(w) if w == "USING");
    let part =
        |t: &Tok| is_name(t) && !using(t) || operator && matches!(t, Tok::Sym(s) if b"+-*/<>=~!@#%^&|?`".contains(s));
    while i < toks.len() && (part(&toks[i]) || toks[i] == Tok::Sym(b'.')) {
        i += 1;
    }
    let dots = toks[..i].iter().filter(|t| **t == Tok::Sym(b'.')).count();
    let alternating = toks[..i].iter().enumerate().all(|(k, t)| (*t == Tok::Sym(b'.')) == (k % 2 == 1));
    if i == 0 || dots > 1 || !(operator || alternating && i % 2 == 1) {
        return false;
    }
    let mut rest = &toks[i..];
    if rest.first() == Some(&Tok::Sym(b'(')) {
        let Some(close) = rest.iter().position(|t| *t == Tok::Sym(b')')) else { return false };
        let args_ok =
            rest[1..close].iter().all(|t| is_name(t) || matches!(t, Tok::Sym(b',' | b'.' | b'[' | b']' | b'*')));
        if !args_ok || !matches!(kind, ["FUNCTION" | "PROCEDURE" | "ROUTINE" | "AGGREGATE" | "OPERATOR"]) {
            return false;
        }
        rest = &rest[close + 1..];
    }
    match rest {
        [] => true,
        [Tok::Word(u), m] => u == "USING" && is_name(m) && kind.first() == Some(&"OPERATOR") && kind.len() == 2,
        _ => false,
    }
}

/// Copies dump `src` into `dst` (a private file) for the restricted load: whole-statement lines
/// that hand over ownership or default privileges are held back, `COMMENT ON EXTENSION` lines
/// dropped, created extensions noted; everything else (COPY data, multi-line statements)
/// passes byte for byte. Lines are found by psql's lexer ([`dumpscan::SqlScan`]).
pub fn filter_dump(src: &Path, dst: &Path) -> Result<(Spooled, HeldBack)> {
    let mut input = std::fs::File::open(src).with_context(|| format!("open {}", src.display()))?;
    let out = crate::files::create_private(dst)?;
    let spooled = Spooled { path: dst.to_path_buf() };
    let mut filter = Filter::new(std::io::BufWriter::new(out));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).with_context(|| format!("read {}", src.display()))?;
        if n == 0 {
            break;
        }
        filter.feed(&buf[..n])?;
    }
    filter.finish()?;
    let file = filter.out.into_inner().map_err(|e| e.into_error()).context("write the dump to load")?;
    file.sync_all().context("write the dump to load")?;
    Ok((spooled, filter.held))
}

/// The state of [`filter_dump`] between chunks.
struct Filter<W: Write> {
    out: W,
    scan: dumpscan::SqlScan,
    /// The current line began at a statement's start: it is kept here until its end.
    line: Option<Vec<u8>>,
    mid_line: bool,
    held: HeldBack,
}

/// Longest line that is read whole (the dump scanner refuses longer ones outside COPY data).
const MAX_LINE: usize = 1 << 20;

impl<W: Write> Filter<W> {
    fn new(out: W) -> Filter<W> {
        Filter { out, scan: dumpscan::SqlScan::default(), line: None, mid_line: false, held: HeldBack::default() }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if !self.mid_line {
                self.mid_line = true;
                self.line = self.scan.at_statement_start().then(Vec::new);
            }
            let end = data.iter().position(|b| *b == b'\n').map_or(data.len(), |n| n + 1);
            let (piece, rest) = data.split_at(end);
            self.scan.feed(piece);
            match &mut self.line {
                Some(line) if line.len() + piece.len() > MAX_LINE => bail!("a line longer than 1 MiB in a dump"),
                Some(line) => line.extend_from_slice(piece),
                None => self.out.write_all(piece).context("write the dump to load")?,
            }
            if piece.ends_with(b"\n") {
                self.end_of_line()?;
            }
            data = rest;
        }
        Ok(())
    }

    fn end_of_line(&mut self) -> Result<()> {
        self.mid_line = false;
        let Some(line) = self.line.take() else { return Ok(()) };
        let text = std::str::from_utf8(&line).ok().map(|t| t.trim_end_matches('\n'));
        let whole = self.scan.at_statement_start();
        let use_ = match text {
            Some(text) if whole => classify(text),
            _ => LineUse::Load,
        };
        match use_ {
            LineUse::HandOver => {
                let text = text.unwrap_or_default().to_string();
                let list = if handover_line(&text) { &mut self.held.handover } else { &mut self.held.unmatched };
                list.push(text);
            }
            LineUse::Drop => {}
            LineUse::Extension(name) => {
                self.held.extensions.push(name);
                self.out.write_all(&line).context("write the dump to load")?;
            }
            LineUse::Load => self.out.write_all(&line).context("write the dump to load")?,
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(line) = self.line.take() {
            self.out.write_all(&line).context("write the dump to load")?;
        }
        match &self.scan.violation {
            Some(why) => bail!("the dump is not plain SQL ({why})"),
            None => Ok(()),
        }
    }
}

/// The throwaway role a staged load runs as (see the module header), while it exists.
pub struct Loader {
    pub role: String,
    /// The stack's database service, logged in to as this role with its password.
    as_role: DbRestore,
}

impl Loader {
    /// Makes the role, as the stack's user; a role of that name left by a dead run is replaced.
    pub fn create(ctx: &Ctx, db: &DbRestore) -> Result<Loader> {
        let role = format!("{LOADER_PREFIX}{}", std::process::id());
        let password = random_hex()?;
        // The password is hex made here: it stands in the SQL text, which reaches psql on stdin.
        let sql = format!(
            "DROP ROLE IF EXISTS :\"l\";\nCREATE ROLE :\"l\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE \
             NOREPLICATION NOBYPASSRLS PASSWORD '{password}';\n"
        );
        Psql { ctx, db }.run("template1", &sql, &[("l", &role)]).context("create the role staged loads run as")?;
        let mut as_role = db.clone();
        as_role.login.user = role.clone();
        as_role.login.user_file = None;
        as_role.login.password = Some(Secret::Value(password));
        Ok(Loader { role, as_role })
    }

    /// Loads `dump` for database `d` into `new` (a database this role owns) as the role, checks
    /// its row counts as the role, then hands the copy to its owners.
    pub fn load(&self, ctx: &Ctx, db: &DbRestore, d: &DbDump, new: &str, dump: &Spooled) -> Result<()> {
        let mut to_load = dump.path.clone().into_os_string();
        to_load.push(".load");
        let (filtered, held) = filter_dump(&dump.path, Path::new(&to_load))?;
        let su = Psql { ctx, db };
        add_extensions(&su, &d.name, new, &held.extensions)?;
        let as_role = Psql { ctx, db: &self.as_role };
        as_role.load(new, &filtered, &d.entry).map_err(|e| explain_denied(e, db, &d.name))?;
        as_role.check_counts(new, d)?;
        for line in &held.unmatched {
            eprintln!("warning: {}: not replayed (not a plain ownership line), its object stays with the database's owner: {line}", d.entry);
        }
        let owner = match su
            .rows(
                "template1",
                &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'", d.name),
            )?
            .pop()
        {
            Some(owner) => owner,
            None => db.login.user_name(ctx.docker()?, &ctx.stack)?.to_string(),
        };
        let mut sql = held.handover.join("\n");
        sql.push_str("\nREASSIGN OWNED BY :\"l\" TO :\"o\";\nDROP OWNED BY :\"l\";\n");
        su.run(new, &sql, &[("l", &self.role), ("o", &owner)])
            .with_context(|| format!("hand the restored copy of {} to its owners", d.name))
    }

    /// Drops the role; its staged databases are handed over or dropped by then.
    pub fn drop(self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        Psql { ctx, db }
            .run("template1", "DROP ROLE IF EXISTS :\"l\";\n", &[("l", &self.role)])
            .with_context(|| format!("drop the role {} staged loads ran as", self.role))
    }
}

/// The name of loading roles before the process id.
pub const LOADER_PREFIX: &str = "xtask_load_";

/// Drops loading roles whose process is gone (after their staged copies were dropped).
pub fn drop_stale(psql: &Psql) -> Result<()> {
    let sql = format!("SELECT rolname FROM pg_roles WHERE rolname ~ '^{LOADER_PREFIX}[0-9]+$'");
    for role in psql.rows("template1", &sql)? {
        let pid = role.trim_start_matches(LOADER_PREFIX);
        if !Path::new(&format!("/proc/{pid}")).exists() {
            psql.run("template1", "DROP ROLE IF EXISTS :\"l\";\n", &[("l", &role)])
                .with_context(|| format!("drop the role {role} an interrupted restore loaded as"))?;
        }
    }
    Ok(())
}

/// Creates in the staged copy `new`, as the stack's user, the extensions the dump creates that
/// the live database `live` has in `public`: the restricted role could not create an untrusted
/// one, and the live database vouches for it. Others are left to the dump.
fn add_extensions(su: &Psql, live: &str, new: &str, names: &[String]) -> Result<()> {
    if names.is_empty() || !su.exists(live)? {
        return Ok(());
    }
    for name in names.iter().filter(|n| *n != "plpgsql") {
        // Checked names ([A-Za-z0-9_-]): they can stand in a literal.
        let sql = format!(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = '{name}'"
        );
        if su.rows(live, &sql)?.first().map(String::as_str) == Some("public") {
            su.run(new, "CREATE EXTENSION IF NOT EXISTS :\"e\" WITH SCHEMA \"public\";\n", &[("e", name)])
                .with_context(|| format!("create extension {name} in the restored copy of {live}"))?;
        }
    }
    Ok(())
}

/// A load refused for want of privileges, explained: what the role may do and how to go on.
fn explain_denied(e: anyhow::Error, db: &DbRestore, live: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if !["permission denied", "must be owner", "must be superuser", "must be member"].iter().any(|p| text.contains(p)) {
        return e;
    }
    e.context(format!(
        "the dump asks for more than the owner of a database may do: a restore loads it as a role that owns \
         only its staged copy, so nothing it holds can reach the live server. If it needs an extension only \
         a superuser may create, create it in the live database first (docker compose exec {} psql -U {} -d {live} \
         -c 'CREATE EXTENSION name') and run the restore again",
        db.login.service, db.login.user
    ))
}

/// 32 hex digits from the kernel's random source.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dumps_ownership_lines_are_handed_over() {
        for line in [
            "ALTER TABLE \"public\".\"items\" OWNER TO \"app\";",
            "ALTER TABLE public.items OWNER TO app;",
            "ALTER SEQUENCE \"public\".\"items_id_seq\" OWNER TO \"app\";",
            "ALTER MATERIALIZED VIEW \"public\".\"mv\" OWNER TO \"app\";",
            "ALTER FUNCTION \"public\".\"f\"(integer, \"public\".\"t\"[], character varying) OWNER TO \"app\";",
            "ALTER AGGREGATE \"public\".\"agg\"(*) OWNER TO \"app\";",
            "ALTER SCHEMA \"s\" OWNER TO \"Odd \"\"role\"\"\";",
            "ALTER LARGE OBJECT 16385 OWNER TO \"app\";",
            "ALTER OPERATOR \"public\".=== (integer, integer) OWNER TO \"app\";",
            "ALTER OPERATOR FAMILY \"public\".\"f\" USING \"btree\" OWNER TO \"app\";",
            "ALTER TEXT SEARCH CONFIGURATION \"public\".\"c\" OWNER TO \"app\";",
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT,INSERT ON TABLES TO \"reader\";",
        ] {
            assert!(handover_line(line), "{line}");
            assert_eq!(classify(line), LineUse::HandOver, "{line}");
        }
    }

    #[test]
    fn anything_that_could_run_code_or_reach_further_is_not_replayed() {
        for line in [
            "ALTER TABLE \"public\".\"t\" ADD CONSTRAINT \"c\" CHECK (\"public\".\"evil\"() > 0), OWNER TO \"app\";",
            "ALTER TABLE \"t\" ALTER COLUMN \"x\" TYPE integer USING \"evil\"(), OWNER TO \"app\";",
            "ALTER TABLE \"t\" OWNER TO \"app\"; DROP DATABASE \"app\";",
            "ALTER TABLE \"t\" OWNER TO \"app\" -- x;",
            "ALTER TABLE \"t\" /* x */ OWNER TO \"app\";",
            "ALTER TABLE \"t\" OWNER TO :\"role\";",
            "ALTER TABLE \"t\" OWNER TO 'app';",
            "ALTER DATABASE \"app\" OWNER TO \"evil\";",
            "ALTER TABLESPACE \"x\" OWNER TO \"evil\";",
            "ALTER EVENT TRIGGER \"x\" OWNER TO \"evil\";",
            "ALTER FUNCTION \"f\"(integer DEFAULT \"evil\"()) OWNER TO \"app\";",
            "ALTER TABLE \"a\".\"b\".\"c\" OWNER TO \"app\";",
            "ALTER TABLE \"a\" \"b\" OWNER TO \"app\";",
            "ALTER TABLE \"t\"(x) OWNER TO \"app\";",
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" GRANT EXECUTE ON FUNCTIONS TO \"a\"; SELECT 1;",
            "ALTER ROLE \"app\" SUPERUSER OWNER TO \"x\";",
            "ALTER TABLE \"t\" OWNER TO \"app\"",
            "ALTER TABLE \"t\" OWNER TO $$app$$;",
        ] {
            assert!(!handover_line(line), "{line}");
        }
    }

    #[test]
    fn the_filter_holds_back_whole_lines_only() {
        let dump = "SET statement_timeout = 0;\nCREATE EXTENSION IF NOT EXISTS \"pgcrypto\" WITH SCHEMA \"public\";\n\
            COMMENT ON EXTENSION \"pgcrypto\" IS 'cryptographic functions';\n\
            CREATE TABLE \"public\".\"t\" (\"a\" text);\nALTER TABLE \"public\".\"t\" OWNER TO \"app\";\n\
            COPY \"public\".\"t\" (\"a\") FROM stdin;\nALTER TABLE \"public\".\"t\" OWNER TO \"app\";\n\\.\n\
            CREATE FUNCTION \"public\".\"f\"() RETURNS text LANGUAGE sql AS $$\nALTER TABLE \"public\".\"t\" OWNER TO \"x\";\n$$;\n\
            COMMENT ON TABLE \"public\".\"t\" IS 'a\nALTER TABLE \"public\".\"t\" OWNER TO \"y\";\n';\n\
            ALTER TABLE \"public\".\"t\" ADD CHECK (\"public\".\"f\"() <> ''), OWNER TO \"app\";\n";
        for split in [1, 7, 4096] {
            let mut f = Filter::new(Vec::new());
            for chunk in dump.as_bytes().chunks(split) {
                f.feed(chunk).unwrap();
            }
            f.finish().unwrap();
            let loaded = String::from_utf8(f.out).unwrap();
            let kept: String = dump
                .lines()
                .enumerate()
                .filter(|(i, _)| ![2, 4, 14].contains(i))
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            assert_eq!(loaded, kept, "chunks of {split}");
            assert_eq!(f.held.handover, ["ALTER TABLE \"public\".\"t\" OWNER TO \"app\";"]);
            assert_eq!(f.held.unmatched.len(), 1, "{:?}", f.held.unmatched);
            assert_eq!(f.held.extensions, ["pgcrypto"]);
        }
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'standard public schema';"), LineUse::Drop);
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'ours';"), LineUse::Load);
    }
}
