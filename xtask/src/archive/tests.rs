//! Writing archives from synthetic volume streams and reading them back; tampered archives
//! (truncated, flipped byte, missing checksum entry, `../`, absolute path, symlink escape,
//! newer format) must each fail verification with a message naming the problem.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::source::DigestChecked;
use super::*;

pub(super) fn meta(volumes: &[&str]) -> Metadata {
    let pairs: Vec<(&str, &str)> = volumes.iter().map(|v| (*v, *v)).collect();
    let mut m = Metadata::sample("p", &pairs);
    // The raw archives these tests build by hand have no index: the grammar of version 3.
    m.format_version = 3;
    m.compose_files = vec!["compose.yaml".into()];
    m.model_sha256 = "0".repeat(64);
    m
}

/// `m` at this release's format version (with the index).
pub(super) fn current(mut m: Metadata) -> Metadata {
    m.format_version = FORMAT_VERSION;
    m
}

/// A tar like `tar -c -C /v .` would print, with the odd cases.
pub(super) fn volume_stream() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |path: &str, b: &mut tar::Builder<Vec<u8>>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    };
    dir("./", &mut b);
    dir("./empty dir/", &mut b);
    dir("./ünï code/", &mut b);
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_600_000_000);
    h.set_size(5);
    b.append_data(&mut h, "./ünï code/file one", &b"hello"[..]).unwrap();
    dir(&format!("./{}/", "a".repeat(120)), &mut b);
    let long = format!("./{}/{}", "a".repeat(120), "b".repeat(50));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(2);
    b.append_data(&mut h, "./new\nline", &b"nl"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "./link", "ünï code/file one").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "./hard", "./ünï code/file one").unwrap();
    b.into_inner().unwrap()
}

pub(super) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A good archive written by the tool with `codec` (at its default level, on 2 threads).
fn write_good(dir: &Path, codec: Codec) -> PathBuf {
    let path = dir.join(format!("full_backup_20260101_000000{}", codec.extension()));
    let mut w = ArchiveWriter::create(&path, Compression::new(codec), 2).unwrap();
    write_metadata(&mut w, &current(meta(&["vol"]))).unwrap();
    let mut seen = 0;
    let stats = w
        .add_volume_tar("vol", &volume_stream()[..], &mut |n| {
            seen += n;
            Ok(())
        })
        .unwrap();
    assert_eq!((stats.files, stats.bytes, seen), (3, 10, 10));
    w.commit().unwrap();
    path
}

/// The archive's tar stream as the standard decoder of its codec reads it (what `zstd -d` or
/// `gzip -d` would).
fn standard_decoder(path: &Path, codec: Codec) -> Box<dyn Read> {
    let file = File::open(path).unwrap();
    match codec {
        Codec::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(file).unwrap()),
    }
}

#[test]
fn written_archive_verifies_and_keeps_entry_details() {
    for codec in [Codec::Zstd, Codec::Gzip] {
        written_archive_keeps_entry_details(codec);
    }
}

fn written_archive_keeps_entry_details(codec: Codec) {
    let dir = temp_dir(&format!("good-{codec}"));
    let path = write_good(&dir, codec);
    let head = std::fs::read(&path).unwrap()[..4].to_vec();
    assert_eq!(Codec::of_magic(&head), Some(codec), "{head:02x?}");
    let report = verify(&path, Rules::default());
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.files, 4, "metadata + 3 volume files");
    // Entry by entry: prefix, owner, mode, mtime, link targets, odd names.
    let mut a = tar::Archive::new(standard_decoder(&path, codec));
    let mut names = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if name == "volumes/vol/ünï code/file one" {
            let h = e.header();
            assert_eq!(
                (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0o640, 1234, 5678, 1_600_000_000)
            );
        }
        if name == "volumes/vol/hard" {
            assert_eq!(e.link_name().unwrap().unwrap().to_str().unwrap(), "volumes/vol/ünï code/file one");
        }
        if name == "volumes/vol/link" {
            assert_eq!(e.link_name().unwrap().unwrap().to_str().unwrap(), "ünï code/file one");
        }
        names.push(name);
    }
    assert_eq!(names.first().map(String::as_str), Some(METADATA));
    assert_eq!(names.last().map(String::as_str), Some(CHECKSUMS));
    assert!(names.iter().any(|n| n == "volumes/vol/new\nline"));
    assert!(names.iter().any(|n| n.ends_with(&"b".repeat(50))));
    assert!(names.iter().any(|n| n.trim_end_matches('/') == "volumes/vol/empty dir"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropped_writer_leaves_no_file() {
    let dir = temp_dir("drop");
    let path = dir.join("full_backup_x.tar.zst");
    {
        let mut w = ArchiveWriter::create(&path, Compression::default(), 1).unwrap();
        write_metadata(&mut w, &meta(&[])).unwrap();
        assert!(w.temp_path().exists());
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "temporary file removed, no final file");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn problems(path: &Path) -> String {
    let r = verify(path, Rules::default());
    assert!(!r.ok(), "verification of a bad archive passed");
    r.problems.join("\n")
}

#[test]
fn truncated_and_flipped_archives_fail() {
    truncated_and_flipped_fail(Codec::Zstd, "the zstd stream is damaged, cut short or followed by other bytes");
    truncated_and_flipped_fail(Codec::Gzip, "10 bytes follow the gzip stream");
}

fn truncated_and_flipped_fail(codec: Codec, appended_says: &str) {
    let dir = temp_dir(&format!("tamper-{codec}"));
    let path = write_good(&dir, codec);
    let bytes = std::fs::read(&path).unwrap();
    let ext = codec.extension();
    let truncated = dir.join(format!("truncated{ext}"));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(problems(&truncated).contains("truncated or corrupt"));
    let flipped = dir.join(format!("flipped{ext}"));
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&flipped, &b).unwrap();
    let p = problems(&flipped);
    assert!(p.contains("corrupt") || p.contains("checksum"), "{p}");
    let appended = dir.join(format!("appended{ext}"));
    std::fs::write(&appended, [bytes.as_slice(), b"more bytes"].concat()).unwrap();
    let p = problems(&appended);
    assert!(p.contains(appended_says), "{p}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_archive_whose_name_and_bytes_disagree_is_refused_by_name() {
    let dir = temp_dir("renamed");
    let zst = write_good(&dir, Codec::Zstd);
    let renamed = dir.join("full_backup_20260101_000000.tar.gz");
    std::fs::rename(&zst, &renamed).unwrap();
    let p = problems(&renamed);
    assert!(
        p.contains(&format!(
            "{}: named as a gzip archive (.tar.gz) but its bytes are a zstd stream",
            renamed.display()
        )),
        "{p}"
    );
    // Under a name that says no codec (a copy), the bytes decide.
    let copy = dir.join("my-copy");
    std::fs::rename(&renamed, &copy).unwrap();
    assert!(verify(&copy, Rules::default()).ok());
    // Neither magic: named, with the bytes it starts with.
    let junk = dir.join("full_backup_20260102_000000.tar.zst");
    std::fs::write(&junk, b"PK\x03\x04 a zip file").unwrap();
    assert!(problems(&junk).contains("starts with the bytes 50 4b 03 04, neither a zstd"));
    // The writer refuses a name that says another codec than the one it would write.
    let e = ArchiveWriter::create(&dir.join("x.tar.gz"), Compression::default(), 1).err().unwrap();
    assert!(format!("{e:#}").contains("its name says gzip, but it would be written with zstd"), "{e:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A raw entry: name, type, content, link target.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a [u8]>);

/// Builds an archive entry by entry with raw names (so `..` and absolute paths can be written).
fn raw_archive(path: &Path, meta_json: &[u8], entries: &[RawEntry], sums: bool) {
    let mut b =
        tar::Builder::new(flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast()));
    fn add<W: Write>(b: &mut tar::Builder<W>, name: &[u8], kind: tar::EntryType, data: &[u8], link: Option<&[u8]>) {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let mut digests = vec![(METADATA.as_bytes().to_vec(), Sha256::digest(meta_json).into())];
    add(&mut b, METADATA.as_bytes(), tar::EntryType::Regular, meta_json, None);
    for (name, kind, data, link) in entries {
        add(&mut b, name, *kind, data, *link);
        if *kind == tar::EntryType::Regular {
            digests.push((name.to_vec(), Sha256::digest(data).into()));
        }
    }
    if sums {
        let s = format_sums(&digests);
        add(&mut b, CHECKSUMS.as_bytes(), tar::EntryType::Regular, &s, None);
    }
    b.into_inner().unwrap().finish().unwrap();
}

#[test]
fn unsafe_or_incomplete_archives_fail_with_the_entry_named() {
    let dir = temp_dir("unsafe");
    let m = serde_json::to_vec(&meta(&["vol"])).unwrap();
    let f = tar::EntryType::Regular;
    let root: RawEntry = (b"volumes/vol/", tar::EntryType::Directory, b"", None);
    let cases: Vec<(&str, Vec<RawEntry>, bool, &str)> = vec![
        ("dotdot", vec![root, (b"volumes/vol/../../etc/passwd", f, b"x", None)], true, "'..'"),
        ("absolute", vec![root, (b"/etc/passwd", f, b"x", None)], true, "absolute"),
        (
            "symlink",
            vec![
                root,
                (b"volumes/vol/esc", tar::EntryType::Symlink, b"", Some(b"/etc")),
                (b"volumes/vol/esc/passwd", f, b"x", None),
            ],
            true,
            "symlink",
        ),
        ("dot", vec![root, (b"volumes/vol/./evil/x", f, b"x", None)], true, "'.' path component"),
        ("slashes", vec![root, (b"volumes/vol//evil/x", f, b"x", None)], true, "empty path component"),
        (
            "hardlink",
            vec![root, (b"volumes/vol/h", tar::EntryType::Link, b"", Some(b"/etc/shadow"))],
            true,
            "hard link",
        ),
        ("unlisted", vec![root, (b"volumes/other/x", f, b"x", None)], true, "not listed"),
        ("nosums", vec![root, (b"volumes/vol/x", f, b"x", None)], false, "SHA256SUMS is missing"),
        ("dirdata", vec![(b"volumes/vol/", tar::EntryType::Directory, b"hidden tar", None)], true, "carries 10 bytes"),
        ("device", vec![root, (b"volumes/vol/sda", tar::EntryType::Block, b"", None)], true, "--allow-special-files"),
        (
            "duplicate",
            vec![root, (b"volumes/vol/x", f, b"1", None), (b"volumes/vol/x", f, b"2", None)],
            true,
            "appears twice",
        ),
        ("noroot", vec![(b"volumes/vol/x", f, b"x", None)], true, "not an earlier directory"),
        ("stray", vec![root, (b"postgres/app.sql", f, b"x", None)], true, "database dump"),
    ];
    for (name, entries, sums, needle) in cases {
        let path = dir.join(format!("{name}.tar.gz"));
        raw_archive(&path, &m, &entries, sums);
        let p = problems(&path);
        assert!(p.contains(needle), "{name}: {p}");
    }
    // An altered checksum line.
    let path = dir.join("altered.tar.gz");
    raw_archive(&path, &m, &[root, (b"volumes/vol/x", f, b"x", None)], true);
    let good = verify(&path, Rules::default());
    assert!(good.ok(), "{:?}", good.problems);
    let bytes = std::fs::read(&path).unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut plain).unwrap();
    let digest = hex(&Sha256::digest(b"x"));
    let at = plain.windows(64).position(|w| w == digest.as_bytes()).expect("checksum line present");
    plain[at] = if plain[at] == b'0' { b'1' } else { b'0' };
    // Re-wrap the tar with the altered SHA256SUMS (its tar header checksum covers only the header).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    assert!(problems(&path).contains("\"volumes/vol/x\": checksum mismatch"));
    let mut newer = meta(&["vol"]);
    newer.format_version = FORMAT_VERSION + 1;
    let path = dir.join("newer.tar.gz");
    raw_archive(&path, &serde_json::to_vec(&newer).unwrap(), &[], true);
    assert!(problems(&path).contains("newer than this tool"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sums_round_trip_with_escapes() {
    let entries = vec![(b"plain".to_vec(), [1u8; 32]), (b"new\nline\\x".to_vec(), [2u8; 32])];
    let text = format_sums(&entries);
    assert!(text.starts_with(hex(&[1u8; 32]).as_bytes()));
    assert!(String::from_utf8_lossy(&text).contains("\\0202"), "escaped line starts with a backslash");
    let back = parse_sums(&text).unwrap();
    assert_eq!(back[&b"new\nline\\x".to_vec()], hex(&[2u8; 32]));
    assert!(parse_sums(b"garbage\n").is_err());
}

#[test]
fn entries_after_the_checksums_pax_headers_and_huge_metadata_are_refused() {
    let dir = temp_dir("grammar");
    let m = serde_json::to_vec(&meta(&["vol"])).unwrap();
    let root: RawEntry = (b"volumes/vol/", tar::EntryType::Directory, b"", None);
    // A file after SHA256SUMS.
    let path = dir.join("after.tar.gz");
    raw_archive(&path, &m, &[root], true);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(File::open(&path).unwrap()).read_to_end(&mut plain).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(&plain[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append_data(&mut h, e.path().unwrap(), &data[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "volumes/vol/late", &b"x"[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b.into_inner().unwrap()).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    assert!(problems(&path).contains("after SHA256SUMS"));
    // A PAX header (whose size could differ from the ustar one).
    let path = dir.join("pax.tar.gz");
    let mut b =
        tar::Builder::new(flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast()));
    let mut h = tar::Header::new_ustar();
    h.set_size(m.len() as u64);
    h.set_mode(0o600);
    b.append_pax_extensions([("size", &b"0"[..])]).unwrap();
    b.append_data(&mut h, METADATA, &m[..]).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    assert!(problems(&path).contains("PAX"));
    // metadata.json claiming 1 GiB is refused before it is read.
    let path = dir.join("huge.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
    let mut h = tar::Header::new_gnu();
    h.set_path(METADATA).unwrap();
    h.set_size(1 << 30);
    h.set_mode(0o600);
    h.set_cksum();
    gz.write_all(h.as_bytes()).unwrap();
    gz.finish().unwrap();
    assert!(problems(&path).contains("at most 16 MiB"));
    // Names the metadata may not hold.
    let mut bad = meta(&["vol"]);
    bad.databases = vec![DbInfo {
        service: "db".into(),
        engine: DbEngine::Postgres,
        volume: None,
        server_version: "15".into(),
        user: "app".into(),
        globals_entry: Some("databases/db/globals.sql".into()),
        databases: vec![DbDump {
            name: "host=evil dbname=x".into(),
            entry: "databases/db/x.sql".into(),
            tables: BTreeMap::new(),
            properties: None,
        }],
    }];
    let path = dir.join("dbname.tar.gz");
    raw_archive(&path, &serde_json::to_vec(&bad).unwrap(), &[root], true);
    assert!(problems(&path).contains("database name \"host=evil dbname=x\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_refused_as_an_archive() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("full_backup_20260101_000000.tar.gz");
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
    assert!(problems(&fifo).contains("not a regular file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_download_checked_against_its_digest_fails_on_a_mismatch_and_repeats_a_good_end() {
    let data = b"archive bytes".to_vec();
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let mut good = DigestChecked {
        inner: HashingReader::new(&data[..]),
        expected: digest,
        name: "r:x".into(),
        recorded_by: "its push recorded",
        checked: false,
    };
    let mut out = Vec::new();
    good.read_to_end(&mut out).unwrap();
    assert_eq!(out, data);
    assert_eq!(good.read(&mut [0u8; 8]).unwrap(), 0, "reads after the end only repeat it");
    let mut cut = DigestChecked {
        inner: HashingReader::new(&data[..5]),
        expected: digest,
        name: "r:x".into(),
        recorded_by: "its push recorded",
        checked: false,
    };
    let err = cut.read_to_end(&mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("r:x") && err.contains("cut short"), "{err}");
}

#[test]
fn a_local_archive_rewritten_in_place_after_its_check_fails_every_later_read() {
    let dir = std::env::temp_dir().join(format!("xtask-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.tar.gz");
    std::fs::write(&path, b"the checked bytes").unwrap();
    let src = Source::open(&path).unwrap();
    let (size, digest) = src.stored_digest().unwrap().unwrap();
    assert_eq!((size, digest), (17, Sha256::digest(b"the checked bytes").into()));
    // Read again before any change: the same bytes pass.
    let mut same = Vec::new();
    src.raw_reader().read_to_end(&mut same).unwrap();
    assert_eq!(same, b"the checked bytes");
    // The same inode rewritten in place (its owner can; a check by name cannot see it).
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(b"THE FORGED BYTES!").unwrap();
    let copy = src.duplicate().unwrap();
    for reader in [src.raw_reader(), copy.raw_reader()] {
        let err = { reader }.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("its check read before") && err.contains("changed"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_spooled_file_has_no_name_and_reads_back_what_was_written() {
    let dir = std::env::temp_dir().join(format!("xtask-unnamed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spooled = extract::Spooled::of_text(&dir, "SELECT 1;\n").unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing named is left to swap");
    // Two readers, each from the start, neither disturbing the other.
    let (mut a, mut b) = (spooled.reader(), spooled.reader());
    let mut first = [0u8; 6];
    a.read_exact(&mut first).unwrap();
    assert_eq!(spooled.read_to_string().unwrap(), "SELECT 1;\n");
    let mut rest = String::new();
    b.read_to_string(&mut rest).unwrap();
    assert_eq!((&first, rest.as_str()), (b"SELECT", "SELECT 1;\n"));
    assert_eq!(spooled.len().unwrap(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A volume stream of `n` files of pseudo-random bytes (`size` each): several zstd frames.
pub(super) fn many_files(n: usize, size: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "./", io::empty()).unwrap();
    let mut x: u32 = 1;
    let mut files = Vec::new();
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 24) as u8
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000 + i as u64);
        h.set_size(size as u64);
        let name = format!("f{i:03}.bin");
        b.append_data(&mut h, format!("./{name}"), &data[..]).unwrap();
        files.push((format!("volumes/vol/{name}"), data));
    }
    (b.into_inner().unwrap(), files)
}

pub(super) fn seekable_of(path: &Path) -> seekable::Seekable<seekable::LocalRanges<'static>> {
    let file: &'static File = Box::leak(Box::new(File::open(path).unwrap()));
    let len = file.metadata().unwrap().len();
    seekable::Seekable::open(seekable::LocalRanges { file, len }, "test").unwrap().expect("a seek footer")
}

/// The listing of `s` by its index as proven against `SHA256SUMS` (what a read with the policy
/// [`listing::Open`] does).
pub(super) fn list_all(
    s: &seekable::Seekable<seekable::LocalRanges<'static>>,
    visit: &mut dyn FnMut(index::Entry) -> anyhow::Result<()>,
) -> anyhow::Result<Metadata> {
    s.listing(s.index_digest()?, Rules::default(), visit)
}

pub(super) fn listed(s: &seekable::Seekable<seekable::LocalRanges<'static>>) -> Vec<index::Entry> {
    let mut all = Vec::new();
    list_all(s, &mut |e| {
        all.push(e);
        Ok(())
    })
    .unwrap();
    all
}

pub(super) fn read_one(
    s: &seekable::Seekable<seekable::LocalRanges<'static>>,
    e: &index::Entry,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    s.read_entry(e, &mut out).map(|_| out)
}

/// A seekable archive of `many_files(24, 200 KiB)` beside the odd names: several frames.
pub(super) fn write_seekable(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let path = dir.join("full_backup_20260101_000000.tar.zst");
    let mut w = ArchiveWriter::create(&path, Compression::default(), 2).unwrap();
    write_metadata(&mut w, &current(meta(&["vol", "odd"]))).unwrap();
    let (stream, files) = many_files(24, 200 << 10);
    w.add_volume_tar("vol", &stream[..], &mut |_| Ok(())).unwrap();
    w.add_volume_tar("odd", &volume_stream()[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
    (path, files)
}

#[test]
fn a_seekable_archive_lists_and_reads_each_entry_from_its_index() {
    let dir = temp_dir("seekable");
    let (path, files) = write_seekable(&dir);
    let report = verify(&path, Rules::default());
    assert!(report.ok(), "{:?}", report.problems);
    let s = seekable_of(&path);
    assert!(s.footer().frames.len() >= 4, "{:?}", s.footer().frames.len());
    let m = list_all(&s, &mut |_| Ok(())).unwrap();
    assert_eq!(m.volumes.len(), 2);
    let all = listed(&s);
    let names: Vec<String> = all.iter().map(|e| e.shown()).collect();
    assert_eq!(names[0], "volumes/vol");
    assert!(!names.iter().any(|n| n == INDEX || n == CHECKSUMS || n == METADATA), "{names:?}");
    assert_eq!(all.len() as u64, report.entries - 3, "every entry but the metadata, the index and the sums");
    for (name, data) in &files {
        let e = all.iter().find(|e| e.shown() == *name).unwrap();
        assert_eq!(read_one(&s, e).unwrap(), *data, "{name}");
    }
    let odd = all.iter().find(|e| e.shown() == "volumes/odd/ünï code/file one").unwrap();
    assert_eq!(
        (read_one(&s, odd).unwrap(), odd.mode, odd.uid, odd.mtime),
        (b"hello".to_vec(), 0o640, 1234, 1_600_000_000)
    );
    let long = all.iter().find(|e| e.name.len() > 170 && e.kind == grammar::Kind::File).unwrap();
    assert_eq!(read_one(&s, long).unwrap(), b"abc");
    let link = all.iter().find(|e| e.shown() == "volumes/odd/hard").unwrap();
    assert_eq!(link.link.as_deref(), Some(&b"volumes/odd/\xc3\xbcn\xc3\xaf code/file one"[..]));
    // A gzip archive has no footer: read sequentially.
    let gz = write_good(&dir, Codec::Gzip);
    let len = std::fs::metadata(&gz).unwrap().len();
    let file = File::open(&gz).unwrap();
    assert!(seekable::Seekable::open(seekable::LocalRanges { file: &file, len }, "gz").unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The archive at `path` rewritten seekable with `edit` applied to its index lines (the sums
/// line of the index fixed to match when `fix_sums`): what someone who can write the archive
/// (but cannot sign) could make.
pub(super) fn forge_index(path: &Path, out: &Path, fix_sums: bool, edit: &dyn Fn(&mut Vec<index::Entry>)) {
    forge_with(path, out, fix_sums.then_some(&|_: &mut Vec<(Vec<u8>, [u8; 32])>| {}), edit)
}

/// Sums as [`forge_with`] hands them to its edit: (name, digest) in the archive's order.
pub(super) type SumsEdit<'a> = &'a dyn Fn(&mut Vec<(Vec<u8>, [u8; 32])>);

/// [`forge_index`], with `SHA256SUMS` rewritten to the data (then `sums_edit` applied) when
/// `sums_edit` is given, kept as it was otherwise.
pub(super) fn forge_with(path: &Path, out: &Path, sums_edit: Option<SumsEdit>, edit: &dyn Fn(&mut Vec<index::Entry>)) {
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(File::open(path).unwrap()).unwrap().read_to_end(&mut plain).unwrap();
    let mut parts: Vec<(tar::Header, Vec<u8>, Vec<u8>)> = Vec::new();
    for e in tar::Archive::new(&plain[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        parts.push((e.header().clone(), e.path_bytes().into_owned(), data));
    }
    let n = parts.len();
    let mut lines: Vec<index::Entry> = parts[n - 2]
        .2
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| index::parse_line(l).unwrap())
        .collect();
    edit(&mut lines);
    parts[n - 2].2 = lines.iter().flat_map(index::to_line).collect();
    if let Some(sums_edit) = sums_edit {
        let mut sums: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
        for (_, name, data) in &parts[..n - 1] {
            if lines.iter().any(|l| l.name == *name && l.kind == grammar::Kind::File) || name == INDEX.as_bytes() {
                sums.push((name.clone(), Sha256::digest(data).into()));
            }
        }
        sums_edit(&mut sums);
        parts[n - 1].2 = format_sums(&sums);
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut starts = Vec::new();
    for (h, name, data) in &mut parts {
        starts.push(b.get_ref().len() as u64);
        h.set_size(data.len() as u64);
        let path = std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
        if matches!(h.entry_type(), tar::EntryType::Symlink | tar::EntryType::Link) {
            let target = h.link_name().unwrap().unwrap().into_owned();
            b.append_link(h, &path, target).unwrap();
        } else {
            b.append_data(h, &path, &data[..]).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    let mut w = frames::FrameWriter::new(Vec::new(), 3, 1).unwrap();
    let mut from = 0usize;
    for at in starts.iter().skip(1).map(|&a| a as usize).chain([tar.len()]) {
        w.boundary().unwrap();
        w.write_all(&tar[from..at]).unwrap();
        from = at;
    }
    std::fs::write(out, w.finish(starts[n - 2], starts[n - 1]).unwrap()).unwrap();
}

#[test]
fn a_forged_or_altered_index_is_refused() {
    let dir = temp_dir("forged-index");
    let (path, _) = write_seekable(&dir);
    let forged = dir.join("forged.tar.zst");
    // An index whose entry for f001.bin points at f002.bin's bytes and the other way round, with
    // their digests (sums fixed to match).
    forge_index(&path, &forged, true, &|lines| {
        let i = lines.iter().position(|l| l.name.ends_with(b"f001.bin")).unwrap();
        let (a, b) = (lines[i].clone(), lines[i + 1].clone());
        (lines[i].name, lines[i].sha256) = (b.name, b.sha256);
        (lines[i + 1].name, lines[i + 1].sha256) = (a.name, a.sha256);
    });
    let p = verify(&forged, Rules::default()).problems.join("\n");
    assert!(p.contains("the index does not list the archive's entries"), "{p}");
    let s = seekable_of(&forged);
    let aimed = listed(&s).into_iter().find(|e| e.name.ends_with(b"f001.bin")).unwrap();
    let err = format!("{:#}", read_one(&s, &aimed).unwrap_err());
    assert!(err.contains("holds another entry where the index points"), "{err}");
    // An index that names an entry the stream does not hold (SHA256SUMS listing it too).
    let ghost_sums = |sums: &mut Vec<(Vec<u8>, [u8; 32])>| {
        let f003 = sums.iter().find(|(n, _)| n.ends_with(b"f003.bin")).unwrap().1;
        sums.push((b"volumes/vol/ghost".to_vec(), f003));
    };
    forge_with(&path, &forged, Some(&ghost_sums), &|lines| {
        let i = lines.iter().position(|l| l.name.ends_with(b"f003.bin")).unwrap();
        let mut ghost = lines[i].clone();
        ghost.name = b"volumes/vol/ghost".to_vec();
        ghost.at += 1024; // inside f003.bin's bytes
        lines.insert(i + 1, ghost);
    });
    assert!(verify(&forged, Rules::default()).problems.join("\n").contains("the index does not list"));
    let s = seekable_of(&forged);
    let ghost = listed(&s).into_iter().find(|e| e.name.ends_with(b"ghost")).unwrap();
    assert!(read_one(&s, &ghost).is_err());
    // An index pointing past itself.
    forge_index(&path, &forged, true, &|lines| lines.last_mut().unwrap().at = u64::MAX / 2);
    let s = seekable_of(&forged);
    let err = format!("{:#}", list_all(&s, &mut |_| Ok(())).unwrap_err());
    assert!(err.contains("out of order or past the index"), "{err}");
    // An index listing what the grammar refuses (a parent that is no earlier directory, a hard
    // link out of its volume), as the stream's entry would be refused.
    for (name, kind, link) in [
        (&b"volumes/vol/nodir/x"[..], grammar::Kind::File, None),
        (b"volumes/vol/out", grammar::Kind::HardLink, Some(b"volumes/odd/hard".to_vec())),
    ] {
        forge_index(&path, &forged, true, &|lines| {
            let i = lines.iter().position(|l| l.name.ends_with(b"f003.bin")).unwrap();
            let mut odd = lines[i].clone();
            (odd.name, odd.kind, odd.link, odd.at) = (name.to_vec(), kind, link.clone(), odd.at + 1024);
            if kind != grammar::Kind::File {
                (odd.size, odd.sha256) = (0, None);
            }
            lines.insert(i + 1, odd);
        });
        let err = format!("{:#}", list_all(&seekable_of(&forged), &mut |_| Ok(())).unwrap_err());
        assert!(err.contains("not an earlier directory") || err.contains("not a regular file earlier"), "{err}");
    }
    // An index altered without its SHA256SUMS line.
    forge_index(&path, &forged, false, &|lines| lines[1].mode = 0o777);
    let s = seekable_of(&forged);
    let err = format!("{:#}", list_all(&s, &mut |_| Ok(())).unwrap_err());
    assert!(err.contains("does not match its line in SHA256SUMS"), "{err}");
    // A truncated archive: its footer gone, it is no longer seekable; cut inside, refused.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&forged, &bytes[..bytes.len() / 2]).unwrap();
    let file = File::open(&forged).unwrap();
    let cut = seekable::Seekable::open(seekable::LocalRanges { file: &file, len: (bytes.len() / 2) as u64 }, "cut");
    assert!(cut.unwrap().is_none());
    assert!(!verify(&forged, Rules::default()).ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ls`/`cat`'s sequential reader: every content entry with its digest (zstd and gzip), the
/// bytes of the wanted file only, and nothing at all from an archive whose digest mismatches.
#[test]
fn the_sequential_listing_reads_every_entry_and_hands_out_only_checked_bytes() {
    use super::listing::{self, Access};
    for codec in [Codec::Zstd, Codec::Gzip] {
        let dir = temp_dir(&format!("listing-{codec}"));
        let src = Source::open(&write_good(&dir, codec)).unwrap();
        let mut seen = Vec::new();
        let listed = listing::entries(&src, Rules::default(), &listing::Open, &mut |e| {
            seen.push(e.clone());
            Ok(())
        })
        .unwrap();
        // A gzip archive is read sequentially, and says why; a zstd one (format version 4) by
        // its index.
        match (&listed.access, codec) {
            (Access::Sequential { why }, Codec::Gzip) => assert!(why.contains("gzip"), "{why}"),
            (Access::Indexed, Codec::Zstd) => {}
            (access, codec) => panic!("{codec} read {access:?}"),
        }
        let names: Vec<String> = seen.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
        assert_eq!(names.first().map(String::as_str), Some("volumes/vol"), "no metadata.json: {names:?}");
        assert!(!names.iter().any(|n| n == CHECKSUMS));
        let one = seen.iter().find(|e| e.name == "volumes/vol/ünï code/file one".as_bytes()).unwrap();
        assert_eq!(one.sha256, Some(Sha256::digest(b"hello").into()));
        assert_eq!((one.mode, one.uid, one.mtime), (0o640, 1234, 1_600_000_000));
        let mut got = Vec::new();
        let wanted = |n: &[u8]| n.starts_with("volumes/vol/ünï code".as_bytes());
        listing::read_entries(&src, Rules::default(), &listing::Open, &wanted, &dir, &mut |e, data| {
            let mut bytes = Vec::new();
            if let Some(d) = data {
                d.read_to_end(&mut bytes)?;
            }
            got.push((String::from_utf8_lossy(&e.name).into_owned(), bytes));
            Ok(())
        })
        .unwrap();
        let expected = [
            ("volumes/vol/ünï code".to_string(), Vec::new()),
            ("volumes/vol/ünï code/file one".into(), b"hello".to_vec()),
        ];
        assert_eq!(got, expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A file whose bytes are not what SHA256SUMS says: nothing handed out, the entry named.
    let dir = temp_dir("listing-bad");
    let path = dir.join("full_backup_20260101_000000.tar.gz");
    let m = serde_json::to_vec(&meta(&["vol"])).unwrap();
    let mut b =
        tar::Builder::new(flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast()));
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(METADATA, tar::EntryType::Regular, &m);
    add("volumes/vol/", tar::EntryType::Directory, b"");
    add("volumes/vol/a", tar::EntryType::Regular, b"evil");
    let sums = format_sums(&[
        (METADATA.as_bytes().to_vec(), Sha256::digest(&m).into()),
        (b"volumes/vol/a".to_vec(), Sha256::digest(b"good").into()),
    ]);
    add(CHECKSUMS, tar::EntryType::Regular, &sums);
    b.into_inner().unwrap().finish().unwrap();
    let src = Source::open(&path).unwrap();
    let mut handed = 0;
    let err = listing::read_entries(&src, Rules::default(), &listing::Open, &|_| true, &dir, &mut |_, _| {
        handed += 1;
        Ok(())
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("\"volumes/vol/a\": checksum mismatch"), "{err:#}");
    assert_eq!(handed, 0, "nothing of a failed archive is handed out");
    std::fs::remove_dir_all(&dir).unwrap();
}
