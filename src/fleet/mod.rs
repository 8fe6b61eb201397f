//! The control plane's view of its edges: heartbeat intake and fleet gauges.

pub mod heartbeats;

pub use heartbeats::HeartbeatIntake;
