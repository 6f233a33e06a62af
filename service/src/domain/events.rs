//! What email provider events do to the data (their parsing is in [`super::event`]).
//!
//! `EMAIL_SENT` has two paths. Legacy (flag off): every effect on the request path inside one
//! interactive transaction — lead upsert, message insert, lead counters, activity row,
//! follow-up reschedule — plus the GHL contact sync while the connection is held, and the
//! slot-ledger increment. Fixed (`INBOXXIA_EMAIL_SENT_ASYNC`): the request only enqueues a job;
//! the worker applies the same effects. Either way the message's unique provider event id makes
//! the effects happen once, however often and concurrently the event is delivered.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::event::{contact_body, EmailEvent, EventKind};
use crate::domain::{jobs, ledger, steps::Steps, ticks::Budget};
use crate::error::AppError;
use crate::providers::{self, Provider};
use crate::state::Resources;
use crate::tally::Tally;

/// What handling an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handled {
    /// Effects applied now.
    Applied,
    /// Queued for the worker.
    Accepted,
    /// Seen before: nothing done.
    Duplicate,
    /// Unknown type or unknown lead: acknowledged, nothing done.
    Ignored,
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23503"))
}

fn unknown_workspace(id: i64) -> AppError {
    AppError::Unprocessable(format!("field `workspace_id`: no workspace {id}"))
}

/// The database effects of `EMAIL_SENT`s, in the caller's transaction, in two statements
/// however many there are: each event's lead upserted, then — only for an event whose message
/// is new (a redelivery is a duplicate) — the message, the lead's counter, its activity and its
/// pending follow-ups. Returns, for each event in order, whether its effects were applied.
async fn sent_effects(
    state: &Resources,
    tx: &mut PgConnection,
    tally: &Tally,
    events: &[&EmailEvent],
    steps: &mut Steps,
) -> Result<Vec<bool>, AppError> {
    // One row per lead (an upsert may not touch a row twice), in key order (so that two
    // writers lock leads alike), carrying the latest of its events' times.
    let mut leads: std::collections::BTreeMap<(i64, &str), DateTime<Utc>> = Default::default();
    for ev in events {
        let at = leads
            .entry((ev.workspace_id, ev.lead_email.as_str()))
            .or_insert(ev.occurred_at);
        *at = (*at).max(ev.occurred_at);
    }
    let (keys, times): (Vec<_>, Vec<_>) = leads.into_iter().unzip();
    let (workspaces, emails): (Vec<i64>, Vec<&str>) = keys.into_iter().unzip();
    // A new lead's `last_message_at` is its event's time, as the effects below would set it.
    let ids: Vec<(i64, i64, String)> = sqlx::query_as(
        "INSERT INTO leads (workspace_id, email, first_name, status, last_message_at)
         SELECT w, e, split_part(e, '@', 1), 'contacted', at
         FROM unnest($1::int8[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS t(w, e, at, n)
         ORDER BY n
         ON CONFLICT (workspace_id, email)
         DO UPDATE SET last_message_at = greatest(leads.last_message_at, EXCLUDED.last_message_at)
         RETURNING id, workspace_id, email",
    )
    .bind(&workspaces)
    .bind(&emails)
    .bind(&times)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| match events {
        [ev] if is_foreign_key_violation(&e) => unknown_workspace(ev.workspace_id),
        _ => e.into(),
    })?;
    tally.wrote(ids.len() as u64); // RETURNING gave each row inserted or updated
    steps.mark("lead_upsert");
    let lead_of: std::collections::HashMap<(i64, &str), i64> = ids
        .iter()
        .map(|(id, ws, email)| ((*ws, email.as_str()), *id))
        .collect();
    let lead_ids = events
        .iter()
        .map(|ev| {
            lead_of
                .get(&(ev.workspace_id, ev.lead_email.as_str()))
                .copied()
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a lead upsert returned no row")))
        })
        .collect::<Result<Vec<i64>, AppError>>()?;
    let faults = state.faults();
    let (inserted, updated, activities, followups, applied): (i64, i64, i64, i64, Vec<i32>) =
        sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::timestamptz[])
                     WITH ORDINALITY AS t(w, lead, ev, subject, at, n)),
             message AS (
                 INSERT INTO messages (workspace_id, lead_id, direction, channel, provider_event_id, subject, body, is_read, sent_at)
                 SELECT w, lead, 'outbound', 'email', ev, subject, '', true, at FROM input ORDER BY n
                 ON CONFLICT (provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING
                 RETURNING provider_event_id),
             go AS (SELECT * FROM input WHERE $6 OR ev IN (SELECT provider_event_id FROM message)),
             lead AS (
                 UPDATE leads l SET emails_sent = l.emails_sent + $7 * g.sent * CASE
                                        WHEN NOT $8 OR (SELECT count(DISTINCT lead) FROM go) < 2 THEN 1
                                        WHEN g.lead = (SELECT min(lead) FROM go) THEN 2
                                        WHEN g.lead = (SELECT max(lead) FROM go) THEN 0
                                        ELSE 1 END,
                                    last_message_at = greatest(l.last_message_at, g.at),
                                    status = CASE WHEN l.status = 'new' THEN 'contacted' ELSE l.status END
                 FROM (SELECT lead, count(*) AS sent, max(at) AS at FROM go GROUP BY lead) g
                 WHERE l.id = g.lead
                 RETURNING 1),
             activity AS (
                 INSERT INTO lead_activities (workspace_id, lead_id, kind, provider_event_id)
                 SELECT w, lead, 'email_sent', ev FROM go ORDER BY n
                 ON CONFLICT (kind, provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING
                 RETURNING 1),
             followups AS (
                 UPDATE followup_tasks SET due_at = now() + interval '3 days', updated_at = now()
                 WHERE status = 'pending' AND lead_id IN (SELECT lead FROM go)
                 RETURNING 1)
             SELECT (SELECT count(*) FROM message), (SELECT count(*) FROM lead),
                    (SELECT count(*) FROM activity), (SELECT count(*) FROM followups),
                    (SELECT coalesce(array_agg(n::int4), '{}') FROM go)",
        )
        .bind(events.iter().map(|ev| ev.workspace_id).collect::<Vec<_>>())
        .bind(&lead_ids)
        .bind(events.iter().map(|ev| ev.event_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|ev| ev.subject.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|ev| ev.occurred_at).collect::<Vec<_>>())
        .bind(faults.skip_dedupe)
        .bind(if faults.double_counter { 2 } else { 1 })
        .bind(faults.crossed_counters)
        .fetch_one(&mut *tx)
        .await?;
    // One statement: one count, so the tally knows the most one statement wrote.
    tally.wrote((inserted + updated + activities + followups) as u64);
    let mut went = vec![false; events.len()];
    for n in applied {
        // ORDINALITY counts from 1.
        if let Some(w) = usize::try_from(n - 1).ok().and_then(|i| went.get_mut(i)) {
            *w = true;
        }
    }
    steps.mark("lead_effects");
    Ok(went)
}

async fn sync_contact(state: &Resources, tally: &Tally, ev: &EmailEvent) -> Result<(), AppError> {
    providers::call(
        state,
        tally,
        Provider::Ghl,
        incident_wire::provider_path::GHL_CONTACT_UPSERT,
        &contact_body(ev),
    )
    .await?;
    Ok(())
}

/// Legacy `EMAIL_SENT`: everything on the request path, the external call inside the
/// transaction, the ledger on a second connection.
pub async fn apply_sent_sync(
    state: &Resources,
    tally: &Tally,
    ev: &EmailEvent,
) -> Result<Handled, AppError> {
    let mut steps = Steps::new(state.switches().log_slow_paths);
    let mut conn = state.acquire(tally).await?;
    steps.mark("acquire");
    let mut tx = crate::db::begin(&mut conn).await?;
    if sent_effects(state, &mut tx, tally, &[ev], &mut steps).await? != [true] {
        tx.commit().await?;
        return Ok(Handled::Duplicate);
    }
    sync_contact(state, tally, ev).await?;
    steps.mark("ghl_sync");
    count_send(state, tally, &mut tx, ev).await?;
    steps.mark("ledger");
    tx.commit().await?;
    steps.mark("commit");
    steps.log("webhook EMAIL_SENT (sync)");
    Ok(Handled::Applied)
}

/// The slot ledger's count of this send (its workspace, its day): always the atomic upsert on
/// the caller's transaction, best effort.
async fn count_send(
    state: &Resources,
    tally: &Tally,
    tx: &mut PgConnection,
    ev: &EmailEvent,
) -> Result<(), AppError> {
    ledger::count(
        state,
        tally,
        tx,
        ev.workspace_id,
        ev.occurred_at.date_naive(),
    )
    .await
}

/// What the worker's apply of a queued `EMAIL_SENT` came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobApplied {
    /// Effects applied, the job marked done in the same transaction.
    Applied,
    /// Seen before: nothing applied, the job marked done.
    Duplicate,
    /// Another worker holds the job's lease now: nothing applied or marked.
    LeaseLost,
    /// Left out of its batch, its lead held by another transaction: nothing applied or
    /// marked; the job is still this claim's, to run on its own.
    Busy,
}

/// Of `events`' leads, those that exist and another transaction holds (row-locked): the rest
/// are locked now, for the caller's transaction, without waiting.
async fn busy_leads(
    tx: &mut PgConnection,
    events: impl Iterator<Item = &EmailEvent>,
) -> Result<std::collections::HashSet<(i64, String)>, AppError> {
    let (workspaces, emails): (Vec<i64>, Vec<&str>) = events
        .map(|ev| (ev.workspace_id, ev.lead_email.as_str()))
        .unzip();
    let busy: Vec<(i64, String)> = sqlx::query_as(
        "WITH wanted AS (SELECT DISTINCT w, e FROM unnest($1::int8[], $2::text[]) AS t(w, e)),
         mine AS MATERIALIZED (
             SELECT l.id FROM leads l JOIN wanted ON l.workspace_id = wanted.w AND l.email = wanted.e
             ORDER BY l.id
             FOR UPDATE OF l SKIP LOCKED)
         SELECT l.workspace_id, l.email
         FROM leads l JOIN wanted ON l.workspace_id = wanted.w AND l.email = wanted.e
         WHERE l.id NOT IN (SELECT id FROM mine)",
    )
    .bind(workspaces)
    .bind(emails)
    .fetch_all(tx)
    .await?;
    Ok(busy.into_iter().collect())
}

/// The worker's `EMAIL_SENT`s of one claim, on `conn`, within its tick's `budget`: in one
/// transaction, the jobs this claim still holds are marked done, and for those, the effects,
/// the ledger and the GHL syncs' outbox rows are written — so each happens exactly once, and
/// only while this worker holds the job's lease. A batch costs nine round trips whatever its
/// size, as many as one job alone did, and one more to leave out the jobs whose lead another
/// transaction holds ([`JobApplied::Busy`]). Returns what each job came to, in order; its GHL call
/// ([`sync_applied`]) is the caller's to make, never holding a connection.
pub async fn apply_sent_jobs(
    state: &Resources,
    tally: &Tally,
    conn: &mut PgConnection,
    batch: &[(&jobs::Job, &EmailEvent)],
    budget: &Budget,
) -> Result<Vec<JobApplied>, AppError> {
    let limits = &state.config.limits;
    let mut steps = Steps::new(state.switches().log_slow_paths);
    // No statement outlives the tick's work deadline.
    let mut tx = crate::db::begin_bounded(conn, budget.work_left()).await?;
    steps.mark("begin");
    // In a batch, a job whose lead another transaction holds is left out, to run on its own
    // (where it waits alone): one held row must not hold up the batch, nor the tick.
    let busy = if batch.len() > 1 {
        busy_leads(&mut tx, batch.iter().map(|(_, ev)| *ev)).await?
    } else {
        Default::default()
    };
    steps.mark("busy");
    let busy: Vec<bool> = batch
        .iter()
        .map(|(_, ev)| busy.contains(&(ev.workspace_id, ev.lead_email.clone())))
        .collect();
    let claimed: Vec<&jobs::Job> = batch
        .iter()
        .zip(&busy)
        .filter(|(_, busy)| !**busy)
        .map(|((job, _), _)| *job)
        .collect();
    let held: std::collections::HashSet<i64> = jobs::complete_held(&mut tx, &claimed)
        .await?
        .into_iter()
        .collect();
    tally.wrote(held.len() as u64);
    steps.mark("complete");
    let live: Vec<&EmailEvent> = batch
        .iter()
        .zip(&busy)
        .filter(|((job, _), busy)| held.contains(&job.id) && !**busy)
        .map(|((_, ev), _)| *ev)
        .collect();
    let went = if live.is_empty() {
        Vec::new()
    } else {
        sent_effects(state, &mut tx, tally, &live, &mut steps).await?
    };
    let applied: Vec<&EmailEvent> = live
        .iter()
        .zip(&went)
        .filter(|(_, went)| **went)
        .map(|(ev, _)| *ev)
        .collect();
    let counts: Vec<(i64, chrono::NaiveDate)> = applied
        .iter()
        .map(|ev| (ev.workspace_id, ev.occurred_at.date_naive()))
        .collect();
    ledger::count_many(state, tally, &mut tx, &counts).await?;
    steps.mark("ledger");
    jobs::enqueue_ghl_syncs(&mut tx, tally, &applied, limits.job_lease).await?;
    steps.mark("outbox");
    tx.commit().await?;
    steps.mark("commit");
    steps.log("jobs EMAIL_SENT");
    let mut went = went.into_iter();
    Ok(batch
        .iter()
        .zip(busy)
        .map(|((job, _), busy)| {
            if busy {
                JobApplied::Busy
            } else if !held.contains(&job.id) {
                JobApplied::LeaseLost
            } else if went.next() == Some(true) {
                JobApplied::Applied
            } else {
                JobApplied::Duplicate
            }
        })
        .collect())
}

/// The GHL contact sync of an `EMAIL_SENT` job [`apply_sent_jobs`] applied (its outbox row
/// committed at `committed`): made now only while the call's whole timeout fits the `budget`;
/// otherwise, or when it fails, the outbox row makes it from the queue. What the call came to
/// goes in `settles`, for the tick to write to the outbox row with its next claim or at its end.
pub async fn sync_applied(
    state: &Resources,
    tally: &Tally,
    ev: &EmailEvent,
    budget: &Budget,
    settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
    committed: std::time::Instant,
) {
    let limits = &state.config.limits;
    let (synced, retry_after) = match budget.call_timeout(limits.provider_timeout) {
        None => (false, Duration::ZERO),
        Some(timeout) => match providers::call_once(
            state,
            tally,
            Provider::Ghl,
            incident_wire::provider_path::GHL_CONTACT_UPSERT,
            &contact_body(ev),
            Some(timeout),
        )
        .await
        {
            Ok(_) => (true, Duration::ZERO),
            Err(e) => {
                tally.note(e.category);
                tracing::warn!(
                    category = e.category.as_str(),
                    dedupe_key = %ev.dedupe_key(),
                    "GHL contact sync failed; the queue retries it"
                );
                (false, providers::backoff(limits.provider_backoff, 1))
            }
        },
    };
    settles
        .lock()
        .expect("settles lock")
        .push(jobs::GhlSettle::new(
            ev,
            (!synced).then_some(retry_after),
            committed,
        ));
}

/// The route [`settle_later`]'s writes are declared under.
pub const DEFERRED_SETTLE_ROUTE: &str = "deferred GHL sync settle";

/// Settles outbox rows after the tick that made their GHL calls could not (its budget spent
/// waiting for a connection: a pool full of legacy counts queries). A row left queued would
/// come due one job lease after it was committed and call GHL a second time; so this keeps
/// trying, off the tick, until shortly before the first of them comes due. Rows of failed
/// calls are left: they come due by themselves.
pub fn settle_later(state: &Resources, settles: Vec<jobs::GhlSettle>) {
    let settles: Vec<jobs::GhlSettle> = settles.into_iter().filter(|s| s.synced()).collect();
    let Some(first) = settles.iter().map(|s| s.committed).min() else {
        return;
    };
    let lease = state.config.limits.job_lease;
    let deadline = first + lease - lease / 10;
    let state = state.clone();
    tokio::spawn(async move {
        let tally = Tally::default();
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let settled = match state.acquire_within(&tally, wait).await {
            Ok(mut conn) => jobs::settle_ghl_syncs(&mut conn, &settles).await.ok(),
            Err(_) => None,
        };
        match settled {
            Some(n) => state
                .metrics
                .deferred_writes(DEFERRED_SETTLE_ROUTE, u32::try_from(n).unwrap_or(u32::MAX)),
            None => tracing::warn!(
                syncs = settles.len(),
                first = settles[0].key(),
                "GHL syncs made could not be marked done before their outbox rows come due: the queue calls GHL again (the idempotency key lets GHL tell)"
            ),
        }
    });
}

/// `EMAIL_OPENED`, `EMAIL_REPLIED`, `EMAIL_BOUNCED`: small, synchronous in every mode.
pub async fn apply_other(
    state: &Resources,
    tally: &Tally,
    ev: &EmailEvent,
) -> Result<Handled, AppError> {
    let mut conn = state.acquire(tally).await?;
    let mut tx = crate::db::begin(&mut conn).await?;
    let lead: Option<i64> =
        sqlx::query_scalar("SELECT id FROM leads WHERE workspace_id = $1 AND email = $2")
            .bind(ev.workspace_id)
            .bind(&ev.lead_email)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(lead_id) = lead else {
        return Ok(Handled::Ignored);
    };
    let (kind, lead_update) = match ev.kind {
        EventKind::Opened => (
            "email_opened",
            "UPDATE leads SET emails_opened = emails_opened + 1 WHERE id = $1",
        ),
        EventKind::Replied => (
            "email_replied",
            "UPDATE leads SET status = 'replied', last_message_at = now() WHERE id = $1",
        ),
        EventKind::Bounced => (
            "email_bounced",
            "UPDATE leads SET status = 'bounced' WHERE id = $1",
        ),
        EventKind::Sent | EventKind::Unknown(_) => unreachable!("routed elsewhere"),
    };
    let inserted = sqlx::query(
        "INSERT INTO lead_activities (workspace_id, lead_id, kind, provider_event_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, provider_event_id) WHERE provider_event_id IS NOT NULL DO NOTHING",
    )
    .bind(ev.workspace_id)
    .bind(lead_id)
    .bind(kind)
    .bind(&ev.event_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tally.wrote(inserted);
    if inserted == 0 {
        tx.commit().await?;
        return Ok(Handled::Duplicate);
    }
    let updated = sqlx::query(lead_update)
        .bind(lead_id)
        .execute(&mut *tx)
        .await?;
    tally.wrote(updated.rows_affected());
    if ev.kind == EventKind::Replied {
        let reply = sqlx::query(
            "INSERT INTO messages (workspace_id, lead_id, direction, channel, subject, body, is_read, sent_at)
             VALUES ($1, $2, 'inbound', 'email', $3, '', false, $4)",
        )
        .bind(ev.workspace_id)
        .bind(lead_id)
        .bind(&ev.subject)
        .bind(ev.occurred_at)
        .execute(&mut *tx)
        .await?;
        tally.wrote(reply.rows_affected());
    }
    tx.commit().await?;
    Ok(Handled::Applied)
}
