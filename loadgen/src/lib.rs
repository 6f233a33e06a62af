//! # loadgen
//!
//! Goose-based open-model traffic engine: takes a plan (what to send, when) and returns
//! recordings. It knows HTTP, schedules and recording — not Postgres, not flags.
