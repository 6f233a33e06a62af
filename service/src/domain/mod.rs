//! The domain: what the routes and the cron runners do to the data.
//!
//! - [`event`]: an email provider event — parsed, validated, its dedupe key.
//! - [`events`]: what the events do to the data (legacy and queued).
//! - [`followups`]: follow-up sends — claim, the Unipile health gate's decision, outcome.
//! - [`intake`]: group commit for the queued `EMAIL_SENT` (one statement for the enqueues
//!   that arrive together).
//! - [`jobs`]: the Postgres job queue (enqueue, claim with `SKIP LOCKED`, lease, retry).
//! - [`counts`]: the sidebar inbox counts, live and cached.
//! - [`ledger`]: the slot-offer ledger increment.
//! - [`ticks`]: one cron tick at a time (a lease row per cron).
//! - [`steps`]: step-level timing for `LOG_SLOW_PATHS`.

pub mod counts;
pub mod event;
pub mod events;
pub mod followups;
pub mod intake;
pub mod jobs;
pub mod ledger;
pub mod steps;
pub mod ticks;
