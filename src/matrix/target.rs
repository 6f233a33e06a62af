//! Runs against a service the harness did not start (`incident-lab run … --target URL`):
//! staging, the compose stack, a Kubernetes Service. The load is the scenario's; the flags are
//! the arm's when an admin token lets the run set them; the invariant is checked when a
//! database URL lets it read the rows. What it cannot check it names, with the reason.
//!
//! Past one machine, each of N processes sends one shard of the schedule (`--shard I/N`) and
//! writes its recording ([`ShardRecording`], `shard.json`); [`merge`] checks that the shards
//! belong to one run and cover it, adds their HDR histograms, and judges the whole as a single
//! run would be judged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use inbox_service::config::Secrets;
use loadgen::{Recording, Shard};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::arm::{drain, warm_up};
use super::figures::{background, endpoint_reports, load_health};
use super::invariant::{acked_effects, baseline, effects, invariants_of, Baseline, GHL_EFFECT};
use super::verdict::{cron_check, judge, load_check, status, EXACTLY_ONCE_CHECK};
use super::watch::{scrape, CpuSample, Stage, Watcher};
use super::wiring::plan_for;
use crate::model::{Arm, Scenario};
use crate::report::{
    Aborted, ArmReport, ArmTimings, Check, Environment, Invariants, Report, Skipped,
};
use crate::service_proc::Scrape;

/// The file a run with `--target` writes its recording to, for `incident-lab merge`.
pub const SHARD_FILE: &str = "shard.json";

/// Where the load goes and what the run may do there.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL of the service, e.g. `http://stack:8080`.
    pub base: String,
    /// The service's secrets: webhooks and sessions are signed with them, cron is called with
    /// them (the admin token is [`Target::admin_token`]).
    pub secrets: Secrets,
    /// Sets the arm's switches through `PUT /admin/flags` before the load.
    pub admin_token: Option<String>,
    /// The service's database, read for the invariant after the drain.
    pub database_url: Option<String>,
    pub shard: Shard,
    /// The same in every shard of one run: the event ids are built from it.
    pub run_id: String,
    /// Unix time at which the load starts (so shards on many machines start together).
    pub start_at: Option<i64>,
    /// How an https:// target is trusted.
    pub tls: loadgen::Tls,
}

/// One shard's recording and what it saw, as `shard.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShardRecording {
    /// The scenario file as given, and its text (the merge judges by this text).
    pub scenario_file: String,
    pub scenario_text: String,
    pub arm: String,
    pub shard: Shard,
    pub run_id: String,
    pub target: String,
    /// Unix time the load started.
    pub started_unix: i64,
    /// Sends the schedule had and the generator never started.
    pub unsent: u64,
    /// This process's share of a core and the machine's busy share, over the load.
    pub generator_cpu_pct: f64,
    pub machine_cpu_pct: f64,
    /// Whether the service ran the arm's switches (when this shard set them).
    pub flags: Option<Check>,
    pub recording: Recording,
    /// When and why an `[abort]` threshold stopped this shard's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Aborted>,
    /// The target's certificate was not verified (`--insecure`).
    #[serde(default)]
    pub insecure: bool,
}

/// The harness's own client for the target (health, flags, metrics, cron), trusting it as the
/// generator does.
fn http_client(tls: &loadgen::Tls) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().tls_danger_accept_invalid_certs(tls.insecure);
    if let Some(pem) = &tls.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .context("the CA file is not PEM certificates")?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTP client")
}

/// Runs `arm`'s load (this shard's part of it) against `target`; writes `shard.json` into
/// `out`. Unsharded, it also drains the queue, checks the invariant when it can, and returns
/// the judged arm.
pub async fn run(
    scenario: &Scenario,
    scenario_text: &str,
    arm: &Arm,
    target: &Target,
    out: &Path,
) -> anyhow::Result<(ShardRecording, Option<ArmReport>)> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let http = http_client(&target.tls)?;
    let base = target.base.trim_end_matches('/').to_owned();
    http.get(format!("{base}{}", incident_wire::ops::HEALTHZ))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the target {base}"))?;
    let flags = match &target.admin_token {
        Some(token) => Some(set_flags(&http, &base, token, arm).await?),
        None => None,
    };
    let whole = target.shard.is_whole();
    let mut db = match (&target.database_url, whole) {
        (Some(url), true) => Some(connect(url).await?),
        _ => None,
    };
    let before = match db.as_mut() {
        Some(conn) => Some(baseline(conn).await.context("reading the counters")?),
        None => None,
    };

    let mut plan = plan_for(scenario, &base, &target.secrets, &target.run_id);
    plan.shard = target.shard;
    plan.tls = target.tls.clone();
    // The service's counters before this run: it may have served before (and will after).
    let counters_before = scrape(&http, &base, 0.0).await;
    warm_up(&http, &plan).await;
    if let Some(at) = target.start_at {
        let wait = at - super::unix_now();
        if wait > 0 {
            eprintln!("shard {}: starting at {at} (in {wait} s)", target.shard);
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
    }
    let started_unix = super::unix_now();
    let recording = Arc::new(Mutex::new(Recording::default()));
    let load_start = Instant::now();
    let watcher = Watcher::start(
        http.clone(),
        base.clone(),
        format!("{} (shard {})", arm.name, target.shard),
        scenario.duration,
        load_start,
        recording.clone(),
    );
    let cpu_before = CpuSample::now();
    // An `[abort]` threshold, watched on the schedule's clock until the load ends.
    let (zero_tx, zero_rx) = tokio::sync::oneshot::channel();
    let done = AtomicBool::new(false);
    let budgets = crate::chaos::hypothesis::budgeted(scenario);
    let aborting = async {
        let abort = scenario.abort?;
        let zero = zero_rx.await.ok()?;
        super::rails::watch_abort(&recording, &budgets, abort, zero, &done).await
    };
    let load = async {
        let summary = loadgen::engine::run_from(plan, recording.clone(), Some(zero_tx)).await;
        done.store(true, Ordering::Relaxed);
        summary
    };
    let (summary, aborted) = tokio::join!(load, aborting);
    let summary = summary.context("load generator")?;
    if let Some(a) = &aborted {
        eprintln!("load stopped: {}", a.reason);
    }
    let cpu = CpuSample::now().since(&cpu_before);
    let recording = recording.lock().expect("recording lock").clone();
    let shard = ShardRecording {
        scenario_file: scenario.source.clone(),
        scenario_text: scenario_text.to_owned(),
        arm: arm.name.clone(),
        shard: target.shard,
        run_id: target.run_id.clone(),
        target: base.clone(),
        started_unix,
        unsent: summary.unsent,
        generator_cpu_pct: cpu.0,
        machine_cpu_pct: cpu.1,
        flags,
        recording,
        aborted,
        insecure: target.tls.insecure,
    };
    let file = out.join(SHARD_FILE);
    std::fs::write(&file, serde_json::to_string(&shard)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    if !whole {
        return Ok((shard, None));
    }

    watcher.set_stage(Stage::Drain);
    let last = drain(
        &http,
        &base,
        &target.secrets.cron,
        load_start,
        scenario.drain,
        Some(&watcher),
    )
    .await;
    let mut scrapes = watcher.scrapes();
    drop(watcher);
    if last.t > 0.0 {
        scrapes.push(last.clone());
    }
    let undrained = (last.queue_queued + last.queue_running) as u64;
    let acked: Vec<String> = shard.recording.acked.iter().cloned().collect();
    let invariants = match (db.as_mut(), &before) {
        (Some(conn), Some(before)) => Some(invariant(conn, &acked, Some(before), undrained).await?),
        _ => None,
    };
    let report = judge_run(
        scenario,
        arm,
        &[&shard],
        &scrapes,
        counters_before.as_ref(),
        invariants,
        target.database_url.is_some(),
    );
    Ok((shard, Some(report)))
}

/// The harness's connection to `--database-url`: over TLS as its `sslmode` says (`require`,
/// `verify-ca`, `verify-full` with `sslrootcert=FILE`); an error names the host.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(url)
        .context("--database-url is not a postgres:// URL")?
        .options([("statement_timeout", "0")]);
    let at = format!("{}:{}", options.get_host(), options.get_port());
    options
        .connect()
        .await
        .with_context(|| format!("cannot connect to --database-url ({at})"))
}

/// The invariant over `acked`: by event id always; the counters too when their values before
/// the load are known. The providers' calls are not the harness's to count here.
async fn invariant(
    conn: &mut PgConnection,
    acked: &[String],
    before: Option<&Baseline>,
    undrained: u64,
) -> anyhow::Result<Invariants> {
    let mut found = match before {
        Some(b) => effects(conn, acked, b, &BTreeMap::new()).await?,
        None => acked_effects(conn, acked).await?,
    };
    found.retain(|e| e.effect != GHL_EFFECT);
    Ok(invariants_of(found, acked.len() as u64, undrained))
}

/// `PUT /admin/flags` with every switch of the arm; the service's answer must be those switches.
async fn set_flags(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    arm: &Arm,
) -> anyhow::Result<Check> {
    let wanted: BTreeMap<String, bool> = arm
        .switches
        .to_map()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let response = http
        .put(format!("{base}{}", incident_wire::ops::ADMIN_FLAGS))
        .bearer_auth(token)
        .json(&wanted)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("setting the arm's flags on {base}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{base}/admin/flags answered {status} to the arm's flags: {body}");
    }
    let now: BTreeMap<String, bool> = serde_json::from_str(&body)
        .with_context(|| format!("{base}/admin/flags answered {body:?}"))?;
    let differ: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} is {:?}, wanted {v}", now.get(k)))
        .collect();
    Ok(Check {
        name: format!("the service runs arm {}'s switches", arm.name),
        passed: differ.is_empty(),
        detail: if differ.is_empty() {
            "set through /admin/flags and read back".into()
        } else {
            differ.join("; ")
        },
    })
}

/// The checks of a run against a target, over the shards' recordings (one for an unsharded
/// run): the load's health, the flags, the arm's expectations on the client's figures (and the
/// service's when its `/metrics` was scraped), the invariant when it was read. Every check it
/// cannot make is named in `skipped`.
#[allow(clippy::too_many_arguments)]
pub fn judge_run(
    scenario: &Scenario,
    arm: &Arm,
    shards: &[&ShardRecording],
    scrapes: &[Scrape],
    counters_before: Option<&Scrape>,
    invariants: Option<Invariants>,
    had_database: bool,
) -> ArmReport {
    let mut recording = Recording::default();
    for s in shards {
        recording.merge(&s.recording);
    }
    let cpu = shards.iter().fold((0.0, 0.0), |acc: (f64, f64), s| {
        (acc.0.max(s.generator_cpu_pct), acc.1.max(s.machine_cpu_pct))
    });
    let plan = plan_for(scenario, "", &Secrets::random(), "");
    let offset_s = loadgen::engine::START_DELAY.as_secs_f64();
    let mut endpoints = endpoint_reports(scenario, &recording, scrapes, offset_s);
    if scrapes.is_empty() {
        // Nothing from the service's side to tell where the time went.
        for e in &mut endpoints {
            e.time_spent = None;
        }
    }
    let load = load_health(scenario, &plan, &recording, cpu);
    let errors: BTreeMap<String, u64> = match scrapes.last() {
        // The service's error counters over this run (they count from its start).
        Some(last) => last
            .errors
            .iter()
            .map(|(k, v)| {
                let before = counters_before
                    .and_then(|b| b.errors.get(k))
                    .copied()
                    .unwrap_or(0.0);
                (k.clone(), (v - before).max(0.0) as u64)
            })
            .filter(|(_, n)| *n > 0)
            .collect(),
        // The client's view: the categories the service tagged its answers with.
        None => recording
            .endpoints
            .values()
            .flat_map(|e| e.error_categories.iter())
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k.clone()).or_default() += v;
                m
            }),
    };
    let statement_timeouts = errors.get("db_timeout").copied().unwrap_or(0);

    let mut skipped = Vec::new();
    let mut skip = |check: &str, reason: &str| {
        skipped.push(Skipped {
            check: check.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if shards.iter().any(|s| s.insecure) {
        skip(
            "the target's certificate verified",
            "--insecure: any certificate was accepted",
        );
    }
    let mut checks = vec![load_check(&load)];
    let aborted = shards.iter().find_map(|s| s.aborted.clone());
    checks.extend(aborted.as_ref().map(super::verdict::abort_check));
    let set: Vec<&Check> = shards.iter().filter_map(|s| s.flags.as_ref()).collect();
    if set.len() == shards.len() {
        checks.push(Check {
            name: format!("the service runs arm {}'s switches", arm.name),
            passed: set.iter().all(|c| c.passed),
            detail: set
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join("; "),
        });
    } else {
        skip(
            "the service runs the arm's switches",
            &format!(
                "no --admin-token (in {} of {} shards): the service kept its own flags, and the run is judged as arm {}",
                shards.len() - set.len(),
                shards.len(),
                arm.name
            ),
        );
    }
    let judged = judge(
        scenario,
        arm.expect,
        &endpoints,
        statement_timeouts,
        &invariants.clone().unwrap_or_default(),
    );
    for c in judged {
        if c.name == EXACTLY_ONCE_CHECK && invariants.is_none() {
            skip(
                &c.name,
                if had_database {
                    "a sharded run: `incident-lab merge --database-url` checks it over every shard"
                } else {
                    "no --database-url: the service's rows cannot be read"
                },
            );
        } else if c.name.contains("(service side)") && scrapes.is_empty() {
            skip(
                &c.name,
                "no service-side figures: the run is sharded, or the target has no /metrics",
            );
        } else {
            checks.push(c);
        }
    }
    let bg = background(scenario, scrapes);
    if let Some(c) = cron_check(&bg) {
        checks.push(c);
    }
    skip(
        "the service's declared writes and calls match Postgres's and the providers' counts",
        "needs the providers' counters and the database from before the load: only when the harness starts the service",
    );
    if let Some(inv) = &invariants {
        if !inv.effects.iter().any(|e| e.effect == "lead emails_sent") {
            skip(
                "lead emails_sent and slot ledger incremented once per applied event",
                "no values from before the load (taken by an unsharded run with --database-url)",
            );
        }
    }
    if invariants.is_some() {
        skip(
            "GHL contact sync once per applied event",
            "the providers are not the harness's: their calls cannot be counted",
        );
    }
    if scenario.reconnect.is_some() && arm.switches.unipile_health_gate {
        skip(
            "reconnected LinkedIn accounts re-admitted within the bound",
            "the accounts reconnect through the harness's fake providers",
        );
    }
    let status = status(&checks);
    let mut report = ArmReport::interrupted(
        &arm.name,
        arm.switches
            .to_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        arm.expect,
    );
    report.status = status;
    report.as_expected = status == crate::report::ArmStatus::AsExpected;
    report.checks = checks;
    report.late_arrivals = endpoints.iter().map(|e| e.late).sum();
    report.unsent = shards.iter().map(|s| s.unsent).sum();
    report.endpoints = endpoints;
    report.error_categories = errors;
    report.statement_timeouts = statement_timeouts;
    report.load = load;
    report.invariants = invariants.unwrap_or_default();
    report.background = bg;
    report.timings = ArmTimings::default();
    report.skipped = skipped;
    report.aborted = aborted;
    report
}

/// Where a merge reads a shard's recording: `DIR/shard.json`, or the file itself.
fn shard_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(SHARD_FILE)
    } else {
        path.to_owned()
    }
}

/// Reads the shards' recordings and checks that they are the shards of one run — one scenario
/// text, one arm, one run id, one shard count — and cover it, each once.
pub fn read_shards(paths: &[PathBuf]) -> Result<Vec<ShardRecording>, String> {
    let mut shards: Vec<(PathBuf, ShardRecording)> = Vec::new();
    for p in paths {
        let file = shard_file(p);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
        let shard: ShardRecording = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a shard recording of incident-lab run --target: {e}",
                file.display()
            )
        })?;
        shards.push((file, shard));
    }
    let Some((first_file, first)) = shards.first() else {
        return Err("no shard recordings given".into());
    };
    for (file, s) in &shards[1..] {
        let differs = |what: &str, a: &str, b: &str| {
            format!(
                "{}: {what} {b:?}, but {} has {what} {a:?}: not shards of one run",
                file.display(),
                first_file.display()
            )
        };
        if s.scenario_text != first.scenario_text {
            return Err(differs(
                "scenario",
                &first.scenario_file,
                &format!("{} (other text)", s.scenario_file),
            ));
        }
        if s.arm != first.arm {
            return Err(differs("arm", &first.arm, &s.arm));
        }
        if s.run_id != first.run_id {
            return Err(differs("run id", &first.run_id, &s.run_id));
        }
        if s.shard.count != first.shard.count {
            return Err(differs(
                "shard",
                &first.shard.to_string(),
                &s.shard.to_string(),
            ));
        }
    }
    let n = first.shard.count;
    let mut seen: BTreeMap<u32, &PathBuf> = BTreeMap::new();
    for (file, s) in &shards {
        if let Some(other) = seen.insert(s.shard.index, file) {
            return Err(format!(
                "shard {} is given twice: {} and {}",
                s.shard,
                other.display(),
                file.display()
            ));
        }
    }
    let missing: Vec<String> = (0..n)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "shard(s) {} missing: the run is judged whole or not at all",
            missing.join(", ")
        ));
    }
    let mut out: Vec<ShardRecording> = shards.into_iter().map(|(_, s)| s).collect();
    out.sort_by_key(|s| s.shard.index);
    Ok(out)
}

/// After the shards: drain the queue through the target's cron (when given), read the
/// invariant (when a database URL is given), and judge the merged recording as one run.
pub async fn merge(
    scenario: &Scenario,
    arm: &Arm,
    shards: &[ShardRecording],
    drain_target: Option<(&str, &Secrets)>,
    database_url: Option<&str>,
) -> anyhow::Result<ArmReport> {
    let mut undrained = 0;
    if let Some((base, secrets)) = drain_target {
        let http = reqwest::Client::new();
        let last = drain(
            &http,
            base.trim_end_matches('/'),
            &secrets.cron,
            Instant::now(),
            scenario.drain,
            None,
        )
        .await;
        undrained = (last.queue_queued + last.queue_running) as u64;
    }
    let mut acked = BTreeSet::new();
    for s in shards {
        acked.extend(s.recording.acked.iter().cloned());
    }
    let acked: Vec<String> = acked.into_iter().collect();
    let invariants = match database_url {
        Some(url) => {
            let mut conn = connect(url).await?;
            let inv = invariant(&mut conn, &acked, None, undrained).await?;
            conn.close().await?;
            Some(inv)
        }
        None => None,
    };
    let refs: Vec<&ShardRecording> = shards.iter().collect();
    Ok(judge_run(
        scenario,
        arm,
        &refs,
        &[],
        None,
        invariants,
        database_url.is_some(),
    ))
}

/// The report of a run against a target: one arm, no Postgres started.
pub fn report(scenario: &Scenario, arm: ArmReport, database: bool, wall: Duration) -> Report {
    let environment = Environment {
        commit: super::commit(),
        machine: super::machine(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        postgres_backend: if database {
            "url (the target's, read for the invariant)".into()
        } else {
            "none (a target the harness did not start)".into()
        },
        postgres_limits: "unknown: a server the harness did not start".into(),
        postgres_ready_s: 0.0,
        seed_s: 0.0,
    };
    let mut report = super::assemble(scenario, &environment, Instant::now(), vec![arm]);
    report.wall_time_s = wall.as_secs_f64();
    report
}
