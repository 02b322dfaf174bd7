//! Writing an archive's compressed stream: [`Encoder`], zstd (multi-threaded) or gzip (parallel
//! blocks, [`super::pgz`]); the codec itself is the typed value of [`crate::model::compression`].

use std::io::{self, Read, Write};

pub use crate::model::compression::*;

use super::frames::FrameWriter;
use super::pgz::ParallelGzWriter;

/// How many zstd workers a backup uses beside its own thread (which builds the tar stream and
/// hashes every file): one per core, as measured best on 2 cores (docs/benchmarks.md).
pub fn zstd_workers(cores: usize) -> u32 {
    cores.clamp(1, 8) as u32
}

/// Input per zstd job when compressing on workers. libzstd's default is four windows (8 MiB at
/// level 3), which with its buffer pool made the encoder alone 57 MiB of RSS on 2 workers
/// against the backup's 64 MiB budget; 2 MiB jobs keep it near 20 MiB for under 1% of size
/// (docs/benchmarks.md).
const ZSTD_JOB_BYTES: u32 = 2 << 20;

/// libzstd's streaming compressor at `level` on `workers` threads, each frame with its
/// content checksum (XXH64).
fn zstd_raw(level: i32, workers: u32) -> io::Result<zstd::stream::raw::Encoder<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut raw = zstd::stream::raw::Encoder::new(level)?;
    raw.set_parameter(CParameter::ChecksumFlag(true))?;
    if workers > 0 {
        raw.set_parameter(CParameter::NbWorkers(workers))?;
        raw.set_parameter(CParameter::JobSize(ZSTD_JOB_BYTES))?;
    }
    Ok(raw)
}

/// The compressed stream of `tar` as a reader (for `pull`, which makes an archive of a stream
/// it reads): the same codec, level, threads and checksums as [`Encoder`].
pub fn encoding_reader(
    tar: Box<dyn Read + Send>,
    compression: Compression,
    threads: usize,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression.codec {
        Codec::Gzip => Box::new(flate2::read::GzEncoder::new(tar, flate2::Compression::new(compression.level as u32))),
        Codec::Zstd => {
            let raw = zstd_raw(compression.level, zstd_workers(threads))?;
            Box::new(zstd::stream::zio::Reader::new(io::BufReader::new(tar), raw))
        }
    })
}

/// The compressing writer of an archive's tar stream: zstd as independent frames cut at entries
/// (the seekable layout, [`super::frames`]) or one gzip member of parallel blocks.
pub enum Encoder<W: Write> {
    Gzip(ParallelGzWriter<W>),
    Zstd(FrameWriter<W>),
}

impl<W: Write> Encoder<W> {
    /// `threads`: the cores to use. zstd frames carry their content checksum (XXH64), so a
    /// damaged archive fails its read as gzip's CRC makes it.
    pub fn new(out: W, compression: Compression, threads: usize) -> io::Result<Encoder<W>> {
        Ok(match compression.codec {
            Codec::Gzip => Encoder::Gzip(ParallelGzWriter::new(out, compression.level as u32, threads)?),
            Codec::Zstd => Encoder::Zstd(FrameWriter::new(out, compression.level, threads)?),
        })
    }

    /// An entry starts here (a zstd frame may end; gzip ignores it).
    pub fn boundary(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(_) => Ok(()),
            Encoder::Zstd(z) => z.boundary(),
        }
    }

    /// Ends the stream (trailer, last frame; a zstd stream's footer names where the index and
    /// `SHA256SUMS` entries start in the tar stream) and returns the inner writer.
    pub fn finish(self, marks: Marks) -> io::Result<W> {
        match self {
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(marks.index_at, marks.sums_at),
        }
    }
}

/// Where the index and `SHA256SUMS` entries start in the tar stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Marks {
    pub index_at: u64,
    pub sums_at: u64,
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }

    /// Nothing: the stream is complete only at [`Encoder::finish`] (a zstd flush would end a
    /// block early and cost ratio for nothing).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text-like and random-like bytes, several MiB: more than one zstd job and gzip block.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 7;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 5 == 0 {
                    (x >> 24) as u8
                } else {
                    b"the quick brown fox "[i % 20]
                }
            })
            .collect()
    }

    fn encode(data: &[u8], compression: Compression, threads: usize) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), compression, threads).unwrap();
        for chunk in data.chunks(333_333) {
            e.write_all(chunk).unwrap();
        }
        e.finish(Marks::default()).unwrap()
    }

    /// Read back by the tool's reader (named as the tool names it) and by the codec's standard one.
    fn decode_both_ways(bytes: &[u8], codec: Codec) -> (Vec<u8>, Vec<u8>) {
        let mut ours = Vec::new();
        let name = format!("full_backup_20261207_010000{}", codec.extension());
        super::super::inflate::inflate(Box::new(io::Cursor::new(bytes.to_vec())), name).read_to_end(&mut ours).unwrap();
        let mut standard = Vec::new();
        match codec {
            Codec::Gzip => flate2::read::GzDecoder::new(bytes).read_to_end(&mut standard),
            Codec::Zstd => zstd::stream::read::Decoder::new(bytes).unwrap().read_to_end(&mut standard),
        }
        .unwrap();
        (ours, standard)
    }

    #[test]
    fn every_codec_level_and_thread_count_round_trips() {
        let data = sample(5 << 20);
        for spec in ["zstd:1", "zstd:3", "zstd:19", "gzip:1", "gzip:6"] {
            for threads in [1, 2] {
                let compression: Compression = spec.parse().unwrap();
                let bytes = encode(&data, compression, threads);
                assert_eq!(Codec::of_magic(&bytes), Some(compression.codec), "{spec}");
                assert!(bytes.len() < data.len() * 9 / 10, "{spec}: {} bytes", bytes.len());
                let (ours, standard) = decode_both_ways(&bytes, compression.codec);
                assert!(ours == data && standard == data, "{spec} on {threads} threads");
            }
        }
        for codec in [Codec::Zstd, Codec::Gzip] {
            let empty = encode(b"", Compression::new(codec), 2);
            assert_eq!(decode_both_ways(&empty, codec), (Vec::new(), Vec::new()));
        }
    }

    #[test]
    fn zstd_frames_carry_their_checksum() {
        let bytes = encode(&sample(1 << 20), Compression::default(), 2);
        // Frame header descriptor (the byte after the magic): bit 2 is Content_Checksum_flag.
        assert_ne!(bytes[4] & 0b100, 0, "descriptor {:08b}", bytes[4]);
    }

    #[test]
    fn the_reader_encodes_as_the_writer() {
        let data = sample(3 << 20);
        for spec in ["zstd:3", "gzip:6"] {
            let compression: Compression = spec.parse().unwrap();
            let mut bytes = Vec::new();
            encoding_reader(Box::new(io::Cursor::new(data.clone())), compression, 2)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            assert_eq!(Codec::of_magic(&bytes), Some(compression.codec));
            assert_eq!(decode_both_ways(&bytes, compression.codec).0, data, "{spec}");
        }
    }

    #[test]
    fn the_age_suffix_is_crypts() {
        assert_eq!(AGE_SUFFIX, crate::engine::crypt::SUFFIX);
    }
}
