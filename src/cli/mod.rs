//! Commands beside the server: offline ones that work on the data dir with the server
//! stopped, and the self-contained demo.

pub mod demo;
pub mod users;
