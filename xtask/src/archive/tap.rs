//! The tar stream on its way out of the archive writer, before compression ([`TarOut`]): into the
//! compressing writer (none when no local file is written) and, when a tap is set (a restic push while
//! the archive is written), also into the tool's stdin. The tap runs on a thread of its own
//! ([`Tap`]): it hashes the stream (the snapshot's completion tag) and waits on the pipe, so the
//! thread that reads the volumes and hashes their files does neither; on two cores that is the
//! difference between restic waiting for us and us waiting for restic.

use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::engine::process::ToolWriter;

/// Bytes handed to the tap's thread at a time, and how many such batches may wait for it.
const BATCH: usize = 1 << 20;
const QUEUED: usize = 4;

/// The tar stream on its way out: into the compressing writer (None: no local file is written) and,
/// when a tap is set, into it too. A tap that fails drops out while there is a local file (its
/// owner pushes that instead); without one, its failure fails the write.
pub struct TarOut<G: Write> {
    compress: Option<G>,
    tap: Option<Tap>,
    tap_failed: bool,
    /// Bytes of the tar stream taken so far: where the next entry starts.
    position: u64,
}

/// The tap once the tar stream ended: the tool still running with its stdin open for its owner
/// to finish (or why it stopped taking bytes, with its stderr when it failed), and the SHA-256
/// and length of what it took.
pub struct Tapped {
    pub writer: Result<ToolWriter, io::Error>,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

impl<G: Write> TarOut<G> {
    pub fn new(compress: Option<G>, tap: Option<ToolWriter>) -> anyhow::Result<TarOut<G>> {
        if compress.is_none() && tap.is_none() {
            anyhow::bail!("an archive needs a file or a tap to go to");
        }
        Ok(TarOut { compress, tap: tap.map(Tap::start), tap_failed: false, position: 0 })
    }

    /// Where the next byte goes in the tar stream.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The compressing writer, if there is a local file.
    pub fn compress_mut(&mut self) -> Option<&mut G> {
        self.compress.as_mut()
    }

    /// The compressing writer (to finish) and the tap, once the tar stream is complete.
    pub fn finish(self) -> (Option<G>, Option<Tapped>) {
        (self.compress, self.tap.map(Tap::finish))
    }
}

impl<G: Write> Write for TarOut<G> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.compress.as_mut() {
            Some(c) => c.write(buf)?,
            None => buf.len(),
        };
        if let Some(tap) = self.tap.as_mut().filter(|_| !self.tap_failed) {
            match tap.write(&buf[..n]) {
                Ok(()) => {}
                Err(_) if self.compress.is_some() => self.tap_failed = true,
                Err(e) => return Err(e),
            }
        }
        self.position += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.compress.as_mut().map_or(Ok(()), |g| g.flush())
    }
}

/// The near side of the tap: fills batches and queues them for [`pump`] on its thread; spent
/// batches come back to be filled again.
struct Tap {
    batch: Vec<u8>,
    queue: Option<SyncSender<Vec<u8>>>,
    spent: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Tapped>>,
    /// What the thread returned when it stopped early.
    ended: Option<Tapped>,
}

impl Tap {
    fn start(writer: ToolWriter) -> Tap {
        let (queue, batches) = sync_channel(QUEUED);
        let (give_back, spent) = channel();
        let worker = std::thread::spawn(move || pump(writer, batches, give_back));
        Tap { batch: Vec::with_capacity(BATCH), queue: Some(queue), spent, worker: Some(worker), ended: None }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.batch.extend_from_slice(buf);
        if self.batch.len() >= BATCH {
            self.send()?;
        }
        Ok(())
    }

    /// Queues the batch; when the thread stopped taking them, its reason.
    fn send(&mut self) -> io::Result<()> {
        let fresh = self.spent.try_recv().unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, fresh);
        self.batch.clear();
        let queued = self.queue.as_ref().map(|q| q.send(batch));
        if let Some(Ok(())) = queued {
            return Ok(());
        }
        if self.ended.is_none() {
            self.ended = self.join();
        }
        Err(match self.ended.as_ref().map(|t| &t.writer) {
            Some(Err(e)) => io::Error::new(e.kind(), e.to_string()),
            _ => io::Error::other("the push stopped taking the stream"),
        })
    }

    /// Ends the queue and waits for the thread: it has written (or failed to write) everything.
    fn join(&mut self) -> Option<Tapped> {
        drop(self.queue.take());
        let worker = self.worker.take()?;
        Some(worker.join().unwrap_or_else(|_| Tapped {
            writer: Err(io::Error::other("the push's thread panicked")),
            sha256: [0; 32],
            bytes: 0,
        }))
    }

    fn finish(mut self) -> Tapped {
        let sent = if self.batch.is_empty() { Ok(()) } else { self.send() };
        let tapped = self.ended.take().or_else(|| self.join());
        let mut tapped = tapped.expect("the thread is joined once");
        if let (Err(e), Ok(_)) = (sent, &tapped.writer) {
            tapped.writer = Err(e);
        }
        tapped
    }
}

impl Drop for Tap {
    /// Unfinished (the backup failed): the thread ends and drops the tool, which kills it before
    /// its stdin closes, so no snapshot of a partial stream is saved.
    fn drop(&mut self) {
        drop(self.join());
    }
}

/// The tap's thread: writes each batch into the tool and hashes what went in; a write that
/// fails (the tool ended) ends it with the tool's own failure, which carries its stderr.
fn pump(mut writer: ToolWriter, batches: Receiver<Vec<u8>>, give_back: Sender<Vec<u8>>) -> Tapped {
    let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
    for batch in batches {
        if let Err(e) = writer.write_all(&batch) {
            let why = match writer.finish() {
                Err(failed) => io::Error::new(e.kind(), format!("{failed:#}")),
                Ok(_) => e,
            };
            return Tapped { writer: Err(why), sha256: [0; 32], bytes };
        }
        hasher.update(&batch);
        bytes += batch.len() as u64;
        let _ = give_back.send(batch);
    }
    Tapped { writer: Ok(writer), sha256: hasher.finalize().into(), bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::process::Tool;

    /// The stream through `TarOut` (no gzip writer) into `sha256sum`: what the tool read and the
    /// digest the tap reports are the stream, whole, across batch edges and a short last batch.
    #[test]
    fn the_tap_delivers_and_hashes_the_whole_stream() {
        let tool = Tool::find("sha256sum", "to test the tap").unwrap();
        let writer = tool.sink(&[]).unwrap();
        let mut out = TarOut::<Vec<u8>>::new(None, Some(writer)).unwrap();
        let stream: Vec<u8> = (0..3 * BATCH + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        for piece in stream.chunks(4099) {
            out.write_all(piece).unwrap();
        }
        let (gz, tapped) = out.finish();
        assert!(gz.is_none());
        let tapped = tapped.unwrap();
        let expected: [u8; 32] = Sha256::digest(&stream).into();
        assert_eq!(tapped.sha256, expected);
        assert_eq!(tapped.bytes, stream.len() as u64);
        let printed = tapped.writer.unwrap().finish().unwrap();
        assert_eq!(String::from_utf8_lossy(&printed[..64]), crate::archive::hex(&expected));
    }

    /// A tool that stops reading fails the next write with its own failure; with a gzip writer
    /// beside it, the write goes on and the tap reports why it stopped.
    #[test]
    fn a_tool_that_ends_early_fails_the_stream_or_drops_out() {
        let tool = Tool::find("false", "to test the tap").unwrap();
        let mut alone = TarOut::<Vec<u8>>::new(None, Some(tool.sink(&[]).unwrap())).unwrap();
        let chunk = vec![0u8; BATCH];
        let failed = (0..64).find_map(|_| alone.write_all(&chunk).err()).expect("the write fails");
        assert!(failed.to_string().contains("false"), "{failed}");
        let mut beside = TarOut::new(Some(Vec::new()), Some(tool.sink(&[]).unwrap())).unwrap();
        (0..64).for_each(|_| beside.write_all(&chunk).unwrap());
        let (gz, tapped) = beside.finish();
        assert_eq!(gz.unwrap().len(), 64 * BATCH);
        assert!(tapped.unwrap().writer.is_err());
    }
}
