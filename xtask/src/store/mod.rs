//! Where archives are kept, below the tasks and shared by them: the backup directory
//! ([`local`]: names, listing, `verify` markers, the newest trusted archive), the remotes
//! ([`remote`]: listing, picking the archive to stream; [`vault`]: the same for restic
//! repositories), who made an archive and what a reader
//! accepts ([`trust`]), which archives this host pushed ([`pushed`]), what retention keeps ([`retention`]) and where a restore may write a bind
//! ([`binds`]). Tasks compose these; none of them calls a task.

pub mod binds;
pub mod local;
pub mod pushed;
pub mod remote;
pub mod retention;
pub mod trust;
pub mod vault;
