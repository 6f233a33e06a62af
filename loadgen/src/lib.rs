//! # loadgen
//!
//! Goose-based open-model traffic engine: takes a plan (what to send, when) and returns
//! recordings. It knows HTTP, schedules and recording — not Postgres, not flags.
//!
//! # Layout
//! - [`plan`]: arrival processes → a deterministic schedule of intended send times.
//! - [`traffic`]: what each stream sends (signed webhooks, sessions, cron ticks).
//! - [`record`]: samples with their timestamps → mergeable, serializable HDR histograms.
//! - [`dispatch`]: the open model's per-stream queues and timing, apart from goose.
//! - [`engine`]: the goose run that sends the schedule and records it.

pub mod dispatch;
pub mod engine;
pub mod http;
pub mod plan;
pub mod record;
pub mod traffic;

pub use engine::{run, stop, LoadgenError, RunSummary};
pub use plan::{Arrival, AtLeastOnce, Delivery, Plan, RatePoint, RetryPolicy, Shard, Stream, Tls};
pub use record::{EndpointRecording, Hist, Recording};
pub use traffic::{Endpoint, Sessions};
