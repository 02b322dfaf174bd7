//! The lines of a PostgreSQL dump the restricted load ([`super::pgload`]) treats apart, read
//! strictly: ownership (`ALTER … OWNER TO`, `ALTER DEFAULT PRIVILEGES FOR ROLE`) and privilege
//! (`GRANT`/`REVOKE … ON`) lines, held back from the load and replayed by the stack's user only
//! when each is exactly one statement of its form (no string, comment, dollar quote, psql
//! variable, second action or expression; an object of one database); every other line is
//! loaded by the role as it is. Pure: no database here.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::archive::extract::Spooled;

/// What [`filter_dump`] held back from the load, or noted on its way.
#[derive(Debug, Default, PartialEq)]
pub struct HeldBack {
    /// Ownership and default-privilege lines [`handover_line`] accepts, in dump order.
    pub owners: Vec<String>,
    /// `GRANT`/`REVOKE` lines [`acl_line`] accepts, in dump order.
    pub acls: Vec<String>,
    /// The extensions the dump creates (names of at most 63 of `[A-Za-z0-9_-]`).
    pub extensions: Vec<String>,
}

/// What the filter does with one line that is whole statements.
#[derive(Debug, PartialEq)]
enum LineUse {
    Load,
    Owner,
    Acl,
    Drop,
    Extension(String),
}

/// A line that is not exactly one statement of a held-back form is loaded as it is, by the
/// role: if it needs more than the role may do, the load fails and says so; nothing is skipped.
fn classify(line: &str) -> LineUse {
    if line.starts_with("ALTER ") && handover_line(line) {
        return LineUse::Owner;
    }
    if (line.starts_with("GRANT ") || line.starts_with("REVOKE ")) && acl_line(line) {
        return LineUse::Acl;
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

/// Kinds a `GRANT`/`REVOKE` may name after `ON`: objects of one database (not `DATABASE`,
/// `TABLESPACE` or `PARAMETER`, which reach the cluster).
const ACL_KINDS: &[&[&str]] = &[
    &["LARGE", "OBJECT"],
    &["FOREIGN", "DATA", "WRAPPER"],
    &["FOREIGN", "SERVER"],
    &["ALL", "TABLES", "IN", "SCHEMA"],
    &["ALL", "SEQUENCES", "IN", "SCHEMA"],
    &["ALL", "FUNCTIONS", "IN", "SCHEMA"],
    &["ALL", "PROCEDURES", "IN", "SCHEMA"],
    &["ALL", "ROUTINES", "IN", "SCHEMA"],
    &["TABLE"],
    &["SEQUENCE"],
    &["FUNCTION"],
    &["PROCEDURE"],
    &["ROUTINE"],
    &["SCHEMA"],
    &["TYPE"],
    &["DOMAIN"],
    &["LANGUAGE"],
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
pub fn acl_line(line: &str) -> bool {
    let Some(toks) = tokens(line) else { return false };
    let to = match toks.first().map(word) {
        Some("GRANT") => "TO",
        Some("REVOKE") => "FROM",
        _ => return false,
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
    let (Some(on), Some(target)) = (on, target) else { return false };
    let privileges = toks[1..on].iter().all(|t| is_name(t) || matches!(t, Tok::Sym(b',' | b'(' | b')')));
    let object = &toks[on + 1..target];
    let Some(kind) = ACL_KINDS.iter().find(|k| k.iter().enumerate().all(|(i, w)| object.get(i).map(word) == Some(*w)))
    else {
        return false;
    };
    let named = &object[kind.len()..];
    let object_ok = if kind[0] == "ALL" { name_list(named) } else { designator(named, kind) };
    let mut grantees = &toks[target + 1..];
    let tails: [&[&str]; 3] = [&["WITH", "GRANT", "OPTION"], &["CASCADE"], &["RESTRICT"]];
    for tail in tails {
        let n = grantees.len();
        if n > tail.len() && grantees[n - tail.len()..].iter().map(word).eq(tail.iter().copied()) {
            grantees = &grantees[..n - tail.len()];
            break;
        }
    }
    privileges && depth == 0 && object_ok && name_list(grantees)
}

/// Copies dump `src` into `dst` (a private file) for the restricted load: whole-statement lines
/// that hand over ownership, default privileges or privileges ([`handover_line`], [`acl_line`])
/// are held back, `COMMENT ON EXTENSION` lines dropped, created extensions noted; everything else (COPY data, multi-line statements)
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
            LineUse::Owner => self.held.owners.push(text.unwrap_or_default().to_string()),
            LineUse::Acl => self.held.acls.push(text.unwrap_or_default().to_string()),
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
            "ALTER OPERATOR FAMILY \"public\".\"f\" USING \"btree\" OWNER TO \"app\";",
            "ALTER TEXT SEARCH CONFIGURATION \"public\".\"c\" OWNER TO \"app\";",
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"app\" IN SCHEMA \"public\" GRANT SELECT,INSERT ON TABLES TO \"reader\";",
        ] {
            assert!(handover_line(line), "{line}");
            assert_eq!(classify(line), LineUse::Owner, "{line}");
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
            assert_eq!(classify(line), LineUse::Load, "loaded by the role as it is: {line}");
        }
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
            "GRANT USAGE ON FOREIGN SERVER \"loop\" TO \"app\";",
            "GRANT SELECT ON LARGE OBJECT 16385 TO \"reader\";",
            "GRANT SELECT ON ALL TABLES IN SCHEMA \"public\", \"s\" TO \"reader\", \"app\";",
            "REVOKE GRANT OPTION FOR SELECT ON TABLE \"t\" FROM \"r\" CASCADE;",
        ] {
            assert!(acl_line(line), "{line}");
            assert_eq!(classify(line), LineUse::Acl, "{line}");
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
            assert!(!acl_line(line), "{line}");
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
            assert_eq!(f.held.owners, ["ALTER TABLE \"public\".\"t\" OWNER TO \"app\";"]);
            assert_eq!(f.held.acls, ["GRANT SELECT ON TABLE \"public\".\"t\" TO \"reader\";"]);
            assert_eq!(f.held.extensions, ["pgcrypto"]);
        }
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'standard public schema';"), LineUse::Drop);
        assert_eq!(classify("COMMENT ON SCHEMA \"public\" IS 'ours';"), LineUse::Load);
    }
}
