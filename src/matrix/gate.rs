//! The Unipile health gate under a reconnection: a share of the workspaces seeded disconnected
//! reconnect mid-run (the fake Unipile takes their sends again); afterwards the harness reads
//! from the database which of their follow-ups the gate still skipped.
//!
//! A skip of a reconnected workspace is a *false skip*. Some are expected: the gate only
//! learns of a reconnection when it probes again (`UNIPILE_RECHECK_MS` after the last probe,
//! at the next follow-ups tick). Any false skip later than that bound is the gate being
//! "overly aggressive" — the seed's rollback criterion — and fails the arm.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fake_providers::{Fakes, Provider};

use super::invariant::connect;
use crate::model::{Reconnect, Scenario};
use crate::postgres::PgServer;
use crate::report::ReconnectReport;

/// Workspaces that reconnected, and when (the database's clock, which stamps the skips).
#[derive(Debug, Clone)]
pub(crate) struct Reconnected {
    pub workspaces: Vec<i64>,
    pub at: DateTime<Utc>,
}

/// The first `share` % of `disconnected` (at least one), by id.
pub(crate) fn chosen(disconnected: &[i64], share: f64) -> Vec<i64> {
    let mut ids = disconnected.to_vec();
    ids.sort_unstable();
    let n = ((ids.len() as f64 * share / 100.0).ceil() as usize).clamp(1, ids.len().max(1));
    ids.truncate(n);
    ids
}

/// Reconnects the chosen workspaces in the fake Unipile now, and reads the database's clock.
pub(crate) async fn reconnect(
    fakes: &Fakes,
    server: &PgServer,
    db: &str,
    disconnected: &[i64],
    r: Reconnect,
) -> anyhow::Result<Reconnected> {
    let workspaces = chosen(disconnected, r.share);
    let mut knobs = fakes.knobs(Provider::Unipile);
    for ws in &workspaces {
        knobs.disconnected_workspaces.remove(ws);
    }
    fakes.set(Provider::Unipile, knobs);
    let mut conn = connect(server, db).await?;
    let at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(Reconnected { workspaces, at })
}

/// The longest a reconnected workspace may still be skipped: until the gate probes it again
/// (`unipile_recheck` after its last probe), which a follow-ups tick does for up to
/// `PROBES_PER_TICK` of the `disconnected` workspaces (oldest status first), so within
/// ceil(disconnected / PROBES_PER_TICK) ticks, plus the last tick's budget.
pub(crate) fn readmission_bound(
    scenario: &Scenario,
    at: Duration,
    disconnected: usize,
) -> Duration {
    let tick_every = scenario
        .streams
        .iter()
        .find(|s| s.endpoint == crate::model::EndpointKind::CronFollowups)
        .map(|s| s.arrival.rate_at(at.as_secs_f64()))
        .filter(|r| *r > 0.0)
        .map_or(Duration::from_secs(5), |r| Duration::from_secs_f64(1.0 / r));
    let per_tick = inbox_service::domain::followups::PROBES_PER_TICK as usize;
    let ticks = disconnected.div_ceil(per_tick).max(1) as u32;
    scenario.service.unipile_recheck + tick_every * ticks + scenario.service.cron_time_budget
}

/// What the gate did with the reconnected workspaces, read after the drain.
pub(crate) async fn report(
    server: &PgServer,
    db: &str,
    r: &Reconnected,
    bound: Duration,
) -> anyhow::Result<ReconnectReport> {
    let mut conn = connect(server, db).await?;
    let (false_skips, late, readmitted, slowest): (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "WITH skips AS (
             SELECT t.updated_at FROM followup_tasks t
             WHERE t.status = 'skipped' AND t.workspace_id = ANY($1) AND t.updated_at >= $2),
         back AS (
             SELECT unipile_checked_at FROM workspaces
             WHERE id = ANY($1) AND unipile_status = 'connected' AND unipile_checked_at >= $2)
         SELECT (SELECT count(*) FROM skips),
                (SELECT count(*) FROM skips WHERE updated_at > $2 + make_interval(secs => $3)),
                (SELECT count(*) FROM back),
                (SELECT extract(epoch FROM max(unipile_checked_at - $2))::float8 FROM back)",
    )
    .bind(&r.workspaces)
    .bind(r.at)
    .bind(bound.as_secs_f64())
    .fetch_one(&mut conn)
    .await?;
    sqlx::Connection::close(conn).await?;
    Ok(ReconnectReport {
        reconnected: r.workspaces.len() as u64,
        readmitted: readmitted as u64,
        slowest_readmission_s: slowest,
        false_skips: false_skips as u64,
        false_skips_late: late as u64,
        bound_s: bound.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_the_disconnected_reconnects_at_least_one() {
        assert_eq!(chosen(&[9, 3, 7, 1], 50.0), vec![1, 3]);
        assert_eq!(chosen(&[9, 3, 7, 1], 1.0), vec![1]);
        assert_eq!(chosen(&[9, 3, 7, 1], 100.0), vec![1, 3, 7, 9]);
        assert!(chosen(&[], 50.0).is_empty());
    }
}
