//! Everything outside the process: the Docker engine ([`docker`]; [`process`] is the one module
//! that spawns processes), the stack's services ([`services`]), its database services as one interface
//! ([`db`]: detection, logins, client commands), how PostgreSQL names databases ([`postgres`]),
//! and the other CLIs the tool drives: age ([`crypt`]), rclone ([`remote`]), `ssh-keygen -Y`
//! ([`sign`]), curl ([`notify`]), systemctl and crontab ([`systemd`]). Below the archive format: nothing here knows what an archive holds.

use std::io::Write;

use anyhow::Result;

pub mod crypt;
pub mod db;
pub mod docker;
pub mod notify;
pub mod process;
pub mod remote;
pub mod restic;
pub mod services;
pub mod sign;
pub mod staging;
pub mod systemd;

/// A second destination for bytes being written (an archive mirrored while it is written),
/// finished by its owner once the original is committed (an upload: stdin closed, child waited).
pub trait Finish: Write + Send {
    fn finish(self: Box<Self>) -> Result<()>;
}
