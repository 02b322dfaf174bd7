//! How the tool talks to its user: step lines on stderr (silenced by `--quiet`), results on
//! stdout, so `--json` output stays machine-readable.

pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    /// "==> what is happening", on stderr.
    pub fn step(&self, what: &str) {
        if !self.quiet {
            eprintln!("==> {what}");
        }
    }
}

impl Ui {
    /// A progress display for one step: a live byte counter with throughput on a terminal,
    /// the step line and then one summary line otherwise; nothing under `--quiet`.
    pub fn progress(&self, what: &str) -> Progress {
        self.progress_of(what, None)
    }

    /// Like [`Ui::progress`] when the total is known: a bar with the total, percentage and ETA.
    pub fn progress_to(&self, what: &str, total: u64) -> Progress {
        self.progress_of(what, Some(total))
    }

    /// A wait for something outside the tool (a service's health, a server starting): a spinner
    /// with the time waited on a terminal, the step line otherwise.
    pub fn waiting(&self, what: &str) -> Progress {
        self.display(what, indicatif::ProgressBar::new_spinner(), "{spinner} {msg} ({elapsed})")
    }

    fn progress_of(&self, what: &str, total: Option<u64>) -> Progress {
        match total {
            Some(t) => self.display(
                what,
                indicatif::ProgressBar::new(t),
                "{msg}: [{bar:30}] {bytes}/{total_bytes} {percent}% ({binary_bytes_per_sec}, ETA {eta})",
            ),
            None => self.display(
                what,
                indicatif::ProgressBar::new_spinner(),
                "{spinner} {msg}: {bytes} ({binary_bytes_per_sec})",
            ),
        }
    }

    fn display(&self, what: &str, bar: indicatif::ProgressBar, template: &str) -> Progress {
        use std::io::IsTerminal;
        let bar = if !self.quiet && std::io::stderr().is_terminal() {
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            Some(bar)
        } else {
            self.step(what);
            None
        };
        Progress { bar, quiet: self.quiet, started: std::time::Instant::now(), bytes: std::cell::Cell::new(0) }
    }
}

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    started: std::time::Instant,
    bytes: std::cell::Cell<u64>,
}

impl Progress {
    pub fn inc(&self, n: u64) {
        self.bytes.set(self.bytes.get() + n);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Ends a wait with a summary line and the time it took.
    pub fn done(&self, summary: &str) {
        let line = format!("    {summary} after {:.1} s", self.started.elapsed().as_secs_f64());
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.quiet => return,
            None => {}
        }
        eprintln!("{line}");
    }

    /// Ends the step with a summary line and its throughput.
    pub fn finish(&self, summary: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.bytes.get() as f64 / secs } else { 0.0 };
        let line = format!("    {summary} in {secs:.1} s ({}/s)", human_bytes(rate as u64));
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.quiet => return,
            None => {}
        }
        eprintln!("{line}");
    }
}

/// How a destructive act is confirmed.
pub enum Confirm<'a> {
    /// A yes/no question; `--yes` answers it for scripts.
    YesNo { yes_flag: bool },
    /// The user must type `phrase` exactly; without a terminal, `given` (from a flag) must equal it.
    Phrase { phrase: &'a str, given: Option<&'a str>, flag: &'a str },
}

/// Shows `text` and asks for confirmation on the terminal. Without a terminal only the flag
/// counts: a script cannot confirm by accident (no stdin, `yes |` piping, a stray `--yes`).
pub fn confirm(text: &str, how: Confirm) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    match how {
        Confirm::YesNo { yes_flag: true } => return Ok(()),
        Confirm::Phrase { phrase, given: Some(g), flag } => {
            if g == phrase {
                return Ok(());
            }
            anyhow::bail!("{flag} must be exactly {phrase:?}; nothing was changed");
        }
        _ => {}
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let (question, expected, hint) = match &how {
        Confirm::YesNo { .. } => {
            ("Proceed? Type yes to continue: ".to_string(), "yes".to_string(), "--yes".to_string())
        }
        Confirm::Phrase { phrase, flag, .. } => {
            (format!("Type {phrase} to continue: "), phrase.to_string(), format!("{flag} {phrase:?}"))
        }
    };
    eprint!("{text}");
    if !interactive {
        anyhow::bail!("no terminal to confirm on; nothing was changed. To run this from a script, pass {hint}");
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim_end_matches(['\n', '\r']) != expected {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// Bytes as a human reads them: 0 B, 1.5 KiB, 20.0 MiB.
/// Text safe on a terminal: control characters (escape, bell…) but newline and tab, and the
/// bidirectional and zero-width characters, escaped (`\x1b`, `\u{202e}`). For every line that
/// may quote bytes of an archive or of another tool (an error's causes, a verification's
/// problems): such bytes never drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Left-aligned text columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humanised() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
    }

    #[test]
    fn printable_text_escapes_what_could_drive_a_terminal() {
        let raw = "size for volumes/x/\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}txt\nnext\tcol é";
        assert_eq!(printable(raw), "size for volumes/x/\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u{202e}txt\nnext\tcol é");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["a", "bb"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "a     bb\nlong  x\n");
    }
}
