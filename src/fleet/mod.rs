//! The control plane's view of its edges: heartbeat intake and fleet gauges.

pub mod heartbeats;
pub mod transport;

pub use heartbeats::HeartbeatIntake;
