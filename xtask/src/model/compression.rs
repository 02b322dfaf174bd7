//! How an archive's tar stream is compressed, as a typed value: zstd (the default) or gzip.
//! It is told by the file name (`….tar.zst`, `….tar.gz`, either with `.age`) and by the
//! stream's first bytes (zstd's magic `28 B5 2F FD`, gzip's `1F 8B 08`); a reader checks that
//! both agree ([`Codec::detect`]). [`Compression`] is what a backup is asked for
//! (`--compression zstd:3`, `x-xtask.compression`). Pure: the writing is `archive::compression`.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// An encrypted archive's name ends so (`engine::crypt::SUFFIX`; archive/compression.rs tests they agree).
pub const AGE_SUFFIX: &str = ".age";

/// The compression of an archive's tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Gzip,
    Zstd,
}

/// The zstd frame's magic number, as stored (little-endian 0xFD2FB528).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// gzip's magic and its only method, deflate.
pub const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// How many first bytes tell the codec.
pub const MAGIC_LEN: usize = 4;

impl Codec {
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The end of an archive's name before `.age`: `.tar.gz` or `.tar.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => ".tar.gz",
            Codec::Zstd => ".tar.zst",
        }
    }

    /// The levels a backup may ask for.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Codec::Gzip => 1..=9,
            Codec::Zstd => 1..=19,
        }
    }

    /// The level when none is given: gzip's usual 6; zstd's 3 (docs/benchmarks.md).
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Gzip => 6,
            Codec::Zstd => 3,
        }
    }

    /// What the name of an archive (a path, `REMOTE:NAME`) says: None when it ends in neither
    /// `.tar.gz` nor `.tar.zst` (with or without `.age`).
    pub fn of_name(name: &str) -> Option<Codec> {
        let clear = name.strip_suffix(AGE_SUFFIX).unwrap_or(name);
        [Codec::Zstd, Codec::Gzip].into_iter().find(|c| clear.ends_with(c.extension()))
    }

    /// What the first bytes of a (decrypted) archive say: None for neither magic.
    pub fn of_magic(head: &[u8]) -> Option<Codec> {
        if head.starts_with(&ZSTD_MAGIC) {
            Some(Codec::Zstd)
        } else if head.starts_with(&GZIP_MAGIC) {
            Some(Codec::Gzip)
        } else {
            None
        }
    }

    /// The codec of the archive `shown` whose stream starts with `head`: its magic, which must
    /// be the one its name says (when its name says one).
    pub fn detect(shown: &str, head: &[u8]) -> Result<Codec> {
        let hex: String = head.iter().map(|b| format!("{b:02x} ")).collect();
        let Some(found) = Codec::of_magic(head) else {
            bail!(
                "{shown}: starts with the bytes {}, neither a zstd (28 b5 2f fd) nor a gzip (1f 8b 08) stream: \
                 not an archive of this tool, or damaged",
                hex.trim_end()
            );
        };
        match Codec::of_name(shown) {
            Some(named) if named != found => bail!(
                "{shown}: named as a {} archive ({}) but its bytes are a {} stream: renamed or damaged; \
                 refused (rename it to {} if it is yours)",
                named.as_str(),
                named.extension(),
                found.as_str(),
                found.extension()
            ),
            _ => Ok(found),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backup's compression: a codec and its level (`zstd`, `zstd:3`, `gzip:9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub codec: Codec,
    pub level: i32,
}

impl Compression {
    pub fn new(codec: Codec) -> Compression {
        Compression { codec, level: codec.default_level() }
    }

    /// The same codec at `level`, checked against its range.
    pub fn at(self, level: i32) -> Result<Compression> {
        let range = self.codec.levels();
        if !range.contains(&level) {
            bail!("{} level {level} is out of range: use {} to {}", self.codec, range.start(), range.end());
        }
        Ok(Compression { level, ..self })
    }
}

impl Compression {
    /// A backup's compression: `asked` (`--compression`), else `configured`
    /// (`x-xtask.compression`), else zstd; `level` (`--level`) sets the level of the one chosen.
    pub fn choose(
        asked: Option<Compression>,
        level: Option<i32>,
        configured: Option<Compression>,
    ) -> Result<Compression> {
        let chosen = asked.or(configured).unwrap_or_default();
        match level {
            Some(level) => chosen.at(level).context("--level"),
            None => Ok(chosen),
        }
    }
}

impl Default for Compression {
    fn default() -> Compression {
        Compression::new(Codec::Zstd)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.codec, self.level)
    }
}

impl FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Compression> {
        let (name, level) = match spec.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (spec, None),
        };
        let codec = match name {
            "zstd" => Codec::Zstd,
            "gzip" => Codec::Gzip,
            other => bail!("unknown compression {other:?}: use zstd or gzip, optionally with a level (zstd:3, gzip:9)"),
        };
        let plain = Compression::new(codec);
        match level {
            None => Ok(plain),
            Some(l) => {
                let level = l.parse::<i32>().with_context(|| format!("compression {spec:?}: {l:?} is not a level"))?;
                plain.at(level).with_context(|| format!("compression {spec:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_says_the_codec_with_or_without_age() {
        assert_eq!(Codec::of_name("full_backup_20261207_010000.tar.zst"), Some(Codec::Zstd));
        assert_eq!(Codec::of_name("full_backup_20261207_010000.tar.zst.age"), Some(Codec::Zstd));
        assert_eq!(Codec::of_name("r:db_backup_20261207_010000_x.tar.gz"), Some(Codec::Gzip));
        assert_eq!(Codec::of_name("/b/full_backup_20261207_010000.tar.gz.age"), Some(Codec::Gzip));
        assert_eq!(Codec::of_name("full_backup_20261207_010000.tar"), None);
        assert_eq!(Codec::of_name("x.zst"), None);
        assert_eq!(Codec::of_name("x.tar.zst.sha256"), None);
        assert_eq!(Codec::of_name("x.tar.age"), None);
    }

    #[test]
    fn the_magic_says_the_codec() {
        assert_eq!(Codec::of_magic(&[0x28, 0xb5, 0x2f, 0xfd, 0x24]), Some(Codec::Zstd));
        assert_eq!(Codec::of_magic(&[0x1f, 0x8b, 0x08, 0x00]), Some(Codec::Gzip));
        assert_eq!(Codec::of_magic(&[0x1f, 0x8b, 0x07, 0x00]), None, "gzip's magic with another method");
        assert_eq!(Codec::of_magic(&[0x28, 0xb5, 0x2f]), None, "cut short");
        assert_eq!(Codec::of_magic(b""), None);
        assert_eq!(Codec::of_magic(b"age-encryption.org/v1"), None);
    }

    #[test]
    fn name_and_magic_must_agree() {
        let zstd = [0x28, 0xb5, 0x2f, 0xfd];
        let gzip = [0x1f, 0x8b, 0x08, 0x00];
        assert_eq!(Codec::detect("a.tar.zst", &zstd).unwrap(), Codec::Zstd);
        assert_eq!(Codec::detect("a.tar.gz.age", &gzip).unwrap(), Codec::Gzip);
        // A name that says nothing (a copy under another name): the bytes decide.
        assert_eq!(Codec::detect("/tmp/my-copy", &zstd).unwrap(), Codec::Zstd);
        let e = Codec::detect("backups/full_backup_20261207_010000.tar.gz", &zstd).unwrap_err().to_string();
        assert!(e.starts_with("backups/full_backup_20261207_010000.tar.gz: named as a gzip archive"), "{e}");
        assert!(e.contains("its bytes are a zstd stream") && e.contains(".tar.zst"), "{e}");
        let e = Codec::detect("s3:full_backup_20261207_010000.tar.zst", &gzip).unwrap_err().to_string();
        assert!(e.contains("named as a zstd archive") && e.contains("a gzip stream"), "{e}");
        let e = Codec::detect("a.tar.zst", b"PK\x03\x04").unwrap_err().to_string();
        assert!(e.contains("a.tar.zst: starts with the bytes 50 4b 03 04, neither a zstd"), "{e}");
        assert!(Codec::detect("a.tar.zst", b"").unwrap_err().to_string().contains("neither"));
    }

    #[test]
    fn the_flag_wins_over_the_setting_and_the_level_applies_to_the_chosen_codec() {
        let gzip9: Compression = "gzip:9".parse().unwrap();
        let zstd1: Compression = "zstd:1".parse().unwrap();
        assert_eq!(Compression::choose(None, None, None).unwrap().to_string(), "zstd:3");
        assert_eq!(Compression::choose(None, None, Some(gzip9)).unwrap(), gzip9);
        assert_eq!(Compression::choose(Some(zstd1), None, Some(gzip9)).unwrap(), zstd1);
        assert_eq!(Compression::choose(None, Some(1), Some(gzip9)).unwrap().to_string(), "gzip:1");
        assert_eq!(Compression::choose(None, Some(12), None).unwrap().to_string(), "zstd:12");
        let e = format!("{:#}", Compression::choose(None, Some(12), Some(gzip9)).unwrap_err());
        assert!(e.starts_with("--level: gzip level 12 is out of range"), "{e}");
    }

    #[test]
    fn compression_specs_parse_strictly() {
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression { codec: Codec::Zstd, level: 3 });
        assert_eq!("zstd:1".parse::<Compression>().unwrap(), Compression { codec: Codec::Zstd, level: 1 });
        assert_eq!("zstd:19".parse::<Compression>().unwrap().level, 19);
        assert_eq!("gzip".parse::<Compression>().unwrap(), Compression { codec: Codec::Gzip, level: 6 });
        assert_eq!("gzip:9".parse::<Compression>().unwrap().to_string(), "gzip:9");
        assert_eq!(Compression::default().to_string(), "zstd:3");
        for bad in
            ["zstd:0", "zstd:20", "gzip:10", "gzip:0", "zstd:-1", "zstd:", "zstd:x", "xz", "ZSTD", "", "zstd:3:1"]
        {
            assert!(bad.parse::<Compression>().is_err(), "{bad:?} accepted");
        }
        let e = format!("{:#}", "gzip:12".parse::<Compression>().unwrap_err());
        assert!(e.contains("gzip level 12 is out of range: use 1 to 9"), "{e}");
        let e = format!("{:#}", "lz4".parse::<Compression>().unwrap_err());
        assert!(e.contains("unknown compression \"lz4\": use zstd or gzip"), "{e}");
    }
}
