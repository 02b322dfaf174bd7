//! The live Docker engine: the one module that runs processes ([`docker`]), the stack's services
//! ([`services`]), its database services as one interface ([`db`]: detection, logins, client
//! commands) and how PostgreSQL names databases ([`postgres`]).

pub mod crypt;
pub mod db;
pub mod docker;
pub mod postgres;
pub mod remote;
pub mod services;
pub mod sign;
