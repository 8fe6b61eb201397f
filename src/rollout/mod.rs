//! Rollout decisions: planning waves and the pure state machine that drives a deployment
//! (SPEC §7). Nothing here does I/O or reads a clock; the engine feeds time and edge answers
//! in as values and executes the actions that come back.

pub mod engine;
pub mod machine;
pub mod plan;

pub use machine::{
    Action, AlertKind, AnalysisOutcome, EdgeNack, Event, OperatorAction, Progress, PushMode,
    StepContext, StepError, progress, resume_actions, step,
};
pub use plan::{Plan, plan};
