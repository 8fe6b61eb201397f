//! The edge protocol both sides of the wire share (SPEC §6): the JSON shapes of pushes,
//! replies and heartbeats, the content checksum, what a `pathPattern` matches, the HTTP
//! client settings every caller across the wire uses, and TLS for both ends.
//!
//! The control plane's side (`fleet/`) and the edge's side (`edge/`) import this module and
//! never each other, so neither can change the contract without the other seeing it.

pub mod accept;
mod checksum;
mod client;
mod messages;
pub mod path_pattern;
pub mod term;
pub mod tls;

pub use checksum::{canonical_json, checksum};
pub(crate) use client::{chain, http_client, http_client_with_identity};
pub(crate) use messages::is_safe_name;
pub use messages::{
    ActiveConfiguration, ActiveConfigurations, EdgeRegistration, Heartbeat, LeaderAnnouncement,
    PushMode, PushReply, PushRequest, RollbackRequest,
};
