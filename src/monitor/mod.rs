//! Metrics and analysis core: window aggregation, canary analysis and alert delivery.
//!
//! `aggregate` and `analysis` are pure (no I/O, the clock is passed in as a value), so the
//! deployment engine and the API can be tested without servers or sleeps. The ring buffers
//! the samples live in are `store::ring` (layout) and `store::series` (redb); `alerts` is the
//! one part here that talks to the network.

pub mod aggregate;
pub mod alerts;
pub mod analysis;
pub mod certificates;
pub mod edge_tokens;
pub mod judge;
