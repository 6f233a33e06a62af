//! Chaos: faults injected while the load runs. So far the database link's faults, through a
//! TCP proxy between the service and Postgres ([`proxy`]); the scenario timeline that sets
//! them (`[[faults]]`, played by [`timeline`]) — flag flips and the steady-state hypothesis
//! are still to come (issue 12).

pub mod proxy;
pub mod timeline;

pub use proxy::{FaultProxy, Faults};
