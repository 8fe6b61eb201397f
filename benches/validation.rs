//! Placeholder replaced by the validation benches on merge.
fn main() {}
