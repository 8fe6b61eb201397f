//! The edge side of edgeplane: the agent that runs beside a real proxy and the in-process
//! simulated fleet (SPEC §6, §7.6). The wire they answer is `crate::protocol`.
//!
//! Both the agent and the simulator answer the edge protocol through one router
//! (`http.rs`), so a simulated edge cannot drift from what the agent does at the door
//! (authentication, body handling, status codes).

pub mod agent;
mod fd_limit;
mod http;
mod leader;
pub mod simulator;
mod term;

pub use agent::{AgentConfig, AgentConfigError};
pub use simulator::{Fleet, SimulateOptions};
