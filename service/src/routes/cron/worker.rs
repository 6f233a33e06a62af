//! `GET /api/cron/background-jobs`: the job worker. Claims due jobs (`SKIP LOCKED`, leases),
//! runs them side by side within the tick's budget — the queued `EMAIL_SENT`s applied together
//! in batches, GHL syncs through the outbox — settles each outcome (done, retried with backoff,
//! failed for good, lease lost), then refreshes stale cached counts.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};

use super::{cron_conn, leased, CronCaller, TickReport};
use crate::app_state::AppState;
use crate::domain::steps::Steps;
use crate::domain::ticks::Budget;
use crate::domain::{counts, event, events, jobs};
use crate::error::{AppError, Category};
use crate::providers::{self, backoff, Provider};
use crate::state::CronConn;
use crate::tally::Tally;

pub(super) async fn background_jobs(
    _: CronCaller,
    State(state): State<AppState>,
    Extension(tally): Extension<Arc<Tally>>,
) -> Result<Json<TickReport>, AppError> {
    leased(&state, &tally, "background_jobs", |budget| {
        background_jobs_tick(&state, &tally, budget)
    })
    .await
}

async fn background_jobs_tick(
    state: &AppState,
    tally: &Arc<Tally>,
    budget: Budget,
) -> Result<TickReport, AppError> {
    let limits = state.config.limits.clone();
    let mut report = TickReport::default();
    if state.faults().undeclared_write {
        // A deliberate bug (tests only): rows written on a connection of its own, never
        // given to the tally.
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect(&state.config.database_url)
                .await
                .map_err(AppError::from)?;
        sqlx::query("UPDATE leads SET emails_opened = emails_opened")
            .execute(&mut conn)
            .await?;
        let _ = sqlx::Connection::close(conn).await;
    }
    // With LOG_SLOW_PATHS, where the tick's time went, each step's total over its claims.
    let mut steps = Steps::new(state.switches().log_slow_paths);
    {
        let Some(mut conn) = cron_conn(state, tally, budget.work_left()).await? else {
            return Ok(report.cut());
        };
        report.abandoned = jobs::fail_abandoned(&mut conn, limits.max_attempts).await?;
        tally.wrote(report.abandoned);
    }
    steps.mark("abandoned");
    // A pipeline of at most `worker_concurrency` jobs: when one ends, the next is claimed (a
    // provider call does not hold up the others, nor wait for the slowest of a round). A claim
    // takes as many jobs as there are free slots, up to its share, and applies its
    // `EMAIL_SENT`s together on its own connection; [`CLAIMS_AT_ONCE`] claims run at once, so
    // one batch is applied while the next is claimed. Every other job, and each applied job's
    // GHL call, is a task of its own. A claim reserves its slots before it takes a connection,
    // so the tick holds at most `worker_concurrency` connections; no job is claimed unless the
    // longest so far still fits the budget.
    let concurrency = limits.worker_concurrency.max(1) as usize;
    let share = concurrency.div_ceil(CLAIMS_AT_ONCE);
    // Jobs claimed (or reserved by a claim under way), against the tick's batch limit.
    let mut handled = 0u64;
    // Slots taken: jobs claimed and not yet ended, and the slots of claims under way.
    let mut in_flight = 0usize;
    let mut claims = 0usize;
    let mut ends = Ends {
        claiming: true,
        ..Ends::default()
    };
    let mut running = tokio::task::JoinSet::new();
    // The GHL calls' outbox rows to settle, written with the next claim or at the end.
    let settles = Arc::new(std::sync::Mutex::new(Vec::new()));
    loop {
        while ends.claiming && claims < CLAIMS_AT_ONCE && in_flight < concurrency {
            let left = u64::from(limits.cron_batch_limit).saturating_sub(handled);
            if left == 0 || budget.work_left() <= ends.longest_job {
                report.budget_exhausted = true;
                ends.claiming = false;
                break;
            }
            let want = (concurrency - in_flight).min(share).min(left as usize);
            handled += want as u64;
            in_flight += want;
            claims += 1;
            let (state, tally, settles) = (state.clone(), tally.clone(), settles.clone());
            running.spawn(
                async move { claim_and_start(&state, &tally, budget, want, &settles).await },
            );
        }
        let joined = running.join_next().await;
        steps.mark("wait");
        let Some(first) = joined else {
            break;
        };
        // With it, every task that has ended meanwhile, so the next claim takes as many as
        // there are free slots: a claim per ended job made the claims the bottleneck when jobs
        // are quick (258 jobs/s against the rounds' 571 with GHL answering at once).
        let mut ended = vec![first];
        while let Some(joined) = running.try_join_next() {
            ended.push(joined);
        }
        for joined in ended {
            // A task is never aborted: an error here is its panic, passed on.
            match joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
                Task::Job((job, outcome, took)) => {
                    in_flight -= 1;
                    ends.record(&mut report, job, outcome, took);
                }
                Task::Claim {
                    reserved,
                    claimed,
                    steps: its,
                } => {
                    claims -= 1;
                    steps.add(&its);
                    let started = match claimed {
                        Ok(Some(started)) => started,
                        // No connection before the tick's work deadline.
                        Ok(None) => {
                            report.budget_exhausted = true;
                            Started::default()
                        }
                        // Like a job's error: the jobs already running end (and are marked)
                        // first.
                        Err(e) => {
                            ends.failed.get_or_insert(e);
                            Started::default()
                        }
                    };
                    // The slots reserved and not claimed are free again; a claim that found
                    // nothing (the queue drained, no connection in time, or an error) ends the
                    // claiming.
                    let unused = reserved - started.claimed;
                    in_flight -= unused;
                    handled -= unused as u64;
                    if started.claimed == 0 {
                        ends.claiming = false;
                    }
                    if let Some(n) = started.batched {
                        report.batches += 1;
                        report.batched += n;
                    }
                    for (job, outcome, took) in started.at_once {
                        in_flight -= 1;
                        ends.record(&mut report, job, outcome, took);
                    }
                    for follow in started.follow {
                        let (state, tally, settles) =
                            (state.clone(), tally.clone(), settles.clone());
                        running.spawn(async move {
                            Task::Job(follow.run(&state, &tally, budget, &settles).await)
                        });
                    }
                }
            }
        }
    }
    let Ends { cut, failed, .. } = ends;
    settle_the_rest(state, tally, &budget, &settles).await;
    steps.mark("settle_rest");
    if let Some(e) = failed {
        return Err(e);
    }
    if !cut.is_empty() {
        // Not run for lack of time: given back as they were, in the budget's reserve
        // (without a connection, their leases expire and they are claimed again).
        report.budget_exhausted = true;
        if let Ok(mut conn) = state.acquire_for_cron(tally, budget.left()).await {
            tally.wrote(jobs::release(&mut conn, &cut).await?);
        }
    }
    if state.switches().counts_cache_fallback && !budget.spent() {
        if let Some(mut conn) = cron_conn(state, tally, budget.work_left()).await? {
            report.counts_refreshed = counts::refresh_stale(
                state,
                state.counts(),
                tally,
                &mut conn,
                10,
                budget.work_until,
            )
            .await?;
        }
        if budget.spent() {
            report.budget_exhausted = true;
        }
        steps.mark("counts");
    }
    steps.log("cron background_jobs");
    Ok(report)
}

/// The settles gathered so far, taken out.
fn take(settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>) -> Vec<jobs::GhlSettle> {
    std::mem::take(&mut *settles.lock().expect("settles lock"))
}

/// Writes the settles the tick's claims did not, in the budget's reserve; without a
/// connection, [`events::settle_later`] goes on trying after the tick.
async fn settle_the_rest(
    state: &AppState,
    tally: &Tally,
    budget: &Budget,
    settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
) {
    let rest = take(settles);
    if rest.is_empty() {
        return;
    }
    let written = match state.acquire_for_cron(tally, budget.left()).await {
        Ok(mut conn) => jobs::settle_ghl_syncs(&mut conn, &rest).await.ok(),
        Err(_) => None,
    };
    match written {
        Some(n) => tally.wrote(n),
        None => events::settle_later(state, rest),
    }
}

/// Claims up to `want` jobs on a connection of its own, first settling the outbox rows of the
/// GHL calls made since the last claim; `None` when no connection came before the tick's work
/// deadline. The connection comes back with the jobs, for their `EMAIL_SENT`s' effects.
async fn claim_next(
    state: &AppState,
    tally: &Tally,
    budget: &Budget,
    want: i64,
    settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
    steps: &mut Steps,
) -> Result<Option<(CronConn, Vec<jobs::Job>)>, AppError> {
    let Some(mut conn) = cron_conn(state, tally, budget.work_left()).await? else {
        return Ok(None);
    };
    steps.mark("connection");
    let pending = take(settles);
    match jobs::settle_ghl_syncs(&mut conn, &pending).await {
        Ok(n) => tally.wrote(n),
        // Given back, for the end of the tick; the claim goes on (its own error ends it).
        Err(_) => settles.lock().expect("settles lock").extend(pending),
    }
    steps.mark("settle");
    let limits = &state.config.limits;
    let claimed = jobs::claim(&mut conn, want, limits.job_lease, limits.max_attempts).await?;
    tally.wrote(claimed.len() as u64);
    steps.mark("claim");
    Ok(Some((conn, claimed)))
}

/// A job at its end: the job, what it came to, how long it took from its claim.
type Ended = (jobs::Job, Result<JobOutcome, AppError>, std::time::Duration);

/// The tick's account of its ended jobs.
#[derive(Default)]
struct Ends {
    /// Whether the tick still claims (the first cut or error stops it).
    claiming: bool,
    /// The longest a job took: no job is claimed unless that still fits the budget.
    longest_job: std::time::Duration,
    /// Jobs the budget ran out on before their effects, to give back.
    cut: Vec<jobs::Job>,
    /// The first error: the tick's, once the jobs already running have ended.
    failed: Option<AppError>,
}

impl Ends {
    fn record(
        &mut self,
        report: &mut TickReport,
        job: jobs::Job,
        outcome: Result<JobOutcome, AppError>,
        took: std::time::Duration,
    ) {
        self.longest_job = self.longest_job.max(took);
        match outcome {
            Ok(JobOutcome::Done) => report.processed += 1,
            Ok(JobOutcome::Retried) => report.retried += 1,
            Ok(JobOutcome::Failed) => report.failed += 1,
            Ok(JobOutcome::LeaseLost) => report.lease_lost += 1,
            Ok(JobOutcome::Unsettled) => report.unsettled += 1,
            Ok(JobOutcome::Cut) => {
                self.cut.push(job);
                self.claiming = false;
            }
            Err(e) => {
                self.failed.get_or_insert(e);
                self.claiming = false;
            }
        }
    }
}

/// A queued `EMAIL_SENT`'s event, or why the job can never apply.
fn sent_event(job: &jobs::Job) -> Result<event::EmailEvent, String> {
    use serde::Deserialize;
    incident_wire::EmailEvent::deserialize(&job.payload)
        .map_err(|e| e.to_string())
        .and_then(event::validate)
}

/// Claims at once in a background-jobs tick, each with its share of the tick's slots and its
/// own connection: while one claim's batch is applied, the next is claimed and applied beside
/// it. One at a time, a tick was a chain (settle and claim, then apply) that left a third of the
/// machine idle in the drain ceiling. Two claims of half the slots each halve the batches (two
/// at ~15 jobs a transaction gained little over one at ~30); the ceiling runs twice the jobs at
/// once, so each batch stays at ~32 (see `DRAIN_JOBS_PER_CONNECTION` in the harness).
pub const CLAIMS_AT_ONCE: usize = 2;

/// A task of a background-jobs tick, at its end.
enum Task {
    /// A job's.
    Job(Ended),
    /// A claim's: the slots it reserved, and what its batch came to (`None`: no connection
    /// before the tick's work deadline), with its steps' timings.
    Claim {
        reserved: usize,
        claimed: Result<Option<Started>, AppError>,
        steps: Steps,
    },
}

/// Claims up to `want` jobs and starts them ([`claim_next`], then [`start`]).
async fn claim_and_start(
    state: &AppState,
    tally: &Tally,
    budget: Budget,
    want: usize,
    settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
) -> Task {
    let mut steps = Steps::new(state.switches().log_slow_paths);
    let claimed = match claim_next(state, tally, &budget, want as i64, settles, &mut steps).await {
        Ok(Some((conn, batch))) => {
            let started = start(state, tally, conn, batch, budget).await;
            steps.mark("apply");
            Ok(Some(started))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    Task::Claim {
        reserved: want,
        claimed,
        steps,
    }
}

/// Starts a claimed batch. Its `EMAIL_SENT`s are applied together on the claim's connection
/// `conn` ([`events::apply_sent_jobs`]: nine round trips for the batch, as many as one job
/// alone takes); then each applied job's GHL call is a task of its own. Every other job (a GHL
/// sync, a malformed payload) is a task of its own ([`run_job`]); so is a lone `EMAIL_SENT`, and
/// each of the batch's when the batch fails, where an error is its job's alone. The tasks are
/// the caller's to spawn, once the claim's connection has gone back.
async fn start(
    state: &AppState,
    tally: &Tally,
    mut conn: CronConn,
    batch: Vec<jobs::Job>,
    budget: Budget,
) -> Started {
    let started = Instant::now();
    let claimed = batch.len();
    let (mut sent, mut rest) = (Vec::new(), Vec::new());
    for job in batch {
        match sent_event(&job) {
            Ok(ev) if job.kind == jobs::EMAIL_SENT => sent.push((job, ev)),
            _ => rest.push(job),
        }
    }
    let (mut at_once, mut follow, mut batched) = (Vec::new(), Vec::new(), None);
    // A batch of one is a job of its own: its error is its own at once.
    if sent.len() > 1 && !budget.spent() {
        let pairs: Vec<(&jobs::Job, &event::EmailEvent)> =
            sent.iter().map(|(job, ev)| (job, ev)).collect();
        match events::apply_sent_jobs(state, tally, &mut conn, &pairs, &budget).await {
            Ok(applied) => {
                let committed = Instant::now();
                batched = Some(applied.len() as u64);
                for ((job, ev), applied) in sent.drain(..).zip(applied) {
                    match applied {
                        events::JobApplied::Applied => follow.push(Follow::Sync {
                            job,
                            ev,
                            committed,
                            started,
                        }),
                        events::JobApplied::Duplicate => {
                            at_once.push((job, Ok(JobOutcome::Done), started.elapsed()))
                        }
                        events::JobApplied::LeaseLost => {
                            at_once.push((job, Ok(JobOutcome::LeaseLost), started.elapsed()))
                        }
                        events::JobApplied::Busy => rest.push(job),
                    }
                }
            }
            Err(e) => tracing::warn!(
                jobs = sent.len(),
                category = e.category().map(Category::as_str),
                "the batch's EMAIL_SENT effects failed together; each job runs on its own"
            ),
        }
    }
    rest.extend(sent.into_iter().map(|(job, _)| job));
    follow.extend(rest.into_iter().map(Follow::Run));
    Started {
        claimed,
        at_once,
        follow,
        batched,
    }
}

/// What [`start`] came to.
#[derive(Default)]
struct Started {
    /// The jobs claimed.
    claimed: usize,
    /// The jobs that ended at once.
    at_once: Vec<Ended>,
    /// The jobs that go on as tasks of their own.
    follow: Vec<Follow>,
    /// The jobs applied together in one transaction, if there was one.
    batched: Option<u64>,
}

/// A claimed job that goes on as a task of its own.
enum Follow {
    /// Applied with its batch (committed at `committed`, started at `started`): its GHL call.
    Sync {
        job: jobs::Job,
        ev: event::EmailEvent,
        committed: Instant,
        started: Instant,
    },
    /// Run on its own ([`run_job`]).
    Run(jobs::Job),
}

impl Follow {
    async fn run(
        self,
        state: &AppState,
        tally: &Tally,
        budget: Budget,
        settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
    ) -> Ended {
        match self {
            Follow::Sync {
                job,
                ev,
                committed,
                started,
            } => {
                events::sync_applied(state, tally, &ev, &budget, settles, committed).await;
                (job, Ok(JobOutcome::Done), started.elapsed())
            }
            Follow::Run(job) => {
                let started = Instant::now();
                let outcome = run_job(state, tally, &job, &budget, settles).await;
                (job, outcome, started.elapsed())
            }
        }
    }
}

enum JobOutcome {
    Done,
    Retried,
    Failed,
    /// Another worker holds the job's lease now; nothing was marked.
    LeaseLost,
    /// The tick's work deadline came before the job's effects: nothing applied or marked.
    Cut,
    /// Ran, but no connection came in the budget's reserve to mark it: its lease expires and
    /// it runs again (idempotent effects; a provider call is repeated with its key).
    Unsettled,
}

/// Why a job did not apply.
#[derive(Debug, thiserror::Error)]
enum JobFailure {
    /// The job can never apply (a malformed payload, an unknown kind): failed at once.
    #[error("poison job: {0}")]
    Poison(String),
    /// An effect failed (the database, a provider): retried with backoff.
    #[error(transparent)]
    Effect(#[from] AppError),
}

async fn run_job(
    state: &AppState,
    tally: &Tally,
    job: &jobs::Job,
    budget: &Budget,
    settles: &std::sync::Mutex<Vec<jobs::GhlSettle>>,
) -> Result<JobOutcome, AppError> {
    if budget.spent() {
        return Ok(JobOutcome::Cut);
    }
    let outcome: Result<(), JobFailure> = match job.kind.as_str() {
        jobs::EMAIL_SENT => match sent_event(job) {
            Ok(ev) => {
                let applied = async {
                    let mut conn = state.acquire_for_cron(tally, budget.work_left()).await?;
                    events::apply_sent_jobs(state, tally, &mut conn, &[(job, &ev)], budget).await
                }
                .await;
                // Marked done (or not ours) in the effects' own transaction.
                match applied.as_deref() {
                    Ok([events::JobApplied::Applied]) => {
                        let committed = Instant::now();
                        events::sync_applied(state, tally, &ev, budget, settles, committed).await;
                        return Ok(JobOutcome::Done);
                    }
                    Ok([events::JobApplied::LeaseLost]) => return Ok(JobOutcome::LeaseLost),
                    Ok([events::JobApplied::Duplicate]) => return Ok(JobOutcome::Done),
                    // A lone job waits for its lead instead of being left out.
                    Ok(other) => Err(JobFailure::Effect(AppError::Internal(anyhow::anyhow!(
                        "a lone job's apply came to {other:?}"
                    )))),
                    Err(_) if budget.spent() => return Ok(JobOutcome::Cut),
                    Err(_) => Err(JobFailure::Effect(
                        applied.expect_err("matched as an error"),
                    )),
                }
            }
            Err(e) => Err(JobFailure::Poison(e)),
        },
        jobs::GHL_SYNC => {
            let Some(timeout) = budget.call_timeout(state.config.limits.provider_timeout) else {
                return Ok(JobOutcome::Cut);
            };
            providers::call_once(
                state,
                tally,
                Provider::Ghl,
                incident_wire::provider_path::GHL_CONTACT_UPSERT,
                &job.payload,
                Some(timeout),
            )
            .await
            .map(|_| ())
            .map_err(|e| JobFailure::Effect(e.into()))
        }
        other => Err(JobFailure::Poison(format!("unknown job kind {other:?}"))),
    };
    // Bookkeeping for a job that ran: in the budget's reserve (without a connection, the
    // job's lease expires and it is claimed again; its effects are idempotent).
    let Ok(mut conn) = state.acquire_for_cron(tally, budget.left()).await else {
        return Ok(JobOutcome::Unsettled);
    };
    match outcome {
        Ok(()) => {
            let written = jobs::complete(&mut conn, job).await?;
            tally.wrote(written);
            Ok(if written == 0 {
                JobOutcome::LeaseLost
            } else {
                JobOutcome::Done
            })
        }
        Err(e) => {
            let max_attempts = match &e {
                JobFailure::Effect(effect) => {
                    if let Some(c) = effect.category() {
                        tally.note(c);
                    }
                    state.config.limits.max_attempts
                }
                JobFailure::Poison(_) => 0,
            };
            let delay = backoff(state.config.limits.provider_backoff, job.attempts as u32);
            let (retry, written) =
                jobs::retry_or_fail(&mut conn, job, max_attempts, delay, &e.to_string()).await?;
            tally.wrote(written);
            Ok(if written == 0 {
                JobOutcome::LeaseLost
            } else if retry {
                JobOutcome::Retried
            } else {
                JobOutcome::Failed
            })
        }
    }
}
