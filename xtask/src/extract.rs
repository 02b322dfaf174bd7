//! Loading an archive's content into the engine as it streams out of the archive: a volume's
//! entries into a volume (a helper container runs `tar -x` on its stdin), a database dump into
//! psql. Used by `verify --deep` (into throwaway targets); only ever fed archives that passed
//! `verify`, whose entries are known to stay inside their volume.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::archive;
use crate::docker::{Docker, DockerCmd};

fn open(path: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<io::BufReader<std::fs::File>>>> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::with_capacity(1 << 20, f))))
}

/// Writes a tar of volume `name`'s entries with the `volumes/<name>/` prefix removed (hard link
/// targets too), ready for `tar -x -C ROOT`. Returns the number of regular file names (hard
/// links included, as `find -type f` counts them).
pub fn volume_entries(path: &Path, name: &str, out: &mut dyn Write) -> Result<u64> {
    let prefix = archive::volume_prefix(name);
    let mut a = open(path)?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut files = 0;
    for e in a.entries()? {
        let mut e = e.context("read the archive")?;
        let raw = e.path_bytes().into_owned();
        let Some(rel) = raw
            .strip_prefix(prefix.as_bytes())
            .or_else(|| (raw == prefix.trim_end_matches('/').as_bytes()).then_some(&b""[..]))
        else {
            continue;
        };
        let mut dest = b"./".to_vec();
        dest.extend_from_slice(rel);
        let dest = std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&dest));
        let mut h = e.header().clone();
        match h.entry_type() {
            tar::EntryType::Link => {
                let target = e.link_name_bytes().context("hard link without target")?.into_owned();
                let Some(t) = target.strip_prefix(prefix.as_bytes()) else {
                    bail!("hard link {} points outside its volume", dest.display());
                };
                let mut t2 = b"./".to_vec();
                t2.extend_from_slice(t);
                b.append_link(&mut h, &dest, <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&t2))?;
                files += 1;
            }
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().context("symlink without target")?.into_owned();
                b.append_link(&mut h, &dest, <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&target))?;
            }
            kind => {
                if kind.is_file() {
                    files += 1;
                }
                b.append_data(&mut h, &dest, &mut e)?;
            }
        }
    }
    b.finish()?;
    Ok(files)
}

/// Counts the bytes passing through to `progress`.
struct Counting<'a, W> {
    inner: W,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fills volume `target` (which the caller made empty) with volume `name`'s entries of the
/// archive, keeping owners (numerically), modes, mtimes and links; `progress` gets the bytes.
pub fn fill_volume(
    docker: &Docker,
    path: &Path,
    name: &str,
    target: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let child = Counting { inner: docker.volume_untar(target)?, progress };
    // Large writes: the tar's 512-byte headers must not each become a syscall.
    let mut out = io::BufWriter::with_capacity(1 << 20, child);
    let written = volume_entries(path, name, &mut out).and_then(|files| Ok((files, out.flush()?)));
    let child = match out.into_inner() {
        Ok(c) => c.inner,
        Err(e) => e.into_inner().into_parts().0.inner,
    };
    match written {
        Ok((files, ())) => {
            child.finish()?;
            Ok(files)
        }
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) => {
            Err(child.failed())
        }
        Err(e) => Err(e),
    }
}

/// Streams the archive entry `entry` into the stdin of `cmd` (a psql).
pub fn pipe_entry(docker: &Docker, path: &Path, entry: &str, cmd: &DockerCmd) -> Result<()> {
    let mut a = open(path)?;
    for e in a.entries()? {
        let mut e = e.context("read the archive")?;
        if e.path_bytes().as_ref() != entry.as_bytes() {
            continue;
        }
        let mut child = docker.pipe_into(cmd)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = e.read(&mut buf).context("read the archive")?;
            if n == 0 {
                break;
            }
            if child.write_all(&buf[..n]).is_err() {
                return Err(child.failed());
            }
        }
        return child.finish();
    }
    bail!("{}: no entry {entry}", path.display())
}

/// Writes `text` into the stdin of `cmd`.
pub fn pipe_text(docker: &Docker, text: &str, cmd: &DockerCmd) -> Result<()> {
    let mut child = docker.pipe_into(cmd)?;
    if child.write_all(text.as_bytes()).is_err() {
        return Err(child.failed());
    }
    child.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_entries_strip_the_prefix_and_repoint_hard_links() {
        let dir = std::env::temp_dir().join(format!("xtask-extract-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.tar.gz");
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        ));
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
        add("metadata.json", tar::EntryType::Regular, None, b"{}");
        add("volumes/v/", tar::EntryType::Directory, None, b"");
        add("volumes/v/f", tar::EntryType::Regular, None, b"data");
        add("volumes/v/h", tar::EntryType::Link, Some("volumes/v/f"), b"");
        add("volumes/v/s", tar::EntryType::Symlink, Some("f"), b"");
        add("volumes/other/x", tar::EntryType::Regular, None, b"not mine");
        b.into_inner().unwrap().finish().unwrap();
        let mut out = Vec::new();
        assert_eq!(volume_entries(&path, "v", &mut out).unwrap(), 2, "the file and its hard link");
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
                ("s".to_string(), Some("f".to_string()), 77)
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
