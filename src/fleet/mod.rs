//! The control plane's view of its edges: heartbeat intake, fleet gauges and reconciliation.

pub mod gauges;
pub mod heartbeats;
pub mod reconcile;
pub mod transport;

pub use heartbeats::HeartbeatIntake;
pub use reconcile::{ReconcileReport, Reconciler, reconcile_once};
