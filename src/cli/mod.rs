//! Commands beside the server: the command-line client of the HTTP API, offline ones that
//! work on the data dir with the server stopped, and the self-contained demo.

pub mod backup;
pub mod client;
pub mod demo;
pub mod users;
