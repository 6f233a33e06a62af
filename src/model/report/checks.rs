//! The names of the checks a report carries: part of its schema (a CI system keeps a test's
//! history by its name), defined here so the use cases that make the checks and the renderers
//! that read them agree without either importing the other.

/// The check that decides whether an arm can be judged at all.
pub const LOAD_CHECK: &str = "load generator kept up";
/// The writes / calls accounting check.
pub const ACCOUNTING_CHECK: &str = "declared writes and calls match what was measured";
/// The exactly-once check.
pub const EXACTLY_ONCE_CHECK: &str = "every acknowledged EMAIL_SENT applied exactly once";
/// The budgets held before the first fault or flip.
pub const STEADY_CHECK: &str = "steady state before the first fault or flip";
/// The budgets held again after the last one.
pub const RECOVERY_CHECK: &str = "recovered after the last fault or flip";
/// The load ran to its end: no `[abort]` threshold was crossed.
pub const ABORT_CHECK: &str = "the load ran to its end (no abort threshold crossed)";
