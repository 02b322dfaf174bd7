//! What psql would do with a dump besides sending SQL to the server. A dump from an archive is
//! untrusted: psql runs backslash meta-commands (`\!` starts a shell, `\o |cmd` a pipe, `\copy`
//! reads host files) wherever its lexer is outside quotes, comments and COPY data, and the
//! server runs `COPY … PROGRAM` as its OS user. [`SqlScan`] follows psql's lexer over the stream
//! (standard and E'' strings, quoted identifiers, dollar quotes, nested comments, COPY blocks)
//! and records the first thing that is not plain SQL; `verify` refuses such a dump and restore
//! loads only dumps that pass (with `ON_ERROR_STOP`, so a COPY that fails never turns its data
//! lines into commands). Allowed: the `\restrict KEY` / `\unrestrict KEY` lines pg_dump emits.

/// Longest line outside COPY data that is scanned whole; a longer one is refused.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    #[default]
    Normal,
    /// Inside `'…'`; `escapes` for E'…' strings, where `\'` does not end it.
    Single {
        escapes: bool,
        skip: bool,
    },
    Double,
    /// After a `$` that may open a dollar quote: the tag so far.
    DollarOpen(Vec<u8>),
    /// Inside `$tag$…$tag$`: the closing delimiter and how much of it matched.
    Dollar {
        delim: Vec<u8>,
        matched: usize,
    },
    LineComment,
    BlockComment(u32),
    /// A backslash meta-command: the rest of the line belongs to it.
    Meta,
    /// COPY … FROM stdin data, until a line `\.`.
    Copy,
}

#[derive(Debug, Default)]
pub struct SqlScan {
    state: State,
    /// The current line (outside COPY data), bounded by MAX_LINE.
    line: Vec<u8>,
    line_no: u64,
    /// The current line began inside a string, comment or dollar quote.
    line_started_inside: bool,
    /// The byte before, in the current state (0 after a state change or a consumed pair).
    prev: u8,
    /// The identifier token being read (first 8 bytes) and its length.
    token: Vec<u8>,
    token_len: usize,
    meta_at_start: bool,
    /// The first thing found that is not plain SQL, with its line.
    pub violation: Option<String>,
    /// The statement being read: its first tokens (upper case, at most four of 24 bytes), the
    /// token being read, and whether a COPY names `TO`.
    stmt: Vec<String>,
    word: Vec<u8>,
    copy_to: bool,
    /// The first statement that reaches beyond the database it is loaded into (the cluster, other
    /// databases, server files or programs), with its line: never in a database dump.
    pub beyond: Option<String>,
    /// The first statement about roles (CREATE/ALTER/DROP ROLE, SET ROLE…): only the roles dump
    /// (`globals.sql`) may hold them.
    pub accounts: Option<String>,
}

/// What a statement beginning with `words` reaches: `Some(true)` beyond its database,
/// `Some(false)` roles, None neither. pg_dump's own `SELECT`s all call `pg_catalog` functions.
pub fn reach(words: &[String], copy_to: bool) -> Option<bool> {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
    let cluster = matches!(w(1), "DATABASE" | "TABLESPACE" | "SUBSCRIPTION" | "SYSTEM");
    let role = matches!(w(1), "ROLE" | "USER" | "GROUP");
    let catalog = matches!(
        w(2),
        "SET_CONFIG"
            | "SETVAL"
            | "LO_CREATE"
            | "LO_OPEN"
            | "LO_CLOSE"
            | "LOWRITE"
            | "BINARY_UPGRADE_SET_NEXT_TOAST_PG_CLASS_OID"
    );
    match w(0) {
        "CREATE" | "ALTER" | "DROP" if cluster => Some(true),
        "CREATE" | "ALTER" | "DROP" if role => Some(false),
        "DROP" | "REASSIGN" if w(1) == "OWNED" => Some(true),
        "LOAD" | "CHECKPOINT" | "DO" | "CALL" | "LISTEN" | "NOTIFY" | "IMPORT" => Some(true),
        "COPY" if copy_to => Some(true),
        "SELECT" if w(1) != "PG_CATALOG" || !catalog => Some(true),
        "SET" | "RESET" if matches!(w(1), "ROLE" | "SESSION") => Some(false),
        _ => None,
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

impl SqlScan {
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.violation.is_some() {
                return;
            }
            self.byte(b);
        }
    }

    /// Whether the next byte begins a statement: outside strings, comments and COPY data, with
    /// nothing of a statement read yet (a line that begins here and ends here again is whole
    /// statements).
    pub fn at_statement_start(&self) -> bool {
        self.state == State::Normal && self.stmt.is_empty() && self.word.is_empty() && self.violation.is_none()
    }

    fn refuse(&mut self, what: &str) {
        if self.violation.is_none() {
            self.violation = Some(format!("line {}: {what}", self.line_no + 1));
        }
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' {
            self.end_of_line();
            return;
        }
        if self.state != State::Copy {
            if self.line.len() >= MAX_LINE {
                return self.refuse("a line longer than 1 MiB outside COPY data");
            }
            self.line.push(b);
        } else if self.line.len() < 3 {
            self.line.push(b);
        }
        match std::mem::take(&mut self.state) {
            State::Normal => self.normal(b),
            State::Single { escapes, skip } => {
                self.state = match (skip, b) {
                    (true, _) => State::Single { escapes, skip: false },
                    (false, b'\\') if escapes => State::Single { escapes, skip: true },
                    (false, b'\'') => State::Normal,
                    _ => State::Single { escapes, skip: false },
                }
            }
            State::Double => self.state = if b == b'"' { State::Normal } else { State::Double },
            State::DollarOpen(mut tag) => match b {
                b'$' => {
                    let mut delim = vec![b'$'];
                    delim.extend_from_slice(&tag);
                    delim.push(b'$');
                    self.state = State::Dollar { delim, matched: 0 };
                }
                b if is_ident(b) && !(tag.is_empty() && b.is_ascii_digit()) && tag.len() < 64 => {
                    tag.push(b);
                    self.state = State::DollarOpen(tag);
                }
                b => self.normal(b),
            },
            State::Dollar { delim, matched } => {
                let matched = if b == delim[matched] { matched + 1 } else { usize::from(b == b'$') };
                self.state = if matched == delim.len() { State::Normal } else { State::Dollar { delim, matched } };
            }
            State::BlockComment(depth) => self.block_comment(depth, b),
            other => self.state = other, // LineComment, Meta, Copy: until the end of the line
        }
    }

    /// The statement's tokens: one more byte in Normal state.
    fn statement_byte(&mut self, b: u8) {
        if is_ident(b) || (b == b'$' && !self.word.is_empty()) {
            if self.word.len() < 48 {
                self.word.push(b);
            }
            return;
        }
        if !self.word.is_empty() {
            let w = String::from_utf8_lossy(&std::mem::take(&mut self.word)).to_ascii_uppercase();
            self.copy_to |= self.stmt.first().is_some_and(|f| f == "COPY") && w == "TO";
            if self.stmt.len() < 4 {
                self.stmt.push(w);
            }
        }
        if b == b';' {
            let shown = self.stmt.iter().take(3).cloned().collect::<Vec<_>>().join(" ");
            let at = format!("line {}: {shown}", self.line_no + 1);
            match reach(&self.stmt, self.copy_to) {
                Some(true) if self.beyond.is_none() => self.beyond = Some(at),
                Some(false) if self.accounts.is_none() => self.accounts = Some(at),
                _ => {}
            }
            self.stmt.clear();
            self.copy_to = false;
        }
    }

    fn normal(&mut self, b: u8) {
        self.statement_byte(b);
        let prev = std::mem::replace(&mut self.prev, b);
        if is_ident(b) || (b == b'$' && self.token_len > 0) {
            if self.token.len() < 8 {
                self.token.push(b);
            }
            self.token_len += 1;
            return;
        }
        let token = std::mem::take(&mut self.token);
        let token_len = std::mem::replace(&mut self.token_len, 0);
        if token_len == 7 && token.eq_ignore_ascii_case(b"PROGRAM") {
            return self.refuse("PROGRAM (COPY to or from a server-side program)");
        }
        match (prev, b) {
            (_, b'\'') => {
                self.state = State::Single { escapes: token_len == 1 && token.eq_ignore_ascii_case(b"E"), skip: false }
            }
            (_, b'"') => self.state = State::Double,
            (_, b'$') => self.state = State::DollarOpen(Vec::new()),
            (b'-', b'-') => self.state = State::LineComment,
            (b'/', b'*') => {
                self.prev = 0;
                self.state = State::BlockComment(1);
            }
            (_, b'\\') => {
                self.meta_at_start = self.line.len() == 1;
                self.state = State::Meta;
            }
            _ => {}
        }
    }

    fn block_comment(&mut self, depth: u32, b: u8) {
        let prev = std::mem::replace(&mut self.prev, b);
        self.state = match (prev, b) {
            (b'/', b'*') => {
                self.prev = 0;
                State::BlockComment(depth + 1)
            }
            (b'*', b'/') if depth == 1 => State::Normal,
            (b'*', b'/') => {
                self.prev = 0;
                State::BlockComment(depth - 1)
            }
            _ => State::BlockComment(depth),
        };
        if self.state == State::Normal {
            self.prev = 0;
        }
    }

    fn end_of_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let started_normal = !std::mem::replace(&mut self.line_started_inside, false);
        match std::mem::take(&mut self.state) {
            State::Copy => self.state = if line == b"\\." { State::Normal } else { State::Copy },
            State::Meta => {
                if !(self.meta_at_start && allowed_meta(&line)) {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
                    self.refuse(&format!("psql meta-command {shown:?}: a dump may hold SQL only"));
                }
            }
            State::LineComment => {}
            State::Normal if started_normal && line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") => {
                self.state = State::Copy
            }
            other => {
                self.line_started_inside = other != State::Normal;
                self.state = other;
            }
        }
        self.check_line(&line);
        self.prev = 0;
        self.line_no += 1;
    }

    /// psql lexes strings by the server's `standard_conforming_strings`: a dump may only set it on.
    fn check_line(&mut self, line: &[u8]) {
        let lower = line.to_ascii_lowercase();
        let mentions = lower.windows(27).any(|w| w == b"standard_conforming_strings");
        if mentions && line != b"SET standard_conforming_strings = on;" {
            self.refuse(
                "changes standard_conforming_strings (only `SET standard_conforming_strings = on;` is allowed)",
            );
        }
    }
}

/// `\restrict KEY` and `\unrestrict KEY`, as pg_dump writes them.
fn allowed_meta(line: &[u8]) -> bool {
    let key = line.strip_prefix(b"\\restrict ").or_else(|| line.strip_prefix(b"\\unrestrict "));
    key.is_some_and(|k| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Option<String> {
        let mut whole = SqlScan::default();
        whole.feed(text.as_bytes());
        for split in [1, 2, 5] {
            let mut s = SqlScan::default();
            for c in text.as_bytes().chunks(split) {
                s.feed(c);
            }
            assert_eq!(s.violation, whole.violation, "chunks of {split}");
        }
        whole.violation
    }

    #[test]
    fn plain_pg_dump_passes() {
        let dump = "\\restrict abc123\n--\n-- PostgreSQL database dump\n--\nSET standard_conforming_strings = on;\n\
            SELECT pg_catalog.set_config('search_path', '', false);\n\
            CREATE FUNCTION \"public\".\"f\"() RETURNS text LANGUAGE sql AS $_$ SELECT E'\\\\! not a command' $_$;\n\
            COMMENT ON TABLE \"public\".\"t\" IS 'it''s \\ fine';\n/* a /* nested */ \\! comment */\n\
            COPY \"public\".\"t\" (\"a\") FROM stdin;\n\\! data, not a command\n\\N\n\\.\n\
            SELECT $1, a$b FROM x; -- \\! in a comment\n\\unrestrict abc123\n";
        assert_eq!(scan(dump), None);
    }

    fn reach_of(text: &str) -> (Option<String>, Option<String>) {
        let mut s = SqlScan::default();
        for c in text.as_bytes().chunks(3) {
            s.feed(c);
        }
        (s.beyond, s.accounts)
    }

    #[test]
    fn statements_beyond_the_database_and_role_statements_are_seen() {
        let dump = "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\
            CREATE TABLE \"public\".\"t\" (\"a\" integer DEFAULT 1);\nALTER TABLE \"public\".\"t\" OWNER TO \"app\";\n\
            COPY \"public\".\"t\" (\"a\") FROM stdin;\nDROP DATABASE x;\n\\.\n\
            SELECT pg_catalog.setval('\"public\".\"s\"', 1, false);\nGRANT ALL ON TABLE \"public\".\"t\" TO \"app\";\n\
            COMMENT ON TABLE \"public\".\"t\" IS 'DROP DATABASE app; ALTER ROLE app';\n";
        assert_eq!(reach_of(dump), (None, None), "pg_dump's own statements, data and strings reach nothing");
        for (sql, beyond) in [
            ("DROP DATABASE \"app\";\n", true),
            ("ALTER SYSTEM SET log_statement = 'all';\n", true),
            ("COPY \"t\" TO '/tmp/x';\n", true),
            ("SELECT pg_terminate_backend(1);\n", true),
            ("select dblink_exec('x', 'y');\n", true),
            ("DO $$ BEGIN PERFORM 1; END $$;\n", true),
            ("CREATE ROLE \"evil\" SUPERUSER LOGIN;\n", false),
            ("ALTER ROLE \"app\" WITH PASSWORD 'x';\n", false),
            ("SET ROLE \"postgres\";\n", false),
        ] {
            let (b, a) = reach_of(&format!("{dump}{sql}"));
            let seen = if beyond { b.is_some() } else { a.is_some() && b.is_none() };
            assert!(seen, "{sql}: beyond {b:?}, roles {a:?}");
        }
    }

    #[test]
    fn meta_commands_and_programs_are_refused() {
        for (bad, what) in [
            ("SELECT 1;\n\\! id\n", "line 2: psql meta-command"),
            ("SELECT 1; \\! id\n", "meta-command"),
            ("SELECT 'a' \\o |cat\n", "meta-command"),
            ("SELECT E'\\'' \\! id\n", "meta-command"),
            ("SELECT $$ x $$ \\! id\n", "meta-command"),
            ("/* x */ \\copy t to '/etc/x'\n", "meta-command"),
            ("\\restrict abc; \\! id\n", "meta-command"),
            ("COPY t TO PROGRAM 'id';\n", "PROGRAM"),
            ("copy t from program 'id';\n", "PROGRAM"),
            ("SET standard_conforming_strings = off;\n", "standard_conforming_strings"),
            ("SELECT set_config('standard_conforming_strings', 'off', false);\n", "standard_conforming"),
            ("SELECT 1; COPY t FROM stdin;\n\\! id\n", "meta-command"),
        ] {
            let got = scan(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(got.contains(what), "{bad:?}: {got}");
        }
    }
}
