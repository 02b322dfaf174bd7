//! The live Docker engine: the one module that runs processes ([`docker`]), the stack's services
//! ([`services`]) and how PostgreSQL is spoken to ([`postgres`]).

pub mod docker;
pub mod postgres;
pub mod services;
