//! The embedded redb store.

pub mod series;
