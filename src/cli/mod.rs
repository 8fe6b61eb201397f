//! Offline commands that work on the data dir with the server stopped.

pub mod users;
