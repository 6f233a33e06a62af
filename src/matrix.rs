//! The incident matrix: one Postgres, one seeded template; per arm a fresh clone, fresh fake
//! providers and a fresh service process with the arm's switches; the scenario's load; a drain
//! of the job queue; the invariant; a verdict against what the arm must show.
//!
//! Arms run one after another: goose's killswitch is process-wide, and arms must not share
//! the machine's two cores.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use fake_providers::{Fakes, Provider};
use loadgen::{Endpoint, Plan, Recording, RetryPolicy, Sessions, Stream};
use sqlx::{ConnectOptions, Connection};

use crate::dataset::Template;
use crate::postgres::PgServer;
use crate::report::{
    ArmReport, ArmTimings, Attribution, Check, EndpointReport, Environment, Invariants,
    PhaseFigures, PhaseInfo, Report, ScenarioInfo, TimelinePoint, SCHEMA_VERSION,
};
use crate::scenario::{Arm, ArrivalSpec, EndpointKind, Expect, RetryOn, Scenario};
use crate::service_proc::{parse_metrics, Scrape, ServiceProcess};

/// Secrets of a run: fresh per process, never logged.
struct Secrets {
    webhook: String,
    cron: String,
    admin: String,
    session: String,
}

impl Secrets {
    fn fresh() -> Self {
        let r = || format!("{:032x}", rand::random::<u128>());
        Self {
            webhook: r(),
            cron: r(),
            admin: r(),
            session: r(),
        }
    }
}

/// Where a run writes and what it runs.
pub struct RunOptions {
    pub out: PathBuf,
    pub service_bin: PathBuf,
    /// Only these arms (by name), in the scenario's order.
    pub only: Option<Vec<String>>,
}

/// Runs the arms on a provisioned server and template; returns the report (also written).
pub async fn run(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    options: &RunOptions,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let arms: Vec<&Arm> = scenario
        .arms
        .iter()
        .filter(|a| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&a.name))
        })
        .collect();
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let mut reports = Vec::new();
    for (i, arm) in arms.iter().enumerate() {
        println!("[{}/{}] arm {} …", i + 1, arms.len(), arm.name);
        let report = run_arm(scenario, server, template, arm, options).await?;
        let p95s: Vec<String> = report
            .endpoints
            .iter()
            .filter(|e| e.budget_p95_ms.is_some())
            .map(|e| format!("{} {}", e.endpoint, crate::report::ms(e.p95_ms)))
            .collect();
        println!(
            "[{}/{}] arm {}: {} ({})",
            i + 1,
            arms.len(),
            arm.name,
            if report.as_expected {
                "as expected"
            } else {
                "NOT as expected"
            },
            p95s.join(", ")
        );
        reports.push(report);
    }
    let verdict = if reports.iter().all(|a| a.as_expected) {
        "pass"
    } else {
        "fail"
    };
    let report = Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("incident-lab {}", env!("CARGO_PKG_VERSION")),
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            source: scenario.source.clone(),
            description: scenario.description.clone(),
            duration_s: scenario.duration.as_secs_f64(),
            seed: scenario.seed,
            incident_phase: scenario.incident_phase.clone(),
            phases: scenario
                .phases
                .iter()
                .map(|p| PhaseInfo {
                    name: p.name.clone(),
                    from_s: p.from.0.as_secs_f64(),
                    to_s: p.to.0.as_secs_f64(),
                })
                .collect(),
            dataset: scenario.scale.to_string(),
        },
        environment: Environment {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            postgres_backend: server.backend().to_string(),
            postgres_ready_s: server.ready_in().as_secs_f64(),
            seed_s: template.timings.seed.as_secs_f64(),
        },
        verdict: verdict.into(),
        wall_time_s: started.elapsed().as_secs_f64(),
        attribution: attribution(&reports, scenario),
        arms: reports,
    };
    report.write_all(&options.out)?;
    Ok(report)
}

fn plan_for(scenario: &Scenario, base: &str, secrets: &Secrets, run_id: &str) -> Plan {
    let scale = &scenario.scale;
    let streams = scenario
        .streams
        .iter()
        .map(|s| {
            let sessions = Sessions {
                secret: secrets.session.clone(),
                workspaces: scale.workspaces,
                scope_workspaces: s.scope_workspaces,
                users: s.users,
                signed_out_pct: s.signed_out_pct,
            };
            let endpoint = match s.endpoint {
                EndpointKind::Webhook => Endpoint::EmailWebhook {
                    event: s.event.clone().unwrap_or_default(),
                    secret: secrets.webhook.clone(),
                    workspaces: scale.workspaces,
                    leads: scale.leads,
                },
                EndpointKind::InboxPage => Endpoint::InboxPage { sessions },
                EndpointKind::InboxCounts => Endpoint::InboxCounts { sessions },
                EndpointKind::AiDraft => Endpoint::AiDraft { sessions },
                EndpointKind::CronBackgroundJobs => Endpoint::Cron {
                    path: "/api/cron/background-jobs".into(),
                    secret: secrets.cron.clone(),
                },
                EndpointKind::CronFollowups => Endpoint::Cron {
                    path: "/api/cron/followups".into(),
                    secret: secrets.cron.clone(),
                },
            };
            let arrival = match &s.arrival {
                ArrivalSpec::Constant { rate } => loadgen::Arrival::Constant { rate: *rate },
                ArrivalSpec::Burst { rate, from, to } => loadgen::Arrival::Burst {
                    rate: *rate,
                    from: from.0,
                    to: to.0,
                },
                ArrivalSpec::Ramp {
                    from_rate,
                    to_rate,
                    from,
                    to,
                } => loadgen::Arrival::Ramp {
                    from_rate: *from_rate,
                    to_rate: *to_rate,
                    from: from.0,
                    to: to.0,
                },
                ArrivalSpec::Schedule { points } => loadgen::Arrival::Schedule {
                    points: points
                        .iter()
                        .map(|(t, r)| (t.0.as_secs_f64(), *r))
                        .collect(),
                },
            };
            Stream {
                name: s.name.clone(),
                endpoint,
                arrival,
                retry: s.retry.as_ref().map(|r| RetryPolicy {
                    on_5xx: r.on.contains(&RetryOn::ServerError),
                    on_timeout: r.on.contains(&RetryOn::Timeout),
                    after: r.after.0,
                    max: r.max,
                }),
            }
        })
        .collect();
    Plan {
        host: base.to_owned(),
        streams,
        duration: scenario.duration,
        seed: scenario.seed,
        poisson: scenario.poisson,
        users: scenario.max_in_flight,
        client_timeout: scenario.client_timeout,
        late_after: Duration::from_millis(50),
        run_id: run_id.to_owned(),
    }
}

fn service_env(
    scenario: &Scenario,
    arm: &Arm,
    url: String,
    fakes: &str,
    secrets: &Secrets,
) -> Vec<(String, String)> {
    let l = scenario.limits();
    let ms = |d: Duration| d.as_millis().to_string();
    let mut env = vec![
        ("DATABASE_URL".to_owned(), url),
        ("BIND".into(), "127.0.0.1:0".into()),
        ("WEBHOOK_SECRET".into(), secrets.webhook.clone()),
        ("CRON_SECRET".into(), secrets.cron.clone()),
        ("ADMIN_TOKEN".into(), secrets.admin.clone()),
        ("SESSION_SECRET".into(), secrets.session.clone()),
        ("GHL_BASE_URL".into(), format!("{fakes}/ghl")),
        ("UNIPILE_BASE_URL".into(), format!("{fakes}/unipile")),
        ("AI_BASE_URL".into(), format!("{fakes}/ai")),
        ("DB_POOL_MAX".into(), l.pool_max.to_string()),
        ("DB_ACQUIRE_TIMEOUT_MS".into(), ms(l.acquire_timeout)),
        ("REQUEST_TIMEOUT_MS".into(), ms(l.request_timeout)),
        ("COUNTS_QUERY_TIMEOUT_MS".into(), ms(l.counts_query_timeout)),
        ("COUNTS_CACHE_TTL_MS".into(), ms(l.counts_cache_ttl)),
        ("AI_VERIFY_BUDGET_MS".into(), ms(l.ai_verify_budget)),
        ("PROVIDER_TIMEOUT_MS".into(), ms(l.provider_timeout)),
        (
            "PROVIDER_MAX_ATTEMPTS".into(),
            l.provider_max_attempts.to_string(),
        ),
        ("PROVIDER_BACKOFF_MS".into(), ms(l.provider_backoff)),
        ("CRON_BATCH_LIMIT".into(), l.cron_batch_limit.to_string()),
        ("CRON_TIME_BUDGET_MS".into(), ms(l.cron_time_budget)),
        (
            "WORKER_CONCURRENCY".into(),
            l.worker_concurrency.to_string(),
        ),
        ("RUST_LOG".into(), "info,sqlx=warn".into()),
    ];
    if let Some(t) = l.statement_timeout {
        env.push(("DB_STATEMENT_TIMEOUT_MS".into(), ms(t)));
    }
    for (name, on) in arm.switches.to_map() {
        env.push((name.to_owned(), if on { "1" } else { "0" }.to_owned()));
    }
    env
}

async fn scrape(http: &reqwest::Client, base: &str, t: f64) -> Option<Scrape> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(parse_metrics(&text, t))
}

async fn run_arm(
    scenario: &Scenario,
    server: &PgServer,
    template: &Template,
    arm: &Arm,
    options: &RunOptions,
) -> anyhow::Result<ArmReport> {
    let mut timings = ArmTimings::default();
    let (db, clone_time) = template
        .clone_for_arm(server, &arm.name, arm.switches.counts_cache_fallback)
        .await
        .context("cloning the template")?;
    timings.clone_s = clone_time.as_secs_f64();

    // Fake providers, told which workspaces are disconnected (as Unipile knows).
    let fakes = Fakes::new(scenario.seed);
    for (provider, knobs) in &scenario.providers {
        fakes.set(*provider, knobs.clone());
    }
    {
        let mut conn = server.connect_options(&db).connect().await?;
        let disconnected: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM workspaces WHERE unipile_status = 'disconnected'")
                .fetch_all(&mut conn)
                .await?;
        conn.close().await?;
        let mut unipile = fakes.knobs(Provider::Unipile);
        unipile.disconnected_workspaces.extend(disconnected);
        fakes.set(Provider::Unipile, unipile);
    }
    let fakes_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fakes_base = format!("http://{}", fakes_listener.local_addr()?);
    let (stop_fakes, fakes_stopped) = tokio::sync::oneshot::channel::<()>();
    let fakes_task = {
        let fakes = fakes.clone();
        tokio::spawn(async move {
            let _ = fakes
                .serve(fakes_listener, async move {
                    let _ = fakes_stopped.await;
                })
                .await;
        })
    };

    let secrets = Secrets::fresh();
    let t0 = Instant::now();
    let log = options.out.join(format!("arm-{}.service.log", arm.name));
    let service = ServiceProcess::start(
        &options.service_bin,
        &service_env(scenario, arm, server.url(&db, true), &fakes_base, &secrets),
        &log,
    )
    .await?;
    timings.service_start_s = t0.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let plan = plan_for(
        scenario,
        &service.base,
        &secrets,
        &format!("{}-{}", arm.name, std::process::id()),
    );
    warm_up(&http, &plan).await;

    // Load, with a scraper and a progress display alongside.
    let recording = Arc::new(Mutex::new(Recording::default()));
    let timeline = Arc::new(Mutex::new(Vec::<Scrape>::new()));
    let load_start = Instant::now();
    let watcher = {
        let (http, base, timeline, recording) = (
            http.clone(),
            service.base.clone(),
            timeline.clone(),
            recording.clone(),
        );
        let (name, duration) = (arm.name.clone(), scenario.duration);
        tokio::spawn(async move {
            let tty = std::io::stdout().is_terminal();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let t = load_start.elapsed().as_secs_f64();
                if let Some(s) = scrape(&http, &base, t).await {
                    timeline.lock().expect("timeline lock").push(s);
                }
                let (n, p95) = {
                    let rec = recording.lock().expect("recording lock");
                    let p95 = rec
                        .endpoints
                        .get("POST /api/webhooks/email")
                        .and_then(|e| e.latency.quantile_ms(0.95));
                    (rec.requests(), p95)
                };
                let line = format!(
                    "  {name}: {t:>4.0}/{:.0} s, {n} requests ({:.0}/s), webhook p95 {}",
                    duration.as_secs_f64(),
                    n as f64 / t.max(1.0),
                    crate::report::ms(p95)
                );
                if tty {
                    print!("\r{line}   ");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                } else if (t as u64).is_multiple_of(10) {
                    println!("{line}");
                }
            }
        })
    };
    let summary = loadgen::run(plan, recording.clone())
        .await
        .map_err(|e| anyhow::anyhow!("load generator: {e}"))?;
    timings.load_s = load_start.elapsed().as_secs_f64();
    if std::io::stdout().is_terminal() {
        println!();
    }

    // Drain: run the worker until the queue is empty or the drain time is up.
    let drain_start = Instant::now();
    let mut last = scrape(&http, &service.base, load_start.elapsed().as_secs_f64())
        .await
        .unwrap_or_default();
    while last.queue_queued + last.queue_running > 0.0 && drain_start.elapsed() < scenario.drain {
        let _ = http
            .get(format!("{}/api/cron/background-jobs", service.base))
            .bearer_auth(&secrets.cron)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        last = scrape(&http, &service.base, load_start.elapsed().as_secs_f64())
            .await
            .unwrap_or(last);
        timeline.lock().expect("timeline lock").push(last.clone());
    }
    timings.drain_s = drain_start.elapsed().as_secs_f64();
    watcher.abort();

    let recording = recording.lock().expect("recording lock").clone();
    let invariants = check_invariant(
        server,
        &db,
        &recording,
        (last.queue_queued + last.queue_running) as u64,
    )
    .await?;
    service.stop().await;
    let _ = stop_fakes.send(());
    let _ = fakes_task.await;
    server.drop_database(&db).await?;
    std::fs::write(
        options.out.join(format!("arm-{}.recording.json", arm.name)),
        serde_json::to_string(&recording)?,
    )?;

    let errors: BTreeMap<String, u64> = last
        .errors
        .iter()
        .map(|(k, v)| (k.clone(), *v as u64))
        .collect();
    let statement_timeouts = errors.get("db_timeout").copied().unwrap_or(0);
    let endpoints = endpoint_reports(scenario, &recording);
    let timeline = timeline
        .lock()
        .expect("timeline lock")
        .iter()
        .map(|s| TimelinePoint {
            t: s.t,
            pool_in_use: s.pool_in_use(),
            pool_max: s.pool_max,
            pool_waiters: s.pool_waiters,
            queue_depth: s.queue_queued + s.queue_running,
        })
        .collect();
    let checks = judge(
        scenario,
        arm.expect,
        &endpoints,
        statement_timeouts,
        &invariants,
    );
    Ok(ArmReport {
        name: arm.name.clone(),
        flags: arm
            .switches
            .to_map()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        expect: arm.expect,
        as_expected: checks.iter().all(|c| c.passed),
        checks,
        late_arrivals: endpoints.iter().map(|e| e.late).sum(),
        unsent: summary.unsent,
        endpoints,
        error_categories: errors,
        statement_timeouts,
        invariants,
        timeline,
        goose: summary.goose,
        timings,
    })
}

/// A few unmeasured requests per page/action stream before the load: every arm starts with
/// warm caches and connections alike (and a fixed arm's counts cache is backfilled, as the
/// rollout plan deploys it).
async fn warm_up(http: &reqwest::Client, plan: &Plan) {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for (i, stream) in plan.streams.iter().enumerate() {
        let users = match &stream.endpoint {
            Endpoint::InboxPage { sessions } | Endpoint::InboxCounts { sessions } => sessions.users,
            _ => continue,
        };
        for seq in 0..u64::from(users.min(20)) {
            let r = stream
                .endpoint
                .request(i, u64::MAX - seq, &plan.run_id, unix_now);
            let mut req = http
                .request(r.method, format!("{}{}", plan.host, r.path))
                .timeout(Duration::from_secs(10));
            for (k, v) in r.headers {
                req = req.header(k, v);
            }
            if let Some(b) = r.body {
                req = req.body(b);
            }
            let _ = req.send().await;
        }
    }
}

async fn check_invariant(
    server: &PgServer,
    db: &str,
    recording: &Recording,
    undrained: u64,
) -> anyhow::Result<Invariants> {
    let acked: Vec<String> = recording.acked.iter().cloned().collect();
    let mut conn = server
        .connect_options(db)
        .options([("statement_timeout", "0")])
        .connect()
        .await?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT provider_event_id, count(*) FROM messages WHERE provider_event_id = ANY($1) GROUP BY 1",
    )
    .bind(&acked)
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    let applied = counts.len() as u64;
    let duplicates = counts.iter().filter(|(_, n)| *n > 1).count() as u64;
    let lost = acked.len() as u64 - applied;
    Ok(Invariants {
        acked: acked.len() as u64,
        applied,
        duplicates,
        lost,
        undrained_jobs: undrained,
        holds: lost == 0 && duplicates == 0,
    })
}

fn endpoint_reports(scenario: &Scenario, recording: &Recording) -> Vec<EndpointReport> {
    recording
        .endpoints
        .iter()
        .map(|(name, e)| {
            let budget = scenario
                .budgets
                .iter()
                .find(|(k, _)| &k.0 == name)
                .map(|(_, b)| b);
            let budget_ms = budget.and_then(|b| b.p95).map(|d| d.as_secs_f64() * 1000.0);
            let p95 = e.latency.quantile_ms(0.95);
            let per =
                |total: u64| (e.instrumented > 0).then(|| total as f64 / e.instrumented as f64);
            EndpointReport {
                endpoint: name.clone(),
                requests: e.requests,
                p50_ms: e.latency.quantile_ms(0.5),
                p95_ms: p95,
                p99_ms: e.latency.quantile_ms(0.99),
                max_ms: e.latency.max_ms(),
                budget_p95_ms: budget_ms,
                within_budget: match (budget_ms, p95) {
                    (Some(b), Some(p)) => p <= b,
                    (Some(_), None) => false,
                    (None, _) => true,
                },
                status_counts: e.status_counts.clone(),
                error_categories: e.error_categories.clone(),
                late: e.late,
                retries: e.retries,
                db_writes_per_request: per(e.db_writes_total),
                db_writes_max: e.db_writes_max,
                external_calls_per_request: per(e.external_calls_total),
                external_calls_max: e.external_calls_max,
                phases: scenario
                    .phases
                    .iter()
                    .map(|p| {
                        let h = e.between(p.from.0.as_secs() as u32, p.to.0.as_secs() as u32);
                        PhaseFigures {
                            phase: p.name.clone(),
                            requests: h.count(),
                            p95_ms: h.quantile_ms(0.95),
                        }
                    })
                    .collect(),
                windows: e
                    .windows
                    .iter()
                    .filter_map(|(t, h)| Some((*t, h.quantile_ms(0.95)?, h.count())))
                    .collect(),
            }
        })
        .collect()
}

const WEBHOOK: &str = "POST /api/webhooks/email";
const PAGE: &str = "GET /";
const COUNTS: &str = "POST /api/actions/inbox-counts";

/// What the arm showed against what it must show.
pub fn judge(
    scenario: &Scenario,
    expect: Expect,
    endpoints: &[EndpointReport],
    statement_timeouts: u64,
    inv: &Invariants,
) -> Vec<Check> {
    let find = |name: &str| endpoints.iter().find(|e| e.endpoint == name);
    let check = |name: String, passed: bool, detail: String| Check {
        name,
        passed,
        detail,
    };
    let mut checks = Vec::new();
    match expect {
        Expect::Observe => {}
        Expect::Fixed => {
            for (endpoint, budget) in &scenario.budgets {
                let e = find(&endpoint.0);
                if let Some(limit) = budget.p95 {
                    let p95 = e.and_then(|e| e.p95_ms);
                    checks.push(check(
                        format!(
                            "{} p95 within {}",
                            endpoint.0,
                            crate::report::ms(Some(limit.as_secs_f64() * 1000.0))
                        ),
                        e.is_some_and(|e| e.within_budget),
                        format!("p95 {}", crate::report::ms(p95)),
                    ));
                }
                if let (Some(max), Some(e)) = (budget.max_db_writes, e) {
                    checks.push(check(
                        format!("{} at most {max} DB writes per request", endpoint.0),
                        e.db_writes_max <= max && e.db_writes_per_request.is_some(),
                        format!("max {} per request", e.db_writes_max),
                    ));
                }
                if let (Some(max), Some(e)) = (budget.max_external_calls, e) {
                    checks.push(check(
                        format!("{} at most {max} external calls per request", endpoint.0),
                        e.external_calls_max <= max && e.external_calls_per_request.is_some(),
                        format!("max {} per request", e.external_calls_max),
                    ));
                }
                if let Some(max) = budget.max_statement_timeouts {
                    checks.push(check(
                        format!("at most {max} statement timeouts ({})", endpoint.0),
                        statement_timeouts <= max,
                        format!("{statement_timeouts} statement timeouts"),
                    ));
                }
            }
            checks.push(check(
                "every acknowledged EMAIL_SENT applied exactly once".into(),
                inv.holds && inv.acked > 0,
                format!(
                    "{} acked, {} applied, {} lost, {} duplicated",
                    inv.acked, inv.applied, inv.lost, inv.duplicates
                ),
            ));
        }
        Expect::Incident => {
            let budget_of = |name: &str| {
                scenario
                    .budgets
                    .iter()
                    .find(|(k, _)| k.0 == name)
                    .and_then(|(_, b)| b.p95)
                    .map(|d| d.as_secs_f64() * 1000.0)
            };
            let webhook = find(WEBHOOK);
            let w504 = webhook
                .and_then(|e| e.status_counts.get("504"))
                .copied()
                .unwrap_or(0);
            checks.push(check(
                "webhook p95 over budget, with 504s".into(),
                webhook.is_some_and(|e| !e.within_budget) && w504 > 0,
                format!(
                    "p95 {} (budget {}), {w504} × 504",
                    crate::report::ms(webhook.and_then(|e| e.p95_ms)),
                    crate::report::ms(budget_of(WEBHOOK))
                ),
            ));
            let burst = find(PAGE)
                .and_then(|e| e.phases.iter().find(|p| p.phase == scenario.incident_phase))
                .and_then(|p| p.p95_ms);
            let limit = budget_of(PAGE);
            checks.push(check(
                format!("GET / p95 over budget during {}", scenario.incident_phase),
                matches!((burst, limit), (Some(p), Some(b)) if p > b),
                format!(
                    "p95 {} in {} (budget {})",
                    crate::report::ms(burst),
                    scenario.incident_phase,
                    crate::report::ms(limit)
                ),
            ));
            // Timeouts the counts-serving endpoints themselves reported (not just service-wide).
            let counts_timeouts: u64 = [COUNTS, PAGE]
                .iter()
                .filter_map(|n| find(n))
                .filter_map(|e| e.error_categories.get("db_timeout"))
                .sum();
            checks.push(check(
                "inbox counts hit statement timeouts".into(),
                counts_timeouts > 0,
                format!("{counts_timeouts} statement timeouts on the counts and page endpoints ({statement_timeouts} service-wide)"),
            ));
        }
    }
    checks
}

/// For each flag, arms that differ only in it: all-off vs the flag alone, and all-on without
/// the flag vs all-on.
fn attribution(arms: &[ArmReport], scenario: &Scenario) -> Vec<Attribution> {
    const FLAGS: [&str; 3] = [
        "INBOXXIA_EMAIL_SENT_ASYNC",
        "INBOX_COUNTS_CACHE_FALLBACK",
        "UNIPILE_HEALTH_GATE",
    ];
    let mut out = Vec::new();
    let key = |a: &ArmReport, skip: &str| -> Vec<(String, bool)> {
        a.flags
            .iter()
            .filter(|(k, _)| k.as_str() != skip)
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    for flag in FLAGS {
        for off in arms.iter().filter(|a| a.flags.get(flag) == Some(&false)) {
            let Some(on) = arms
                .iter()
                .find(|a| a.flags.get(flag) == Some(&true) && key(a, flag) == key(off, flag))
            else {
                continue;
            };
            for endpoint in scenario.budgets.keys() {
                let p95 = |a: &ArmReport| {
                    a.endpoints
                        .iter()
                        .find(|e| e.endpoint == endpoint.0)
                        .and_then(|e| e.p95_ms)
                };
                out.push(Attribution {
                    flag: flag.into(),
                    endpoint: endpoint.0.clone(),
                    off_arm: off.name.clone(),
                    on_arm: on.name.clone(),
                    off_p95_ms: p95(off),
                    on_p95_ms: p95(on),
                });
            }
        }
    }
    out
}
