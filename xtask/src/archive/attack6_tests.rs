//! Attacks on the seekable layout and the reads by the index (`ls`, `cat`, `restore --path
//! --to`): crafted footers, frame tables, indexes and archives changed between two reads. Each
//! test either proves a refusal that holds or reproduces a finding (see each test's comment).

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::grammar::Kind;
use super::listing::{self, Gate};
use super::tests::{current, forge_index, forge_with, listed, meta, read_one, seekable_of, temp_dir, write_seekable};
use super::*;

/// `bytes` with a skippable frame of `pad` bytes inserted before its seek footer (readers pass
/// over it: the archive stays valid, only longer).
fn pad_before_footer(bytes: &[u8], pad: usize) -> Vec<u8> {
    let len = frames::Footer::len_from_tail(&bytes[bytes.len() - 32..]).expect("a seek footer");
    let at = bytes.len() - len;
    let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
    skippable.extend_from_slice(&(pad as u32).to_le_bytes());
    skippable.extend(std::iter::repeat_n(0u8, pad));
    [&bytes[..at], &skippable[..], &bytes[at..]].concat()
}

/// A gate that trusts exactly one index digest (as a signature naming it would) and, right
/// after it said so, lets `swap` run: what someone who can write the archive does between the
/// check and the read (a file rewritten in place, a remote object replaced between ranges).
struct TrustsOnce<'a> {
    approved: [u8; 32],
    swap: &'a dyn Fn(),
    asked: Cell<u32>,
}

impl Gate for TrustsOnce<'_> {
    fn indexed(&self, index_sha256: [u8; 32]) -> anyhow::Result<bool> {
        self.asked.set(self.asked.get() + 1);
        if index_sha256 != self.approved {
            anyhow::bail!("untrusted: its index is not the one its signature names");
        }
        (self.swap)();
        Ok(true)
    }

    fn whole(&self, _: &Source) -> anyhow::Result<()> {
        anyhow::bail!("no whole read in this test")
    }
}

fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    f.sync_all().unwrap();
}

/// Finding 1: the index the policy approved (its digest named by the signature) is read a second
/// time for the listing, and that second read was only checked against `SHA256SUMS` (inside the
/// archive): an archive rewritten in place (or a remote object replaced) between the two reads
/// was listed with the other index's lines, under `x-xtask.sign` too.
#[test]
fn an_index_swapped_after_the_policy_approved_it_is_refused() {
    let dir = temp_dir("attack6-swap");
    let (orig, _) = write_seekable(&dir);
    let (a, b) = (dir.join("a.tar.zst"), dir.join("b.tar.zst"));
    forge_index(&orig, &a, true, &|_| {});
    // The same archive, but the index gives the volume's root another mode (same length).
    forge_index(&orig, &b, true, &|lines| {
        let root = lines.iter_mut().find(|l| l.name == b"volumes/vol").unwrap();
        assert_eq!(root.mode, 0o755);
        root.mode = 0o700;
    });
    let a_bytes = pad_before_footer(&std::fs::read(&a).unwrap(), 4096);
    std::fs::write(&a, &a_bytes).unwrap();
    assert!(verify(&a, Rules::default()).ok(), "{:?}", verify(&a, Rules::default()).problems);
    let approved = seekable_of(&a).index_digest().unwrap();
    let b_bytes = std::fs::read(&b).unwrap();
    assert_ne!(seekable_of(&b).index_digest().unwrap(), approved);
    assert!(b_bytes.len() < a_bytes.len());
    let target = dir.join("full_backup_20260101_000000.tar.zst");
    std::fs::write(&target, &a_bytes).unwrap();
    let src = Source::open(&target).unwrap();
    let swap = || rewrite_in_place(&target, &b_bytes);
    let gate = TrustsOnce { approved, swap: &swap, asked: Cell::new(0) };
    let mut modes = Vec::new();
    let res = listing::entries(&src, Rules::default(), &gate, &mut |e| {
        if e.name == b"volumes/vol" {
            modes.push(e.mode);
        }
        Ok(())
    });
    assert_eq!(gate.asked.get(), 1);
    match res {
        Err(e) => assert!(format!("{e:#}").contains("index"), "{e:#}"),
        Ok(_) => assert_eq!(modes, [0o755], "listed an index the policy never approved"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An index line inserted inside another file's bytes, as the archive's own stream never holds it.
fn ghost(lines: &mut Vec<index::Entry>, name: &[u8], kind: Kind, link: Option<&[u8]>) {
    let i = lines.iter().position(|l| l.name.ends_with(b"f003.bin")).unwrap();
    let mut g = lines[i].clone();
    (g.name, g.kind, g.link, g.at) = (name.to_vec(), kind, link.map(<[u8]>::to_vec), g.at + 1024);
    if kind != Kind::File {
        (g.size, g.sha256) = (0, None);
    }
    lines.insert(i + 1, g);
}

/// Finding 2: directories, symbolic links and hard links of a read by the index came from their
/// index lines alone (only regular files were read from the stream): `restore --path --to` (and
/// `cat`'s refusal messages) handed out a symlink the tar stream does not hold, which `verify`
/// refuses ("the index does not list the archive's entries as they are").
#[test]
fn an_entry_only_the_index_holds_is_not_handed_out() {
    let dir = temp_dir("attack6-ghost");
    let (orig, _) = write_seekable(&dir);
    for (name, kind, link) in [
        (&b"volumes/vol/ghost-link"[..], Kind::Symlink, Some(&b"/etc"[..])),
        (b"volumes/vol/ghost-dir", Kind::Dir, None),
        (b"volumes/vol/ghost-hard", Kind::HardLink, Some(&b"volumes/vol/f000.bin"[..])),
    ] {
        let forged = dir.join("full_backup_20260101_000001.tar.zst");
        forge_index(&orig, &forged, true, &|lines| ghost(lines, name, kind, link));
        let p = verify(&forged, Rules::default()).problems.join("\n");
        assert!(p.contains("the index does not list"), "{p}");
        let src = Source::open(&forged).unwrap();
        let mut handed = Vec::new();
        let res = listing::read_entries(&src, Rules::default(), &listing::Open, &|n| n == name, &dir, &mut |e, _| {
            handed.push(e.name.clone());
            Ok(())
        });
        let err = res.expect_err("an entry the stream does not hold was handed out");
        assert!(format!("{err:#}").contains("where the index points"), "{err:#}");
        assert!(handed.is_empty(), "{handed:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Finding 3: a database dump read by the index (`cat ARCHIVE databases/db/app.sql`) was handed
/// out with only its digest checked, while `verify` (and the sequential read) refuses a dump its
/// client would run as more than SQL (`\!` runs a shell in psql): two readings of one archive.
#[test]
fn a_dump_verify_refuses_is_not_handed_out_by_the_index() {
    let dir = temp_dir("attack6-dump");
    let path = dir.join("full_backup_20260101_000000.tar.zst");
    let mut m = current(meta(&["vol"]));
    m.databases = vec![DbInfo {
        service: "db".into(),
        engine: DbEngine::Postgres,
        volume: None,
        server_version: "15".into(),
        user: "app".into(),
        globals_entry: Some("databases/db/globals.sql".into()),
        databases: vec![DbDump {
            name: "app".into(),
            entry: "databases/db/app.sql".into(),
            tables: Default::default(),
            properties: None,
        }],
    }];
    let mut w = ArchiveWriter::create(&path, Compression::default(), 1).unwrap();
    write_metadata(&mut w, &m).unwrap();
    let globals = b"-- roles\n";
    w.add_file("databases/db/globals.sql", globals.len() as u64, &globals[..]).unwrap();
    let evil = b"\\! touch /tmp/xtask-attack6-pwned\nSELECT 1;\n";
    w.add_file("databases/db/app.sql", evil.len() as u64, &evil[..]).unwrap();
    w.add_volume_tar("vol", &super::tests::volume_stream()[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
    let p = verify(&path, Rules::default()).problems.join("\n");
    assert!(p.contains("databases/db/app.sql"), "verify refuses the dump: {p}");
    let src = Source::open(&path).unwrap();
    let mut handed = Vec::new();
    let wanted = |n: &[u8]| n == b"databases/db/app.sql";
    let res = listing::read_entries(&src, Rules::default(), &listing::Open, &wanted, &dir, &mut |_, data| {
        let mut bytes = Vec::new();
        if let Some(d) = data {
            d.read_to_end(&mut bytes)?;
        }
        handed.push(bytes);
        Ok(())
    });
    assert!(res.is_err(), "a dump verify refuses was handed out: {handed:?}");
    assert!(handed.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Finding 4: an index line naming the index itself (or `SHA256SUMS`) passed the line grammar
/// and was listed by `ls` as a content entry.
#[test]
fn an_index_that_lists_itself_is_refused() {
    let dir = temp_dir("attack6-self");
    let (orig, _) = write_seekable(&dir);
    let forged = dir.join("forged.tar.zst");
    forge_index(&orig, &forged, true, &|lines| {
        let last = lines.pop().unwrap();
        lines.push(index::Entry {
            name: INDEX.as_bytes().to_vec(),
            kind: Kind::File,
            size: 10,
            link: None,
            sha256: Some([1; 32]),
            ..last
        });
    });
    let s = seekable_of(&forged);
    let mut names = Vec::new();
    let res = super::tests::list_all(&s, &mut |e| {
        names.push(e.shown());
        Ok(())
    });
    let err = res.expect_err("an index listing itself");
    assert!(format!("{err:#}").contains("which the index never lists"), "{err:#} {names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Holds: a footer claiming a frame table larger than the archive (or than the bound) is refused
/// before anything is allocated for it; one cut short reads as no footer.
#[test]
fn a_footer_claiming_a_huge_frame_table_is_refused_unread() {
    let dir = temp_dir("attack6-footer");
    for count in [u32::MAX, 1000] {
        let mut bytes = vec![0u8; 4096];
        bytes.extend_from_slice(&[0; 24]);
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(b"XSK1");
        let path = dir.join("huge.tar.zst");
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let ranges = seekable::LocalRanges { file: &file, len: bytes.len() as u64 };
        let err = seekable::Seekable::open(ranges, "huge").err().expect("refused");
        assert!(format!("{err:#}").contains("claims"), "{err:#}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The archive at `path` with its footer's frame table edited by `edit` (what a writer of the
/// archive can do: the footer is outside every digest).
fn edit_footer(path: &Path, out: &Path, edit: &dyn Fn(&mut frames::Footer)) {
    let bytes = std::fs::read(path).unwrap();
    let len = frames::Footer::len_from_tail(&bytes[bytes.len() - 32..]).unwrap();
    let mut footer = frames::Footer::parse(&bytes[bytes.len() - len..], bytes.len() as u64).unwrap();
    edit(&mut footer);
    let at = bytes.len() - len;
    std::fs::write(out, [&bytes[..at], &footer.bytes()[..]].concat()).unwrap();
}

/// Holds: a frame table pointing into the middle of a frame, one whose tar offsets are shifted,
/// or one with a single frame for the whole stream: every entry read through it either is the
/// one its index line names, with its digest, or the read fails; nothing panics.
#[test]
fn a_forged_frame_table_reads_the_indexed_bytes_or_fails() {
    let dir = temp_dir("attack6-frames");
    let (path, files) = write_seekable(&dir);
    let good = listed(&seekable_of(&path));
    let forged = dir.join("forged.tar.zst");
    let edits: [&dyn Fn(&mut frames::Footer); 4] =
        [&|f| f.frames[2].file += 1, &|f| f.frames[2].tar += 512, &|f| f.frames.truncate(1), &|f| {
            let last = *f.frames.last().unwrap();
            f.frames.push(frames::FrameAt { tar: last.tar + 1, file: last.file + 3 });
        }];
    for (i, edit) in edits.iter().enumerate() {
        edit_footer(&path, &forged, edit);
        let len = std::fs::metadata(&forged).unwrap().len();
        let file: &'static File = Box::leak(Box::new(File::open(&forged).unwrap()));
        let opened = seekable::Seekable::open(seekable::LocalRanges { file, len }, "forged");
        let Ok(Some(s)) = opened else { continue };
        let mut all = Vec::new();
        if super::tests::list_all(&s, &mut |e| {
            all.push(e);
            Ok(())
        })
        .is_err()
        {
            continue;
        }
        assert_eq!(all, good, "edit {i}: the index is the archive's");
        for (name, data) in &files {
            let e = all.iter().find(|e| e.shown() == *name).unwrap();
            if let Ok(bytes) = read_one(&s, e) {
                assert_eq!(bytes, *data, "edit {i}: {name}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Holds: a frame that decompresses far beyond its place (a zstd bomb hidden where the frame
/// table says an entry starts) is read only as far as the entry's header and content, and an
/// entry whose header lies there is refused.
#[test]
fn an_entry_whose_frame_holds_other_bytes_is_refused() {
    let dir = temp_dir("attack6-bomb");
    let (path, _) = write_seekable(&dir);
    let s = seekable_of(&path);
    let good = listed(&s);
    // The last file before the index: its frame is the last one, so the table stays in order.
    let target = good.iter().rfind(|e| e.kind == Kind::File).unwrap().clone();
    // A frame of 64 MiB of zeros (a few hundred bytes compressed) hidden in a skippable frame
    // right before the footer, and the frame table pointing at it for the target's frame.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let bytes = std::fs::read(&path).unwrap();
    let len = frames::Footer::len_from_tail(&bytes[bytes.len() - 32..]).unwrap();
    let mut footer = frames::Footer::parse(&bytes[bytes.len() - len..], bytes.len() as u64).unwrap();
    let at = bytes.len() - len;
    let mut hidden = 0x184D_2A51u32.to_le_bytes().to_vec();
    hidden.extend_from_slice(&(bomb.len() as u32).to_le_bytes());
    let bomb_at = (at + hidden.len()) as u64;
    hidden.extend_from_slice(&bomb);
    let k = footer.frames.partition_point(|f| f.tar <= target.at) - 1;
    assert_eq!(k, footer.frames.len() - 1);
    footer.frames[k].file = bomb_at;
    let forged = dir.join("forged.tar.zst");
    std::fs::write(&forged, [&bytes[..at], &hidden[..], &footer.bytes()[..]].concat()).unwrap();
    let opened = seekable::Seekable::open(
        seekable::LocalRanges {
            file: Box::leak(Box::new(File::open(&forged).unwrap())),
            len: std::fs::metadata(&forged).unwrap().len(),
        },
        "forged",
    );
    let s = opened.unwrap().expect("a footer that parses");
    let started = std::time::Instant::now();
    assert!(read_one(&s, &target).is_err(), "read another frame's bytes as the entry");
    assert!(s.index_digest().is_err(), "the index is not where the forged table points");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Holds: a PAX header where the index puts an entry (its size or name could differ from the
/// ustar header's) is refused by the read by the index as by the stream's grammar.
#[test]
fn a_pax_header_at_an_indexed_offset_is_refused() {
    let dir = temp_dir("attack6-pax");
    let (orig, _) = write_seekable(&dir);
    // Rebuild with a PAX header before f004.bin's header (its index line still at that header).
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(File::open(&orig).unwrap()).unwrap().read_to_end(&mut plain).unwrap();
    let s = seekable_of(&orig);
    let e = listed(&s).into_iter().find(|e| e.name.ends_with(b"f004.bin")).unwrap();
    let at = e.at as usize;
    let mut pax = tar::Builder::new(Vec::new());
    pax.append_pax_extensions([("size", &b"0"[..])]).unwrap();
    let pax = pax.into_inner().unwrap();
    let pax = &pax[..pax.len() - 1024]; // without the end-of-archive blocks
    let tar = [&plain[..at], pax, &plain[at..]].concat();
    let mut w = frames::FrameWriter::new(Vec::new(), 3, 1).unwrap();
    w.write_all(&tar).unwrap();
    let f = s.footer();
    let shift = pax.len() as u64;
    let forged = dir.join("forged.tar.zst");
    std::fs::write(&forged, w.finish(f.index_at + shift, f.sums_at + shift).unwrap()).unwrap();
    let s = seekable_of(&forged);
    assert!(read_one(&s, &e).is_err());
    assert!(!verify(&forged, Rules::default()).ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Finding 6: a local archive whose whole digest a check pinned (`--latest` under `x-xtask.sign`
/// or `encrypt`: the signature judged the whole file's SHA-256, and browse then reads it with no
/// further gate) was read by its index through `pread`, outside the pin: a file rewritten in
/// place after the check was listed (and its files handed out) as the forged index said.
#[test]
fn a_pinned_archive_is_never_read_around_its_pin() {
    let dir = temp_dir("attack6-pin");
    let (orig, _) = write_seekable(&dir);
    let (a, b) = (dir.join("a.tar.zst"), dir.join("b.tar.zst"));
    forge_index(&orig, &a, true, &|_| {});
    forge_index(&orig, &b, true, &|lines| {
        lines.iter_mut().find(|l| l.name == b"volumes/vol").unwrap().mode = 0o700;
    });
    let target = dir.join("full_backup_20260101_000000.tar.zst");
    std::fs::write(&target, std::fs::read(&a).unwrap()).unwrap();
    let src = Source::open(&target).unwrap();
    src.stored_digest().unwrap(); // what the policy judged (the signature's sha256)
    rewrite_in_place(&target, &std::fs::read(&b).unwrap());
    let mut modes = Vec::new();
    let res = listing::entries(&src, Rules::default(), &listing::Open, &mut |e| {
        if e.name == b"volumes/vol" {
            modes.push(e.mode);
        }
        Ok(())
    });
    match res {
        Err(e) => assert!(format!("{e:#}").contains("its check read before"), "{e:#}"),
        Ok(_) => panic!("listed a file rewritten after its check: modes {modes:?}"),
    }
    // Unchanged, it is read whole (as checked), and says why.
    std::fs::write(&target, std::fs::read(&a).unwrap()).unwrap();
    let src = Source::open(&target).unwrap();
    src.stored_digest().unwrap();
    let listed = listing::entries(&src, Rules::default(), &listing::Open, &mut |_| Ok(())).unwrap();
    match listed.access {
        listing::Access::Sequential { why } => assert!(why.contains("whole digest was checked"), "{why}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Finding 7: a read by the index checked each file against its index line only, never against
/// its line in `SHA256SUMS` (which `verify` and `sha256sum -c` judge): `cat` handed out a file
/// whose `SHA256SUMS` line says other bytes, and `ls` listed files `SHA256SUMS` does not know.
#[test]
fn an_index_that_disagrees_with_sha256sums_is_refused() {
    let dir = temp_dir("attack6-sums");
    let (orig, files) = write_seekable(&dir);
    let forged = dir.join("forged.tar.zst");
    let edits: [SumsEditFn; 2] = [
        // f001.bin's line in SHA256SUMS says other bytes.
        &|sums| sums.iter_mut().find(|(n, _)| n.ends_with(b"f001.bin")).unwrap().1 = [7; 32],
        // SHA256SUMS lists a file the index does not.
        &|sums| sums.insert(2, (b"volumes/vol/unlisted".to_vec(), [7; 32])),
    ];
    for (i, sums_edit) in edits.into_iter().enumerate() {
        forge_with(&orig, &forged, Some(sums_edit), &|_| {});
        assert!(!verify(&forged, Rules::default()).ok(), "edit {i}");
        let s = seekable_of(&forged);
        let mut all = Vec::new();
        let res = super::tests::list_all(&s, &mut |e| {
            all.push(e);
            Ok(())
        });
        if res.is_ok() {
            let e = all.iter().find(|e| e.name.ends_with(b"f001.bin")).unwrap();
            let bytes = read_one(&s, e);
            panic!("edit {i}: listed, and f001.bin read ({}), against SHA256SUMS", bytes.is_ok());
        }
        assert!(format!("{:#}", res.unwrap_err()).contains("SHA256SUMS"), "edit {i}");
    }
    let _ = files;
    std::fs::remove_dir_all(&dir).unwrap();
}

type SumsEditFn = &'static dyn Fn(&mut Vec<(Vec<u8>, [u8; 32])>);

/// A local archive's ranges, counting the bytes read through them.
struct Counting<'f> {
    inner: seekable::LocalRanges<'f>,
    read: std::rc::Rc<Cell<u64>>,
}

struct CountingReader<'a> {
    inner: Box<dyn Read + 'a>,
    read: std::rc::Rc<Cell<u64>>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl seekable::Ranges for Counting<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn range(&self, offset: u64, len: u64) -> anyhow::Result<Box<dyn Read + '_>> {
        Ok(Box::new(CountingReader { inner: self.inner.range(offset, len)?, read: self.read.clone() }))
    }
}

/// Finding 8: a read by the index reads each entry from the start of its frame (up
/// to 2 MiB of tar stream), so `restore --path --to` of a directory of N small entries (or `cat`
/// reaching them one by one) decompresses about N x 1 MiB: for an archive of many small files
/// (or a hostile one: 4,096 headers fit in a frame) far more than reading it whole once.
#[test]
fn reading_every_entry_of_a_frame_reads_the_frame_about_once() {
    let dir = temp_dir("attack6-cost");
    let path = dir.join("full_backup_20260101_000000.tar.zst");
    let mut w = ArchiveWriter::create(&path, Compression::default(), 1).unwrap();
    write_metadata(&mut w, &current(meta(&["vol"]))).unwrap();
    let (stream, _) = super::tests::many_files(1500, 1000);
    w.add_volume_tar("vol", &stream[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
    let file = File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    let read = std::rc::Rc::new(Cell::new(0u64));
    let ranges = Counting { inner: seekable::LocalRanges { file: &file, len }, read: read.clone() };
    let s = seekable::Seekable::open(ranges, "cost").unwrap().unwrap();
    let mut all = Vec::new();
    s.listing(s.index_digest().unwrap(), Rules::default(), &mut |e| {
        all.push(e);
        Ok(())
    })
    .unwrap();
    let listing_cost = read.get();
    let mut reader = s.entries();
    for e in &all {
        reader.read(e, &mut std::io::sink()).unwrap();
    }
    let cost = read.get() - listing_cost;
    assert!(cost < 4 * len, "reading {} entries read {cost} bytes of an archive of {len}", all.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
