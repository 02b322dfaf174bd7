//! Decompression on its own thread: an archive's zstd or gzip stream (told by its first bytes,
//! which must agree with its name: [`Codec::detect`]) is decompressed ahead of its reader into a
//! short queue of 1 MiB blocks, so decompressing and what is done with the bytes (the grammar,
//! hashing, extraction) run on two cores. The end of the stream is reported only after its
//! checksums (gzip's CRC and length, each zstd frame's XXH64) were checked and the bytes were
//! read to their very end: nothing may follow the stream, and only there does a download prove
//! its SHA-256 and age its last chunk. Dropping the reader stops the thread at its next block.

use std::io::{self, BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::model::compression::{Codec, MAGIC_LEN};

/// Bytes per block handed from the inflating thread to the reader.
const BLOCK: usize = 1 << 20;
/// Blocks inflated ahead of the reader (memory: about this many MiB, plus two).
const AHEAD: usize = 16;

/// A filled block (`len` bytes of `data` are valid; 0 is the verified end) or what went wrong.
type Message = io::Result<(Vec<u8>, usize)>;

/// The decompressed stream of an archive, inflated on its own thread.
pub struct Inflated {
    blocks: Receiver<Message>,
    /// Emptied blocks go back to the thread to be filled again.
    spent: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    len: usize,
    pos: usize,
    ended: bool,
}

/// Starts decompressing `raw` (the archive `shown`'s compressed bytes) on a thread of its own.
pub fn inflate(raw: Box<dyn Read + Send>, shown: String) -> Inflated {
    start(raw, Some(shown))
}

/// The same for a stream that is the tar itself (a restic snapshot of an archive): read ahead
/// on its own thread, nothing to inflate.
pub fn plain(raw: Box<dyn Read + Send>) -> Inflated {
    start(raw, None)
}

/// `compressed`: the name of the archive whose compressed bytes `raw` are (None: a plain tar).
fn start(raw: Box<dyn Read + Send>, compressed: Option<String>) -> Inflated {
    let (tx, blocks) = sync_channel(AHEAD);
    let (spent, spare) = sync_channel(AHEAD + 2);
    // Should the thread not start, its sender is dropped with it: the first read says so.
    let _ = std::thread::Builder::new().name("inflate".into()).spawn(move || match compressed {
        None => produce_plain(raw, &tx, &spare),
        Some(shown) => produce(raw, &shown, &tx, &spare),
    });
    Inflated { blocks, spent, block: Vec::new(), len: 0, pos: 0, ended: false }
}

/// The thread for a plain stream: fills blocks until its end.
fn produce_plain(mut raw: Box<dyn Read + Send>, tx: &SyncSender<Message>, spare: &Receiver<Vec<u8>>) {
    if pump(&mut raw, tx, spare).is_some() {
        let _ = tx.send(Ok((Vec::new(), 0)));
    }
}

/// The thread: tells the codec, fills blocks until the end, checks what follows it, then sends
/// the end.
fn produce(raw: Box<dyn Read + Send>, shown: &str, tx: &SyncSender<Message>, spare: &Receiver<Vec<u8>>) {
    let (codec, raw) = match sniff(raw, shown) {
        Ok(found) => found,
        Err(e) => return drop(tx.send(Err(e))),
    };
    let end = match codec {
        Codec::Gzip => {
            // The bufread decoder: what it did not consume stays in our buffer, to be seen below.
            let mut gz = flate2::bufread::GzDecoder::new(raw);
            match pump(&mut gz, tx, spare) {
                Some(()) => read_past_end(gz.into_inner(), codec),
                None => return,
            }
        }
        Codec::Zstd => {
            let mut z = match zstd_reader(raw) {
                Ok(z) => ZstdErrors(z),
                Err(e) => return drop(tx.send(Err(e))),
            };
            // Every frame to the end of the bytes: anything after the last one is not a frame.
            match pump(&mut z, tx, spare) {
                Some(()) => read_past_end(z.0.finish(), codec),
                None => return,
            }
        }
    };
    let _ = tx.send(end.map(|()| (Vec::new(), 0)));
}

type Raw = BufReader<io::Chain<io::Cursor<Vec<u8>>, Box<dyn Read + Send>>>;

/// The codec by the first bytes (checked against the name), and the whole stream again.
fn sniff(mut raw: Box<dyn Read + Send>, shown: &str) -> io::Result<(Codec, Raw)> {
    let mut head = vec![0u8; MAGIC_LEN];
    let (n, error) = fill(&mut raw, &mut head);
    if let Some(e) = error {
        return Err(e);
    }
    head.truncate(n);
    let codec =
        Codec::detect(shown, &head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:#}")))?;
    Ok((codec, BufReader::with_capacity(BLOCK, io::Cursor::new(head).chain(raw))))
}

/// Largest zstd window accepted (16 MiB; level 19 uses 8 MiB): an archive is untrusted input,
/// and one asking for more memory is not one this tool wrote.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

fn zstd_reader(raw: Raw) -> io::Result<zstd::stream::read::Decoder<'static, Raw>> {
    let mut z = zstd::stream::read::Decoder::with_buffer(raw)?;
    z.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(z)
}

/// Output asked of zstd per read: one block's worth. A read that fails loses what it decoded
/// (a checksum is checked after the frame's last block), so small reads deliver everything
/// before a damage, as gzip's reader does (a small archive's metadata stays readable).
const ZSTD_READ: usize = 128 << 10;

/// zstd's errors ("Unknown frame descriptor", "incomplete frame") said as being the archive's.
struct ZstdErrors(zstd::stream::read::Decoder<'static, Raw>);

impl Read for ZstdErrors {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(ZSTD_READ);
        self.0.read(&mut buf[..n]).map_err(|e| {
            io::Error::new(e.kind(), format!("the zstd stream is damaged, cut short or followed by other bytes: {e}"))
        })
    }
}

/// Moves blocks of `r` to the reader until the end (Some) or an error, sent, or the reader gone
/// (None).
fn pump(r: &mut impl Read, tx: &SyncSender<Message>, spare: &Receiver<Vec<u8>>) -> Option<()> {
    loop {
        let mut data = spare.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK]);
        // What came before a damage is delivered before the error (a reader of the first
        // entries only, e.g. the metadata, never sees it).
        let (filled, error) = fill(r, &mut data);
        if filled > 0 && tx.send(Ok((data, filled))).is_err() {
            return None; // the reader is gone
        }
        if let Some(e) = error {
            let _ = tx.send(Err(e));
            return None;
        }
        if filled == 0 {
            return Some(());
        }
    }
}

/// Reads into `data` until it is full, the stream ended or failed; returns how many bytes
/// came, and the failure.
fn fill(r: &mut impl Read, data: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while filled < data.len() {
        match r.read(&mut data[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// After the compressed stream: the bytes must end there.
fn read_past_end(mut rest: impl Read, codec: Codec) -> io::Result<()> {
    let trailing = io::copy(&mut rest, &mut io::sink())
        .map_err(|e| io::Error::new(e.kind(), format!("read the archive to its end: {e}")))?;
    if trailing > 0 {
        return Err(io::Error::other(format!(
            "{trailing} bytes follow the {codec} stream: not an archive this tool wrote"
        )));
    }
    Ok(())
}

impl Read for Inflated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            self.next_block()?;
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Inflated {
    /// Hands the spent block back and takes the next one (or the end, or the error).
    fn next_block(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            let _ = self.spent.try_send(std::mem::take(&mut self.block));
        }
        let message = self.blocks.recv().unwrap_or_else(|_| Err(io::Error::other("the inflating thread stopped")));
        let (block, len) = message.inspect_err(|_| self.ended = true)?;
        self.ended = len == 0;
        (self.block, self.len, self.pos) = (block, len, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn read_all(bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        inflate(Box::new(io::Cursor::new(bytes)), "a.tar.gz".into()).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn blocks_arrive_whole_and_in_order() {
        let data: Vec<u8> = (0..3 * BLOCK + 12345).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(read_all(gzip(&data)).unwrap(), data);
    }

    #[test]
    fn bytes_after_the_gzip_stream_are_refused_at_the_end() {
        let mut bytes = gzip(b"content");
        bytes.extend_from_slice(b"appended");
        let e = read_all(bytes).unwrap_err();
        assert!(e.to_string().contains("8 bytes follow the gzip stream"), "{e}");
    }

    #[test]
    fn a_damaged_trailer_is_an_error_not_an_end() {
        let mut bytes = gzip(b"content that is checked by its crc");
        let at = bytes.len() - 6; // inside the CRC-32
        bytes[at] ^= 0xff;
        assert!(read_all(bytes).is_err());
    }

    #[test]
    fn what_came_before_a_damage_is_read_before_the_error() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut bytes = gzip(&data);
        let at = bytes.len() - 6; // the CRC-32: every byte inflates, then the check fails
        bytes[at] ^= 0xff;
        let mut reader = inflate(Box::new(io::Cursor::new(bytes)), "a.tar.gz".into());
        let mut head = vec![0u8; 4096];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..4096]);
        assert!(io::copy(&mut reader, &mut io::sink()).is_err());
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn read_zst(bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        inflate(Box::new(io::Cursor::new(bytes)), "a.tar.zst".into()).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn zstd_frames_are_read_one_after_the_other_and_nothing_else() {
        let data: Vec<u8> = (0..3 * BLOCK + 5).map(|i| (i * 13 % 241) as u8).collect();
        let (a, b) = data.split_at(BLOCK + 7);
        // Two frames (the seekable layout to come cuts the stream so): one stream of bytes.
        assert_eq!(read_zst([zstd(a), zstd(b)].concat()).unwrap(), data);
        let e = read_zst([zstd(a), b"appended".to_vec()].concat()).unwrap_err();
        assert!(e.to_string().contains("followed by other bytes"), "{e}");
        let whole = zstd(&data);
        let e = read_zst(whole[..whole.len() - 3].to_vec()).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn a_skippable_frame_is_passed_over() {
        // What a seekable layout's index could be: zstd -d and this reader skip it.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18];
        skippable.extend_from_slice(&5u32.to_le_bytes());
        skippable.extend_from_slice(b"index");
        let bytes = [zstd(b"first "), zstd(b"second"), skippable].concat();
        assert_eq!(read_zst(bytes).unwrap(), b"first second");
    }

    #[test]
    fn what_came_before_a_zstd_damage_is_read_before_the_error() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(&data).unwrap();
        let mut bytes = e.finish().unwrap();
        let at = bytes.len() - 2; // the checksum: every block decodes, then the check fails
        bytes[at] ^= 0xff;
        let mut reader = inflate(Box::new(io::Cursor::new(bytes)), "a.tar.zst".into());
        let mut head = vec![0u8; 4096];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..4096]);
        assert!(io::copy(&mut reader, &mut io::sink()).is_err());
    }

    #[test]
    fn a_damaged_zstd_checksum_is_an_error() {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(&vec![b'z'; 100_000]).unwrap();
        let mut bytes = e.finish().unwrap();
        let at = bytes.len() - 2; // inside the XXH64 checksum
        bytes[at] ^= 0xff;
        assert!(read_zst(bytes).is_err());
    }

    #[test]
    fn the_magic_must_be_the_one_the_name_says() {
        let mut out = Vec::new();
        let e = inflate(Box::new(io::Cursor::new(zstd(b"x"))), "b/full_backup_1.tar.gz.age".into())
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().starts_with("b/full_backup_1.tar.gz.age: named as a gzip archive"), "{e}");
        let e = read_zst(gzip(b"x")).unwrap_err();
        assert!(e.to_string().contains("its bytes are a gzip stream"), "{e}");
        assert!(read_zst(Vec::new()).unwrap_err().to_string().contains("neither a zstd"));
    }

    #[test]
    fn a_window_larger_than_this_tool_writes_is_refused() {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.window_log(ZSTD_WINDOW_LOG_MAX + 2).unwrap();
        e.write_all(&vec![b'w'; 1000]).unwrap();
        assert!(read_zst(e.finish().unwrap()).is_err());
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let bytes = gzip(&vec![b'x'; 100_000]);
        assert!(read_all(bytes[..bytes.len() / 2].to_vec()).is_err());
    }
}
