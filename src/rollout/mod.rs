//! Rollout decisions: planning waves and the pure state machine that drives a deployment
//! (SPEC §7). Nothing here does I/O or reads a clock; the engine feeds time and edge answers
//! in as values and executes the actions that come back.

pub mod plan;

pub use plan::{Plan, plan};
