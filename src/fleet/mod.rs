//! The control plane's side of the edges: the push client (the engine's `EdgeTransport`),
//! heartbeat intake, fleet gauges, and reconciliation of edges that drifted.

pub mod drift;
pub mod gauges;
pub mod heartbeats;
pub mod push;
pub mod reconcile;

pub use drift::{ReconcileAction, plan};
pub use heartbeats::HeartbeatIntake;
pub use push::{PushClient, PushError, PushOptions, PushOutcome};
pub use reconcile::{ReconcileReport, Reconciler, reconcile_once};
