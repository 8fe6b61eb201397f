//! Domain types shared by every subsystem: configurations, versions, edges, deployments, users.
//!
//! These types are both the JSON shapes of the API (camelCase) and the values kept in the
//! store (postcard). To serve both, they avoid serde features postcard cannot carry
//! (`skip_serializing_if`, `flatten`, untagged enums, `serde_json::Value` as such): JSON values
//! and timestamps go through adapters that pick their encoding by `is_human_readable()`.

pub mod configuration;
pub mod deployment;
pub mod duration;
pub mod edge_location;
pub mod json;
pub mod metrics;
pub mod timestamp;
pub mod user;

pub use configuration::{Bump, ConfigStatus, ConfigType, Configuration, ConfigurationVersion};
pub use deployment::{
    CanaryConfig, CreateDeployment, Deployment, DeploymentError, DeploymentEvent, DeploymentStatus,
    EdgeDeploymentState, EdgeState, EngineCursor, EventKind, FailureAction, FieldError, Phase,
    RollbackConfig, SkippedLocation, Span, Strategy, Wave, Weekday,
};
pub use duration::{DurationError, parse_duration};
pub use edge_location::{Capacity, EdgeHealth, EdgeLocation, EdgeType};
pub use metrics::{BreachState, LatencyHistogram, MetricsSample, PerformanceSnapshot};
pub use timestamp::Timestamp;
pub use user::{Role, User};

/// Actor recorded for changes the server makes on its own.
pub const SYSTEM_ACTOR: &str = "system";

/// A new opaque id with the given prefix, e.g. `config-<uuid>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}
