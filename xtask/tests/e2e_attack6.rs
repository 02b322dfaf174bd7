//! Attacks on `ls`, `cat`, `restore --path --to` through the binary (the reads by the index are
//! attacked in xtask/src/archive/attack6_tests.rs). Each test names the property it checks;
//! those that showed a problem say so in their doc comment.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

/// An archive whose first header names `name` and whose size field is not a number: the tar
/// reader's own error then quotes the name (`… when getting size for NAME`).
fn hostile_header_archive(path: &Path, name: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().size = *b"zzzzzzzzzzz\0";
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

/// Finding 5: an error that quotes an archive's bytes (here the tar reader's, naming the entry)
/// reached the terminal raw: escape sequences in a name drove the terminal (set its title,
/// cleared the screen) from `ls`, `cat`, `verify`. Every error line is now printed escaped.
#[test]
fn an_archive_name_in_an_error_reaches_no_terminal_raw() {
    let stack = TestStack::sample("attack6-esc");
    let dir = TempDir::new("attack6-esc");
    let archive = dir.0.join("full_backup_20260101_000000.tar.gz");
    hostile_header_archive(&archive, b"volumes/x/\x1b]0;pwned\x07\x1b[2Jname");
    let path = archive.to_string_lossy().into_owned();
    for args in [vec!["ls", &path], vec!["cat", &path, "x/name"], vec!["verify", &path]] {
        let (ok, out, err) = stack.xtask(&args);
        assert!(!ok, "{args:?} accepted it:\n{out}\n{err}");
        let all = format!("{out}{err}");
        assert!(!all.contains(['\x1b', '\x07']), "{args:?}: raw control characters reached the terminal: {all:?}");
        assert!(all.contains("\\x1b"), "{args:?}: the name is shown escaped: {all}");
    }
}
