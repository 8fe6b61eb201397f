//! edgeplane: a self-hosted control plane for CDN edge configuration.
//!
//! The binary (`src/main.rs`) only parses the command line; everything it runs lives here so
//! that tests and benches exercise exactly what ships. See ARCHITECTURE.md for the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod edge;
pub mod fleet;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod protocol;
pub mod rollout;
pub mod secrets;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod validate;
