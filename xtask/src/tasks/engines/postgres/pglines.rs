//! The lines of a PostgreSQL dump the restricted load ([`super::pgload`]) treats apart, read
//! strictly: ownership (`ALTER … OWNER TO`, `ALTER DEFAULT PRIVILEGES FOR ROLE`) and privilege
//! (`GRANT`/`REVOKE … ON`) lines, held back from the load and replayed by the stack's user only
//! when each is exactly one statement of its form (no string, comment, dollar quote, psql
//! variable, second action or expression; an object of one database); every other line is
//! loaded by the role as it is. Pure: no database here.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};

use crate::archive::extract::Spooled;

/// What [`filter_dump`] held back from the load, or noted on its way.
#[derive(Debug, Default, PartialEq)]
pub struct HeldBack {
    /// Ownership and default-privilege lines [`handover_line`] accepts, in dump order.
    pub owners: Vec<Held>,
    /// `GRANT`/`REVOKE` lines [`acl_line`] accepts, in dump order.
    pub acls: Vec<Held>,
    /// The extensions the dump creates (names of at most 63 of `[A-Za-z0-9_-]`).
    pub extensions: Vec<String>,
}

/// A held-back line, and the SQL (a boolean; `:'l'` is the loading role) that says whether the
/// object it names is the role's, i.e. was made by the dump: only then is it replayed (an object
/// of `pg_catalog` or of an extension is not the dump's to give away). None: default privileges,
/// which name no object.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub line: String,
    pub made_by_dump: Option<String>,
}

/// What the filter does with one line that is whole statements.
#[derive(Debug, PartialEq)]
enum LineUse {
    Load,
    Owner(Held),
    Acl(Held),
    Drop,
    Extension(String),
}

/// A line that is not exactly one statement of a held-back form is loaded as it is, by the
/// role: if it needs more than the role may do, the load fails and says so; nothing is skipped.
fn classify(line: &str) -> LineUse {
    if let Some(held) = handover_line(line) {
        return LineUse::Owner(held);
    }
    if let Some(held) = acl_line(line) {
        return LineUse::Acl(held);
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
    /// A `"quoted"` identifier, as written (quotes included).
    Quoted(String),
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
            out.push(Tok::Quoted(line[i..=j].to_string()));
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
    matches!(t, Tok::Quoted(_) | Tok::Word(_))
}

/// Whether `line` (without its newline) is exactly one statement of these forms, which run no
/// code and reach nothing beyond the database they are run in:
/// `ALTER <kind> <name>[(<argument types>)] [USING <method>] OWNER TO <role>;` (a name is one or
/// two identifiers; an operator's may end in symbols; a large object's is its number), or
/// `ALTER DEFAULT PRIVILEGES FOR ROLE …;` of words, identifiers and commas only.
pub fn handover_line(line: &str) -> Option<Held> {
    let toks = tokens(line)?;
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => w.as_str(),
        _ => "",
    };
    if word(0) != "ALTER" {
        return None;
    }
    if (word(1), word(2), word(3), word(4)) == ("DEFAULT", "PRIVILEGES", "FOR", "ROLE") {
        let plain = toks[5..].iter().all(|t| is_name(t) || *t == Tok::Sym(b','));
        return plain.then(|| Held { line: line.to_string(), made_by_dump: None });
    }
    let kind = OWNED_KINDS.iter().find(|k| k.iter().enumerate().all(|(i, w)| word(i + 1) == *w))?;
    let n = toks.len();
    if n < kind.len() + 5 || (word(n - 3), word(n - 2)) != ("OWNER", "TO") || !is_name(&toks[n - 1]) {
        return None;
    }
    let object = &toks[1 + kind.len()..n - 3];
    designator(object, kind).then_some(())?;
    Some(Held { line: line.to_string(), made_by_dump: Some(owner_check(kind, object)?) })
}

/// The SQL that says whether the object of `kind` written as `object` belongs to the role
/// `:'l'`, for the kinds whose owner can be looked up by a `reg*` cast; None for the others
/// (their lines are loaded by the role as they are).
fn owner_check(kind: &[&str], object: &[Tok]) -> Option<String> {
    let (catalog, owner, lookup) = match kind {
        ["TABLE"] | ["SEQUENCE"] | ["VIEW"] | ["MATERIALIZED", "VIEW"] | ["FOREIGN", "TABLE"] => {
            ("pg_class", "relowner", "to_regclass")
        }
        ["FUNCTION"] | ["PROCEDURE"] | ["ROUTINE"] | ["AGGREGATE"] => ("pg_proc", "proowner", "to_regprocedure"),
        ["TYPE"] | ["DOMAIN"] => ("pg_type", "typowner", "to_regtype"),
        ["SCHEMA"] => ("pg_namespace", "nspowner", "to_regnamespace"),
        ["COLLATION"] => ("pg_collation", "collowner", "to_regcollation"),
        ["OPERATOR"] => ("pg_operator", "oprowner", "to_regoperator"),
        ["LARGE", "OBJECT"] => ("pg_largeobject_metadata", "lomowner", "pg_catalog.oid"),
        _ => return None,
    };
    let text = text_of(&signature_only(object)).replace('\'', "''");
    // A new database's own `public` schema belongs to `pg_database_owner` (PostgreSQL 15 on): in
    // a staged copy that is the role, so its privileges are the dump's to set.
    let owners = match kind {
        ["SCHEMA"] => "(SELECT oid FROM pg_catalog.pg_roles WHERE rolname IN (:'l', 'pg_database_owner'))",
        _ => "(SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'l')",
    };
    let lookup = if lookup.starts_with("to_") {
        format!("pg_catalog.{lookup}('{text}')")
    } else {
        format!("'{text}'::{lookup}")
    };
    Some(format!("(SELECT {owner} FROM pg_catalog.{catalog} WHERE oid = {lookup}) IN {owners}"))
}

/// A routine's designator as a signature: argument names and modes dropped (pg_dump writes
/// `"f"("a" integer, VARIADIC "b" "text"[])`), `OUT` arguments left out, `agg(*)` as `agg()`.
fn signature_only(object: &[Tok]) -> Vec<Tok> {
    let Some(open) = object.iter().position(|t| *t == Tok::Sym(b'(')) else { return object.to_vec() };
    let close = object.iter().rposition(|t| *t == Tok::Sym(b')')).unwrap_or(object.len());
    let mut out = object[..=open].to_vec();
    let mut first = true;
    // An ordered-set aggregate is written `agg(a ORDER BY b)`; its signature is `agg(a, b)`.
    let mut args: Vec<Tok> = Vec::new();
    for t in &object[open + 1..close] {
        match (args.last().map(word), word(t)) {
            (Some("ORDER"), "BY") => *args.last_mut().expect("just seen") = Tok::Sym(b','),
            _ => args.push(t.clone()),
        }
    }
    for arg in args.split(|t| *t == Tok::Sym(b',')) {
        let mode = arg.first().map(word).unwrap_or_default();
        let arg = if matches!(mode, "IN" | "OUT" | "INOUT" | "VARIADIC") { &arg[1..] } else { arg };
        if mode == "OUT" || arg == [Tok::Sym(b'*')] {
            continue;
        }
        // With --quote-all-identifiers a name is quoted and is followed by its type; a quoted
        // type is alone or followed by `.` or `[`.
        let named = matches!(arg.first(), Some(Tok::Quoted(_)))
            && arg.get(1).is_some_and(|t| !matches!(t, Tok::Sym(b'.' | b'[')));
        if !first {
            out.push(Tok::Sym(b','));
        }
        out.extend_from_slice(if named { &arg[1..] } else { arg });
        first = false;
    }
    out.push(Tok::Sym(b')'));
    out
}

/// Tokens written back as SQL text: words apart, punctuation joined.
fn text_of(toks: &[Tok]) -> String {
    let mut out = String::new();
    let mut prev: Option<&Tok> = None;
    for t in toks {
        let glued = |t: &Tok| matches!(t, Tok::Sym(_));
        if prev.is_some_and(|p| !glued(p) && !glued(t)) {
            out.push(' ');
        }
        match t {
            Tok::Word(w) => out.push_str(w),
            Tok::Quoted(q) => out.push_str(q),
            Tok::Sym(b) => out.push(*b as char),
        }
        prev = Some(t);
    }
    out
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

/// Kinds a `GRANT`/`REVOKE` may name after `ON`: objects of one database (not `DATABASE`,
/// `TABLESPACE` or `PARAMETER`, which reach the cluster).
const ACL_KINDS: &[&[&str]] = &[
    &["LARGE", "OBJECT"],
    &["FOREIGN", "TABLE"],
    &["TABLE"],
    &["SEQUENCE"],
    &["FUNCTION"],
    &["PROCEDURE"],
    &["ROUTINE"],
    &["SCHEMA"],
    &["TYPE"],
    &["DOMAIN"],
];

fn word(t: &Tok) -> &str {
    match t {
        Tok::Word(w) => w,
        _ => "",
    }
}

/// Names separated by commas: `a`, `"b", PUBLIC`.
fn name_list(toks: &[Tok]) -> bool {
    !toks.is_empty() && toks.iter().enumerate().all(|(i, t)| if i % 2 == 0 { is_name(t) } else { *t == Tok::Sym(b',') })
}

/// Whether `line` is exactly one `GRANT <privileges> ON <kind> <object> TO <roles> [WITH GRANT
/// OPTION];` or `REVOKE [GRANT OPTION FOR] <privileges> ON <kind> <object> FROM <roles>
/// [CASCADE];` of one database's object (privileges: words, commas and column lists only; the
/// object as in [`handover_line`]). A role membership (`GRANT role TO role`) has no `ON`.
pub fn acl_line(line: &str) -> Option<Held> {
    let toks = tokens(line)?;
    let to = match toks.first().map(word) {
        Some("GRANT") => "TO",
        Some("REVOKE") => "FROM",
        _ => return None,
    };
    let mut depth = 0i32;
    let (mut on, mut target) = (None, None);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Sym(b'(') => depth += 1,
            Tok::Sym(b')') => depth -= 1,
            _ if depth == 0 && on.is_none() && word(t) == "ON" => on = Some(i),
            _ if depth == 0 && on.is_some() && target.is_none() && word(t) == to => target = Some(i),
            _ => {}
        }
    }
    let (on, target) = (on?, target?);
    let privileges = toks[1..on].iter().all(|t| is_name(t) || matches!(t, Tok::Sym(b',' | b'(' | b')')));
    let object = &toks[on + 1..target];
    let kind = ACL_KINDS.iter().find(|k| k.iter().enumerate().all(|(i, w)| object.get(i).map(word) == Some(*w)))?;
    let named = &object[kind.len()..];
    let mut grantees = &toks[target + 1..];
    let tails: [&[&str]; 3] = [&["WITH", "GRANT", "OPTION"], &["CASCADE"], &["RESTRICT"]];
    for tail in tails {
        let n = grantees.len();
        if n > tail.len() && grantees[n - tail.len()..].iter().map(word).eq(tail.iter().copied()) {
            grantees = &grantees[..n - tail.len()];
            break;
        }
    }
    let plain = privileges && depth == 0 && designator(named, kind) && name_list(grantees);
    plain.then_some(())?;
    Some(Held { line: line.to_string(), made_by_dump: Some(owner_check(kind, named)?) })
}

/// Copies dump `src` into a new private file beside it for the restricted load: whole-statement lines
/// that hand over ownership, default privileges or privileges ([`handover_line`], [`acl_line`])
/// are held back, `COMMENT ON EXTENSION` lines dropped, created extensions noted; everything else (COPY data, multi-line statements)
/// passes byte for byte. Lines are found by psql's lexer ([`dumpscan::SqlScan`]).
pub fn filter_dump(src: &Spooled) -> Result<(Spooled, HeldBack)> {
    let mut input = src.reader();
    let spooled = src.sibling()?;
    let held = {
        let mut filter = Filter::new(std::io::BufWriter::new(spooled.writer()));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = input.read(&mut buf).context("read the spooled dump")?;
            if n == 0 {
                break;
            }
            filter.feed(&buf[..n])?;
        }
        filter.finish()?;
        filter.out.into_inner().map_err(|e| e.into_error()).context("write the dump to load")?;
        filter.held
    };
    spooled.sync().context("write the dump to load")?;
    Ok((spooled, held))
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
            LineUse::Owner(held) => self.held.owners.push(held),
            LineUse::Acl(held) => self.held.acls.push(held),
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
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT,INSERT ON TABLES TO \"reader\";",
        ] {
            assert!(handover_line(line).is_some(), "{line}");
            assert!(matches!(classify(line), LineUse::Owner(_)), "{line}");
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
            assert!(handover_line(line).is_none(), "{line}");
            assert_eq!(classify(line), LineUse::Load, "loaded by the role as it is: {line}");
        }
    }

    #[test]
    fn kinds_whose_owner_cannot_be_looked_up_are_loaded_by_the_role() {
        for line in [
            "ALTER OPERATOR FAMILY \"public\".\"f\" USING \"btree\" OWNER TO \"app\";",
            "ALTER SERVER \"loop\" OWNER TO \"app\";",
            "GRANT USAGE ON FOREIGN SERVER \"loop\" TO \"app\";",
            "GRANT USAGE ON LANGUAGE \"plpgsql\" TO \"app\";",
            "GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"reader\";",
            "ALTER TEXT SEARCH CONFIGURATION \"public\".\"c\" OWNER TO \"app\";",
        ] {
            assert_eq!(classify(line), LineUse::Load, "{line}");
        }
    }

    #[test]
    fn a_replay_is_checked_against_the_owner_of_the_object_it_names() {
        let f = "ALTER FUNCTION \"public\".\"f\"(integer, \"public\".\"t\"[], character varying) OWNER TO \"app\";";
        let check = handover_line(f).unwrap().made_by_dump.unwrap();
        assert!(check.contains("proowner FROM pg_catalog.pg_proc WHERE oid = pg_catalog.to_regprocedure('\"public\".\"f\"(INTEGER,\"public\".\"t\"[],CHARACTER VARYING)')"), "{check}");
        let named = "ALTER FUNCTION \"s\".\"f\"(\"a\" integer, OUT \"o\" \"text\", VARIADIC \"b\" \"text\"[]) OWNER TO \"app\";";
        let check = handover_line(named).unwrap().made_by_dump.unwrap();
        assert!(check.contains("to_regprocedure('\"s\".\"f\"(INTEGER,\"text\"[])')"), "{check}");
        let t = acl_line("GRANT ALL ON TABLE \"public\".\"it's\" TO \"app\";").unwrap().made_by_dump.unwrap();
        assert!(t.contains("to_regclass('\"public\".\"it''s\"')") && t.contains("rolname = :'l'"), "{t}");
        let agg = handover_line("ALTER AGGREGATE \"public\".\"a\"(*) OWNER TO \"app\";").unwrap().made_by_dump.unwrap();
        assert!(agg.contains("to_regprocedure('\"public\".\"a\"()')"), "{agg}");
        let ordered = handover_line("ALTER AGGREGATE \"public\".\"osa\"(integer ORDER BY integer) OWNER TO \"app\";");
        assert!(ordered.unwrap().made_by_dump.unwrap().contains("\"osa\"(INTEGER,INTEGER)"));
        let public = acl_line("REVOKE USAGE ON SCHEMA \"public\" FROM PUBLIC;").unwrap().made_by_dump.unwrap();
        assert!(public.contains("pg_database_owner"), "{public}");
        let catalog = acl_line("GRANT ALL ON FUNCTION \"pg_catalog\".\"lo_export\"(oid, text) TO PUBLIC;").unwrap();
        assert!(catalog.made_by_dump.is_some(), "held, and replayed only if the dump made it: never");
        let defaults =
            handover_line("ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" GRANT SELECT ON TABLES TO \"r\";").unwrap();
        assert_eq!(defaults.made_by_dump, None);
    }

    #[test]
    fn privilege_lines_of_one_database_are_replayed() {
        for line in [
            "GRANT ALL ON TABLE \"public\".\"items\" TO \"app\";",
            "GRANT SELECT,INSERT ON TABLE \"public\".\"items\" TO \"reader\" WITH GRANT OPTION;",
            "GRANT SELECT(\"a\",\"b\") ON TABLE \"public\".\"t\" TO \"reader\";",
            "REVOKE ALL ON TABLE \"public\".\"theirs\" FROM \"reader\";",
            "REVOKE USAGE ON SCHEMA \"public\" FROM PUBLIC;",
            "GRANT ALL ON FUNCTION \"public\".\"f\"(integer, text) TO \"app\";",
            "GRANT SELECT ON LARGE OBJECT 16385 TO \"reader\";",
            "REVOKE GRANT OPTION FOR SELECT ON TABLE \"t\" FROM \"r\" CASCADE;",
        ] {
            assert!(acl_line(line).is_some(), "{line}");
            assert!(matches!(classify(line), LineUse::Acl(_)), "{line}");
        }
        for line in [
            "GRANT \"app\" TO \"evil\";",
            "GRANT pg_write_server_files TO \"evil\";",
            "GRANT ALL ON DATABASE \"app\" TO \"evil\";",
            "GRANT CREATE ON TABLESPACE \"x\" TO \"evil\";",
            "GRANT SET ON PARAMETER \"work_mem\" TO \"evil\";",
            "GRANT ALL ON TABLE \"t\" TO \"a\"; GRANT \"app\" TO \"evil\";",
            "GRANT ALL ON TABLE \"t\" TO \"a\" -- x;",
            "GRANT SELECT(\"a\" ON TABLE \"t\" TO \"r\";",
            "GRANT ALL ON TABLE \"t\" TO :\"r\";",
            "GRANT ALL ON FUNCTION \"f\"(integer DEFAULT \"evil\"()) TO \"a\";",
            "GRANT ALL ON TABLE \"t\" TO \"a\" GRANTED BY \"postgres\";",
        ] {
            assert!(acl_line(line).is_none(), "{line}");
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
            ALTER TABLE \"public\".\"t\" ADD CHECK (\"public\".\"f\"() <> ''), OWNER TO \"app\";\n\
            GRANT SELECT ON TABLE \"public\".\"t\" TO \"reader\";\n";
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
                .filter(|(i, _)| ![2, 4, 15].contains(i))
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            assert_eq!(loaded, kept, "chunks of {split}");
            let lines = |l: &[Held]| l.iter().map(|h| h.line.clone()).collect::<Vec<_>>();
            assert_eq!(lines(&f.held.owners), ["ALTER TABLE \"public\".\"t\" OWNER TO \"app\";"]);
            assert_eq!(lines(&f.held.acls), ["GRANT SELECT ON TABLE \"public\".\"t\" TO \"reader\";"]);
            assert_eq!(f.held.extensions, ["pgcrypto"]);
        }
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'standard public schema';"), LineUse::Drop);
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'ours';"), LineUse::Load);
    }
}
