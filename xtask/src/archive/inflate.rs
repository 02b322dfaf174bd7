//! Decompression on its own thread: an archive's gzip stream is inflated ahead of its reader
//! into a short queue of 1 MiB blocks, so inflating and what is done with the bytes (the
//! grammar, hashing, extraction) run on two cores. The end of the stream is reported only after
//! the gzip trailer (CRC and length) was checked and the bytes were read to their very end:
//! nothing may follow the gzip stream, and only there does a download prove its SHA-256 and age
//! its last chunk. Dropping the reader stops the thread at its next block.

use std::io::{self, BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

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

/// Starts inflating `raw` (the archive's gzip bytes) on a thread of its own.
pub fn inflate(raw: Box<dyn Read + Send>) -> Inflated {
    start(raw, false)
}

/// The same for a stream that is the tar itself (a restic snapshot of an archive): read ahead
/// on its own thread, nothing to inflate.
pub fn plain(raw: Box<dyn Read + Send>) -> Inflated {
    start(raw, true)
}

fn start(raw: Box<dyn Read + Send>, plain: bool) -> Inflated {
    let (tx, blocks) = sync_channel(AHEAD);
    let (spent, spare) = sync_channel(AHEAD + 2);
    // Should the thread not start, its sender is dropped with it: the first read says so.
    let _ = std::thread::Builder::new().name("inflate".into()).spawn(move || {
        if plain {
            produce_plain(raw, &tx, &spare)
        } else {
            produce(raw, &tx, &spare)
        }
    });
    Inflated { blocks, spent, block: Vec::new(), len: 0, pos: 0, ended: false }
}

/// The thread for a plain stream: fills blocks until its end.
fn produce_plain(mut raw: Box<dyn Read + Send>, tx: &SyncSender<Message>, spare: &Receiver<Vec<u8>>) {
    loop {
        let mut data = spare.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK]);
        let (filled, error) = fill(&mut raw, &mut data);
        if filled > 0 && tx.send(Ok((data, filled))).is_err() {
            return;
        }
        if let Some(e) = error {
            return drop(tx.send(Err(e)));
        }
        if filled == 0 {
            return drop(tx.send(Ok((Vec::new(), 0))));
        }
    }
}

/// The thread: fills blocks until the end, checks what follows it, then sends the end.
fn produce(raw: Box<dyn Read + Send>, tx: &SyncSender<Message>, spare: &Receiver<Vec<u8>>) {
    // The bufread decoder: what it did not consume stays in our buffer, to be seen below.
    let mut gz = flate2::bufread::GzDecoder::new(BufReader::with_capacity(BLOCK, raw));
    loop {
        let mut data = spare.try_recv().unwrap_or_else(|_| vec![0u8; BLOCK]);
        // What came before a damage is delivered before the error (a reader of the first
        // entries only, e.g. the metadata, never sees it).
        let (filled, error) = fill(&mut gz, &mut data);
        if filled > 0 && tx.send(Ok((data, filled))).is_err() {
            return; // the reader is gone
        }
        if let Some(e) = error {
            return drop(tx.send(Err(e)));
        }
        if filled == 0 {
            break;
        }
    }
    let end = read_past_end(gz.into_inner()).map(|()| (Vec::new(), 0));
    let _ = tx.send(end);
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

/// After the gzip stream: the bytes must end there.
fn read_past_end(mut rest: impl Read) -> io::Result<()> {
    let trailing = io::copy(&mut rest, &mut io::sink())
        .map_err(|e| io::Error::new(e.kind(), format!("read the archive to its end: {e}")))?;
    if trailing > 0 {
        return Err(io::Error::other(format!(
            "{trailing} bytes follow the gzip stream: not an archive this tool wrote"
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
        inflate(Box::new(io::Cursor::new(bytes))).read_to_end(&mut out)?;
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
        let mut reader = inflate(Box::new(io::Cursor::new(bytes)));
        let mut head = vec![0u8; 4096];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..4096]);
        assert!(io::copy(&mut reader, &mut io::sink()).is_err());
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let bytes = gzip(&vec![b'x'; 100_000]);
        assert!(read_all(bytes[..bytes.len() / 2].to_vec()).is_err());
    }
}
