//! The seekable zstd layout (docs/archive-format.md, "Seekable"): the tar stream cut into
//! independent zstd frames, at an entry's start once a frame holds [`MIN_FRAME`] bytes (and
//! inside a long file every [`MAX_FRAME`]), compressed by worker threads, written in order, and
//! followed by a footer, a zstd *skippable* frame (which `zstd -d` and every reader skip) holding
//! the frame table: where each frame starts in the tar stream and in the file, and where the
//! index and `SHA256SUMS` entries start. [`FrameWriter`] writes it; [`Footer::parse`] reads it by
//! one strict grammar. The footer is only a pointer: everything read through it is checked
//! against the index and its digest (archive/seekable.rs).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Result};

/// A frame is cut at the next entry's start once it holds this much of the tar stream.
pub const MIN_FRAME: usize = 1 << 20;
/// And anywhere (inside a long file) when it holds this much.
pub const MAX_FRAME: usize = 2 << 20;
/// The footer's skippable-frame magic (zstd reserves 0x184D2A50..=0x184D2A5F).
const SKIPPABLE: u32 = 0x184D_2A5E;
/// The footer's last four bytes.
const TRAILER: &[u8; 4] = b"XSK1";
/// The footer's fixed part after the table: tar length, index and sums offsets, frame count, trailer.
const FIXED: usize = 8 * 3 + 4 + 4;

/// Where one frame starts: in the tar stream and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    pub tar: u64,
    pub file: u64,
}

/// The footer: the frame table and the two entries a reader starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub frames: Vec<FrameAt>,
    /// The tar stream's length (its end is also the end of the last frame's content).
    pub tar_len: u64,
    /// Where the index entry's first header block and `SHA256SUMS`'s start in the tar stream.
    pub index_at: u64,
    pub sums_at: u64,
}

impl Footer {
    /// The footer as a skippable frame.
    pub fn bytes(&self) -> Vec<u8> {
        let payload_len = self.frames.len() * 16 + FIXED;
        let mut out = Vec::with_capacity(8 + payload_len);
        out.extend_from_slice(&SKIPPABLE.to_le_bytes());
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.tar.to_le_bytes());
            out.extend_from_slice(&f.file.to_le_bytes());
        }
        for n in [self.tar_len, self.index_at, self.sums_at] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.extend_from_slice(TRAILER);
        out
    }

    /// How many bytes from a file's end hold the footer, told by its last `FIXED` bytes (None:
    /// the file has no footer: an archive written before the seekable layout, or not zstd).
    pub fn len_from_tail(tail: &[u8]) -> Option<usize> {
        let t = tail.len().checked_sub(FIXED)?;
        let fixed = &tail[t..];
        if &fixed[FIXED - 4..] != TRAILER {
            return None;
        }
        let n = u32::from_le_bytes(fixed[FIXED - 8..FIXED - 4].try_into().ok()?) as usize;
        Some(8 + n.checked_mul(16)? + FIXED)
    }

    /// Reads a footer (`bytes`: the file's last [`Footer::len_from_tail`] bytes) of a file of
    /// `file_len` bytes by its strict grammar: the skippable frame's header, a first frame at 0,
    /// frames strictly increasing in both streams, all before the footer, the index before
    /// `SHA256SUMS`, both inside the tar stream.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Footer> {
        if bytes.len() < 8 + FIXED {
            bail!("its seek footer is malformed");
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let n = (bytes.len().saturating_sub(8 + FIXED)) / 16;
        if bytes.len() != 8 + n * 16 + FIXED
            || u32::from_le_bytes(bytes[0..4].try_into()?) != SKIPPABLE
            || u32::from_le_bytes(bytes[4..8].try_into()?) as usize != bytes.len() - 8
        {
            bail!("its seek footer is malformed");
        }
        let frames: Vec<FrameAt> = (0..n).map(|i| FrameAt { tar: word(8 + i * 16), file: word(16 + i * 16) }).collect();
        let fixed = 8 + n * 16;
        let footer = Footer { frames, tar_len: word(fixed), index_at: word(fixed + 8), sums_at: word(fixed + 16) };
        let footer_start = file_len.saturating_sub(bytes.len() as u64);
        let ordered = footer.frames.windows(2).all(|w| w[0].tar < w[1].tar && w[0].file < w[1].file);
        let first = footer.frames.first().is_some_and(|f| f.tar == 0 && f.file == 0);
        let last = footer.frames.last().is_some_and(|f| f.tar < footer.tar_len && f.file < footer_start);
        if !(ordered && first && last && footer.index_at < footer.sums_at && footer.sums_at < footer.tar_len) {
            bail!("its seek footer's frame table is out of order or points past the archive");
        }
        Ok(footer)
    }

    /// The frame holding tar offset `at` (the last one starting at or before it).
    pub fn frame_of(&self, at: u64) -> Option<FrameAt> {
        let i = self.frames.partition_point(|f| f.tar <= at);
        i.checked_sub(1).map(|i| self.frames[i])
    }
}

struct Job {
    seq: u64,
    data: Vec<u8>,
}

type Done = (u64, io::Result<Vec<u8>>);

/// Writes the tar stream as independent zstd frames compressed by `threads` workers (each
/// frame with its content checksum), in order, then the footer. At most `threads + 1` frames
/// are in flight (the backup's memory budget is 64 MiB: 2 MiB frames, in and out, per slot).
pub struct FrameWriter<W: Write> {
    out: Option<W>,
    frame: Vec<u8>,
    /// Tar bytes taken so far, and compressed bytes written so far.
    tar_len: u64,
    file_len: u64,
    /// Where each submitted frame starts in the tar stream (its file offset comes when written).
    starts: BTreeMap<u64, u64>,
    table: Vec<FrameAt>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    in_flight: usize,
    max_in_flight: usize,
}

/// One frame, compressed with its checksum and content size.
fn compress_frame(compressor: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> io::Result<Vec<u8>> {
    compressor.compress(data)
}

fn new_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(CParameter::ChecksumFlag(true))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    Ok(c)
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<Self> {
        new_compressor(level)?;
        let threads = threads.max(1);
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(threads);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx) = (Arc::clone(&jobs_rx), done_tx.clone());
                std::thread::spawn(move || {
                    let Ok(mut compressor) = new_compressor(level) else { return };
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if tx.send((job.seq, compress_frame(&mut compressor, &job.data))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Ok(FrameWriter {
            out: Some(out),
            frame: Vec::with_capacity(MIN_FRAME),
            tar_len: 0,
            file_len: 0,
            starts: BTreeMap::new(),
            table: Vec::new(),
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
            max_in_flight: threads + 1,
        })
    }

    /// An entry starts here: the frame is cut when it holds [`MIN_FRAME`] bytes or more.
    pub fn boundary(&mut self) -> io::Result<()> {
        if self.frame.len() >= MIN_FRAME {
            self.submit()?;
        }
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        // An empty stream still gets one (empty) frame: a zstd stream starts with a frame.
        if self.frame.is_empty() && self.next_seq > 0 {
            return Ok(());
        }
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let data = std::mem::replace(&mut self.frame, Vec::with_capacity(MIN_FRAME));
        self.starts.insert(self.next_seq, self.tar_len - data.len() as u64);
        let job = Job { seq: self.next_seq, data };
        self.next_seq += 1;
        self.in_flight += 1;
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("zstd writer already finished"))?;
        jobs.send(job).map_err(|_| io::Error::other("a zstd worker thread stopped"))
    }

    /// Waits for one finished frame and writes every frame that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let (seq, result) = self.done.recv().map_err(|_| io::Error::other("a zstd worker thread stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, result?);
        let out = self.out.as_mut().ok_or_else(|| io::Error::other("zstd writer already finished"))?;
        while let Some(bytes) = self.pending.remove(&self.next_write) {
            let tar = self.starts.remove(&self.next_write).unwrap_or_default();
            self.table.push(FrameAt { tar, file: self.file_len });
            out.write_all(&bytes)?;
            self.file_len += bytes.len() as u64;
            self.next_write += 1;
        }
        Ok(())
    }

    /// Compresses what is left, writes the footer (`index_at`, `sums_at`: where those entries
    /// start in the tar stream) and returns the inner writer.
    pub fn finish(mut self, index_at: u64, sums_at: u64) -> io::Result<W> {
        self.submit()?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let footer = Footer { frames: std::mem::take(&mut self.table), tar_len: self.tar_len, index_at, sums_at };
        let mut out = self.out.take().ok_or_else(|| io::Error::other("zstd writer already finished"))?;
        out.write_all(&footer.bytes())?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_FRAME - self.frame.len());
        self.frame.extend_from_slice(&buf[..n]);
        self.tar_len += n as u64;
        if self.frame.len() == MAX_FRAME {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for FrameWriter<W> {
    fn drop(&mut self) {
        self.jobs = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b"seekable frames "[i % 16]
                }
            })
            .collect()
    }

    /// Writes `parts` with a boundary before each; returns the file and the parts' tar offsets.
    fn write(parts: &[Vec<u8>], threads: usize) -> (Vec<u8>, Vec<u64>) {
        let mut w = FrameWriter::new(Vec::new(), 3, threads).unwrap();
        let mut at = Vec::new();
        for p in parts {
            w.boundary().unwrap();
            at.push(w.tar_len);
            w.write_all(p).unwrap();
        }
        let n = at.len();
        (w.finish(at[n - 2], at[n - 1]).unwrap(), at)
    }

    fn footer_of(file: &[u8]) -> Footer {
        let len = Footer::len_from_tail(&file[file.len() - FIXED..]).unwrap();
        Footer::parse(&file[file.len() - len..], file.len() as u64).unwrap()
    }

    #[test]
    fn frames_are_cut_at_boundaries_and_each_decodes_alone() {
        let parts: Vec<Vec<u8>> =
            (0..12).map(|i| sample(300_000 + i * 50_000, i as u32)).chain([sample(9 << 20, 99)]).collect();
        let all: Vec<u8> = parts.concat();
        let (file, at) = write(&parts, 2);
        let mut whole = Vec::new();
        zstd::stream::read::Decoder::new(&file[..]).unwrap().read_to_end(&mut whole).unwrap();
        assert_eq!(whole, all, "the frames and the skippable footer read as one stream");
        let footer = footer_of(&file);
        assert_eq!(footer.tar_len, all.len() as u64);
        assert_eq!((footer.index_at, footer.sums_at), (at[11], at[12]));
        assert!(footer.frames.len() >= 4, "{} frames", footer.frames.len());
        for f in footer.frames.iter().filter(|f| f.tar < at[12]) {
            assert!(at.contains(&f.tar), "frame at {} is not at an entry's start", f.tar);
        }
        for f in &footer.frames {
            let mut d = zstd::stream::read::Decoder::new(&file[f.file as usize..]).unwrap().single_frame();
            let mut first = vec![0; 64];
            d.read_exact(&mut first).unwrap();
            assert_eq!(first, all[f.tar as usize..f.tar as usize + 64]);
        }
        assert!(footer.frame_of(at[5]).unwrap().tar <= at[5]);
    }

    #[test]
    fn a_footer_out_of_order_or_pointing_past_the_file_is_refused() {
        let parts: Vec<Vec<u8>> = (0..8).map(|i| sample(700_000, i)).collect();
        let (file, _) = write(&parts, 1);
        let footer = footer_of(&file);
        let mut bad = vec![];
        let mut f = footer.clone();
        f.frames.swap(0, 1);
        bad.push(f);
        let mut f = footer.clone();
        f.frames.last_mut().unwrap().file = file.len() as u64;
        bad.push(f);
        let mut f = footer.clone();
        f.sums_at = f.tar_len + 1;
        bad.push(f);
        let mut f = footer.clone();
        f.index_at = f.sums_at;
        bad.push(f);
        for f in bad {
            assert!(Footer::parse(&f.bytes(), file.len() as u64).is_err(), "accepted {f:?}");
        }
        let mut bytes = footer.bytes();
        bytes[0] ^= 1;
        assert!(Footer::parse(&bytes, file.len() as u64).is_err());
        assert_eq!(Footer::len_from_tail(b"no footer here at all, just bytes of a tar stream"), None);
    }
}
