//! The production topology: several service instances, each with its own pool, behind one
//! front that spreads requests over them round-robin, optionally started as concurrency rises
//! (a simple model of a serverless platform), optionally through PgBouncer.
//!
//! The front is an HTTP proxy on one port in the harness process. Its `/metrics` is every
//! instance's `/metrics` concatenated (which `service_proc::parse_metrics` reads as one
//! service) plus its own series: instances, requests in flight, connections per instance, and
//! the pooler's `SHOW POOLS`/`SHOW STATS`. Instances are never stopped during an arm (the
//! platform keeps warm instances for minutes), so the counters of a run never go down.

pub mod pooler;

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use incident_wire::metrics as names;

use crate::model::{FleetReport, FleetSpec};
use crate::service_proc::{parse_metrics, ServiceProcess};
use pooler::PgBouncer;

/// Starts instance number `index` (its own port, log and pool).
pub type StartInstance = Arc<
    dyn Fn(usize) -> Pin<Box<dyn Future<Output = anyhow::Result<ServiceProcess>> + Send>>
        + Send
        + Sync,
>;

/// Largest request body the front forwards.
const MAX_BODY: usize = 16 << 20;
/// After an instance failed to start, the platform waits this long before trying another.
const START_BACKOFF: Duration = Duration::from_secs(1);

struct Instance {
    index: usize,
    base: String,
    process: tokio::sync::Mutex<Option<ServiceProcess>>,
}

struct Shared {
    spec: FleetSpec,
    live: RwLock<Vec<Arc<Instance>>>,
    starting: AtomicU32,
    next_index: AtomicUsize,
    failed_starts: AtomicU32,
    last_failure: Mutex<Option<Instant>>,
    start_errors: Mutex<Vec<String>>,
    in_flight: AtomicU64,
    round_robin: AtomicUsize,
    start: StartInstance,
    http: reqwest::Client,
    pooler: Option<(Arc<PgBouncer>, String)>,
    t0: Instant,
    history: Mutex<Vec<(f64, u32)>>,
    closed: AtomicBool,
    starts: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The running instances and their front; [`Fleet::stop`] ends them all (dropping it kills
/// the instances too).
pub struct Fleet {
    /// `http://127.0.0.1:PORT`: the front.
    pub base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Shared {
    fn instances(&self) -> Vec<Arc<Instance>> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn add(&self, instance: Instance) {
        let mut live = self.live.write().unwrap_or_else(|p| p.into_inner());
        live.push(Arc::new(instance));
        let n = live.len() as u32;
        drop(live);
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.t0.elapsed().as_secs_f64(), n));
    }

    /// Starts one more instance in the background (autoscaling).
    fn start_one(self: &Arc<Self>) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let index = me.next_index.fetch_add(1, Ordering::Relaxed);
            let result = (me.start)(index).await;
            me.starting.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(p) if me.closed.load(Ordering::Acquire) => p.stop().await,
                Ok(p) => me.add(Instance {
                    index,
                    base: p.base.clone(),
                    process: tokio::sync::Mutex::new(Some(p)),
                }),
                Err(e) => {
                    me.failed_starts.fetch_add(1, Ordering::Relaxed);
                    *me.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now());
                    let mut errors = me.start_errors.lock().unwrap_or_else(|p| p.into_inner());
                    if errors.len() < 5 {
                        errors.push(format!("instance {index}: {e:#}"));
                    }
                }
            }
        });
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// The platform's rule: one instance per `per_instance_concurrency` requests in flight,
    /// up to `max`, none started within [`START_BACKOFF`] of a failed start.
    fn scale(self: &Arc<Self>) {
        let Some(per) = self.spec.per_instance_concurrency else {
            return;
        };
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let recent_failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < START_BACKOFF);
        if recent_failure {
            return;
        }
        let wanted = (self
            .in_flight
            .load(Ordering::Acquire)
            .div_ceil(u64::from(per)) as u32)
            .clamp(self.spec.min, self.spec.max);
        let live = self.live.read().unwrap_or_else(|p| p.into_inner()).len() as u32;
        let starting = self.starting.load(Ordering::Acquire);
        if live + starting < wanted
            && self
                .starting
                .compare_exchange(starting, starting + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.start_one();
        }
    }

    fn pick(&self) -> Option<Arc<Instance>> {
        let live = self.live.read().unwrap_or_else(|p| p.into_inner());
        if live.is_empty() {
            return None;
        }
        let i = self.round_robin.fetch_add(1, Ordering::Relaxed) % live.len();
        Some(live[i].clone())
    }
}

/// Decrements the in-flight count when the request ends, however it ends.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Fleet {
    /// Starts `spec.min` instances with `start` and the front before them. `pooler`: the
    /// PgBouncer they go through and the database whose pool the front reports.
    pub async fn start(
        spec: FleetSpec,
        start: StartInstance,
        pooler: Option<(Arc<PgBouncer>, String)>,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            spec,
            live: RwLock::new(Vec::new()),
            starting: AtomicU32::new(0),
            next_index: AtomicUsize::new(spec.min as usize),
            failed_starts: AtomicU32::new(0),
            last_failure: Mutex::new(None),
            start_errors: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
            round_robin: AtomicUsize::new(0),
            start: start.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .context("the front's HTTP client")?,
            pooler,
            t0: Instant::now(),
            history: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            starts: Mutex::new(Vec::new()),
        });
        let first: Vec<_> = (0..spec.min as usize)
            .map(|i| tokio::spawn((start)(i)))
            .collect();
        let mut failure = None;
        for (index, task) in first.into_iter().enumerate() {
            match task.await.context("an instance's start task")? {
                Ok(p) => shared.add(Instance {
                    index,
                    base: p.base.clone(),
                    process: tokio::sync::Mutex::new(Some(p)),
                }),
                Err(e) => failure = Some(e.context(format!("starting instance {index}"))),
            }
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the front")?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fleet = Self {
            base,
            shared,
            server,
        };
        if let Some(e) = failure {
            fleet.stop().await;
            return Err(e);
        }
        Ok(fleet)
    }

    /// When the fleet started (its history's clock).
    pub fn started_at(&self) -> Instant {
        self.shared.t0
    }

    /// Stops the front, waits for the starts under way, stops every instance (SIGTERM), and
    /// says what the fleet did.
    pub async fn stop(self) -> FleetReport {
        self.shared.closed.store(true, Ordering::Release);
        self.server.abort();
        let starts: Vec<_> =
            std::mem::take(&mut *self.shared.starts.lock().unwrap_or_else(|p| p.into_inner()));
        for t in starts {
            let _ = t.await;
        }
        let mut stops = Vec::new();
        for i in self.shared.instances() {
            stops.push(tokio::spawn(async move {
                if let Some(p) = i.process.lock().await.take() {
                    p.stop().await;
                }
            }));
        }
        for s in stops {
            let _ = s.await;
        }
        let sh = &self.shared;
        FleetReport {
            min: sh.spec.min,
            max: sh.spec.max,
            per_instance_concurrency: sh.spec.per_instance_concurrency,
            instances: sh.history.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            failed_starts: sh.failed_starts.load(Ordering::Relaxed),
            start_errors: sh
                .start_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            connections_max: Vec::new(),
            pooler: None,
        }
    }
}

impl Drop for Fleet {
    /// On an error path (no [`Fleet::stop`]): the front stops accepting, and the instances are
    /// killed as their last handle goes (`ServiceProcess`'s drop).
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.server.abort();
    }
}

/// Every request but `/metrics`: to the next instance, as it came.
async fn forward(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    if req.uri().path() == incident_wire::ops::METRICS {
        return metrics(&sh).await;
    }
    sh.in_flight.fetch_add(1, Ordering::AcqRel);
    let _in_flight = InFlight(sh.clone());
    sh.scale();
    let Some(instance) = sh.pick() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no service instance is running\n",
        )
            .into_response();
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("request body: {e}\n")).into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut to = sh
        .http
        .request(parts.method, format!("{}{path}", instance.base))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != header::CONNECTION {
            to = to.header(name, value);
        }
    }
    let answer = match to.send().await {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("instance {} did not answer: {e}\n", instance.index),
            )
                .into_response()
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
            && name != header::CONNECTION
        {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// The instances' `/metrics`, concatenated, and the front's and the pooler's series.
async fn metrics(sh: &Arc<Shared>) -> Response {
    let instances = sh.instances();
    let fetches: Vec<_> = instances
        .iter()
        .map(|i| {
            let (http, url) = (
                sh.http.clone(),
                format!("{}{}", i.base, incident_wire::ops::METRICS),
            );
            tokio::spawn(async move {
                let answer = http
                    .get(url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                answer.text().await.ok()
            })
        })
        .collect();
    let mut out = String::new();
    let mut pools = Vec::new();
    for (instance, fetch) in instances.iter().zip(fetches) {
        if let Ok(Some(text)) = fetch.await {
            pools.push((instance.index, parse_metrics(&text, 0.0).pool_in_use()));
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    let _ = writeln!(out, "{} {}", names::FLEET_INSTANCES, instances.len());
    let _ = writeln!(
        out,
        "{} {}",
        names::FLEET_IN_FLIGHT,
        sh.in_flight.load(Ordering::Acquire)
    );
    let _ = writeln!(
        out,
        "{} {}",
        names::FLEET_FAILED_STARTS,
        sh.failed_starts.load(Ordering::Relaxed)
    );
    for (index, in_use) in pools {
        let _ = writeln!(
            out,
            "{}{{instance=\"{index}\"}} {in_use}",
            names::FLEET_INSTANCE_POOL_IN_USE
        );
    }
    if let Some((pooler, db)) = &sh.pooler {
        if let Some(p) = pooler.scrape(db).await {
            for (name, v) in [
                (names::POOLER_CL_ACTIVE, p.cl_active),
                (names::POOLER_CL_WAITING, p.cl_waiting),
                (names::POOLER_SV_ACTIVE, p.sv_active),
                (names::POOLER_SV_IDLE, p.sv_idle),
                (names::POOLER_MAXWAIT, p.maxwait_s),
                (names::POOLER_WAIT, p.wait_s),
                (names::POOLER_XACTS, p.transactions),
            ] {
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
