//! The control plane's side of the edges: the push client (the engine's `EdgeTransport`),
//! heartbeat intake, fleet gauges, reconciliation of edges that drifted, and the new
//! primary's announcement to the fleet.

pub mod announce;
pub mod drift;
pub mod gauges;
pub mod heartbeats;
pub mod push;
pub mod reconcile;

pub use announce::{AnnounceReport, announce_leader};
pub use drift::{ReconcileAction, plan};
pub use heartbeats::HeartbeatIntake;
pub use push::{PushClient, PushError, PushOptions, PushOutcome};
pub use reconcile::{ReconcileReport, Reconciler, reconcile_once};
