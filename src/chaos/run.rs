//! A scenario's timeline of faults and flag flips, played on the load's clock: each fault set
//! at its `at` and undone at its end, each flip made through the service's `/admin/flags`,
//! and — when the scenario states a steady-state hypothesis — the budgets checked at the first
//! fault or flip: if they do not hold the load is stopped there and nothing is injected.
//! Everything is undone when [`play`] returns or is dropped (an error, a Ctrl-C): the link
//! healed, Postgres resumed, locks released, CPU sessions ended, providers restored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use fake_providers::{Fakes, Knobs, Provider};
use inbox_service::{Flag, Switches};
use loadgen::Recording;
use sqlx::postgres::PgConnection;
use tokio::time::Instant;

use super::postgres::{self as pg, AbortOnDrop, Pause};
use super::proxy::FaultProxy;
use super::timeline::combine;
use crate::model::{Fault, FaultKind, FaultTarget, Flip, FlipValidation, Scenario, TimedFault};
use crate::postgres::PgServer;
use crate::report::{FaultApplied, FlipApplied, Stretch};
use crate::service_proc::ServiceProcess;

/// The service's environment for some switches, listening on an address.
pub type ServiceEnv =
    dyn Fn(&Switches, std::net::SocketAddr) -> Vec<(String, String)> + Send + Sync;

/// The service an arm runs, which a `kill` fault may replace: killed, then started again on
/// the same port with the switches it had (the arm's, with the flips made so far).
pub struct ServiceSlot {
    process: tokio::sync::Mutex<Option<ServiceProcess>>,
    /// `http://127.0.0.1:PORT`, the same across restarts.
    pub base: String,
    binary: PathBuf,
    env: Box<ServiceEnv>,
    switches: Mutex<Switches>,
    log: PathBuf,
    restarts: std::sync::atomic::AtomicU32,
}

impl ServiceSlot {
    /// `env` gives the service's environment for some switches, listening on an address.
    pub fn new(
        process: ServiceProcess,
        binary: PathBuf,
        switches: Switches,
        log: PathBuf,
        env: impl Fn(&Switches, std::net::SocketAddr) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            base: process.base.clone(),
            process: tokio::sync::Mutex::new(Some(process)),
            binary,
            env: Box::new(env),
            switches: Mutex::new(switches),
            log,
            restarts: Default::default(),
        }
    }

    /// A slot for services the arm runs elsewhere (a fleet of instances behind a front at
    /// `base`): it holds no process, and no fault may kill or restart one through it (the
    /// scenario refuses service faults and flips with a fleet).
    pub fn detached(base: String, binary: PathBuf, switches: Switches, log: PathBuf) -> Self {
        Self {
            base,
            process: tokio::sync::Mutex::new(None),
            binary,
            env: Box::new(|_: &Switches, _: std::net::SocketAddr| Vec::new()),
            switches: Mutex::new(switches),
            log,
            restarts: Default::default(),
        }
    }

    /// The process, for the arm to stop at its end (`None` if a restart failed).
    pub async fn take(&self) -> Option<ServiceProcess> {
        self.process.lock().await.take()
    }

    /// How many times the service was started again.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_switch(&self, flag: Flag, on: bool) {
        let mut s = self.switches.lock().unwrap_or_else(|p| p.into_inner());
        s.set(flag, on);
    }

    /// SIGKILL, and wait until it is gone.
    async fn kill(&self) {
        if let Some(p) = self.process.lock().await.take() {
            p.kill().await;
        }
    }

    /// Starts it again on the same port, with the switches to date.
    async fn restart(&self) -> anyhow::Result<()> {
        let addr: std::net::SocketAddr = self
            .base
            .trim_start_matches("http://")
            .parse()
            .context("the service's address")?;
        let switches = *self.switches.lock().unwrap_or_else(|p| p.into_inner());
        let n = self
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let log = self.log.with_extension(format!("restart-{n}.log"));
        let p = ServiceProcess::start(&self.binary, &(self.env)(&switches, addr), &log)
            .await
            .context("starting the service again after the kill")?;
        *self.process.lock().await = Some(p);
        Ok(())
    }
}

/// What the timeline needs to act on.
pub struct Targets<'a> {
    pub server: &'a PgServer,
    pub db: &'a str,
    pub proxy: Option<&'a FaultProxy>,
    pub fakes: &'a Fakes,
    pub service: &'a ServiceSlot,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub recording: Arc<Mutex<Recording>>,
}

/// What the timeline did.
#[derive(Debug, Default)]
pub struct Played {
    pub faults: Vec<FaultApplied>,
    pub flips: Vec<FlipApplied>,
    /// The budgets just before the first fault or flip, when they did not hold: the load was
    /// stopped there.
    pub not_steady: Option<Stretch>,
    /// Wall-clock times of the flips made, by index (for checks after the run).
    pub flipped_at: BTreeMap<usize, chrono::DateTime<chrono::Utc>>,
    /// Rows the harness's own probes wrote (and rolled back), by table: Postgres counts them,
    /// the service did not write them.
    pub harness_rows: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    End(usize),
    Steady,
    Flip(usize),
    Start(usize),
}

/// What a running fault holds until its end.
enum Held {
    Pause(Pause),
    Lock(PgConnection),
    Cpu(Vec<AbortOnDrop>),
    /// A provider's knobs before the storm.
    Provider(Provider, Knobs),
}

/// The faults' and flips' events in order; ends before starts at the same instant, the
/// steady-state check before anything it guards.
fn events(scenario: &Scenario) -> Vec<(Duration, Event)> {
    let mut out = Vec::new();
    for (i, f) in scenario.faults.iter().enumerate() {
        out.push((f.at, Event::Start(i)));
        if !f.kind().instant() {
            out.push((f.until, Event::End(i)));
        }
    }
    for (i, f) in scenario.flips.iter().enumerate() {
        out.push((f.at, Event::Flip(i)));
    }
    if let Some(h) = &scenario.hypothesis {
        out.push((h.disrupted_at, Event::Steady));
    }
    out.sort();
    out
}

/// Plays the scenario's faults and flips from `start` (the load's time zero).
pub async fn play(scenario: &Scenario, t: &Targets<'_>, start: Instant) -> anyhow::Result<Played> {
    let mut played = Played::default();
    let mut applied: Vec<Option<FaultApplied>> = vec![None; scenario.faults.len()];
    let mut held: BTreeMap<usize, Held> = BTreeMap::new();
    let mut link: Vec<usize> = Vec::new();
    let now = || start.elapsed().as_secs_f64();
    for (when, event) in events(scenario) {
        tokio::time::sleep_until(start + when).await;
        match event {
            Event::Steady => {
                let h = scenario
                    .hypothesis
                    .expect("a steady event comes from a hypothesis");
                // The last second's requests may still be in flight: judge what has answered.
                let to = (h.disrupted_at.as_secs() as u32).saturating_sub(1).max(1);
                let before = {
                    let rec = t.recording.lock().unwrap_or_else(|p| p.into_inner());
                    super::hypothesis::stretch(
                        &rec,
                        &super::hypothesis::budgeted(scenario),
                        0,
                        to,
                        h.max_failed_pct,
                    )
                };
                if !before.holds {
                    loadgen::stop();
                    played.not_steady = Some(before);
                    break;
                }
            }
            Event::Flip(i) => {
                let flip = &scenario.flips[i];
                let made = flip_now(t, flip, now(), &mut played.harness_rows).await;
                if made.made {
                    played.flipped_at.insert(i, chrono::Utc::now());
                    t.service.set_switch(flip.flag, flip.to);
                }
                played.flips.push(made);
            }
            Event::Start(i) => {
                let f = &scenario.faults[i];
                let (detail, hold) = start_fault(t, f).await?;
                applied[i] = Some(FaultApplied {
                    kind: f.kind().name().into(),
                    detail,
                    from_s: now(),
                    to_s: now(),
                    connections_open: t.proxy.map_or(0, FaultProxy::open),
                });
                if let Some(h) = hold {
                    held.insert(i, h);
                }
                if f.kind().target() == FaultTarget::Link && !f.kind().instant() {
                    link.push(i);
                    set_link(t, scenario, &link);
                }
                if f.kind() == FaultKind::Kill && f.until == f.at {
                    restart_service(t, applied[i].as_mut()).await?;
                }
            }
            Event::End(i) => {
                let f = &scenario.faults[i];
                if f.kind().target() == FaultTarget::Link {
                    link.retain(|a| *a != i);
                    set_link(t, scenario, &link);
                }
                if let Some(h) = held.remove(&i) {
                    end_hold(t, h).await;
                }
                if f.kind() == FaultKind::Kill {
                    restart_service(t, applied[i].as_mut()).await?;
                }
                if let Some(a) = applied[i].as_mut() {
                    a.to_s = now();
                }
            }
        }
    }
    // Whatever is still held (the run was stopped): undone.
    for (_, h) in std::mem::take(&mut held) {
        end_hold(t, h).await;
    }
    if let Some(p) = t.proxy {
        p.heal();
    }
    played.faults = applied.into_iter().flatten().collect();
    Ok(played)
}

fn set_link(t: &Targets<'_>, scenario: &Scenario, active: &[usize]) {
    if let Some(p) = t.proxy {
        p.set(combine(
            active.iter().map(|a| scenario.faults[*a].fault.link()),
        ));
    }
}

async fn restart_service(
    t: &Targets<'_>,
    applied: Option<&mut FaultApplied>,
) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    t.service.restart().await?;
    if let Some(a) = applied {
        a.detail = format!(
            "{}; started again on the same port in {:.1}s",
            a.detail,
            began.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Applies one fault; returns what it did, in words, and what it holds until its end.
async fn start_fault(t: &Targets<'_>, f: &TimedFault) -> anyhow::Result<(String, Option<Held>)> {
    Ok(match &f.fault {
        Fault::Reset => {
            let n = t.proxy.map_or(0, FaultProxy::open);
            if let Some(p) = t.proxy {
                p.reset();
            }
            (format!("{} ({n} connections)", f.fault.describe()), None)
        }
        Fault::Latency { .. }
        | Fault::Bandwidth { .. }
        | Fault::SlowConnect { .. }
        | Fault::Hang
        | Fault::Refuse => (f.fault.describe(), None),
        Fault::Pause => {
            let (pause, n) = Pause::start(t.server).await?;
            let what = if n == 0 {
                "the container paused".to_string()
            } else {
                format!("{n} Postgres processes stopped (SIGSTOP)")
            };
            (what, Some(Held::Pause(pause)))
        }
        Fault::Restart => {
            let down = pg::crash_restart(t.server, t.db).await?;
            (
                format!(
                    "Postgres crashed (a backend killed) and recovered: new connections again after {:.1}s",
                    down.as_secs_f64()
                ),
                None,
            )
        }
        Fault::Lock { table, mode } => {
            let conn = pg::hold_lock(t.server, t.db, table, mode).await?;
            (
                format!("{mode} lock held on {table}"),
                Some(Held::Lock(conn)),
            )
        }
        Fault::Cpu { sessions } => {
            let tasks = pg::burn_cpu(t.server, t.db, *sessions, f.until - f.at).await?;
            (
                format!("{sessions} CPU-bound sessions in Postgres"),
                Some(Held::Cpu(tasks)),
            )
        }
        Fault::Kill => {
            t.service.kill().await;
            ("the service killed (SIGKILL)".to_string(), None)
        }
        Fault::Provider {
            provider,
            knobs: storm,
        } => {
            let provider = *provider;
            let before = t.fakes.knobs(provider);
            // The storm's behaviour; the accounts' state (disconnected or not) stays current.
            t.fakes.set(
                provider,
                Knobs {
                    disconnected_workspaces: before.disconnected_workspaces.clone(),
                    ..storm.clone()
                },
            );
            (
                format!("{}: {}", provider_name(provider), describe_knobs(storm)),
                Some(Held::Provider(provider, before)),
            )
        }
    })
}

async fn end_hold(t: &Targets<'_>, h: Held) {
    match h {
        Held::Pause(mut p) => p.resume(),
        Held::Lock(conn) => pg::release_lock(conn).await,
        Held::Cpu(tasks) => drop(tasks),
        Held::Provider(provider, before) => {
            let now = t.fakes.knobs(provider);
            t.fakes.set(
                provider,
                Knobs {
                    disconnected_workspaces: now.disconnected_workspaces,
                    ..before
                },
            );
        }
    }
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Ghl => "GHL",
        Provider::Unipile => "Unipile",
        Provider::Ai => "AI",
    }
}

/// A provider's knobs in words: what differs from a healthy provider.
pub fn describe_knobs(k: &Knobs) -> String {
    let mut parts = Vec::new();
    if k.latency.base_ms > 0 || k.latency.jitter_ms > 0 {
        parts.push(format!(
            "latency {} ms ± {} ms",
            k.latency.base_ms, k.latency.jitter_ms
        ));
    }
    if k.latency.slow_pct > 0.0 {
        parts.push(format!(
            "{} % take {} ms",
            k.latency.slow_pct, k.latency.slow_ms
        ));
    }
    for (pct, what) in [
        (k.errors.server_error_pct, "503"),
        (k.errors.rate_limit_pct, "429"),
        (k.errors.disconnected_pct, "disconnected"),
        (k.errors.invalid_recipient_pct, "invalid recipient"),
    ] {
        if pct > 0.0 {
            parts.push(format!("{pct} % {what}"));
        }
    }
    if k.truncation_pct > 0.0 {
        parts.push(format!("{} % truncated", k.truncation_pct));
    }
    if parts.is_empty() {
        "healthy".into()
    } else {
        parts.join(", ")
    }
}

/// Makes one flip: reads the flag, runs the flip's validations, then sets it.
async fn flip_now(
    t: &Targets<'_>,
    flip: &Flip,
    at_s: f64,
    harness_rows: &mut BTreeMap<String, u64>,
) -> FlipApplied {
    let url = format!("{}{}", t.service.base, incident_wire::ops::ADMIN_FLAGS);
    let mut out = FlipApplied {
        flag: flip.flag,
        from: !flip.to,
        to: flip.to,
        at_s,
        made: false,
        detail: String::new(),
        effects: Vec::new(),
    };
    let current = async {
        let r = t
            .http
            .get(&url)
            .bearer_auth(&t.admin_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?;
        let flags: BTreeMap<String, bool> = r.json().await?;
        Ok::<_, reqwest::Error>(flags.get(flip.flag.name()).copied())
    };
    match current.await {
        Ok(Some(v)) => out.from = v,
        Ok(None) => {
            out.detail = format!("the service does not know flag {}", flip.flag);
            return out;
        }
        Err(e) => {
            out.detail = format!("reading the flags failed: {e}");
            return out;
        }
    }
    let mut checked = Vec::new();
    for v in &flip.validate {
        match validate(t, *v).await {
            Ok(what) => {
                // The probe's row, rolled back, is still a row Postgres counts as written.
                *harness_rows.entry("background_jobs".into()).or_default() += 1;
                checked.push(what)
            }
            Err(e) => {
                out.detail = format!("not made: validation failed: {e:#}");
                return out;
            }
        }
    }
    let body = serde_json::json!({ flip.flag.name(): flip.to });
    let answer = t
        .http
        .put(&url)
        .bearer_auth(&t.admin_token)
        .json(&body)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            let flags: BTreeMap<String, bool> = r.json().await.unwrap_or_default();
            out.made = flags.get(flip.flag.name()) == Some(&flip.to);
            checked.push(if out.made {
                format!("set through /admin/flags ({} → {})", out.from, flip.to)
            } else {
                "the admin route answered without the new value".into()
            });
        }
        Ok(r) => checked.push(format!("the admin route answered {}", r.status())),
        Err(e) => checked.push(format!("the admin route failed: {e}")),
    }
    out.detail = checked.join("; ");
    out
}

/// One validation before a flip; what it found.
async fn validate(t: &Targets<'_>, v: FlipValidation) -> anyhow::Result<String> {
    match v {
        FlipValidation::QueueWrites => {
            let mut conn = pg::connect(t.server, t.db).await?;
            queue_writes_probe(&mut conn).await
        }
    }
}

/// The job queue takes a write and refuses a second copy of it (its dedupe key), in a
/// transaction rolled back: nothing stays.
pub async fn queue_writes_probe(conn: &mut PgConnection) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    let key = format!("rollout-probe-{}", rand::random::<u64>());
    let insert =
        "INSERT INTO background_jobs (kind, dedupe_key, payload) VALUES ('rollout_probe', $1, '{}')
                  ON CONFLICT (dedupe_key) DO NOTHING RETURNING id";
    let first: Option<i64> = sqlx::query_scalar(insert)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await
        .context("writing a probe job into background_jobs")?;
    let second: Option<i64> = sqlx::query_scalar(insert)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await
        .context("writing the probe job again")?;
    tx.rollback().await?;
    match (first, second) {
        (Some(_), None) => Ok(
            "queue writes validated (a probe job written, its copy refused, rolled back)".into(),
        ),
        (None, _) => anyhow::bail!("the probe job was not written"),
        (Some(_), Some(_)) => {
            anyhow::bail!("a second copy of the probe job was written: the queue has no dedupe key")
        }
    }
}
