//! API users and roles (SPEC §4.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Roles, ordered by what they may do. `Edge` belongs to agent tokens only.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Role {
    Edge,
    Viewer,
    Developer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "Edge",
            Role::Viewer => "Viewer",
            Role::Developer => "Developer",
            Role::Operator => "Operator",
            Role::Admin => "Admin",
        }
    }

    /// Whether this role includes every right of `needed` (Edge includes nothing else).
    pub fn at_least(self, needed: Role) -> bool {
        if self == Role::Edge || needed == Role::Edge {
            return self == needed;
        }
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Role::Viewer, Role::Developer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("unknown role '{text}' (expected Viewer, Developer, Operator or Admin)")
            })
    }
}

/// A stored API user. The hash never leaves the store: API views are built from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_edge_stands_apart() {
        assert!(Role::Admin.at_least(Role::Operator));
        assert!(Role::Operator.at_least(Role::Developer));
        assert!(!Role::Developer.at_least(Role::Operator));
        assert!(!Role::Viewer.at_least(Role::Developer));
        assert!(!Role::Admin.at_least(Role::Edge));
        assert!(!Role::Edge.at_least(Role::Viewer));
        assert!("edge".parse::<Role>().is_err());
    }
}
