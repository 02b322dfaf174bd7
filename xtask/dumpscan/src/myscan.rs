//! Reads a `mariadb-dump` / `mysqldump` as it streams past, the way the `mariadb` client lexes
//! it: strings (`'…'`, `"…"` with backslash escapes), `` `identifiers` ``, comments (`-- `, `#`,
//! `/* */`; `/*!…*/` and `/*M!…*/` are code) and `DELIMITER` lines. From that it counts the rows
//! of every table's `INSERT … VALUES (…),(…)` (tables created without rows count 0), sees
//! whether the dump ends with the `-- Dump completed` trailer, and refuses any backslash outside
//! strings and comments: that is how the client spells its own commands (`\!` runs a shell),
//! and a dump never needs one (the loader also runs the client with `--binary-mode --sandbox`).
//! The one exception is the first line newer dumps begin with,
//! `/*M!999999\- enable the sandbox mode */`, which turns the sandbox on.

use std::collections::BTreeMap;

pub const TRAILER: &str = "-- Dump completed";
const SANDBOX_LINE: &[u8] = b"/*M!999999\\- enable the sandbox mode */";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum St {
    #[default]
    Code,
    Quoted(u8),
    Escape(u8),
    /// After `-` in code; `Dash2` after `--` (a comment only when whitespace follows).
    Dash,
    Dash2,
    LineComment,
    /// After `/` in code, after `/*`, after `/*M`.
    Slash,
    SlashStar,
    SlashStarM,
    Block,
    BlockStar,
    /// After `/*!` or `/*M!`: the version digits, then code until `*/`.
    ExecDigits,
    DelimiterLine,
}

#[derive(Debug, Default)]
pub struct MyScan {
    st: St,
    /// Inside an executable comment, and just after a `*` there.
    exec: bool,
    exec_star: bool,
    /// The first line, held until it is complete (it may be the sandbox line).
    head: Vec<u8>,
    started: bool,
    delim: Vec<u8>,
    delim_at: usize,
    col: usize,
    /// The first tokens of the statement being read (bounded), and the token being read.
    words: Vec<String>,
    word: Vec<u8>,
    depth: u32,
    comment: Vec<u8>,
    comment_col0: bool,
    delim_line: Vec<u8>,
    pub tables: BTreeMap<String, u64>,
    pub complete: bool,
    pub violation: Option<String>,
    /// The first statement that reaches beyond the database it is loaded into (another
    /// database, the server, files): never in a dump, refused.
    pub beyond: Option<String>,
    /// The first account statement (users, roles, grants, passwords): only a users dump may hold one.
    pub accounts: Option<String>,
    /// The last bytes fed, for a search across chunk boundaries.
    carry: Vec<u8>,
}

/// What a statement beginning with `words` (upper case, first six tokens) reaches: `Some(true)`
/// beyond its database, `Some(false)` accounts, None neither.
pub fn reach(words: &[String]) -> Option<bool> {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
    let scope = matches!(w(1), "DATABASE" | "SCHEMA" | "SERVER" | "TABLESPACE" | "LOGFILE");
    let account = matches!(w(1), "USER" | "ROLE");
    match w(0) {
        "USE" | "LOAD" | "INSTALL" | "UNINSTALL" | "SHUTDOWN" | "KILL" | "PURGE" | "RESET" | "CHANGE" | "HANDLER" => {
            Some(true)
        }
        // Dynamic SQL, procedure calls and compound blocks: a dump never runs code of its own.
        "EXECUTE" | "PREPARE" | "DEALLOCATE" | "CALL" => Some(true),
        "BEGIN" if w(1) == "NOT" => Some(true),
        "START" | "STOP" if matches!(w(1), "SLAVE" | "REPLICA" | "ALL") => Some(true),
        "CREATE" | "DROP" | "ALTER" if scope => Some(true),
        "CREATE" | "DROP" | "ALTER" | "RENAME" if account => Some(false),
        "SET" if words.iter().any(|x| matches!(x.as_str(), "GLOBAL" | "PERSIST" | "PERSIST_ONLY")) => Some(true),
        "SET" if matches!(w(1), "PASSWORD" | "DEFAULT" | "ROLE") => Some(false),
        "GRANT" | "REVOKE" | "FLUSH" => Some(false),
        _ => None,
    }
}

/// The sql_mode that makes the client stop reading backslashes as escapes: after it, this
/// scanner and the client would read strings differently, so a dump may not name it.
const NO_BACKSLASH_ESCAPES: &[u8] = b"NO_BACKSLASH_ESCAPES";

impl MyScan {
    pub fn feed(&mut self, data: &[u8]) {
        self.look_for_mode_change(data);
        if self.started {
            self.run(data);
            return;
        }
        self.head.extend_from_slice(data);
        let nl = self.head.iter().position(|&b| b == b'\n');
        if nl.is_none() && self.head.len() <= 256 {
            return;
        }
        let head = std::mem::take(&mut self.head);
        self.started = true;
        self.delim = b";".to_vec();
        let first = &head[..nl.unwrap_or(0)];
        let rest = match first.strip_suffix(b" ").unwrap_or(first) == SANDBOX_LINE {
            true => &head[first.len()..],
            false => &head[..],
        };
        self.run(rest);
    }

    /// Anywhere in the bytes (strings included, across chunk boundaries), case-insensitively.
    fn look_for_mode_change(&mut self, data: &[u8]) {
        let keep = NO_BACKSLASH_ESCAPES.len() - 1;
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(&data[..data.len().min(keep)]);
        let found = |bytes: &[u8]| {
            bytes.windows(NO_BACKSLASH_ESCAPES.len()).any(|w| w.eq_ignore_ascii_case(NO_BACKSLASH_ESCAPES))
        };
        if found(&window) || found(data) {
            self.refuse("NO_BACKSLASH_ESCAPES: it changes how the client reads strings, which no dump may do");
        }
        // The last `keep` bytes of everything fed: the window holds the old carry and (when the
        // chunk is short) the whole chunk; otherwise the chunk's own end.
        let mut tail = if data.len() > keep { data[data.len() - keep..].to_vec() } else { window };
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
        self.carry = tail;
    }

    /// Feeds `data`, skipping over the inside of strings (most of a dump's bytes) in one search.
    fn run(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            if let St::Quoted(q) = self.st {
                if q != b'`' {
                    let k =
                        data[i..].iter().position(|&b| b == q || b == b'\\' || b == b'\n').unwrap_or(data.len() - i);
                    self.col += k;
                    i += k;
                    if i == data.len() {
                        return;
                    }
                }
            }
            self.byte(data[i]);
            i += 1;
        }
    }

    fn refuse(&mut self, what: &str) {
        if self.violation.is_none() {
            self.violation = Some(what.to_string());
        }
    }

    fn byte(&mut self, b: u8) {
        let col = self.col;
        self.col = if b == b'\n' { 0 } else { self.col + 1 };
        match self.st {
            St::Code => self.code(b, col),
            St::Quoted(_) | St::Escape(_) => self.quoted(b),
            St::DelimiterLine => self.delimiter_line(b),
            _ => self.comment_byte(b, col),
        }
    }

    /// Inside `'…'`, `"…"` (backslash escapes) or `` `…` `` (the name is kept for row counts).
    fn quoted(&mut self, b: u8) {
        match self.st {
            St::Quoted(q) if b == b'\\' && q != b'`' => self.st = St::Escape(q),
            St::Quoted(q) if b == q => {
                self.st = St::Code;
                if q == b'`' {
                    let name = String::from_utf8_lossy(&std::mem::take(&mut self.word)).into_owned();
                    self.push_word(format!("`{name}`"));
                }
            }
            St::Quoted(b'`') if self.word.len() < 256 => self.word.push(b),
            St::Escape(q) => self.st = St::Quoted(q),
            _ => {}
        }
    }

    /// The rest of a `DELIMITER` line: the new delimiter.
    fn delimiter_line(&mut self, b: u8) {
        if b != b'\n' {
            if self.delim_line.len() < 64 {
                self.delim_line.push(b);
            }
            return;
        }
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.delim_line)).into_owned();
        match line.split_whitespace().next() {
            Some(d) => self.delim = d.as_bytes().to_vec(),
            None => self.refuse("a DELIMITER line without a delimiter"),
        }
        self.st = St::Code;
        self.end_statement();
    }

    /// Comment openers and comments: `-- `, `/* */`, and the `/*!NNNNN` / `/*M!NNNNNN` heads of
    /// executable comments. A byte that turns out not to open one is code after all.
    fn comment_byte(&mut self, b: u8, col: usize) {
        match self.st {
            St::Dash if b == b'-' => self.st = St::Dash2,
            St::Dash2 if b.is_ascii_whitespace() || b < 0x20 => {
                self.comment = b"-- ".to_vec();
                self.comment_col0 = col == 2;
                self.st = St::LineComment;
                if b == b'\n' {
                    self.end_comment();
                }
            }
            St::LineComment if b == b'\n' => self.end_comment(),
            St::LineComment => {
                if self.comment.len() < 64 {
                    self.comment.push(b);
                }
            }
            St::Slash if b == b'*' => self.st = St::SlashStar,
            St::SlashStar | St::SlashStarM if b == b'!' => {
                self.exec = true;
                self.st = St::ExecDigits;
            }
            St::SlashStar if b == b'M' => self.st = St::SlashStarM,
            St::SlashStar | St::SlashStarM | St::Block => self.st = if b == b'*' { St::BlockStar } else { St::Block },
            St::BlockStar => {
                self.st = match b {
                    b'/' => St::Code,
                    b'*' => St::BlockStar,
                    _ => St::Block,
                }
            }
            St::ExecDigits if b.is_ascii_digit() => {}
            // `-x`, `--x`, `/x`, or the end of an executable comment's version: code.
            St::Dash | St::Dash2 | St::Slash | St::ExecDigits => {
                self.st = St::Code;
                self.code(b, col);
            }
            St::Code | St::Quoted(_) | St::Escape(_) | St::DelimiterLine => {}
        }
    }

    fn end_comment(&mut self) {
        self.st = St::Code;
        if self.comment_col0 && self.comment.starts_with(TRAILER.as_bytes()) {
            self.complete = true;
        }
    }

    /// One byte of code: words, quotes, comment openers, parentheses and the delimiter.
    fn code(&mut self, b: u8, col: usize) {
        let _ = col;
        if !b.is_ascii_whitespace() {
            self.complete = false;
        }
        let exec_star = std::mem::replace(&mut self.exec_star, false);
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' {
            if self.word.len() < 64 {
                self.word.push(b);
            }
            return;
        }
        self.flush_word();
        if self.st == St::DelimiterLine {
            self.delim_line.push(b);
            return;
        }
        match b {
            b'\\' => self.refuse("a client command (a backslash outside strings and comments), which no dump holds"),
            b'\'' | b'"' | b'`' => self.st = St::Quoted(b),
            b'#' => {
                self.comment.clear();
                self.comment_col0 = false;
                self.st = St::LineComment;
            }
            b'-' => self.st = St::Dash,
            b'/' if exec_star && self.exec => self.exec = false,
            b'/' => self.st = St::Slash,
            b'*' if self.exec => self.exec_star = true,
            b'(' => {
                if self.depth == 0 && self.in_values() {
                    if let Some(t) = self.words.get(self.table_at()).cloned() {
                        *self.tables.entry(t).or_default() += 1;
                    }
                }
                self.depth += 1;
            }
            b')' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        self.match_delimiter(b);
    }

    fn match_delimiter(&mut self, b: u8) {
        if self.st != St::Code {
            return;
        }
        if self.delim.get(self.delim_at) == Some(&b) {
            self.delim_at += 1;
        } else {
            self.delim_at = usize::from(self.delim.first() == Some(&b));
        }
        if self.delim_at == self.delim.len() {
            self.delim_at = 0;
            self.end_statement();
        }
    }

    fn flush_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let w = String::from_utf8_lossy(&std::mem::take(&mut self.word)).to_ascii_uppercase();
        if matches!(w.as_str(), "OUTFILE" | "DUMPFILE") && self.beyond.is_none() {
            self.beyond = Some(format!("INTO {w} (writes a file on the server)"));
        }
        if self.words.is_empty() && self.depth == 0 && w == "DELIMITER" {
            self.st = St::DelimiterLine;
            self.delim_line.clear();
            return;
        }
        self.push_word(w);
    }

    fn push_word(&mut self, w: String) {
        if self.words.len() >= 6 {
            return;
        }
        if self.words.len() == 2 && self.words[0] == "CREATE" && self.words[1] == "TABLE" && w.starts_with('`') {
            self.tables.entry(w.clone()).or_default();
        }
        self.words.push(w);
    }

    /// `INSERT [IGNORE] INTO `t` VALUES` / `REPLACE INTO `t` VALUES`: where the table stands.
    fn table_at(&self) -> usize {
        if self.words.get(1).map(String::as_str) == Some("IGNORE") {
            3
        } else {
            2
        }
    }

    fn in_values(&self) -> bool {
        let (w, t) = (&self.words, self.table_at());
        matches!(w.first().map(String::as_str), Some("INSERT" | "REPLACE"))
            && w.get(t - 1).map(String::as_str) == Some("INTO")
            && w.get(t).is_some_and(|x| x.starts_with('`'))
            && w.get(t + 1).map(String::as_str) == Some("VALUES")
    }

    fn end_statement(&mut self) {
        self.flush_word();
        let shown = || self.words.iter().take(3).cloned().collect::<Vec<_>>().join(" ");
        match reach(&self.words) {
            Some(true) if self.beyond.is_none() => self.beyond = Some(shown()),
            Some(false) if self.accounts.is_none() => self.accounts = Some(shown()),
            _ => {}
        }
        self.words.clear();
        self.word.clear();
        self.depth = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str, chunk: usize) -> MyScan {
        let mut s = MyScan::default();
        for c in text.as_bytes().chunks(chunk) {
            s.feed(c);
        }
        s
    }

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n\
        /*!40101 SET NAMES utf8mb4 */;\nCREATE TABLE `t` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB;\n\
        CREATE TABLE `empty` (`x` int);\n\
        INSERT INTO `t` VALUES\n(1,'a\\'b\\\\c'),\n(2,'(x),(y); \\\\!'),\n(3,NULL);\n\
        DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN \
        INSERT INTO `log` VALUES (1); END */;;\nDELIMITER ;\n\
        -- comment with \\! inside\n/* block \\! */ # hash \\!\nSELECT 1--1;\n\
        -- Dump completed on 2026-11-27 12:00:00\n";

    #[test]
    fn counts_rows_and_sees_the_trailer_in_any_chunking() {
        for chunk in [1, 2, 3, 7, 4096] {
            let s = scan(DUMP, chunk);
            assert_eq!(s.violation, None, "chunk {chunk}");
            assert!(s.complete, "chunk {chunk}");
            let want = BTreeMap::from([("`t`".to_string(), 3), ("`empty`".to_string(), 0)]);
            assert_eq!(s.tables, want, "chunk {chunk}: the trigger's INSERT is no row");
        }
    }

    #[test]
    fn refuses_client_commands_outside_strings_and_comments() {
        for bad in [
            "SELECT 1; \\! sh -c id\n",
            "SELECT 1 \\. /etc/passwd\n",
            "/*!40101 SET x=1 \\! id */;\n",
            "/*M!999999\\- enable the sandbox mode */\n\\! id\n",
            "SELECT 1--1 \\! id\n",
        ] {
            assert!(scan(bad, 3).violation.is_some(), "{bad:?} passed");
        }
        // The sandbox line only where dumps write it: the first line.
        assert!(scan("SELECT 1;\n/*M!999999\\- enable the sandbox mode */\n", 64).violation.is_some());
    }

    #[test]
    fn statements_beyond_the_database_and_account_statements_are_seen_even_in_executable_comments() {
        let ok = scan(DUMP, 5);
        assert_eq!((ok.beyond.as_deref(), ok.accounts.as_deref()), (None, None), "a plain dump reaches nothing else");
        for (sql, beyond) in [
            ("USE `other`;\n", true),
            ("/*!40000 DROP DATABASE IF EXISTS `x`*/;\n", true),
            ("drop schema other;\n", true),
            ("SET GLOBAL general_log = 1;\n", true),
            ("SET sql_mode='', GLOBAL general_log=1;\n", true),
            ("EXECUTE IMMEDIATE 'DROP TABLE other.t';\n", true),
            ("PREPARE s FROM 'DROP TABLE other.t';\n", true),
            ("CALL p();\n", true),
            ("SELECT 1 INTO OUTFILE '/tmp/x';\n", true),
            ("LOAD DATA INFILE '/etc/passwd' INTO TABLE t;\n", true),
            ("GRANT ALL ON *.* TO `evil`@`%`;\n", false),
            ("CREATE USER IF NOT EXISTS `evil`@`%`;\n", false),
            ("/*M!100005 SET DEFAULT ROLE NONE FOR `a`@`%` */;\n", false),
        ] {
            let s = scan(&format!("{DUMP}{sql}"), 7);
            let seen = if beyond { s.beyond.is_some() } else { s.accounts.is_some() && s.beyond.is_none() };
            assert!(seen, "{sql}: beyond {:?}, accounts {:?}", s.beyond, s.accounts);
        }
        let s = scan("SELECT `use`, `grant` FROM `drop`;\nINSERT INTO `t` VALUES ('USE x; GRANT');\n", 3);
        assert_eq!((s.beyond, s.accounts), (None, None), "names and strings are not statements");
    }

    #[test]
    fn a_dump_may_not_switch_off_backslash_escapes() {
        let sql =
            format!("{DUMP}SET sql_mode='no_backslash_escapes';\nSELECT 'a\\'; DROP TABLE other.t; SELECT 'x';\n");
        for chunk in [1, 3, 19, 20, 4096] {
            let s = scan(&sql, chunk);
            assert!(s.violation.as_deref().is_some_and(|v| v.contains("NO_BACKSLASH_ESCAPES")), "chunks of {chunk}");
        }
        assert!(scan(DUMP, 2).violation.is_none());
    }

    #[test]
    fn a_dump_cut_short_is_incomplete() {
        let cut = &DUMP[..DUMP.len() - 45];
        assert!(!scan(cut, 64).complete);
        let trailing = format!("{DUMP}DROP DATABASE x;\n");
        assert!(!scan(&trailing, 64).complete, "statements after the trailer");
    }
}
