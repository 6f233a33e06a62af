//! Running a [`Plan`] on goose.
//!
//! goose has a closed model only (its issue #87), so the open model is built on top: each
//! stream is a goose scenario with its own users (its `max_in_flight`) and its own queue of
//! intended send times, earliest first. A user takes the next arrival of its stream, sleeps
//! until its time, sends it, and records it against that time. When every user of a stream is
//! busy, that stream's next arrival starts late — counted per stream and per endpoint, as k6
//! counts dropped iterations — and its latency still runs from when it was due; other streams
//! are untouched. Retries the provider would make go back into their stream's queue. What goose
//! would report (each request timed from its actual start) is kept alongside, for contrast:
//! timed here, with goose's own per-request metrics off (see [`GooseEndpoint`]). goose runs the
//! users, the scenarios and the end of the run; the requests go on the engine's own client
//! ([`crate::http`]): a request costs it under half of what it cost through goose's reqwest.
//!
//! goose's killswitch, logger and ctrl-c handler are process-wide: run one attack at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::time::Instant;

use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::goose::{GooseUser, Scenario, Transaction, TransactionResult};
use goose::GooseAttack;

use crate::dispatch::{Dispatcher, Taken};
use crate::plan::{AtLeastOnce, Delivery, Plan, Scheduled, REDELIVER_SALT};
use crate::record::{Hist, Outcome, Recording, Sample};

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// goose refused to set up or run the attack; the source is goose's own error.
    #[error("goose could not run the attack")]
    Goose(#[source] Box<goose::GooseError>),
    #[error("the plan is empty: no stream has any arrival in its duration")]
    EmptyPlan,
    #[error("stream {0:?} has max_in_flight 0: it could never send")]
    NoUsers(String),
    #[error("the plan's host {0:?} is not an http:// or https:// URL")]
    Host(String),
    /// The host's client could not be built (a scheme it does not speak, a CA file that is no
    /// PEM certificate).
    #[error("the plan's host {0:?}: {1}")]
    Client(String, String),
}

/// goose's view of one endpoint: each request timed from its actual start, not its intended
/// time, as goose times it (for contrast: it hides a stall the intended-time figure shows). The
/// engine times it itself, from just before the request is built to the last byte of the
/// response (goose stops at the headers), with goose's own metrics off: they cloned each
/// request's record and sent it, with its transaction's and its scenario's, in one message to
/// goose's aggregator task, 4–5 % of the generator's user-space instructions per request
/// (`scripts/generator-instructions`, three runs each: 85519–87680 with them, 81582–82315
/// without), for a figure one histogram record gives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GooseEndpoint {
    pub requests: u64,
    pub failures: u64,
    pub p95_ms: f64,
}

/// What a run returns besides the live recording.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Arrivals never sent because the run ended first.
    pub unsent: u64,
    /// goose's metrics, keyed `"METHOD name"`.
    pub goose: BTreeMap<String, GooseEndpoint>,
}

struct Shared {
    plan: Plan,
    /// The plan's host, parsed, and the client that sends to it.
    base: reqwest::Url,
    client: crate::http::Client,
    /// Per stream, what does not change from one request to the next.
    targets: Vec<Target>,
    /// Per stream, goose's view of its requests (a lock each: streams do not contend).
    from_start: Vec<Mutex<FromStart>>,
    dispatch: Dispatcher,
    recording: Arc<Mutex<Recording>>,
    /// Who wants to know time zero (taken once it is set).
    epoch_out: Mutex<Option<tokio::sync::oneshot::Sender<tokio::time::Instant>>>,
}

/// Lead time between the first user starting and the schedule's time zero, so every user of
/// every stream is running when the first arrival is due (users start within 0.25 s).
pub const START_DELAY: Duration = Duration::from_secs(1);

/// One stream's requests as goose would count and time them (from the actual start).
#[derive(Default)]
struct FromStart {
    requests: u64,
    failures: u64,
    latency: Hist,
}

/// A stream's label and request target, made once: parsing the URL of every request showed in
/// the generator's profile at its ceiling (goose's `get_request_builder` joined and parsed it,
/// two parses and three strings).
struct Target {
    label: String,
    /// The key goose would give its metrics: `"METHOD label"`.
    goose_key: String,
    /// The stream's path, and the request target it makes on the plan's host (origin form:
    /// the path and query of the host's URL joined with it, as goose would join them).
    path: String,
    uri: hyper::Uri,
}

impl Target {
    fn of(plan: &Plan, base: &reqwest::Url, index: usize) -> Result<Self, LoadgenError> {
        let endpoint = &plan.streams[index].endpoint;
        let request = endpoint.request(index, 0, &plan.run_id, 0);
        let path = request.path;
        let uri = origin_form(base, &path).ok_or_else(|| LoadgenError::Host(plan.host.clone()))?;
        let label = endpoint.label();
        Ok(Self {
            goose_key: format!("{} {label}", request.method.as_str()),
            label,
            path,
            uri,
        })
    }
}

/// `path` joined onto `base` (goose's `build_url`: a path from the root replaces the host's
/// own), as the origin-form target an HTTP/1.1 request line carries; `None` if it does not
/// make one.
fn origin_form(base: &reqwest::Url, path: &str) -> Option<hyper::Uri> {
    let url = base.join(path).ok()?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    hyper::Uri::try_from(target).ok()
}

/// The request the client sends for `request` (its body moved out); an error when a header
/// the endpoint made is not one HTTP can carry.
fn http_request(
    uri: hyper::Uri,
    request: &mut crate::traffic::Request,
) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let mut builder = hyper::Request::builder()
        .method(request.method.clone())
        .uri(uri);
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.body(
        request
            .body
            .take()
            .map(Bytes::from)
            .unwrap_or_default()
            .into(),
    )
}

/// What came back for one arrival, as the recording keeps it.
struct Reply {
    outcome: Outcome,
    db_writes: Option<u32>,
    external_calls: Option<u32>,
    categories: Vec<String>,
    service_time: Option<Duration>,
    /// A new connection's set-up time, when the request opened one.
    connect: Option<Duration>,
}

impl Reply {
    /// No response: a connection error, a timeout, or a request that could not be made.
    fn failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            db_writes: None,
            external_calls: None,
            categories: Vec::new(),
            service_time: None,
            connect: None,
        }
    }
}

impl Shared {
    /// Ends the attack once nothing is queued and nothing is in flight.
    fn finish_if_done(&self) {
        if self.dispatch.is_done() {
            goose::trigger_killswitch("schedule complete");
            self.dispatch.wake_all();
        }
    }

    /// One arrival of `stream_index`'s stream, sent on the shared client: goose's user only
    /// runs the loop (its reqwest client is not used, see [`crate::http`]).
    async fn step(&self, stream_index: usize) -> TransactionResult {
        let epoch = self.dispatch.epoch();
        if let Some(tx) = self.epoch_out.lock().expect("epoch lock").take() {
            let _ = tx.send(epoch);
        }
        let Some(Taken { item, taken }) = self.dispatch.take(stream_index) else {
            // Nothing queued for this stream now: wait for a retry or the end, without polling.
            // Every path must await something that really waits: a transaction that returns at
            // once keeps its user spinning and starves goose's own tasks of the runtime.
            let woken = self.dispatch.woken();
            self.finish_if_done();
            if goose::is_killswitch_triggered() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(1), woken).await;
            }
            return Ok(());
        };
        self.dispatch.wait_due(&item).await;
        if goose::is_killswitch_triggered() {
            // The run was stopped while this arrival waited for its time: not sent.
            self.dispatch.finished();
            return Ok(());
        }
        let started = Instant::now();
        let stream = &self.plan.streams[item.stream];
        let target = &self.targets[item.stream];
        let label = target.label.clone();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut request =
            stream
                .endpoint
                .request(item.stream, item.seq, &self.plan.run_id, unix_now);
        let uri = if request.path == target.path {
            Some(target.uri.clone())
        } else {
            origin_form(&self.base, &request.path)
        };
        let reply = match uri.map(|uri| http_request(uri, &mut request)) {
            Some(Ok(http)) => self.exchange(http).await,
            // A path or header the endpoint made that HTTP cannot carry: nothing was sent.
            _ => Reply::failed(Outcome::Error),
        };
        let outcome = reply.outcome;
        let ended = Instant::now();
        {
            let mut view = self.from_start[item.stream]
                .lock()
                .expect("from-start lock");
            view.requests += 1;
            view.failures += u64::from(!outcome.is_success());
            view.latency.record(ended - started);
        }
        let sample = Sample {
            endpoint: label,
            stream: stream.name.clone(),
            intended: item.at,
            taken,
            started: started.saturating_duration_since(epoch),
            ended: ended.saturating_duration_since(epoch),
            outcome,
            db_writes: reply.db_writes,
            external_calls: reply.external_calls,
            retry: item.attempt > 0,
            delivery: item.delivery,
            categories: reply.categories,
            service_time: reply.service_time,
            connect: reply.connect,
        };
        {
            let mut rec = self.recording.lock().expect("recording lock");
            rec.record(&sample, self.plan.late_after);
            if request.dedupe_id.is_some()
                && item.attempt == 0
                && item.delivery == Delivery::Original
            {
                rec.sent_events += 1;
            }
            if let (true, Some(id)) = (outcome.is_success(), request.dedupe_id) {
                rec.acked.insert(id);
            }
        }
        self.maybe_retry(item, outcome, sample.ended);
        if outcome.is_success() {
            self.maybe_redeliver(item, sample.ended);
        }
        self.dispatch.finished();
        self.finish_if_done();
        Ok(())
    }

    /// Sends `http` within the plan's client timeout and reads what the service said of it.
    async fn exchange(&self, http: hyper::Request<Full<Bytes>>) -> Reply {
        let (answer, connect) =
            match tokio::time::timeout(self.plan.client_timeout, self.client.send(http)).await {
                Ok(Ok(answered)) => answered,
                Ok(Err(_)) => return Reply::failed(Outcome::Error),
                Err(_elapsed) => return Reply::failed(Outcome::Timeout),
            };
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| header(name).and_then(|v| v.parse().ok());
        Reply {
            outcome: Outcome::Status(answer.status.as_u16()),
            db_writes: number(incident_wire::DB_WRITES_HEADER),
            external_calls: number(incident_wire::EXTERNAL_CALLS_HEADER),
            categories: header(incident_wire::ERROR_CATEGORY_HEADER)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            service_time: header(incident_wire::SERVER_TIMING_HEADER)
                .and_then(incident_wire::parse_server_timing),
            connect,
        }
    }

    /// goose's view of the run, per `"METHOD label"` (streams of one endpoint together).
    fn goose_view(&self) -> BTreeMap<String, GooseEndpoint> {
        let mut merged: BTreeMap<&str, FromStart> = BTreeMap::new();
        for (target, view) in self.targets.iter().zip(&self.from_start) {
            let view = view.lock().expect("from-start lock");
            if view.requests == 0 {
                continue;
            }
            let m = merged.entry(target.goose_key.as_str()).or_default();
            m.requests += view.requests;
            m.failures += view.failures;
            m.latency.merge(&view.latency);
        }
        merged
            .into_iter()
            .map(|(key, m)| {
                let endpoint = GooseEndpoint {
                    requests: m.requests,
                    failures: m.failures,
                    p95_ms: m.latency.quantile_ms(0.95).unwrap_or(0.0),
                };
                (key.to_owned(), endpoint)
            })
            .collect()
    }

    /// Sends an acknowledged event again later, as an at-least-once provider does for a share
    /// of them (once per event, within the run).
    fn maybe_redeliver(&self, item: Scheduled, ended: Duration) {
        let d = &self.plan.streams[item.stream].delivery;
        let at = ended + d.redeliver_after;
        if item.delivery == Delivery::Original
            && at < self.plan.duration
            && AtLeastOnce::picked(
                self.plan.seed,
                item.stream,
                item.seq,
                REDELIVER_SALT,
                d.redeliver_pct,
            )
        {
            self.dispatch.requeue(Scheduled {
                at,
                attempt: 0,
                delivery: Delivery::Redelivery,
                ..item
            });
        }
    }

    /// Puts a failed send back in its stream's queue, as the provider would, within the run.
    fn maybe_retry(&self, item: Scheduled, outcome: Outcome, ended: Duration) {
        let Some(policy) = &self.plan.streams[item.stream].retry else {
            return;
        };
        if let Some(at) = policy.retry_at(item.attempt, outcome, ended, self.plan.duration) {
            self.dispatch.requeue(Scheduled {
                at,
                attempt: item.attempt + 1,
                ..item
            });
        }
    }
}

fn goose_err(e: goose::GooseError) -> LoadgenError {
    LoadgenError::Goose(Box::new(e))
}

/// Stops the running attack (if any) at once: goose's killswitch, and no arrival is sent
/// after it. For a harness that is told to stop.
pub fn stop() {
    goose::trigger_killswitch("stopped by the harness");
}

/// Runs `plan` to its end, recording into `recording` (which the caller may read while the
/// run goes on, e.g. for a progress display).
pub async fn run(plan: Plan, recording: Arc<Mutex<Recording>>) -> Result<RunSummary, LoadgenError> {
    run_from(plan, recording, None).await
}

/// [`run`], telling `epoch` the schedule's time zero as soon as it is set (a caller playing
/// faults or flips on the same clock).
pub async fn run_from(
    plan: Plan,
    recording: Arc<Mutex<Recording>>,
    epoch: Option<tokio::sync::oneshot::Sender<tokio::time::Instant>>,
) -> Result<RunSummary, LoadgenError> {
    if let Some(s) = plan.streams.iter().find(|s| s.max_in_flight == 0) {
        return Err(LoadgenError::NoUsers(s.name.clone()));
    }
    let schedule = plan.schedule();
    if schedule.is_empty() {
        return Err(LoadgenError::EmptyPlan);
    }
    // An upper bound: the run normally ends as soon as the schedule is done and nothing is in
    // flight (the killswitch above); this covers the last arrival timing out.
    let run_secs = (START_DELAY + plan.duration + plan.client_timeout).as_secs() as usize + 2;
    let host_err = || LoadgenError::Host(plan.host.clone());
    let base = reqwest::Url::parse(&plan.host).map_err(|_| host_err())?;
    let client = crate::http::Client::new(&base, &plan.tls)
        .map_err(|why| LoadgenError::Client(plan.host.clone(), why))?;
    let shared = Arc::new(Shared {
        targets: (0..plan.streams.len())
            .map(|i| Target::of(&plan, &base, i))
            .collect::<Result<_, _>>()?,
        base,
        client,
        dispatch: Dispatcher::new(schedule, plan.streams.len(), START_DELAY),
        from_start: plan.streams.iter().map(|_| Mutex::default()).collect(),
        recording,
        plan: plan.clone(),
        epoch_out: Mutex::new(None),
    });
    *shared.epoch_out.lock().expect("epoch lock") = epoch;
    let mut attack =
        GooseAttack::initialize_with_config(GooseConfiguration::default()).map_err(goose_err)?;
    // One goose scenario per stream, weighted by its concurrency: with exactly the sum of the
    // weights as users, goose gives each scenario exactly its weight in users.
    for (index, stream) in plan.streams.iter().enumerate() {
        let step = shared.clone();
        let transaction = Transaction::new(Arc::new(move |_user: &mut GooseUser| {
            let step = step.clone();
            Box::pin(async move { step.step(index).await })
        }))
        .set_name("open-model arrival");
        let scenario = Scenario::new(&format!("stream {index}"))
            .set_weight(stream.max_in_flight)
            .map_err(goose_err)?
            .register_transaction(transaction);
        attack = attack.register_scenario(scenario);
    }
    let users: usize = plan.streams.iter().map(|s| s.max_in_flight).sum();
    let attack = *attack
        .set_default(GooseDefault::Host, plan.host.as_str())
        .map_err(goose_err)?;
    let attack = *attack
        .set_default(GooseDefault::Users, users)
        .map_err(goose_err)?;
    let rate = (users * 4).to_string();
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
    // goose's view is timed here ([`FromStart`]): its own metrics cost more (see
    // [`GooseEndpoint`]).
    let attack = *attack
        .set_default(GooseDefault::NoMetrics, true)
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
    // goose gives every user a reqwest client, which sends nothing here (requests go through
    // crate::http): one shared by every user, as a client per user loads the system's CA
    // certificates once each, 2–3 s of both cores at the start of a run with hundreds of users.
    let client = goose::client::GooseClientBuilder::new().without_cookies();
    let attack = attack
        .set_client_builder_without_cookies(client)
        .map_err(goose_err)?;
    attack.execute().await.map_err(goose_err)?;
    let mut rec = shared.recording.lock().expect("recording lock");
    for (protocol, n) in shared.client.connections() {
        *rec.connections.entry(protocol).or_default() += n;
    }
    drop(rec);
    let unsent = shared.dispatch.unsent();
    Ok(RunSummary {
        unsent,
        goose: shared.goose_view(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Arrival, Stream};
    use crate::traffic::Endpoint;

    fn stream(endpoint: Endpoint) -> Stream {
        Stream {
            name: "s".into(),
            endpoint,
            arrival: Arrival::Constant { rate: 1.0 },
            retry: None,
            max_in_flight: 1,
            delivery: Default::default(),
        }
    }

    /// The request target made once per stream is the path and query of the URL goose would
    /// make on every request (`get_base_url` parses the host, `build_url` joins the path onto
    /// it), for a host with a path of its own too; a host that is not plain HTTP is refused
    /// before anything is sent, naming it.
    #[test]
    fn a_stream_target_is_the_one_goose_would_build() {
        let endpoints = [
            Endpoint::Cron {
                path: "/api/cron/background-jobs".into(),
                secret: "c".into(),
            },
            Endpoint::EmailWebhook {
                event: "EMAIL_SENT".into(),
                secret: "w".into(),
                workspaces: 2,
                leads: 10,
            },
        ];
        let plan_on = |host: &str| Plan {
            host: host.into(),
            streams: endpoints.iter().cloned().map(stream).collect(),
            duration: Duration::from_secs(1),
            seed: 1,
            poisson: false,
            client_timeout: Duration::from_secs(1),
            late_after: Duration::from_millis(50),
            run_id: "t".into(),
            shard: Default::default(),
            tls: Default::default(),
        };
        for host in ["http://127.0.0.1:9", "http://[::1]:9/prefix/"] {
            let plan = plan_on(host);
            for (i, endpoint) in endpoints.iter().enumerate() {
                let base = reqwest::Url::parse(host).unwrap();
                let target = Target::of(&plan, &base, i).unwrap();
                let path = endpoint.request(i, 7, "t", 1).path;
                assert_eq!(target.path, path);
                assert_eq!(target.label, endpoint.label());
                let goose = reqwest::Url::parse(host).unwrap().join(&path).unwrap();
                let origin = &goose.as_str()[goose.as_str().find(&path).unwrap()..];
                assert_eq!(target.uri.to_string(), origin, "{host} {path}");
                assert!(!goose.as_str().contains("prefix"));
            }
        }
        for host in ["not a host", "ftp://127.0.0.1:9"] {
            let recording = Arc::new(Mutex::new(Recording::default()));
            let err = tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(run(plan_on(host), recording))
                .unwrap_err();
            assert!(
                matches!(&err, LoadgenError::Host(h) | LoadgenError::Client(h, _) if h == host),
                "{err:?}"
            );
        }
    }
}
