//! # incident-lab
//!
//! A load-testing and chaos harness that reproduces the Phase 53 production incident (an
//! `EMAIL_SENT` webhook burst saturating a small Postgres pool, cascading into the inbox page)
//! against a reference service, and proves each fix under load.
//!
//! # Layout
//! - [`cli`]: the command line — argument parsing, subcommands, exit codes.
//! - [`postgres`]: provisioning a server (local cluster, Docker container, or a URL) under the
//!   scenario's constrained settings, and handing out databases; teardown leaves nothing.
//! - [`dataset`]: the deterministic seeded dataset and the per-arm template clones.
//! - [`units`]: durations and sizes as people write them (`3s`, `128MB`).
//! - [`telemetry`]: logging setup.
//!
//! The system under test lives in the `inbox-service` crate and the traffic engine in
//! `loadgen`; this crate wires them together.

pub mod cli;
pub mod dataset;
pub mod postgres;
pub mod telemetry;
pub mod units;
