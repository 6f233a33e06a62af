//! `incident-lab ceiling`: the harness's own limits, so a user can tell a slow service from a
//! slow harness. Measured, never assumed, as ratios against references started by the command
//! itself on the same machine in the same run.
//!
//! - **The load generator**: the highest open-model rate it keeps on schedule (lateness p99 ≤
//!   5 ms, no failed request, nothing unsent) against a trivial endpoint — a server process of
//!   its own answering `200 ok` — stepping the rate up until a step does not hold. Reference:
//!   `wrk` (Debian's package) on the same endpoint for the same time. Goal: ≥ 0.5 of wrk.
//!   With `--https`, the same again with the endpoint behind TLS (`echo.rs`), and what TLS
//!   costs each a request ([`tls_cost`]).
//!
//! - **Ingest and drain on Postgres** ([`database`]), beside `pgbench` on the same cluster.
//!
//! - **Memory** ([`soak`], with `--soak`): the generator's RSS over a long run at one rate.
//!
//! A reference that cannot run (wrk not installed) is reported as unavailable, with why; no
//! ratio is invented. Writes `ceiling.json` and `ceiling.md`.

pub mod database;
mod echo;
pub mod pgbench;
mod render;
pub mod soak;

pub use echo::{echo_server, ServerCert};
pub use render::{body, markdown};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};

use self::database::DatabaseCeiling;
use crate::dataset::Template;
use crate::matrix::watch::MachineTicks;
use crate::model::Scenario;
use crate::postgres::PgServer;
use echo::Echo;
use loadgen::record::FAILED;
use loadgen::{Arrival, Endpoint, Plan, Recording, Stream, Tls};

/// The path the generator and wrk both ask for.
const PATH: &str = "/ceiling";
const STREAM: &str = "ceiling";
/// The warm-up's rate (requests per second, for one second) before each ramp.
const WARM_UP_RATE: f64 = 100.0;

/// What `ceiling` measures and how.
#[derive(Debug, Clone)]
pub struct CeilingOptions {
    /// The open-model rates to step through, ascending (requests per second).
    pub rates: Vec<f64>,
    /// How long each step (and wrk) runs.
    pub step: Duration,
    /// A step holds when the sends' lateness p99 is at most this.
    pub max_lateness_p99: Duration,
    /// Connections the generator may hold open (its users), and wrk's.
    pub connections: usize,
    /// Steps run after the ramp's first failure, each halving the gap below it.
    pub refine: u32,
    /// Where ceiling.json and ceiling.md go.
    pub out: PathBuf,
    /// The memory soak: how long, at which rate; `None`: not run.
    pub soak: Option<(Duration, f64)>,
    /// Also the generator and wrk over HTTPS, and what TLS costs each a request.
    pub https: bool,
}

/// One step of the ramp.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub rate: f64,
    pub sent: u64,
    pub failed: u64,
    pub unsent: u64,
    pub lateness_p99_ms: Option<f64>,
    /// Sends late because every connection was busy (the client pool was full).
    pub late_no_user: u64,
    pub held: bool,
    /// A refining step: halfway between the highest rate that held and the lowest that did not.
    #[serde(default)]
    pub refining: bool,
    /// The generator's CPU time (user + system, its whole process) over the step ÷ requests
    /// sent, in µs: what one request costs the generator, beside wrk's.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
    /// The share of the machine's CPU the hypervisor took during the step (steal, %): on a
    /// shared virtual machine the figures above move with it, whatever the code.
    #[serde(default)]
    pub steal_pct: Option<f64>,
}

/// CPU time (user + system) this process has used, or (`RUSAGE_CHILDREN`) its children that
/// have ended and been waited for; `None` where the system will not say.
fn cpu_time(who: nix::sys::resource::UsageWho) -> Option<Duration> {
    let usage = nix::sys::resource::getrusage(who).ok()?;
    let us = |t: nix::sys::time::TimeVal| -> Option<u64> {
        Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000 + u64::try_from(t.tv_usec()).ok()?)
    };
    Some(Duration::from_micros(
        us(usage.user_time())? + us(usage.system_time())?,
    ))
}

/// `spent` over `requests`, in µs; `None` for no requests or no figure.
fn per_request_us(spent: Option<Duration>, requests: u64) -> Option<f64> {
    (requests > 0)
        .then_some(spent?)
        .map(|d| d.as_secs_f64() * 1e6 / requests as f64)
}

/// The highest rate that held below every rate that did not (`None`: none did), and whether
/// every step held (the ceiling is above the last rate tried).
pub fn ceiling_of(steps: &[Step]) -> (Option<f64>, bool) {
    let failed = lowest_failed(steps);
    let ceiling = steps
        .iter()
        .filter(|s| s.held && failed.is_none_or(|f| s.rate < f))
        .map(|s| s.rate)
        .reduce(f64::max);
    (ceiling, failed.is_none())
}

fn lowest_failed(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .filter(|s| !s.held)
        .map(|s| s.rate)
        .reduce(f64::min)
}

/// The next refining step's rate: halfway (rounded to a whole rate) between the ceiling so far
/// and the lowest rate that did not hold; `None` when there is no such gap or it is already
/// below one request per second.
pub fn refinement(steps: &[Step]) -> Option<f64> {
    let (Some(held), Some(failed)) = (ceiling_of(steps).0, lowest_failed(steps)) else {
        return None;
    };
    halfway(held, failed)
}

/// The rate halfway between one that held and one that did not, rounded to a whole rate;
/// `None` when the gap is under one request a second. The generator's and the ingest's
/// refining steps.
pub fn halfway(held: f64, failed: f64) -> Option<f64> {
    let mid = ((held + failed) / 2.0).round();
    (mid > held && mid < failed).then_some(mid)
}

/// A reference tool's figure, or why there is none.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub tool: String,
    /// Requests per second it reached; `None` when it could not run.
    pub rate: Option<f64>,
    /// The command run, or why it was not.
    pub detail: String,
}

/// The generator's ceiling against wrk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GeneratorCeiling {
    pub steps: Vec<Step>,
    /// The highest rate that held; `None` when the first step did not.
    pub ceiling_rate: Option<f64>,
    /// True when every step held: the ceiling is above the last rate tried.
    pub above_last_step: bool,
    pub reference: Reference,
    /// wrk's CPU time (user + system) over its run ÷ the requests it made, in µs.
    #[serde(default)]
    pub wrk_cpu_us_per_request: Option<f64>,
    /// Steal during wrk's run (%), as [`Step::steal_pct`].
    #[serde(default)]
    pub wrk_steal_pct: Option<f64>,
    /// ceiling ÷ wrk, when both exist.
    pub ratio: Option<f64>,
    pub goal: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CeilingReport {
    pub commit: String,
    pub machine: String,
    pub step_s: f64,
    pub max_lateness_p99_ms: f64,
    pub generator: GeneratorCeiling,
    /// The generator and wrk over HTTPS; `None` without `--https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<GeneratorCeiling>,
    /// Ingest and drain against pgbench; `None` with `--no-database`.
    #[serde(default)]
    pub database: Option<DatabaseCeiling>,
    /// The generator's RSS over a long run; `None` without `--soak`.
    #[serde(default)]
    pub soak: Option<soak::Soak>,
}

/// What the database ceilings run on.
pub struct DatabaseRun<'a> {
    pub scenario: &'a Scenario,
    pub server: &'a PgServer,
    pub template: &'a Template,
    pub service_bin: &'a Path,
    /// The EMAIL_SENT rates to step through, ascending.
    pub rates: Vec<f64>,
}

/// The generator's plan: one stream at `rate` to the trivial endpoint for `duration`.
fn plan(base: &str, tls: &Tls, rate: f64, duration: Duration, opts: &CeilingOptions) -> Plan {
    Plan {
        host: base.to_owned(),
        streams: vec![Stream {
            name: STREAM.into(),
            endpoint: Endpoint::Cron {
                path: PATH.into(),
                secret: "ceiling".into(),
            },
            arrival: Arrival::Constant { rate },
            retry: None,
            max_in_flight: opts.connections,
            delivery: Default::default(),
        }],
        duration,
        seed: 1,
        poisson: false,
        client_timeout: Duration::from_secs(5),
        late_after: opts.max_lateness_p99,
        run_id: format!("ceiling-{rate}"),
        shard: Default::default(),
        tls: tls.clone(),
    }
}

/// The stream's figures and the failed requests of a run of [`plan`].
fn outcome(recording: &Mutex<Recording>) -> (loadgen::record::StreamRecording, u64) {
    let r = recording.lock().expect("recording lock");
    let stream = r.streams.get(STREAM).cloned().unwrap_or_default();
    let failed = r
        .endpoints
        .values()
        .map(|e| e.category_between(FAILED, 0, u32::MAX))
        .sum();
    (stream, failed)
}

/// One step: the generator at `rate` for `opts.step`.
async fn step(
    base: &str,
    tls: &Tls,
    rate: f64,
    refining: bool,
    opts: &CeilingOptions,
) -> anyhow::Result<Step> {
    let plan = plan(base, tls, rate, opts.step, opts);
    let recording = Arc::new(Mutex::new(Recording::default()));
    let self_cpu = || cpu_time(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let cpu_before = self_cpu();
    let machine_before = MachineTicks::now();
    let summary = loadgen::run(plan, recording.clone())
        .await
        .with_context(|| format!("the generator failed at {rate}/s"))?;
    let steal_pct = steal_since(machine_before);
    let cpu = self_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let (stream, failed) = outcome(&recording);
    let lateness_p99_ms = stream.lateness.quantile_ms(0.99);
    let held = failed == 0
        && summary.unsent == 0
        && stream.requests > 0
        && lateness_p99_ms.is_some_and(|l| l <= opts.max_lateness_p99.as_secs_f64() * 1000.0);
    Ok(Step {
        rate,
        sent: stream.requests,
        failed,
        unsent: summary.unsent,
        lateness_p99_ms,
        late_no_user: stream.late_no_user,
        held,
        refining,
        cpu_us_per_request: per_request_us(cpu, stream.requests),
        steal_pct,
    })
}

/// `Requests/sec:` from wrk's output.
pub fn parse_wrk(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The requests wrk made in all (`N requests in 5.00s, …`).
pub fn parse_wrk_requests(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
}

/// wrk on the same endpoint, one thread (a core is left to the server, as the generator leaves
/// it), the same connections and time; and its CPU time per request (µs).
async fn wrk(base: &str, opts: &CeilingOptions) -> (Reference, Option<f64>, Option<f64>) {
    let Some(wrk) = crate::tools::on_path(&["wrk"]) else {
        let reference = Reference {
            tool: "wrk".into(),
            rate: None,
            detail:
                "not run: wrk is not installed (Debian's wrk package; scripts/setup installs it)"
                    .into(),
        };
        return (reference, None, None);
    };
    let args = [
        "-t1".to_owned(),
        format!("-c{}", opts.connections),
        format!("-d{}s", opts.step.as_secs().max(1)),
        format!("{base}{PATH}"),
    ];
    let command = format!("wrk {}", args.join(" "));
    // wrk is the only child that ends meanwhile (the echo server runs on), so what the ended
    // children used grows by wrk's CPU time alone.
    let children_cpu = || cpu_time(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    let cpu_before = children_cpu();
    let machine_before = MachineTicks::now();
    let out = tokio::process::Command::new(&wrk)
        .args(&args)
        .output()
        .await;
    let steal_pct = steal_since(machine_before);
    let cpu = children_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let (rate, detail, cpu_us) = match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let cpu_us = per_request_us(cpu, parse_wrk_requests(&text).unwrap_or(0));
            match parse_wrk(&text) {
                Some(r) => (Some(r), command, cpu_us),
                None => (
                    None,
                    format!("{command}: no Requests/sec in its output: {}", text.trim()),
                    None,
                ),
            }
        }
        Err(e) => (None, format!("{command}: {e}"), None),
    };
    let reference = Reference {
        tool: "wrk".into(),
        rate,
        detail,
    };
    (reference, cpu_us, steal_pct)
}

/// Steal (%) from `before` to now.
fn steal_since(before: Option<MachineTicks>) -> Option<f64> {
    MachineTicks::now()?.steal_pct_since(&before?)
}

/// The generator's ramp on the echo server at `base` (reached as `tls` says), up to its first
/// step that does not hold and `opts.refine` steps below it, then wrk on the same endpoint.
/// `over` names the ramp in the progress lines ("" or " over HTTPS").
async fn generator(
    base: &str,
    tls: &Tls,
    over: &str,
    opts: &CeilingOptions,
) -> anyhow::Result<GeneratorCeiling> {
    // A second at WARM_UP_RATE first, not kept: a process's first TLS handshake pays for its
    // crypto library's set-up, once, which would otherwise make the first step late. The same
    // whatever the rates, so scripts/generator-instructions' difference of two runs cancels it.
    let warm_up = plan(base, tls, WARM_UP_RATE, Duration::from_secs(1), opts);
    loadgen::run(warm_up, Arc::default())
        .await
        .with_context(|| format!("the generator's warm-up{over} failed"))?;
    let mut steps = Vec::new();
    let mut ramp = opts.rates.iter().map(|&r| (r, false));
    let mut next = ramp.next();
    let mut refining_left = opts.refine;
    while let Some((rate, refining)) = next {
        let s = step(base, tls, rate, refining, opts).await?;
        eprintln!(
            "generator{over} at {rate}/s{}: sent {}, failed {}, unsent {}, lateness p99 {} → {}",
            if refining { " (refining)" } else { "" },
            s.sent,
            s.failed,
            s.unsent,
            crate::report::ms(s.lateness_p99_ms),
            if s.held { "held" } else { "did not hold" }
        );
        steps.push(s);
        if crate::interrupt::requested().is_some() {
            bail!("interrupted");
        }
        next = if ceiling_of(&steps).1 {
            ramp.next()
        } else if refining_left > 0 {
            refining_left -= 1;
            refinement(&steps).map(|r| (r, true))
        } else {
            None
        };
    }
    let (reference, wrk_cpu_us_per_request, wrk_steal_pct) = wrk(base, opts).await;
    eprintln!(
        "reference{over}: {}",
        reference.rate.map_or(reference.detail.clone(), |r| format!(
            "{r:.0}/s by {}",
            reference.detail
        ))
    );
    let (ceiling_rate, above_last_step) = ceiling_of(&steps);
    Ok(GeneratorCeiling {
        above_last_step,
        ratio: ceiling_rate.zip(reference.rate).map(|(c, w)| c / w),
        ceiling_rate,
        steps,
        reference,
        wrk_cpu_us_per_request,
        wrk_steal_pct,
        goal: 0.5,
    })
}

/// The generator and wrk over HTTPS: the echo server behind TLS (HTTP/1.1, as wrk speaks it)
/// with a certificate made for the run in `opts.out/tls`, its CA trusted by the generator as
/// `--ca-cert` would (wrk checks no certificate).
async fn over_https(opts: &CeilingOptions) -> anyhow::Result<GeneratorCeiling> {
    let (cert, ca) = echo::certificates(&opts.out.join("tls"))?;
    let echo = Echo::start(Some(&cert)).await?;
    let tls = Tls {
        ca_pem: Some(ca),
        insecure: false,
    };
    generator(&echo.base, &tls, " over HTTPS", opts).await
}

/// What TLS costs a request, in µs of CPU: at the highest rate both ramps held, the
/// generator's over HTTPS less over HTTP; wrk's over its two runs. `None` where a figure is
/// missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TlsCost {
    /// The rate the generator's two figures were read at.
    pub rate: f64,
    pub generator_http_us: f64,
    pub generator_https_us: f64,
    pub wrk: Option<(f64, f64)>,
}

/// [`TlsCost`] of the plain ramp `http` and the ramp over HTTPS `https`.
pub fn tls_cost(http: &GeneratorCeiling, https: &GeneratorCeiling) -> Option<TlsCost> {
    let held = |g: &GeneratorCeiling, rate: f64| {
        g.steps
            .iter()
            .find(|s| s.held && s.rate == rate)
            .and_then(|s| s.cpu_us_per_request)
    };
    let (rate, generator_http_us, generator_https_us) = http
        .steps
        .iter()
        .filter_map(|s| Some((s.rate, held(http, s.rate)?, held(https, s.rate)?)))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(TlsCost {
        rate,
        generator_http_us,
        generator_https_us,
        wrk: http
            .wrk_cpu_us_per_request
            .zip(https.wrk_cpu_us_per_request),
    })
}

/// Runs the ramp and the reference, writes ceiling.json and ceiling.md into `opts.out`.
pub async fn run(
    opts: &CeilingOptions,
    db: Option<DatabaseRun<'_>>,
) -> anyhow::Result<CeilingReport> {
    for rates in std::iter::once(&opts.rates).chain(db.as_ref().map(|d| &d.rates)) {
        if rates.is_empty() || rates.windows(2).any(|w| w[1] <= w[0]) {
            bail!("rates must be ascending and not empty: {rates:?}");
        }
    }
    let echo = Echo::start(None).await?;
    let generator = generator(&echo.base, &Tls::default(), "", opts).await?;
    let soak = match opts.soak {
        Some((duration, rate)) => {
            eprintln!(
                "soak: the generator at {rate}/s for {:.0} s, its RSS read every second …",
                duration.as_secs_f64()
            );
            Some(soak::run(&echo.base, rate, duration, opts).await?)
        }
        None => None,
    };
    drop(echo);
    let https = match opts.https {
        true => Some(over_https(opts).await?),
        false => None,
    };
    let database = match db {
        Some(d) => Some(
            database::measure(
                d.scenario,
                d.server,
                d.template,
                d.service_bin,
                database::IngestRamp {
                    rates: &d.rates,
                    refine: opts.refine,
                    step: opts.step,
                },
                &opts.out,
            )
            .await?,
        ),
        None => None,
    };
    let report = CeilingReport {
        commit: crate::matrix::commit(),
        machine: crate::matrix::machine(),
        step_s: opts.step.as_secs_f64(),
        max_lateness_p99_ms: opts.max_lateness_p99.as_secs_f64() * 1000.0,
        generator,
        https,
        database,
        soak,
    };
    write(&report, &opts.out)?;
    Ok(report)
}

fn write(report: &CeilingReport, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(
        out.join("ceiling.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("ceiling.md"), markdown(report))?;
    Ok(())
}

#[cfg(test)]
mod tests;
