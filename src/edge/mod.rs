//! The edge side of edgeplane: the wire protocol, the push client the deployment engine uses,
//! the agent that runs beside a real proxy, and the in-process simulated fleet (SPEC §6, §7.6).
//!
//! Both the agent and the simulator answer the edge protocol through one router
//! (`http.rs`), so a simulated edge cannot drift from what the agent does at the door
//! (authentication, body handling, status codes).

pub mod agent;
mod http;
pub mod protocol;
pub mod push;
pub mod reconcile;
pub mod simulator;

pub use agent::{AgentConfig, AgentConfigError};
pub use protocol::{
    ActiveConfiguration, ActiveConfigurations, Heartbeat, PushMode, PushReply, PushRequest,
    RollbackRequest,
};
pub use push::{PushClient, PushError, PushOptions, PushOutcome};
pub use reconcile::{ReconcileAction, plan};
pub use simulator::{Fleet, SimulateOptions};
