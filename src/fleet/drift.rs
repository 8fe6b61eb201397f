//! Drift (SPEC §6): what to push to an edge whose reported active versions differ from what
//! the control plane wants. Pure; the reconciler (`reconcile.rs`) reads the desired and
//! reported versions and drives the pushes.

use std::collections::BTreeMap;

/// One step to bring an edge to its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileAction {
    /// Push `version` of `configuration_id` (mode `apply`).
    Push {
        configuration_id: String,
        version: String,
    },
}

/// The pushes that bring `reported` (configurationId → version the edge runs) to `desired`.
/// Configurations the edge runs but the control plane does not name are left alone: their
/// removal is an operator's decision, not a side effect of a heartbeat.
pub fn plan(
    desired: &BTreeMap<String, String>,
    reported: &BTreeMap<String, String>,
) -> Vec<ReconcileAction> {
    desired
        .iter()
        .filter(|(configuration_id, version)| reported.get(*configuration_id) != Some(*version))
        .map(|(configuration_id, version)| ReconcileAction::Push {
            configuration_id: configuration_id.clone(),
            version: version.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(desired: &[(&str, &str)], reported: &[(&str, &str)], expected: &[(&str, &str)]) {
        let got = plan(&map(desired), &map(reported));
        let expected: Vec<ReconcileAction> = expected
            .iter()
            .map(|(c, v)| ReconcileAction::Push {
                configuration_id: c.to_string(),
                version: v.to_string(),
            })
            .collect();
        assert_eq!(got, expected, "desired {desired:?} reported {reported:?}");
    }

    #[test]
    fn pushes_only_what_differs_or_is_missing() {
        check(&[], &[], &[]);
        check(&[("c1", "1.0.0")], &[("c1", "1.0.0")], &[]);
        check(&[("c1", "1.1.0")], &[("c1", "1.0.0")], &[("c1", "1.1.0")]);
        check(&[("c1", "1.0.0")], &[], &[("c1", "1.0.0")]);
        // An older desired version (a rollback) is pushed too: equality, not ordering.
        check(&[("c1", "1.0.0")], &[("c1", "2.0.0")], &[("c1", "1.0.0")]);
        // Extra configurations on the edge are left alone.
        check(&[("c1", "1.0.0")], &[("c1", "1.0.0"), ("c9", "3.0.0")], &[]);
        check(
            &[("a", "1.0.0"), ("b", "2.0.0"), ("c", "1.0.0")],
            &[("a", "1.0.0"), ("b", "1.0.0")],
            &[("b", "2.0.0"), ("c", "1.0.0")],
        );
    }
}
