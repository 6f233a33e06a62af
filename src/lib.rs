//! # incident-lab
//!
//! A load-testing and chaos harness that reproduces the Phase 53 production incident (an
//! `EMAIL_SENT` webhook burst saturating a small Postgres pool, cascading into the inbox page)
//! against a reference service, and proves each fix under load.
//!
//! # Layout
//! - [`cli`]: the command line — `args` what can be typed, one file per subcommand, the exit
//!   codes in `mod`.
//! - [`compare`]: the baseline gate between two runs (each a report.json or repeats), built not
//!   to flap: a floor, the budget, and a block bootstrap over paired per-second p95s; too
//!   little data is inconclusive.
//! - [`chaos`]: faults on the load's clock (the database link's proxy, Postgres itself, the
//!   providers, the service), flag flips, and the steady-state hypothesis.
//! - [`logs`]: production log exports — reading, classifying, per-minute figures, a scenario
//!   from them, triage, and the replay's fidelity.
//! - [`fleet`]: several service instances behind one front, and PgBouncer per arm.
//! - [`ceiling`]: the harness's own limits (the load generator against wrk), measured.
//! - [`postgres`]: provisioning a server (local cluster, Docker container, or a URL) under the
//!   scenario's constrained settings, and handing out databases; teardown leaves nothing.
//! - [`dataset`]: the deterministic seeded dataset and the per-arm template clones.
//! - [`model`]: the ground floor — the scenario, faults, fleet, observed production figures
//!   and report.json's schema as plain data, importing nothing above them.
//! - [`scenario`]: reading a scenario file into the model — typed, validated, errors with
//!   file:line.
//! - [`matrix`]: runs the arms — clone, fakes, service, load, drain, invariant, verdict.
//! - [`service_proc`]: the service as a child process; `/metrics` scraping.
//! - [`report`]: the result's renderings: report.md, junit.xml, report.html (its schema is in
//!   [`model::report`], re-exported here).
//! - [`units`]: durations and sizes as people write them (`3s`, `128MB`).
//! - [`progress`]: a long run's progress on stderr (stdout carries the report).
//! - [`interrupt`]: stopping a run on SIGINT / SIGTERM / SIGHUP, and the children to clean up.
//! - [`telemetry`]: logging setup.
//! - [`tools`]: external programs found on PATH (Chromium, wrk).
//!
//! The system under test lives in the `inbox-service` crate and the traffic engine in
//! `loadgen`; this crate wires them together.

pub mod ceiling;
pub mod chaos;
pub mod cli;
pub mod compare;
pub mod dataset;
pub mod fleet;
pub mod interrupt;
pub mod logs;
pub mod matrix;
pub mod model;
pub mod postgres;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod service_proc;
pub mod telemetry;
pub mod tools;
pub mod units;
