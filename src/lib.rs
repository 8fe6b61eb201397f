//! edgeplane: a self-hosted control plane for CDN edge configuration.
//!
//! The binary (`src/main.rs`) only parses the command line; everything it runs lives here so
//! that tests and benches exercise exactly what ships. See ARCHITECTURE.md for the map.

pub mod model;
pub mod secrets;
pub mod validate;
