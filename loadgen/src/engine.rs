//! Running a [`Plan`] on goose.
//!
//! goose has a closed model only (its issue #87), so the open model is built on top: a shared
//! queue of intended send times; each goose user takes the next arrival, sleeps until its
//! time, sends it, and records it against that time. With all users busy, an arrival starts
//! late — counted, as k6 counts dropped iterations — and its latency still runs from when it
//! was due. Retries the provider would make go back into the queue. goose's own metrics (which
//! time from the actual start) are kept alongside, for contrast.
//!
//! goose's killswitch, logger and ctrl-c handler are process-wide: run one attack at a time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::goose::{
    GooseMethod, GooseRequest, GooseUser, Scenario, Transaction, TransactionResult,
};
use goose::GooseAttack;

use crate::plan::{Plan, Scheduled};
use crate::record::{Outcome, Recording, Sample};

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("goose: {0}")]
    Goose(String),
    #[error("the plan is empty: no stream has any arrival in its duration")]
    EmptyPlan,
}

/// goose's view of one endpoint (timed from the actual start, not the intended time).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GooseEndpoint {
    pub requests: u64,
    pub failures: u64,
    pub p95_ms: f64,
}

/// What a run returns besides the live recording.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Arrivals scheduled (retries not included).
    pub scheduled: u64,
    /// Arrivals never sent because the run ended first.
    pub unsent: u64,
    /// goose's metrics, keyed `"METHOD name"`.
    pub goose: BTreeMap<String, GooseEndpoint>,
    pub elapsed_secs: f64,
}

struct Shared {
    plan: Plan,
    queue: Mutex<BinaryHeap<Reverse<Scheduled>>>,
    /// Arrivals taken from the queue and not yet recorded (sleeping or sending).
    in_flight: AtomicUsize,
    epoch: OnceLock<Instant>,
    recording: Arc<Mutex<Recording>>,
}

/// Lead time between the first user starting and the schedule's time zero, so every user is
/// running when the first arrival is due.
const START_DELAY: Duration = Duration::from_millis(500);

impl Shared {
    async fn step(&self, user: &mut GooseUser) -> TransactionResult {
        let epoch = *self.epoch.get_or_init(|| Instant::now() + START_DELAY);
        let next = {
            let mut queue = self.queue.lock().expect("queue lock");
            let next = queue.pop();
            if next.is_some() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
            }
            next
        };
        let Some(Reverse(item)) = next else {
            // Nothing queued: the run is over once nothing is in flight either (a request in
            // flight may still queue a retry).
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                goose::trigger_killswitch("schedule complete");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        };
        tokio::time::sleep_until((epoch + item.at).into()).await;
        let started = Instant::now();
        let stream = &self.plan.streams[item.stream];
        let label = stream.endpoint.label();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let request = stream
            .endpoint
            .request(item.stream, item.seq, &self.plan.run_id, unix_now);
        let method = if request.method == reqwest::Method::POST {
            GooseMethod::Post
        } else {
            GooseMethod::Get
        };
        let mut builder = match user.get_request_builder(&method, &request.path) {
            Ok(b) => b.timeout(self.plan.client_timeout),
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = request.body.clone() {
            builder = builder.body(body);
        }
        let goose_request = GooseRequest::builder()
            .method(method)
            .path(request.path.as_str())
            .name(label.as_str())
            .set_request_builder(builder)
            .build();
        let (outcome, writes, calls, categories) = match user.request(goose_request).await {
            Ok(goose) => match goose.response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header =
                        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                    let number = |name: &str| header(name).and_then(|v| v.parse().ok());
                    let (w, c) = (number("x-db-writes"), number("x-external-calls"));
                    let categories = header("x-error-category")
                        .map(|v| v.split(',').map(str::to_owned).collect())
                        .unwrap_or_default();
                    // Read the whole body: the latency ends with the last byte.
                    let _ = response.bytes().await;
                    (Outcome::Status(status), w, c, categories)
                }
                Err(e) if e.is_timeout() => (Outcome::Timeout, None, None, Vec::new()),
                Err(_) => (Outcome::Error, None, None, Vec::new()),
            },
            Err(_) => (Outcome::Error, None, None, Vec::new()),
        };
        let ended = Instant::now();
        let sample = Sample {
            endpoint: label,
            intended: item.at,
            started: started.saturating_duration_since(epoch),
            ended: ended.saturating_duration_since(epoch),
            outcome,
            db_writes: writes,
            external_calls: calls,
            retry: item.attempt > 0,
            categories,
        };
        {
            let mut rec = self.recording.lock().expect("recording lock");
            rec.record(&sample, self.plan.late_after);
            if let (true, Some(id)) = (outcome.is_success(), request.dedupe_id) {
                rec.acked.insert(id);
            }
        }
        self.maybe_retry(item, outcome, sample.ended);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// Puts a failed send back in the queue, as the provider would, within the run.
    fn maybe_retry(&self, item: Scheduled, outcome: Outcome, ended: Duration) {
        let Some(policy) = &self.plan.streams[item.stream].retry else {
            return;
        };
        let wanted = match outcome {
            Outcome::Status(s) => s >= 500 && policy.on_5xx,
            Outcome::Timeout | Outcome::Error => policy.on_timeout,
        };
        let at = ended + policy.after;
        if wanted && item.attempt < policy.max && at < self.plan.duration {
            self.queue
                .lock()
                .expect("queue lock")
                .push(Reverse(Scheduled {
                    at,
                    attempt: item.attempt + 1,
                    ..item
                }));
        }
    }
}

fn goose_err(e: impl std::fmt::Debug) -> LoadgenError {
    LoadgenError::Goose(format!("{e:?}"))
}

/// Runs `plan` to its end, recording into `recording` (which the caller may read while the
/// run goes on, e.g. for a progress display).
pub async fn run(plan: Plan, recording: Arc<Mutex<Recording>>) -> Result<RunSummary, LoadgenError> {
    let schedule = plan.schedule();
    if schedule.is_empty() {
        return Err(LoadgenError::EmptyPlan);
    }
    let scheduled = schedule.len() as u64;
    // An upper bound: the run normally ends as soon as the schedule is done and nothing is in
    // flight (the killswitch below); this covers the last arrival timing out.
    let run_secs = (START_DELAY + plan.duration + plan.client_timeout).as_secs() as usize + 2;
    let shared = Arc::new(Shared {
        queue: Mutex::new(schedule.into_iter().map(Reverse).collect()),
        in_flight: AtomicUsize::new(0),
        epoch: OnceLock::new(),
        recording,
        plan: plan.clone(),
    });
    let step = shared.clone();
    let transaction = Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let step = step.clone();
        Box::pin(async move { step.step(user).await })
    }))
    .set_name("open-model arrival");
    let started = Instant::now();
    let attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(goose_err)?
        .register_scenario(Scenario::new("open model").register_transaction(transaction));
    let attack = *attack
        .set_default(GooseDefault::Host, plan.host.as_str())
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::Users, plan.users.max(1))
        .map_err(goose_err)?;
    let rate = (plan.users.max(1) * 4).to_string();
    let attack = *attack
        .set_default(GooseDefault::IncreaseRate, rate.as_str())
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::RunTime, run_secs)
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::NoPrintMetrics, true)
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::NoErrorSummary, true)
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::Quiet, 1usize)
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::NoGzip, true)
        .map_err(goose_err)?;
    let metrics = attack.execute().await.map_err(goose_err)?;
    let goose = metrics
        .requests
        .iter()
        .map(|(key, m)| {
            (
                key.clone(),
                GooseEndpoint {
                    requests: (m.success_count + m.fail_count) as u64,
                    failures: m.fail_count as u64,
                    p95_ms: m.raw_data.percentile_us(0.95) as f64 / 1000.0,
                },
            )
        })
        .collect();
    let unsent = shared
        .queue
        .lock()
        .expect("queue lock")
        .iter()
        .filter(|Reverse(s)| s.attempt == 0)
        .count() as u64;
    Ok(RunSummary {
        scheduled,
        unsent,
        goose,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}
