//! The use cases between the HTTP API and the store. A handler parses and authorises, then
//! calls one function here; the function reads what it needs, runs the pure checks
//! (`validate`, `rollout::plan`) and issues one store command, whose preconditions hold the
//! rules that must survive concurrent requests. Errors are by kind; `api/error.rs` maps them
//! to statuses.

pub mod configurations;
pub mod deployments;
pub mod edges;
pub mod open;
pub mod users;

pub use configurations::{ConfigurationError, Configurations};
pub use deployments::{Admission, DeploymentError, Deployments};
pub use edges::{EdgeError, Edges};
pub use users::{Session, UserError, Users};

use crate::store::{Command, CommandEnvelope};

/// Who asks for a change and under which request: both go into the command log and the
/// audit record.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: String,
    pub trace_id: String,
}

impl Caller {
    pub fn new(actor: impl Into<String>, trace_id: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            trace_id: trace_id.into(),
        }
    }

    fn envelope(&self, command: Command) -> CommandEnvelope {
        CommandEnvelope::new(self.actor.clone(), self.trace_id.clone(), command)
    }
}
