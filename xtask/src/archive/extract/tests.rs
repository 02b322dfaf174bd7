//! Extraction from a verified archive: prefixes stripped, headers rebuilt, and an archive
//! changed in place after verification stopped before the changed entry is completed.

use super::*;
use crate::archive::{write_metadata, ArchiveWriter};

fn meta() -> Metadata {
    Metadata::sample("p", &[("v", "v"), ("other", "other")])
}

/// A volume stream as `tar -c -C ROOT .` prints it.
fn stream(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_uid(77);
        match link {
            Some(l) => b.append_link(&mut h, name, l).unwrap(),
            None => b.append_data(&mut h, name, data).unwrap(),
        }
    };
    add("./", tar::EntryType::Directory, None, b"");
    add("./f", tar::EntryType::Regular, None, content);
    add("./h", tar::EntryType::Link, Some("./f"), b"");
    add("./s", tar::EntryType::Symlink, Some("f"), b"");
    b.into_inner().unwrap()
}

fn write(path: &Path, content: &[u8]) {
    let mut w = ArchiveWriter::create(path, "zstd:1".parse().unwrap(), 1).unwrap();
    write_metadata(&mut w, &meta()).unwrap();
    w.add_volume_tar("v", &stream(content)[..], &mut |_| Ok(())).unwrap();
    w.add_volume_tar("other", &stream(b"not mine")[..], &mut |_| Ok(())).unwrap();
    w.commit().unwrap();
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-extract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn volume_entries_strip_the_prefix_and_rebuild_headers() {
    let dir = temp("strip");
    let path = dir.join("a.tar.zst");
    write(&path, b"data");
    let v = Verified::check(Source::open(&path).unwrap(), Rules::default()).unwrap();
    let mut out = Vec::new();
    let written = volume_entries(&v, "v", &mut out).unwrap();
    assert_eq!(written.files, 2, "the file and its hard link");
    let times = [(b"h".to_vec(), 0), (b"s".to_vec(), 0), (Vec::new(), 0)];
    assert_eq!(written.times, times, "the hard link and the symlink, then the root (set last)");
    let mut a = tar::Archive::new(&out[..]);
    let got: Vec<(String, Option<String>, u64)> = a
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            (e.path().unwrap().to_string_lossy().into_owned(), link, e.header().uid().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("./".to_string(), None, 77),
            ("f".to_string(), None, 77),
            ("h".to_string(), Some("./f".to_string()), 77),
            ("s".to_string(), Some("f".to_string()), 77),
            ("./".to_string(), None, 77),
        ],
        "the directories once more at the end, for their mtimes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_archive_changed_after_verification_is_not_extracted() {
    let dir = temp("changed");
    let path = dir.join("a.tar.zst");
    write(&path, b"the genuine content");
    let v = Verified::check(Source::open(&path).unwrap(), Rules::default()).unwrap();
    // Rewritten in place (same inode, same descriptor) with other content.
    let other = dir.join("b.tar.zst");
    write(&other, b"forged content here");
    std::fs::write(&path, std::fs::read(&other).unwrap()).unwrap();
    let mut out = Vec::new();
    let err = volume_entries(&v, "v", &mut out).unwrap_err();
    assert!(format!("{err:#}").contains("changed since the archive was verified"), "{err:#}");
    assert!(!out.windows(b"forged".len()).any(|w| w == b"forged"), "the changed file's last chunk was held back");
    // Replacing the path (rename) changes nothing: reads come from the verified descriptor.
    write(&other, b"forged content here");
    let v = Verified::check(Source::open(&other).unwrap(), Rules::default()).unwrap();
    std::fs::rename(&path, &other).unwrap();
    let mut out = Vec::new();
    volume_entries(&v, "v", &mut out).unwrap();
    assert!(out.windows(6).any(|w| w == b"forged"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn set_uid_and_set_gid_bits_never_reach_a_bind_but_stay_in_a_volume() {
    let entry = |name: &str, kind: Kind, mode: u32| Checked {
        name: name.as_bytes().to_vec(),
        place: Place::Volume { volume: "x".into(), rel: Vec::new() },
        kind,
        size: 0,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        link: None,
    };
    let modes = |target: &str| {
        let mut s = VolumeStream::new(Vec::new(), target, b"");
        s.append(&entry("sh", Kind::File, 0o4755), b"sh", Some(&mut io::empty())).unwrap();
        s.append(&entry("g", Kind::File, 0o2711), b"g", Some(&mut io::empty())).unwrap();
        s.append(&entry("shared", Kind::Dir, 0o2775), b"shared", None).unwrap();
        let dropped = s.setid_dropped.1;
        let (out, _) = s.finish().unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut got: Vec<(String, u32)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().mode().unwrap())
            })
            .collect();
        got.dedup();
        (got, dropped)
    };
    let in_bind = [("sh".to_string(), 0o755), ("g".to_string(), 0o711), ("shared".to_string(), 0o2775)];
    assert_eq!(modes("binds/b1"), (in_bind.to_vec(), 2), "files lose the bits, a directory keeps its set-gid");
    let in_volume = [("sh".to_string(), 0o4755), ("g".to_string(), 0o2711), ("shared".to_string(), 0o2775)];
    assert_eq!(modes("data"), (in_volume.to_vec(), 0), "a volume is restored as it was");
}
