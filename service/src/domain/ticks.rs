//! One tick per cron at a time: a lease row per cron (`cron_leases`), taken for at most the
//! tick's longest possible run, so overlapping calls (a slow tick, a retried trigger) do not
//! multiply the background work — and no connection is held while the tick runs.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

/// A held tick lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLease {
    holder: i64,
}

/// Takes the lease of cron `name` for `ttl` unless another tick holds an unexpired one.
/// Returns the lease and the rows written (1 when taken).
pub async fn acquire(
    conn: &mut PgConnection,
    name: &str,
    ttl: Duration,
) -> Result<Option<TickLease>, sqlx::Error> {
    let holder = rand::random::<i64>();
    let taken: Option<i64> = sqlx::query_scalar(
        "INSERT INTO cron_leases (name, holder, until) VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
         WHERE cron_leases.until < now()
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(taken.map(|holder| TickLease { holder }))
}

/// Gives the lease back (if still held); returns the rows written.
pub async fn release(
    conn: &mut PgConnection,
    name: &str,
    lease: TickLease,
) -> Result<u64, sqlx::Error> {
    sqlx::query("UPDATE cron_leases SET until = now() WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(lease.holder)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}

/// A tick's time budget, checked before every unit of work and bounding every wait inside it.
///
/// New work (a claim, a job's effects, a provider call, a counts refresh, a follow-up send)
/// starts and waits only until [`Budget::work_until`]; the reserve after it is for the
/// bookkeeping of work already done (marking a job done or due again, releasing the lease),
/// so a tick that gives up at its work deadline still ends within its budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub started: Instant,
    pub work_until: Instant,
    pub until: Instant,
}

impl Budget {
    /// The largest share of the budget kept for bookkeeping.
    pub const MAX_RESERVE: Duration = Duration::from_millis(500);

    /// The largest slack kept at the very end: for the statement run on a connection whose
    /// wait ended at [`Budget::until`], and for timers that fire late on a busy machine.
    pub const MAX_SLACK: Duration = Duration::from_millis(100);

    /// A budget of `budget` from now: a tenth of it (at most [`Self::MAX_RESERVE`]) reserved
    /// for bookkeeping, and the last twentieth (at most [`Self::MAX_SLACK`]) left as slack, so
    /// that a wait ending at [`Budget::until`] and the one statement after it still end within
    /// the budget. (A hundredth, 20 ms of a 2 s budget, was not enough: on 2 busy cores a
    /// connection freed just before `until` took the lease's release 2.00x s past it.)
    pub fn new(budget: Duration) -> Self {
        let started = Instant::now();
        let reserve = (budget / 10).min(Self::MAX_RESERVE);
        let slack = (budget / 20).min(Self::MAX_SLACK);
        Self {
            started,
            work_until: started + budget - reserve,
            until: started + budget - slack,
        }
    }

    /// Time left to start or wait for new work.
    pub fn work_left(&self) -> Duration {
        self.work_until.saturating_duration_since(Instant::now())
    }

    /// Time left until the end of the budget (bookkeeping included).
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// No time left for new work.
    pub fn spent(&self) -> bool {
        self.work_left().is_zero()
    }

    /// The timeout for an external call started now, or `None` when it must not start: a
    /// call is never cut off by the budget (the provider may have acted on it, and the retry
    /// would act twice), so it starts only while its whole timeout fits. The timeout is the
    /// provider's, or half the budget's work time when that is shorter (so calls can start).
    pub fn call_timeout(&self, provider_timeout: Duration) -> Option<Duration> {
        let timeout = provider_timeout.min((self.work_until - self.started) / 2);
        (!timeout.is_zero() && self.work_left() >= timeout).then_some(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_of_the_budget_is_kept_for_bookkeeping_up_to_half_a_second() {
        let b = Budget::new(Duration::from_secs(2));
        assert_eq!(b.work_until - b.started, Duration::from_millis(1800));
        assert_eq!(b.until - b.started, Duration::from_millis(1900));
        let b = Budget::new(Duration::from_secs(60));
        assert_eq!(
            b.until - b.work_until,
            Budget::MAX_RESERVE - Budget::MAX_SLACK
        );
        assert!(!b.spent() && b.work_left() <= Duration::from_millis(59_500));
        assert!(Budget::new(Duration::ZERO).spent());
    }

    #[test]
    fn a_call_starts_only_while_its_whole_timeout_fits() {
        let b = Budget::new(Duration::from_secs(5));
        assert_eq!(
            b.call_timeout(Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        // A provider timeout longer than the budget: half the work time, so calls still run.
        assert_eq!(
            b.call_timeout(Duration::from_secs(60)),
            Some(Duration::from_millis(2250))
        );
        // Four seconds into a 5 s budget (4.5 s of work time): one second of work left.
        let now = Instant::now();
        let late = Budget {
            started: now - Duration::from_secs(4),
            work_until: now + Duration::from_millis(500),
            until: now + Duration::from_millis(950),
        };
        assert_eq!(late.call_timeout(Duration::from_secs(2)), None);
        assert!(late.call_timeout(Duration::from_millis(300)).is_some());
        assert_eq!(
            Budget::new(Duration::ZERO).call_timeout(Duration::from_secs(1)),
            None
        );
    }
}
