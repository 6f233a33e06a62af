//! # inbox-service
//!
//! The reference service for the Phase 53 incident: the system under test. It knows nothing
//! of the harness — configuration in, HTTP out.
//!
//! # Layout
//! - [`db`]: the schema (sqlx migrations for the legacy world) and the Phase 53 indexes,
//!   kept apart so an arm can run without them.

pub mod db;
