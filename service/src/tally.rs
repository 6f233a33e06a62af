//! What one request did: the per-request [`Tally`] of rows written, external calls, absorbed
//! error categories and time waiting for the pool, which the middleware reports in headers and
//! metrics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::Category;

/// What one request did: rows written, external calls, error categories it absorbed, time
/// spent waiting for the pool, whether it is waiting now, and (webhooks) its event type.
#[derive(Debug, Default)]
pub struct Tally {
    writes: AtomicU32,
    /// The most rows one statement wrote.
    largest_statement: AtomicU32,
    calls: AtomicU32,
    waiting_for_pool: AtomicBool,
    pool_wait_us: AtomicU64,
    categories: Mutex<Vec<Category>>,
    event: OnceLock<String>,
    dedupe_key: OnceLock<String>,
}

impl Tally {
    /// Counts `rows` rows inserted, updated or deleted — what Postgres itself counts in
    /// `pg_stat_user_tables`, so the harness can check the tally against it. Call it with the
    /// statement's `rows_affected()` (or the rows a `RETURNING` statement gave back).
    pub fn wrote(&self, rows: u64) {
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        self.writes.fetch_add(rows, Ordering::Relaxed);
        self.largest_statement.fetch_max(rows, Ordering::Relaxed);
    }

    /// The most rows one statement of this request wrote (what a statement in flight when
    /// the request was cut off may have written unseen).
    pub fn largest_statement(&self) -> u32 {
        self.largest_statement.load(Ordering::Relaxed)
    }

    /// Names the webhook event this request carries (its metrics get a row of their own).
    pub fn set_event(&self, event: &str) {
        let _ = self.event.set(event.to_owned());
    }

    /// Names the webhook event this request carries (`provider:TYPE:id`), for its logs.
    pub fn set_dedupe_key(&self, key: String) {
        let _ = self.dedupe_key.set(key);
    }

    /// The dedupe key, once known.
    pub fn dedupe_key(&self) -> Option<&str> {
        self.dedupe_key.get().map(String::as_str)
    }

    /// The webhook event, once known.
    pub fn event(&self) -> Option<&str> {
        self.event.get().map(String::as_str)
    }

    /// Time this request spent waiting for pooled connections, all acquires.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_micros(self.pool_wait_us.load(Ordering::Relaxed))
    }

    /// Counts one external call.
    pub fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes an error the request absorbed (a fallback, a skipped side effect). Errors a
    /// handler returns are categorized from the response instead; never both.
    pub fn note(&self, category: Category) {
        self.categories
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(category);
    }

    /// The categories noted so far, emptied.
    pub fn take_categories(&self) -> Vec<Category> {
        std::mem::take(&mut *self.categories.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn writes(&self) -> u32 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Marks the request as waiting for a pooled connection (or not): a queued enqueue waits
    /// for its statement's.
    pub fn set_waiting_for_pool(&self, waiting: bool) {
        self.waiting_for_pool.store(waiting, Ordering::Relaxed);
    }

    /// Adds `waited` to the request's time waiting for pooled connections.
    pub fn add_pool_wait(&self, waited: Duration) {
        self.pool_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// Whether the request is blocked on `acquire()` right now.
    pub fn waiting_for_pool(&self) -> bool {
        self.waiting_for_pool.load(Ordering::Relaxed)
    }
}
