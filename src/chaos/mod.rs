//! Chaos: faults injected and flags flipped while the load runs, and the steady-state
//! hypothesis that judges them. The database link's faults go through a TCP proxy between the
//! service and Postgres ([`proxy`], combined by [`timeline`]); Postgres's own ([`postgres`]:
//! pause, crash and restart, a held lock, CPU-bound sessions); the providers' storms and the
//! service's kill; all played on the load's clock by [`run`], with the budgets read before,
//! during and after by [`hypothesis`].

pub mod hypothesis;
pub mod postgres;
pub mod proxy;
pub mod run;
pub mod timeline;

pub use proxy::FaultProxy;
