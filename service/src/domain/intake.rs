//! Group commit for the queued `EMAIL_SENT` (`INBOXXIA_EMAIL_SENT_ASYNC`).
//!
//! A webhook is still answered 202 only once its job row has committed. What changes is how
//! the rows get there: the enqueues that arrive while one is being written wait in [`Intake`]'s
//! queue, and the next statement writes them all, in arrival order — one round trip, one
//! commit and one pooled connection for the lot instead of one each. At most [`FLUSHERS`]
//! statements are in flight, so a webhook burst holds at most that many of the pool's
//! connections. A flush task takes its connection first and its batch then, so what arrived
//! while the pool kept it waiting (a pool full of legacy counts) goes in the same statement
//! (taking the batch first left those waiting for a second turn in the pool's line: the `async`
//! arm's webhook p95 went from 6.55 s to the 10 s function limit). It keeps the connection while
//! requests keep coming, and gives it back when none waits.
//!
//! Each request keeps its own answer: new, duplicate (its dedupe key was already queued), or
//! 422 for a workspace that does not exist. Two requests with one dedupe key never share a
//! statement (the later waits for the next), so exactly one of them is new. A request whose
//! client went away before its batch was taken (once its flush task has a connection) writes
//! nothing. A statement that Postgres refuses for its data (SQLSTATE class 22 or 23) is split:
//! each request is written on its own, so one bad row fails only its own request. Any other
//! failure (no connection within the acquire timeout, a statement timeout, a lost connection)
//! fails every request in the statement with its category, as it would have failed each of them
//! alone.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use sqlx::PgConnection;
use tokio::sync::oneshot;

use crate::domain::event::EmailEvent;
use crate::domain::jobs::{self, Enqueued, EMAIL_SENT};
use crate::error::AppError;
use crate::state::Resources;
use crate::tally::Tally;

/// Statements in flight at once, at most (each on a pooled connection of its own).
pub const FLUSHERS: usize = 2;

/// Rows in one statement, at most.
pub const MAX_BATCH: usize = 256;

/// The queue of enqueues waiting for a statement. One per process (in
/// [`crate::app_state::AppState`]).
#[derive(Default)]
pub struct Intake {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Flush tasks running (at most [`FLUSHERS`]).
    flushers: usize,
    /// Statements written so far, and the rows they carried (for the metrics and tests).
    statements: u64,
    rows: u64,
}

struct Pending {
    queued: Instant,
    dedupe_key: String,
    workspace_id: i64,
    payload: Value,
    tally: Arc<Tally>,
    reply: oneshot::Sender<Result<Enqueued, AppError>>,
}

/// What [`Intake`] has written: statements, and the rows they carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub statements: u64,
    pub rows: u64,
}

impl Intake {
    /// Queues `ev` (with its raw body `payload`) and waits for its statement's answer. Counts
    /// the row in `tally` when it was new.
    pub async fn enqueue(
        self: &Arc<Self>,
        state: &Resources,
        tally: &Arc<Tally>,
        ev: &EmailEvent,
        payload: Value,
    ) -> Result<Enqueued, AppError> {
        let (reply, answer) = oneshot::channel();
        // Until its statement has a connection, the request waits for the pool (its category
        // if the function limit cuts it there).
        tally.set_waiting_for_pool(true);
        let spawn = {
            let mut q = self.lock();
            q.pending.push_back(Pending {
                queued: Instant::now(),
                dedupe_key: ev.dedupe_key(),
                workspace_id: ev.workspace_id,
                payload,
                tally: tally.clone(),
                reply,
            });
            let spawn = q.flushers < FLUSHERS;
            if spawn {
                q.flushers += 1;
            }
            spawn
        };
        if spawn {
            tokio::spawn(flush_loop(state.clone(), self.clone()));
        }
        let outcome = answer.await.unwrap_or_else(|_| {
            Err(AppError::Internal(anyhow::anyhow!(
                "the enqueue's flush task ended without an answer"
            )))
        });
        tally.set_waiting_for_pool(false);
        if let Ok(Enqueued::New) = outcome {
            tally.wrote(1);
        }
        outcome
    }

    /// Statements written so far and the rows they carried.
    pub fn written(&self) -> Written {
        let q = self.lock();
        Written {
            statements: q.statements,
            rows: q.rows,
        }
    }

    /// Requests queued and not yet in a statement.
    pub fn waiting(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next statement's requests: the oldest waiting, at most [`MAX_BATCH`], one per dedupe
    /// key (a later one with the same key stays queued, in its place); requests whose client
    /// went away are dropped. `None` (and one flusher fewer) when nothing waits.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut q = self.lock();
        let mut keys = HashSet::new();
        let mut batch = Vec::new();
        let mut deferred = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(p) = q.pending.pop_front() else {
                break;
            };
            if p.reply.is_closed() {
                continue;
            }
            if keys.insert(p.dedupe_key.clone()) {
                batch.push(p);
            } else {
                deferred.push(p);
            }
        }
        for p in deferred.into_iter().rev() {
            q.pending.push_front(p);
        }
        if batch.is_empty() {
            q.flushers -= 1;
            return None;
        }
        q.statements += 1;
        q.rows += batch.len() as u64;
        drop(q);
        // Its statement has a connection: the request's wait for the pool ends here.
        for p in &batch {
            p.tally.add_pool_wait(p.queued.elapsed());
            p.tally.set_waiting_for_pool(false);
        }
        Some(batch)
    }
}

/// Writes batches until none waits.
async fn flush_loop(state: Resources, intake: Arc<Intake>) {
    // Gives the flusher back if the task ends inside a flush (a panic, a runtime shutting
    // down); after a panic, requests still queued get a new flusher.
    struct Running(Option<(Resources, Arc<Intake>)>);
    impl Drop for Running {
        fn drop(&mut self) {
            let Some((state, intake)) = self.0.take() else {
                return;
            };
            let respawn = {
                let mut q = intake.lock();
                let respawn = std::thread::panicking() && !q.pending.is_empty();
                if !respawn {
                    q.flushers -= 1;
                }
                respawn
            };
            if respawn {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(flush_loop(state, intake))),
                    Err(_) => intake.lock().flushers -= 1,
                }
            }
        }
    }
    let mut running = Running(Some((state.clone(), intake.clone())));
    loop {
        // The connection first, then the batch: what arrived while the pool kept us waiting
        // goes in the same statement.
        let mut conn = match state.acquire(&Tally::default()).await {
            Ok(conn) => conn,
            Err(e) => match intake.next_batch() {
                // No connection in the acquire timeout: the oldest waiting fail with it.
                Some(batch) => {
                    answer_all(batch, e);
                    continue;
                }
                None => break,
            },
        };
        // Kept while requests keep coming (no release and acquire between statements); given
        // back when none waits, or when it failed.
        loop {
            let Some(batch) = intake.next_batch() else {
                running.0 = None;
                return;
            };
            if !write(&mut conn, batch).await {
                break;
            }
        }
    }
    // `next_batch` gave the flusher back.
    running.0 = None;
}

/// The batch statement: `$1` the job kind; `$2`, `$3`, `$4` the dedupe keys, payloads and
/// workspace ids. One row back per request, in order: whether it was inserted, and whether its
/// workspace exists or its key was already queued (a duplicate, when not inserted).
const BATCH_SQL: &str = "WITH input AS (
    SELECT * FROM unnest($2::text[], $3::jsonb[], $4::int8[])
        WITH ORDINALITY AS t(dedupe_key, payload, workspace_id, n)
), inserted AS (
    INSERT INTO background_jobs (kind, dedupe_key, payload)
    SELECT $1, i.dedupe_key, i.payload FROM input i
    WHERE EXISTS (SELECT 1 FROM workspaces w WHERE w.id = i.workspace_id)
    ORDER BY i.n
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING dedupe_key
)
SELECT EXISTS (SELECT 1 FROM inserted x WHERE x.dedupe_key = i.dedupe_key),
       EXISTS (SELECT 1 FROM workspaces w WHERE w.id = i.workspace_id)
           OR EXISTS (SELECT 1 FROM background_jobs b WHERE b.dedupe_key = i.dedupe_key)
FROM input i
ORDER BY i.n";

/// Writes `batch` in one statement on `conn` and answers each request; `false` when the
/// connection failed (not a row refused), so that it is not used again.
async fn write(conn: &mut PgConnection, batch: Vec<Pending>) -> bool {
    let keys: Vec<&str> = batch.iter().map(|p| p.dedupe_key.as_str()).collect();
    let payloads: Vec<&Value> = batch.iter().map(|p| &p.payload).collect();
    let workspaces: Vec<i64> = batch.iter().map(|p| p.workspace_id).collect();
    let rows: Result<Vec<(bool, bool)>, sqlx::Error> = sqlx::query_as(BATCH_SQL)
        .bind(EMAIL_SENT)
        .bind(&keys)
        .bind(&payloads)
        .bind(&workspaces)
        .fetch_all(&mut *conn)
        .await;
    match rows {
        Ok(rows) if rows.len() == batch.len() => {
            for (p, (inserted, known)) in batch.into_iter().zip(rows) {
                let outcome = if inserted {
                    Ok(Enqueued::New)
                } else if known {
                    Ok(Enqueued::Duplicate)
                } else {
                    Err(jobs::unknown_workspace(p.workspace_id))
                };
                let _ = p.reply.send(outcome);
            }
            true
        }
        Ok(rows) => {
            let e = AppError::Internal(anyhow::anyhow!(
                "the enqueue statement answered {} rows for {} requests",
                rows.len(),
                batch.len()
            ));
            answer_all(batch, e);
            false
        }
        Err(sqlx::Error::Database(db)) if refused_data(db.code().as_deref()) => {
            // One request's row was refused: each is written alone, so only its own fails.
            for p in batch {
                let outcome =
                    jobs::enqueue_keyed(conn, &p.dedupe_key, p.workspace_id, &p.payload).await;
                let _ = p.reply.send(outcome);
            }
            true
        }
        Err(e) => {
            answer_all(batch, AppError::Db(e));
            false
        }
    }
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation): the statement
/// was refused for what one of its rows holds.
fn refused_data(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
}

/// Fails every request in `batch` with `e`.
fn answer_all(batch: Vec<Pending>, e: AppError) {
    let e = std::sync::Arc::new(e);
    for p in batch {
        let _ = p.reply.send(Err(AppError::Shared(e.clone())));
    }
}
