//! Benchmark helper for scripts/bench-compression.sh: the tool's own compressors and reader,
//! on a tar file, so that what is measured is what a backup and a restore run.
//!
//!   compress encode gzip:6 THREADS IN OUT      the backup's parallel gzip (archive/pgz.rs)
//!   compress encode zstd:3 WORKERS IN OUT      zstd frames of 4 MiB on WORKERS threads (archive/frames.rs)
//!   compress decode ARCHIVE                    the restore's reader (archive/inflate.rs), to nowhere
//!
//! Prints one line: the bytes out (or in, for decode).

use std::fs::File;
use std::io::{self, BufWriter};

use anyhow::{bail, Context, Result};
use xtask::archive::compression::{Compression, Encoder, Marks};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["encode", spec, threads, input, output] => {
            let compression: Compression = spec.parse()?;
            let threads: usize = threads.parse().context("THREADS")?;
            let out = BufWriter::with_capacity(1 << 20, File::create(output)?);
            let mut enc = Encoder::new(out, compression, threads.max(1))?;
            io::copy(&mut File::open(input)?, &mut enc)?;
            let out = enc.finish(Marks::default())?.into_inner().map_err(|e| e.into_error())?;
            out.sync_all()?;
            println!("{}", out.metadata()?.len());
        }
        ["decode", archive] => {
            let src = xtask::archive::Source::open(std::path::Path::new(archive))?;
            let n = io::copy(&mut src.tar().into_inner(), &mut io::sink())?;
            println!("{n}");
        }
        _ => bail!("usage: compress encode SPEC THREADS IN OUT | compress decode ARCHIVE"),
    }
    Ok(())
}
