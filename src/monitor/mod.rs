//! Metrics and analysis core: window aggregation, canary analysis, the time-series ring layout
//! and alert delivery.
//!
//! `aggregate`, `analysis` and `ring` are pure (no I/O, the clock is passed in as a value), so
//! the deployment engine and the API can be tested without servers or sleeps. The redb side of
//! the ring buffers lives in `store::series`; `alerts` is the one part here that talks to the
//! network.

pub mod aggregate;
pub mod alerts;
pub mod analysis;
pub mod certificates;
pub mod judge;
pub mod ring;
