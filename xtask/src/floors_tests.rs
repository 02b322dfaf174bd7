//! The layer map of docs/design.md, checked by `cargo test`: every module of the library under
//! `src/` is read, each path it names (`use crate::…`/`use super::…` trees and `crate::x::y`,
//! `super::x`, `self::x` written inline) is resolved to the module it lands in, and the test
//! fails on an import from a lower floor to a higher one or on a circle between modules. The
//! floors are listed once, in [`FLOORS`]; the table in docs/design.md is checked against it.
//!
//! A circle is looked for between siblings at every level of the tree (a folder's files and
//! subfolders, each subfolder taken whole): a module and the folder holding it are one unit
//! (the folder's `mod.rs` declares and re-exports its files, they see their parent's items),
//! so an import between a module and its ancestor never makes a circle. A path through a
//! re-export counts for the module that re-exports it (`crate::archive::Source` lands in
//! `archive`, not `archive::source`). The binary (`main.rs`,
//! `cli.rs`) sits above the library and is not read: a library cannot name its binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The library's top-level modules by floor, lowest first: each imports only from the floors
/// below its own, never from its own floor or above.
const FLOORS: &[&[&str]] = &[
    &["environment", "files", "signals", "ui"],
    &["model", "lock"],
    &["engine"],
    &["archive", "context", "plan"],
    &["store"],
    &["tasks"],
];

/// Imports against the floors that are known and allowed (importer, imported module), each
/// with why. The test fails once one is gone, so the list stays exact.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// Circles that are known and allowed (their modules, each with why). The test fails once
/// one is gone, so the list stays exact.
const KNOWN_CIRCLES: &[(&[&str], &str)] = &[(
    &["engine::docker", "engine::process"],
    "process runs the docker commands (`impl Docker` in run.rs, so that spawning stays in \
         one module; tool.rs quotes with docker's `shell_quote`) while docker's helpers stream \
         through process's pipes and docker re-exports them; undoing it means moving `Docker` \
         and `DockerCmd` below process, a refactor of its own",
)];

/// The top-level files not read: the binary's, and this test's.
const NOT_READ: &[&str] = &["main.rs", "cli.rs", "floors_tests.rs"];

type Module = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

/// The source without comments, string literals and character literals (each left as a
/// space), so only code is read.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            i = skip_block_comment(&c, i);
        } else if c[i] == 'r' && !ident_before && matches!(c.get(i + 1), Some('"' | '#')) {
            i = skip_raw_string(&c, i);
            out.push(' ');
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The index after the (nested) block comment starting at `i`.
fn skip_block_comment(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// The index after the raw string `r#"…"#` starting at `i` (or after `r` if it is none).
fn skip_raw_string(c: &[char], i: usize) -> usize {
    let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
    let open = i + 1 + hashes;
    if c.get(open) != Some(&'"') {
        return i + 1;
    }
    let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
    let rest: String = c[open + 1..].iter().collect();
    match rest.find(&close) {
        Some(at) => open + 1 + rest[..at].chars().count() + close.chars().count(),
        None => c.len(),
    }
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let start = i;
        i += 1;
        let tok = match c[start] {
            x if x.is_alphanumeric() || x == '_' => {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                match c[start].is_ascii_digit() {
                    true => Tok::Other,
                    false => Tok::Ident(c[start..i].iter().collect()),
                }
            }
            ':' if c.get(i) == Some(&':') => {
                i += 1;
                Tok::Sep
            }
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            x if x.is_whitespace() => continue,
            _ => Tok::Other,
        };
        toks.push(tok);
    }
    toks
}

/// Reads the path (or `use` tree) starting at `i` into `out`, each as its segments after
/// `prefix`; returns the index after it.
fn tree(toks: &[Tok], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(w)) => path.push(w.clone()),
            Some(Tok::Star) => {
                out.push(path);
                return i + 1;
            }
            Some(Tok::Open) => {
                i += 1;
                while !matches!(toks.get(i), Some(Tok::Close) | None) {
                    let next = tree(toks, i, &path, out);
                    i = if next == i { i + 1 } else { next };
                    if toks.get(i) == Some(&Tok::Comma) {
                        i += 1;
                    }
                }
                return i + 1;
            }
            _ => break,
        }
        i += 1;
        if toks.get(i) != Some(&Tok::Sep) {
            break;
        }
        i += 1;
    }
    if toks.get(i) == Some(&Tok::Ident("as".into())) {
        i += 2;
    }
    if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    if !path.is_empty() {
        out.push(path);
    }
    i
}

/// `raw` made absolute from the module `cur` (`crate`, `self`, `super` resolved); `None` for
/// a path into another crate or an item in scope.
fn absolute(cur: &[String], raw: &[String]) -> Option<Module> {
    let (mut base, mut rest) = match raw.first()?.as_str() {
        "crate" => (Vec::new(), &raw[1..]),
        "self" => (cur.to_vec(), &raw[1..]),
        "super" => (cur.to_vec(), raw),
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every absolute path the file of `module` names, read from its source; `super` inside an
/// inline module (`mod tests { … }`) is that module's parent.
fn paths_in(module: &[String], src: &str) -> Vec<Module> {
    let toks = tokens(&strip(src));
    let (mut inline, mut depth, mut out, mut i) = (Vec::<(String, usize)>::new(), 0, Vec::new(), 0);
    while i < toks.len() {
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| depth < *d) {
                    inline.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) = (toks.get(i + 1), toks.get(i + 2)) {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(_) if i == 0 || toks[i - 1] != Tok::Sep => {
                let cur: Module = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
                let mut raw = Vec::new();
                i = tree(&toks, i, &[], &mut raw);
                out.extend(raw.iter().filter_map(|p| absolute(&cur, p)));
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every module of the library (its path under the crate root) with its source.
fn library() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, at: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).expect("read src").map(|e| e.expect("read src")) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut module = at.to_vec();
            if entry.path().is_dir() {
                module.push(name);
                walk(&entry.path(), &module, out);
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else { continue };
            if at.is_empty() && NOT_READ.contains(&name.as_str()) {
                continue;
            }
            if stem != "mod" && !(at.is_empty() && stem == "lib") {
                module.push(stem.to_string());
            }
            out.insert(module, std::fs::read_to_string(entry.path()).expect("read a module"));
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

/// Every import between modules: (importer, imported), each the module a path lands in.
fn imports(lib: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let mut out = BTreeSet::new();
    for (module, src) in lib {
        for mut path in paths_in(module, src) {
            while !lib.contains_key(&path) {
                path.pop();
            }
            if path != *module {
                out.insert((module.clone(), path));
            }
        }
    }
    out
}

fn show(m: &[String]) -> String {
    m.join("::")
}

fn floor_of(top: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&top))
}

#[test]
fn every_import_goes_down_a_floor() {
    let lib = library();
    let tops: BTreeSet<&str> = lib.keys().filter_map(|m| m.first().map(String::as_str)).collect();
    let listed: BTreeSet<&str> = FLOORS.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(tops, listed, "every top-level module of the library has one floor in FLOORS");
    let mut upward = BTreeSet::new();
    let mut wrong = Vec::new();
    for (from, to) in imports(&lib) {
        let (Some(a), Some(b)) = (from.first(), to.first()) else { continue };
        if a == b || floor_of(a) > floor_of(b) {
            continue;
        }
        match KNOWN_UPWARD.iter().find(|k| k.0 == show(&from) && k.1 == show(&to)) {
            Some(known) => drop(upward.insert((known.0, known.1))),
            None => wrong.push(format!(
                "{} (floor {}) imports {} (floor {})",
                show(&from),
                floor_of(a).unwrap_or(0) + 1,
                show(&to),
                floor_of(b).unwrap_or(0) + 1
            )),
        }
    }
    let stale: Vec<_> = KNOWN_UPWARD.iter().filter(|k| !upward.contains(&(k.0, k.1))).collect();
    assert!(wrong.is_empty(), "imports from a floor to its own or a higher one:\n{}", wrong.join("\n"));
    assert!(stale.is_empty(), "KNOWN_UPWARD lists imports that are gone, remove them: {stale:?}");
}

/// The importer's and the imported module's children of their closest common ancestor (the
/// siblings a circle is looked for between); `None` when one holds the other.
fn siblings(from: &[String], to: &[String]) -> Option<(Module, Module)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    (common < from.len() && common < to.len()).then(|| (from[..=common].to_vec(), to[..=common].to_vec()))
}

/// Every module `start` reaches in `graph`.
fn reach(graph: &BTreeMap<Module, BTreeSet<Module>>, start: &Module) -> BTreeSet<Module> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.clone()];
    while let Some(m) = todo.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

/// The circles between siblings, each as its modules and the imports that make it.
fn circles(imports: &BTreeSet<(Module, Module)>) -> BTreeMap<BTreeSet<String>, Vec<String>> {
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, Module), Vec<String>> = BTreeMap::new();
    for (from, to) in imports {
        if let Some((a, b)) = siblings(from, to) {
            graph.entry(a.clone()).or_default().insert(b.clone());
            why.entry((a, b)).or_default().push(format!("{} uses {}", show(from), show(to)));
        }
    }
    let reached: BTreeMap<&Module, BTreeSet<Module>> = graph.keys().map(|m| (m, reach(&graph, m))).collect();
    let mut out = BTreeMap::new();
    for (m, from_m) in &reached {
        let circle: BTreeSet<&Module> =
            from_m.iter().filter(|o| reached.get(o).is_some_and(|r| r.contains(*m))).collect();
        if circle.is_empty() {
            continue;
        }
        let names = circle.iter().map(|m| show(m)).collect();
        let mut evidence: Vec<String> = why
            .iter()
            .filter(|((a, b), _)| circle.contains(a) && circle.contains(b))
            .flat_map(|(_, w)| w.clone())
            .collect();
        evidence.sort();
        out.insert(names, evidence);
    }
    out
}

#[test]
fn no_circle_between_modules() {
    let found = circles(&imports(&library()));
    let known: BTreeSet<BTreeSet<String>> =
        KNOWN_CIRCLES.iter().map(|(ms, _)| ms.iter().map(|m| m.to_string()).collect()).collect();
    let new: Vec<String> = found
        .iter()
        .filter(|(ms, _)| !known.contains(*ms))
        .map(|(ms, why)| format!("{ms:?}:\n  {}", why.join("\n  ")))
        .collect();
    let stale: Vec<_> = known.iter().filter(|ms| !found.contains_key(*ms)).collect();
    assert!(new.is_empty(), "circles between modules:\n{}", new.join("\n"));
    assert!(stale.is_empty(), "KNOWN_CIRCLES lists circles that are gone, remove them: {stale:?}");
}

/// The floors of the table in docs/design.md: floor number to the modules its rows name
/// (the backticked names of the second column, `.rs` and `/` dropped); rows not numbered
/// (the binary) are left out.
fn floors_in_design() -> BTreeMap<usize, BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md");
    let doc = std::fs::read_to_string(path).expect("read docs/design.md");
    let section = doc.split("## Modules: the layer map").nth(1).expect("the layer map in docs/design.md");
    let mut out: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for row in section.lines().take_while(|l| !l.starts_with("How a newcomer")).filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(Ok(floor)) = cells.get(1).map(|c| c.parse::<usize>()) else { continue };
        let names = cells[2].split('`').skip(1).step_by(2);
        out.entry(floor)
            .or_default()
            .extend(names.map(|n| n.trim_end_matches(".rs").trim_end_matches('/').to_string()));
    }
    out
}

#[test]
fn the_design_map_lists_the_same_floors() {
    let listed: BTreeMap<usize, BTreeSet<String>> =
        FLOORS.iter().enumerate().map(|(i, f)| (i + 1, f.iter().map(|m| m.to_string()).collect())).collect();
    assert_eq!(floors_in_design(), listed, "docs/design.md's layer map and FLOORS differ");
}

#[test]
fn the_reader_sees_use_trees_inline_paths_and_nested_modules() {
    let src = r##"
        //! [`crate::tasks`] in a comment is no import
        use crate::archive::{self, extract::{Verified as V, Spooled}, *};
        use super::{sibling, other::Thing};
        use std::io::{self, Read};
        const S: &str = "crate::store::local"; const R: &str = r#"crate::context"#; const C: char = '"';
        fn f<'a>(x: &'a str) { crate::engine::docker::run(); pub(crate) fn g() {} }
        mod tests { use super::*; use super::super::near; fn t() { self::inner(); } }
    "##;
    let module: Module = vec!["a".into(), "b".into()];
    let got: BTreeSet<String> = paths_in(&module, src).iter().map(|p| show(p)).collect();
    let want = [
        "",
        "a::b",
        "a::b::tests::inner",
        "a::near",
        "a::other::Thing",
        "a::sibling",
        "archive",
        "archive::extract::Spooled",
        "archive::extract::Verified",
        "engine::docker::run",
    ];
    assert_eq!(got, want.iter().map(|s| s.to_string()).collect());
}
