//! The stack as its compose files describe it: the Compose model and the volumes' roles.

pub mod alerts;
pub mod binds;
pub mod compose;
pub mod compression;
pub mod db;
pub mod notify;
pub mod offsite;
pub mod roles;
