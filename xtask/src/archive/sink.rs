//! Where a new archive's bytes go: the compressed stream, encrypted by age when recipients are
//! configured (a filter thread reads age's output), into the [`Outlet`]: the temporary file,
//! the SHA-256 of the bytes as stored, and optionally a mirror (an upload while the archive is
//! written). A mirror that fails drops out (its child killed, so no partial object completes)
//! and the local archive goes on; the caller learns why at commit. Before the compression, the
//! tar stream itself can also go to a tap ([`super::tap`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};

use crate::engine::crypt;
use crate::model::offsite::Encryption;

pub use crate::engine::Finish;

pub type Mirror = Box<dyn Finish>;

/// The file, the digest, the mirror.
pub struct Outlet {
    file: File,
    hasher: Sha256,
    mirror: Option<Mirror>,
    mirror_error: Option<io::Error>,
}

impl Write for Outlet {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(m) = self.mirror.as_mut().filter(|_| self.mirror_error.is_none()) {
            if let Err(e) = m.write_all(&buf[..n]) {
                // Kept (not dropped) so that its owner can still collect the child's own error.
                self.mirror_error = Some(e);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What the outlet held once everything was written.
pub struct Finished {
    pub file: File,
    pub sha256: [u8; 32],
    /// The mirror, still open: its owner finishes it.
    pub mirror: Option<Mirror>,
    /// Why the mirror stopped taking bytes, if it did (it then holds only a part).
    pub mirror_error: Option<io::Error>,
}

impl Outlet {
    fn finish(self) -> Finished {
        let sha256 = self.hasher.finalize().into();
        Finished { file: self.file, sha256, mirror: self.mirror, mirror_error: self.mirror_error }
    }
}

/// The compressed stream's destination: the outlet, or age's stdin (a thread moves age's output on).
pub enum Sink {
    Clear(Box<Outlet>),
    Sealed { to_age: Option<os_pipe::PipeWriter>, worker: Option<JoinHandle<Result<Outlet>>> },
}

impl Sink {
    pub fn new(file: File, seal: Option<&Encryption>, mirror: Option<Mirror>) -> Result<Sink> {
        let outlet = Outlet { file, hasher: Sha256::new(), mirror, mirror_error: None };
        let Some(enc) = seal else { return Ok(Sink::Clear(Box::new(outlet))) };
        let (from_us, to_age) = os_pipe::pipe().context("create a pipe")?;
        let mut age = crypt::encrypt(enc, Box::new(from_us) as Box<dyn Read + Send>)?;
        let worker = std::thread::spawn(move || -> Result<Outlet> {
            let mut outlet = outlet;
            io::copy(&mut age, &mut outlet).context("encrypt the archive")?;
            Ok(outlet)
        });
        Ok(Sink::Sealed { to_age: Some(to_age), worker: Some(worker) })
    }

    /// Everything written: age finished and checked, the digest taken.
    pub fn finish(self) -> Result<Finished> {
        match self {
            Sink::Clear(o) => Ok(o.finish()),
            Sink::Sealed { to_age, worker } => {
                drop(to_age);
                let worker = worker.context("the encryption already failed")?;
                let outlet = worker.join().map_err(|_| anyhow!("the encryption thread panicked"))??;
                Ok(outlet.finish())
            }
        }
    }

    /// After a failed write into age: the worker's error (a full disk, age's own) if it ended.
    fn worker_error(&mut self, e: io::Error) -> io::Error {
        let Sink::Sealed { worker, .. } = self else { return e };
        match worker.take_if(|w| w.is_finished()).map(|w| w.join()) {
            Some(Ok(Err(err))) => io::Error::other(format!("{err:#}")),
            _ => e,
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = match self {
            Sink::Clear(o) => return o.write(buf),
            Sink::Sealed { to_age, .. } => match to_age.as_mut() {
                Some(p) => p.write(buf),
                None => Err(io::Error::other("the encryption already ended")),
            },
        };
        written.map_err(|e| self.worker_error(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Clear(o) => o.flush(),
            Sink::Sealed { to_age, .. } => to_age.as_mut().map_or(Ok(()), |p| p.flush()),
        }
    }
}
