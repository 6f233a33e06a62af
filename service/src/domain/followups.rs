//! Follow-up sends: claiming due tasks, the Unipile health gate's decision, and recording the
//! outcome. The cron route drives them; the decision is a pure function, tested here.

use std::time::Duration;

use sqlx::PgConnection;

use crate::config::Limits;
use crate::error::Category;
use crate::providers::backoff;

/// A follow-up task's status, as stored in `followup_tasks.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Due (again) at `next_attempt_at`.
    Pending,
    Sent,
    /// Not attempted: the workspace's LinkedIn account is known disconnected (health gate).
    Skipped,
    /// Failed for good.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// A claimed due follow-up, with its workspace's last known Unipile status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub workspace_id: i64,
    pub lead_id: i64,
    pub channel: String,
    pub attempts: i32,
    pub unipile_status: String,
    /// Known disconnected, and that was long enough ago to probe again.
    pub recheck_due: bool,
}

/// What happened to one task, and what to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub category: Option<Category>,
    /// When to try again (pending only); `None` keeps the claim's lease as the next attempt.
    pub retry_in: Option<Duration>,
    /// Remember the workspace as disconnected (the gate reads it on the next tick).
    pub mark_disconnected: bool,
    /// A probe of a workspace known disconnected succeeded: re-admit it.
    pub mark_connected: bool,
}

impl Outcome {
    pub fn sent() -> Self {
        Self {
            status: Status::Sent,
            category: None,
            retry_in: None,
            mark_disconnected: false,
            mark_connected: false,
        }
    }
}

/// Before any call: email needs no provider; with the gate on, a workspace known disconnected
/// is skipped — unless its status is old enough to probe it again (`recheck_due`) and no other
/// task of it was probed in this tick (`probed`). `None`: make the Unipile call.
pub fn before_call(task: &Due, gate: bool, probed: bool) -> Option<Outcome> {
    if task.channel == "email" {
        Some(Outcome::sent())
    } else if gate && task.unipile_status == "disconnected" && (!task.recheck_due || probed) {
        Some(Outcome {
            status: Status::Skipped,
            category: Some(Category::ProviderDisconnected),
            retry_in: None,
            mark_disconnected: false,
            mark_connected: false,
        })
    } else {
        None
    }
}

/// After a failed call. Legacy (gate off): due again at once, whatever the error, forever.
/// Gated: final errors and the last attempt fail the task (a disconnection is remembered);
/// retryable ones back off with jitter.
pub fn after_error(
    task: &Due,
    category: Category,
    retryable: bool,
    gate: bool,
    limits: &Limits,
) -> Outcome {
    if !gate {
        return Outcome {
            status: Status::Pending,
            category: Some(category),
            retry_in: Some(Duration::ZERO),
            mark_disconnected: false,
            mark_connected: false,
        };
    }
    if !retryable || task.attempts + 1 >= limits.max_attempts as i32 {
        Outcome {
            status: Status::Failed,
            category: Some(category),
            retry_in: None,
            mark_disconnected: category == Category::ProviderDisconnected,
            mark_connected: false,
        }
    } else {
        Outcome {
            status: Status::Pending,
            category: Some(category),
            retry_in: Some(backoff(limits.provider_backoff, task.attempts as u32 + 1)),
            mark_disconnected: false,
            mark_connected: false,
        }
    }
}

/// After a successful call: a probe of a workspace known disconnected re-admits it.
pub fn after_success(task: &Due) -> Outcome {
    Outcome {
        mark_connected: task.unipile_status == "disconnected",
        ..Outcome::sent()
    }
}

/// Claims up to `limit` due tasks with a lease (`next_attempt_at` pushed out by `lease`), so no
/// transaction spans the provider calls; an unhandled claim comes due again when it runs out.
pub async fn claim(
    conn: &mut PgConnection,
    limit: u32,
    lease: Duration,
    recheck: Duration,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS (
             UPDATE followup_tasks SET next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
             WHERE id IN (SELECT id FROM followup_tasks
                          WHERE status = 'pending' AND coalesce(next_attempt_at, due_at) <= now()
                          ORDER BY coalesce(next_attempt_at, due_at) LIMIT $1
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, workspace_id, lead_id, channel, attempts)
         SELECT c.*, w.unipile_status,
                (w.unipile_status = 'disconnected'
                 AND coalesce(w.unipile_checked_at, '-infinity') <= now() - make_interval(secs => $3)) AS recheck_due
         FROM claimed c JOIN workspaces w ON w.id = c.workspace_id",
    )
    .bind(i64::from(limit))
    .bind(lease.as_secs_f64())
    .bind(recheck.as_secs_f64())
    .fetch_all(conn)
    .await
}

/// Stores `outcome` on task `id`; returns the rows written.
pub async fn record(
    conn: &mut PgConnection,
    id: i64,
    outcome: &Outcome,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE followup_tasks SET status = $2, attempts = attempts + $3, last_error_category = $4,
                next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at ELSE now() + make_interval(secs => $5) END,
                updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(outcome.status.as_str())
    .bind(i32::from(outcome.status != Status::Skipped))
    .bind(outcome.category.map(Category::as_str))
    .bind(outcome.retry_in.map(|d| d.as_secs_f64()))
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}

/// Re-admits a workspace whose LinkedIn account answered again.
pub async fn mark_connected(conn: &mut PgConnection, workspace: i64) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE workspaces SET unipile_status = 'connected', unipile_checked_at = now() WHERE id = $1",
    )
    .bind(workspace)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}

/// The most workspaces known disconnected that one followups tick probes directly (oldest status
/// first), whether or not a follow-up of theirs came up: a reconnected account is re-admitted
/// within `unipile_recheck` + ceil(disconnected / PROBES_PER_TICK) ticks.
pub const PROBES_PER_TICK: i64 = 25;

/// How many probes run at once (each holds no connection: a Unipile call only).
pub const PROBE_CONCURRENCY: usize = 8;

/// Workspaces known disconnected whose status is older than `recheck`: due for a probe, oldest
/// first, at most `limit`.
pub async fn recheck_due(
    conn: &mut PgConnection,
    recheck: Duration,
    limit: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM workspaces
         WHERE unipile_status = 'disconnected'
           AND coalesce(unipile_checked_at, '-infinity') <= now() - make_interval(secs => $1)
         ORDER BY unipile_checked_at NULLS FIRST, id
         LIMIT $2",
    )
    .bind(recheck.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Remembers that a workspace's LinkedIn account is disconnected (the health gate reads it).
pub async fn mark_disconnected(
    conn: &mut PgConnection,
    workspace: i64,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE workspaces SET unipile_status = 'disconnected', unipile_checked_at = now() WHERE id = $1",
    )
    .bind(workspace)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(channel: &str, unipile: &str, attempts: i32) -> Due {
        Due {
            id: 1,
            workspace_id: 2,
            lead_id: 3,
            channel: channel.into(),
            attempts,
            unipile_status: unipile.into(),
            recheck_due: false,
        }
    }

    #[test]
    fn the_gate_skips_only_linkedin_sends_of_disconnected_workspaces() {
        let off = task("linkedin", "disconnected", 0);
        assert_eq!(
            before_call(&off, true, false).unwrap().status,
            Status::Skipped
        );
        assert_eq!(
            before_call(&off, false, false),
            None,
            "legacy: always attempted"
        );
        assert_eq!(
            before_call(&task("linkedin", "connected", 0), true, false),
            None
        );
        let email = task("email", "disconnected", 0);
        assert_eq!(before_call(&email, true, false), Some(Outcome::sent()));
    }

    #[test]
    fn a_disconnected_workspace_is_probed_once_per_tick_when_its_status_is_old() {
        let old = Due {
            recheck_due: true,
            ..task("linkedin", "disconnected", 0)
        };
        assert_eq!(before_call(&old, true, false), None, "probe it");
        assert_eq!(
            before_call(&old, true, true).unwrap().status,
            Status::Skipped,
            "one probe per workspace per tick"
        );
        assert!(
            after_success(&old).mark_connected,
            "a successful probe re-admits"
        );
        assert!(!after_success(&task("linkedin", "connected", 0)).mark_connected);
    }

    #[test]
    fn legacy_retries_every_error_at_once_forever() {
        let limits = Limits::default();
        let t = task("linkedin", "connected", 1000);
        let o = after_error(&t, Category::ProviderDisconnected, false, false, &limits);
        assert_eq!(o.status, Status::Pending);
        assert_eq!(o.retry_in, Some(Duration::ZERO));
        assert!(!o.mark_disconnected);
    }

    #[test]
    fn gated_final_errors_fail_and_a_disconnection_is_remembered() {
        let limits = Limits::default();
        let t = task("linkedin", "connected", 0);
        let o = after_error(&t, Category::ProviderDisconnected, false, true, &limits);
        assert_eq!((o.status, o.mark_disconnected), (Status::Failed, true));
        let o = after_error(&t, Category::ProviderInvalidRecipient, false, true, &limits);
        assert_eq!((o.status, o.mark_disconnected), (Status::Failed, false));
    }

    #[test]
    fn gated_retryable_errors_back_off_until_the_last_attempt() {
        let limits = Limits::default();
        let first = after_error(
            &task("linkedin", "connected", 0),
            Category::ProviderRetryable,
            true,
            true,
            &limits,
        );
        assert_eq!(first.status, Status::Pending);
        assert!(first.retry_in.unwrap() > Duration::ZERO);
        let last = after_error(
            &task("linkedin", "connected", limits.max_attempts as i32 - 1),
            Category::ProviderRetryable,
            true,
            true,
            &limits,
        );
        assert_eq!(last.status, Status::Failed);
    }
}
