//! The open-file budget of a simulated fleet: every edge holds a listening socket, so a large
//! fleet raises the process's own soft limit up to the hard one, and fails with an error that
//! says what to raise when even that is not enough.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept besides the edges' listeners: the runtime, the store and log files, the
/// connections to the control plane and the pushes being answered.
pub(crate) const SPARE: u64 = 512;

/// What the fleet got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// The soft limit after raising it.
    pub(crate) limit: u64,
    /// Room for a kept-alive connection per edge besides its listener: when there is none, the
    /// edges close each connection after answering, so that a control plane that keeps
    /// connections to every edge cannot exhaust the descriptors.
    pub(crate) keep_alive: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LimitError {
    #[error(
        "{edges} simulated edges need at least {needed} open files (one listening socket per \
         edge and {SPARE} more), but the hard limit is {hard}: raise it (`ulimit -Hn`, \
         LimitNOFILE=) or simulate fewer edges"
    )]
    TooFew { edges: u64, needed: u64, hard: u64 },
    #[error("cannot raise the open-file limit to {wanted}: {reason}")]
    Refused { wanted: u64, reason: String },
}

/// Raises the soft open-file limit as far as the hard one allows for `edges` edges.
pub(crate) fn raise_for(edges: usize) -> Result<Budget, LimitError> {
    let current = getrlimit(Resource::Nofile);
    let plan = plan(edges as u64, current.current, current.maximum)?;
    if Some(plan.limit) != current.current {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(plan.limit),
                maximum: current.maximum,
            },
        )
        .map_err(|error| LimitError::Refused {
            wanted: plan.limit,
            reason: error.to_string(),
        })?;
    }
    Ok(plan)
}

/// The decision, apart from the system calls: `None` limits are unlimited.
fn plan(edges: u64, soft: Option<u64>, hard: Option<u64>) -> Result<Budget, LimitError> {
    let needed = edges.saturating_add(SPARE);
    let comfortable = edges.saturating_mul(2).saturating_add(SPARE);
    let hard_value = hard.unwrap_or(u64::MAX);
    if hard_value < needed {
        return Err(LimitError::TooFew {
            edges,
            needed,
            hard: hard_value,
        });
    }
    let soft_value = soft.unwrap_or(u64::MAX);
    let limit = if soft_value >= comfortable {
        soft_value
    } else {
        comfortable.min(hard_value)
    };
    Ok(Budget {
        limit,
        keep_alive: limit >= comfortable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_toward_the_hard_one_and_a_short_one_is_named() {
        // A small fleet keeps a generous soft limit as it is.
        assert_eq!(
            plan(9, Some(65_536), Some(65_536)),
            Ok(Budget {
                limit: 65_536,
                keep_alive: true
            })
        );
        // The usual 1,024 soft limit rises to what 10,000 edges want.
        assert_eq!(
            plan(10_000, Some(1024), Some(1_048_576)),
            Ok(Budget {
                limit: 20_512,
                keep_alive: true
            })
        );
        // A hard limit with room for the listeners only: connections are not kept alive.
        assert_eq!(
            plan(10_000, Some(1024), Some(20_000)),
            Ok(Budget {
                limit: 20_000,
                keep_alive: false
            })
        );
        assert_eq!(
            plan(10_000, Some(1024), None),
            Ok(Budget {
                limit: 20_512,
                keep_alive: true
            })
        );
        let error = plan(10_000, Some(1024), Some(4096)).unwrap_err();
        assert_eq!(
            error,
            LimitError::TooFew {
                edges: 10_000,
                needed: 10_512,
                hard: 4096
            }
        );
        assert!(error.to_string().contains("hard limit is 4096"), "{error}");
    }
}
