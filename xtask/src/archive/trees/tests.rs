//! The merge of a record and its trees, read back by the one grammar: sound trees make an
//! archive that verifies with every file summed; names that leave a tree fail the merge, and a
//! device node is refused by the grammar.

use std::io::{self, Read, Write};

use super::*;
use crate::archive::{verify, ArchiveWriter, Codec, Compression, Rules};

fn meta() -> Metadata {
    let mut m = Metadata::sample("p", &[("vol", "vol"), ("media", "media")]);
    m.compose_files = vec!["compose.yaml".into()];
    m.model_sha256 = "0".repeat(64);
    m.volumes[1].tree = Some("/var/lib/docker/volumes/media/_data".into());
    m
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(1234);
    h.set_mtime(1_600_000_000);
    h
}

/// A tree as `tar -c -C ROOT .` prints it: a directory, a file, a hard link, a symbolic link out
/// of the tree (a value, fine), and `extra` entries.
fn tree(extra: &dyn Fn(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), "./", io::empty()).unwrap();
    b.append_data(&mut header(tar::EntryType::Directory, 0o700, 0), "./odd name\n/", io::empty()).unwrap();
    b.append_data(&mut header(tar::EntryType::Regular, 0o640, 5), "./odd name\n/photo", &b"hello"[..]).unwrap();
    b.append_link(&mut header(tar::EntryType::Link, 0o640, 0), "./again", "./odd name\n/photo").unwrap();
    b.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), "./out", "../../../etc/passwd").unwrap();
    extra(&mut b);
    b.into_inner().unwrap()
}

/// The record: what the backup streams into restic (metadata, the stream-form volume, sums).
fn record(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("record.tar.gz");
    let mut w = ArchiveWriter::create(&path, Compression::new(Codec::Gzip), 1).unwrap();
    crate::archive::write_metadata(&mut w, &meta()).unwrap();
    w.add_volume_tar("vol", &tree(&|_| {})[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

struct Fixed(Vec<u8>, bool);

impl Trees for Fixed {
    fn prepare(&mut self, meta: &Metadata, _: &dyn Fn() -> Result<()>) -> Result<()> {
        self.1 = meta.volumes.iter().any(|v| v.tree.is_some());
        Ok(())
    }
    fn tar(&mut self, volume: &VolumeInfo) -> Result<Box<dyn Read + Send>> {
        assert_eq!(volume.name, "media");
        Ok(Box::new(io::Cursor::new(self.0.clone())))
    }
}

/// The merged archive written as a gzip file and verified by the grammar.
fn merged_report(dir: &std::path::Path, trees: Vec<u8>) -> Result<crate::archive::Report> {
    merged_report_of(dir, trees, None)
}

fn merged_report_of(
    dir: &std::path::Path,
    trees: Vec<u8>,
    only: Option<&BTreeSet<String>>,
) -> Result<crate::archive::Report> {
    let mut merged = Vec::new();
    let mut source = Fixed(trees, false);
    let record = record(dir);
    let names: Vec<Vec<u8>> =
        tar::Archive::new(&record[..]).entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect();
    assert!(names.contains(&crate::archive::INDEX.as_bytes().to_vec()), "the record carries an index");
    merge(&record[..], &mut source, &mut merged, (&|| Ok(()), only))?;
    assert_eq!(source.1, only.is_none_or(|o| o.contains("media")), "the trees were prepared from the metadata");
    let path = dir.join("full_backup_20260101_000000.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    gz.write_all(&merged).unwrap();
    gz.finish().unwrap();
    Ok(verify(&path, Rules::default()))
}

#[test]
fn a_record_and_its_trees_read_as_one_archive_that_verifies() {
    let dir = crate::files::private_temp_dir("xtask-trees-test").unwrap();
    let report = merged_report(&dir.path, tree(&|_| {})).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.volume_bytes.get("media"), Some(&5), "the tree's file is in the archive");
    assert_eq!(report.volume_bytes.get("vol"), Some(&5), "and the stream form's");
}

#[test]
fn a_forged_tree_is_refused() {
    let dir = crate::files::private_temp_dir("xtask-trees-test").unwrap();
    let escape = tree(&|b| {
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        h.set_path("x").unwrap();
        h.as_old_mut().name[..5].copy_from_slice(b"../x\0");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    });
    let e = merged_report(&dir.path, escape).unwrap_err();
    assert!(format!("{e:#}").contains(".."), "{e:#}");
    let hard = tree(&|b| {
        b.append_link(&mut header(tar::EntryType::Link, 0o644, 0), "./h", "/etc/shadow").unwrap();
    });
    let e = merged_report(&dir.path, hard).unwrap_err();
    assert!(format!("{e:#}").contains("absolute"), "{e:#}");
    let device = tree(&|b| {
        let mut h = header(tar::EntryType::Char, 0o644, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./null", io::empty()).unwrap();
    });
    let report = merged_report(&dir.path, device).unwrap();
    assert!(!report.ok(), "a device node is refused by the grammar");
}

#[test]
fn a_tree_path_names_one_place() {
    assert_eq!(tree_path("/var/lib/docker/volumes/a/_data").unwrap(), "var/lib/docker/volumes/a/_data");
    for bad in ["relative", "/", "/a/../b", "/a//b", "/a/./b", "/a/"] {
        assert!(tree_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_failed_merge_is_a_read_error_never_a_clean_end() {
    let mut r = spawn_merge(Box::new(&b"not a tar"[..]), Box::new(Fixed(Vec::new(), false)), None);
    let mut out = Vec::new();
    assert!(r.read_to_end(&mut out).is_err());
}

/// A read of some volumes (a restore `--only`): the trees of the others are not asked for, and
/// the merged archive is a whole one of the rest (its metadata without them), that verifies.
#[test]
fn a_merge_of_some_volumes_leaves_the_other_trees_out_of_the_metadata_too() {
    let dir = crate::files::private_temp_dir("xtask-trees-test").unwrap();
    let only = BTreeSet::from(["vol".to_string()]);
    let report = merged_report_of(&dir.path, tree(&|_| {}), Some(&only)).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.volume_bytes.get("media"), None, "the tree not asked for is left out");
    assert_eq!(report.volume_bytes.get("vol"), Some(&5), "the stream form's stays");
    let viewed = leave_out(meta(), Some(&only));
    assert_eq!(viewed.volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["vol"]);
    assert_eq!(leave_out(viewed.clone(), Some(&only)), viewed, "the same when applied again");
    let all = BTreeSet::from(["vol".to_string(), "media".to_string()]);
    assert!(merged_report_of(&dir.path, tree(&|_| {}), Some(&all)).unwrap().ok());
}

/// attack7: the sizes in an untrusted record's metadata can add up past u64: the room check
/// must refuse (no panic, no wrap-around to a small number that fits any disk).
#[test]
fn sizes_that_overflow_need_more_room_than_any_disk() {
    let mut m = meta();
    m.volumes[0].tree = Some("/a".into());
    m.volumes[0].size_bytes = Some(u64::MAX);
    m.volumes[1].size_bytes = Some(2);
    assert_eq!(room_needed(&m), u64::MAX);
}

/// attack7 (held): a record (unsigned: anyone with the password) whose metadata names a volume
/// both as a tree and with entries of its own in the record: with the tree read too, the same
/// names twice; with the tree left out (`--only` of another volume), entries of a volume the
/// view does not list. The grammar refuses both.
#[test]
fn a_volume_both_in_the_record_and_a_tree_is_refused() {
    struct Any(Vec<u8>);
    impl Trees for Any {
        fn prepare(&mut self, _: &Metadata, _: &dyn Fn() -> Result<()>) -> Result<()> {
            Ok(())
        }
        fn tar(&mut self, _: &VolumeInfo) -> Result<Box<dyn Read + Send>> {
            Ok(Box::new(io::Cursor::new(self.0.clone())))
        }
    }
    let dir = crate::files::private_temp_dir("xtask-trees-test").unwrap();
    let path = dir.path.join("record.tar.gz");
    let mut m = meta();
    m.volumes[0].tree = Some("/var/lib/docker/volumes/vol/_data".into());
    let mut w = ArchiveWriter::create(&path, Compression::new(Codec::Gzip), 1).unwrap();
    crate::archive::write_metadata(&mut w, &m).unwrap();
    w.add_volume_tar("vol", &tree(&|_| {})[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
    let mut record = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_end(&mut record).unwrap();
    for only in [None, Some(BTreeSet::from(["media".to_string()]))] {
        let mut merged = Vec::new();
        let merging = merge(&record[..], &mut Any(tree(&|_| {})), &mut merged, (&|| Ok(()), only.as_ref()));
        if merging.is_err() {
            continue;
        }
        let out = dir.path.join("full_backup_20260101_000000.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&out).unwrap(), flate2::Compression::fast());
        gz.write_all(&merged).unwrap();
        gz.finish().unwrap();
        let report = verify(&out, Rules::default());
        assert!(!report.ok(), "only {only:?}: refused");
        eprintln!("only {only:?}: {:?}", report.problems);
    }
}
