//! The ground floor: the plain data every other room shares, importing nothing above it.
//!
//! - [`scenario`]: a validated scenario — streams, phases, budgets, arms, flips, the
//!   steady-state hypothesis ([`crate::scenario`] reads a file into one).
//! - [`fault`]: faults, each variant with its own parameters, on the load's clock.
//! - [`fleet`]: several service instances and the pooler, as a scenario asks for them and as
//!   an arm reports them.
//! - [`observed`]: what production saw, carried by a replay scenario.
//! - [`dataset`], [`postgres`]: how much data to seed, and the constrained server settings.
//! - [`report`]: `report.json`'s schema and its check names.

pub mod dataset;
pub mod fault;
pub mod fleet;
pub mod observed;
pub mod postgres;
pub mod report;
pub mod scenario;

pub use dataset::Scale;
pub use fault::{Fault, FaultKind, FaultTarget, LinkFaults, TimedFault, LOCK_MODES};
pub use fleet::{
    check_connections, per_instance, Autoscale, FleetReport, FleetSpec, PoolerReport, PoolerSpec,
    HARNESS_CONNECTIONS,
};
pub use observed::{Observed, ObservedEndpoint, ObservedMinute, StatusMix};
pub use postgres::PgSettings;
pub use scenario::*;
