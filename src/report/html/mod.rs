//! `report.html`: one self-contained page, opened from disk — no script, no font, no external
//! URL, prints sensibly.
//!
//! # Layout of the page
//! - **Summary** (`#summary`): the verdict in words and colour, the contents (a link to each
//!   arm with its status), one chart per budgeted endpoint with every arm's p95 beside the
//!   budget, and the flag-attribution table (which flag moves which budget).
//! - **One section per arm** (`#arm-NAME`): its status, flags, the endpoint and stream tables,
//!   its checks, and charts over the run's seconds — p95 latency of the budgeted endpoints
//!   (client per second, the service's per phase dashed, the budgets as rules), of the other
//!   endpoints, the pool in use against its size, the requests waiting for a connection, the job
//!   queue — each with the phases named, the incident phase shaded, every fault and flip marked.
//!
//! Charts are small functions of their data in [`chart`]; the page is written with `maud`,
//! which escapes every text it is given.

pub mod chart;

use inbox_service::Flag;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use self::chart::{Band, BandKind, BudgetRow, Rule, Series, TimeChart, Unit};
use super::{ms, ArmReport, ArmStatus, Report, Verdict};

/// The class and words that say what an arm showed; colour backs the words, never replaces them.
fn status(s: ArmStatus) -> (&'static str, &'static str) {
    match s {
        ArmStatus::AsExpected => ("pass", "PASS — as expected"),
        ArmStatus::NotAsExpected => ("fail", "FAIL — not as expected"),
        ArmStatus::Inconclusive => ("warn", "INCONCLUSIVE — the load generator fell behind"),
        ArmStatus::Interrupted => ("warn", "INTERRUPTED — not judged"),
    }
}

fn badge(ok: bool) -> Markup {
    html! {
        @if ok { span.badge.pass { "PASS" } } @else { span.badge.fail { "FAIL" } }
    }
}

/// The id of an arm's section: its name with anything but letters, digits and `-` as `-`.
pub fn anchor(arm: &str) -> String {
    let slug: String = arm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("arm-{slug}")
}

/// The phases, the incident one shaded, and the arm's faults and flips, for its charts.
fn bands(r: &Report, a: &ArmReport) -> Vec<Band> {
    let phases = r.scenario.phases.iter().map(|p| Band {
        from: p.from_s,
        to: p.to_s,
        label: p.name.clone(),
        kind: BandKind::Phase {
            incident: p.name == r.scenario.incident_phase,
        },
    });
    let faults = a.faults.iter().map(|f| Band {
        from: f.from_s,
        to: f.to_s,
        label: format!("fault: {} ({})", f.kind, f.detail),
        kind: BandKind::Mark,
    });
    let flips = a.flips.iter().map(|f| Band {
        from: f.at_s,
        to: f.at_s,
        label: format!(
            "flip: {} {} → {}{}",
            f.flag,
            f.from,
            f.to,
            if f.made { "" } else { " (not made)" }
        ),
        kind: BandKind::Mark,
    });
    phases.chain(faults).chain(flips).collect()
}

/// The arm's charts over the run's seconds.
fn charts(r: &Report, a: &ArmReport) -> Vec<TimeChart> {
    let bands = bands(r, a);
    // The timeline goes on while the service drains after the load.
    let t_max = a
        .timeline
        .iter()
        .map(|p| p.t)
        .fold(r.scenario.duration_s, f64::max);
    let chart = |title: &str, unit, series, rules| TimeChart {
        title: title.to_owned(),
        unit,
        t_max,
        bands: bands.clone(),
        series,
        rules,
    };
    let (mut latency, mut other) = (Vec::new(), Vec::new());
    let mut rules = Vec::new();
    for (i, e) in a
        .endpoints
        .iter()
        .filter(|e| !e.endpoint.contains("/cron/"))
        .enumerate()
    {
        if e.budget_p95_ms.is_none() {
            other.push(Series {
                name: e.endpoint.clone(),
                points: windows(e),
                color: i,
                dashed: false,
            });
            continue;
        }
        latency.push(Series {
            name: format!("{} (client)", e.endpoint),
            points: windows(e),
            color: i,
            dashed: false,
        });
        // The service's p95 per phase, drawn flat across the phase.
        let service: Vec<(f64, f64)> = e
            .service
            .iter()
            .flat_map(|s| &s.phases)
            .filter_map(|f| {
                let p = r.scenario.phases.iter().find(|p| p.name == f.phase)?;
                Some([(p.from_s, f.p95_ms?), (p.to_s, f.p95_ms?)])
            })
            .flatten()
            .collect();
        if !service.is_empty() {
            latency.push(Series {
                name: format!("{} (service, per phase)", e.endpoint),
                points: service,
                color: i,
                dashed: true,
            });
        }
        if let Some(b) = e.budget_p95_ms {
            rules.push(Rule {
                y: b,
                label: format!("{} budget: p95 ≤ {}", e.endpoint, ms(Some(b))),
                color: i,
            });
        }
    }
    let timeline = |name: &str, color, f: fn(&super::TimelinePoint) -> f64| Series {
        name: name.to_owned(),
        points: a.timeline.iter().map(|p| (p.t, f(p))).collect(),
        color,
        dashed: false,
    };
    let mut charts = vec![chart(
        "p95 latency of the budgeted endpoints per second, from each request's intended send time (client); the service's own p95 per phase dashed; budgets as dashed rules",
        Unit::Ms,
        latency,
        rules,
    )];
    if !other.is_empty() {
        charts.push(chart(
            "p95 latency of the other endpoints per second (client; cron ticks in the table)",
            Unit::Ms,
            other,
            vec![],
        ));
    }
    charts.extend([
        chart(
            "Connection pool: connections in use against the pool's size",
            Unit::Count,
            vec![
                timeline("in use", 0, |p| p.pool_in_use),
                timeline("pool size", 5, |p| p.pool_max),
            ],
            vec![],
        ),
        chart(
            "Requests waiting for a pool connection",
            Unit::Count,
            vec![timeline("waiting", 1, |p| p.pool_waiters)],
            vec![],
        ),
        chart(
            "Job queue: jobs queued or running",
            Unit::Count,
            vec![timeline("jobs", 2, |p| p.queue_depth)],
            vec![],
        ),
    ]);
    charts.extend(
        fleet_charts(a)
            .into_iter()
            .map(|(title, unit, series)| chart(title, unit, series, vec![])),
    );
    charts
}

/// The instances and the pooler, on charts of their own, when the arm ran several instances
/// or a PgBouncer (points only where the timeline has them): each chart's title, unit and
/// series.
fn fleet_charts(a: &ArmReport) -> Vec<(&'static str, Unit, Vec<Series>)> {
    let series = |name: &str, color, f: fn(&super::TimelinePoint) -> Option<f64>| Series {
        name: name.to_owned(),
        points: a
            .timeline
            .iter()
            .filter_map(|p| Some((p.t, f(p)?)))
            .collect(),
        color,
        dashed: false,
    };
    let mut charts = Vec::new();
    let instances = series("instances", 3, |p| p.instances);
    if !instances.points.is_empty() {
        charts.push(("Service instances answering", Unit::Count, vec![instances]));
    }
    let most = a
        .timeline
        .iter()
        .map(|p| p.instance_pool_in_use.len())
        .max()
        .unwrap_or(0);
    if most > 1 {
        let per_instance = (0..most)
            .map(|i| Series {
                name: format!("instance {}", i + 1),
                points: a
                    .timeline
                    .iter()
                    .filter_map(|p| Some((p.t, *p.instance_pool_in_use.get(i)?)))
                    .collect(),
                color: i,
                dashed: false,
            })
            .collect();
        charts.push((
            "Connection pool per instance: connections in use",
            Unit::Count,
            per_instance,
        ));
    }
    let active = series("server connections in use", 0, |p| p.pooler_sv_active);
    if !active.points.is_empty() {
        charts.extend([
            (
                "PgBouncer: server connections in use",
                Unit::Count,
                vec![active],
            ),
            (
                "PgBouncer: clients waiting for a server connection",
                Unit::Count,
                vec![series("clients waiting", 1, |p| p.pooler_cl_waiting)],
            ),
            (
                "PgBouncer: wait for a server connection per transaction",
                Unit::Ms,
                vec![series("wait per transaction", 4, |p| p.pooler_wait_ms)],
            ),
        ]);
    }
    charts
}

/// An endpoint's p95 per second of the run, at the middle of each second.
fn windows(e: &super::EndpointReport) -> Vec<(f64, f64)> {
    e.windows
        .iter()
        .map(|(t, p95, _)| (f64::from(*t) + 0.5, *p95))
        .collect()
}

fn arm_section(r: &Report, a: &ArmReport) -> Markup {
    let (class, words) = status(a.status);
    let on: Vec<&String> = a.flags.iter().filter(|f| *f.1).map(|f| f.0).collect();
    html! {
        section.arm id=(anchor(&a.name)) {
            h2 { (a.name) " " span.badge.(class) { (words) } }
            p.meta {
                "Expected: " (format!("{:?}", a.expect).to_lowercase()) ". Flags on: "
                @if on.is_empty() { "none" }
                @for (i, f) in on.iter().enumerate() { @if i > 0 { ", " } code { (f) } }
                ". " a href="#summary" { "Back to the summary" }
            }
            table {
                tr { th { "endpoint" } th { "requests" } th { "p50" } th { "p95" } th { "p99" } th { "budget" } th { "within" } th { "service p95" } th { "late" } th { "statuses" } th { "writes/req" } th { "calls/req" } }
                @for e in &a.endpoints {
                    @let statuses: Vec<String> = e.status_counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    tr.over[!e.within_budget] {
                        td { (e.endpoint) } td.num { (e.requests) } td.num { (ms(e.p50_ms)) } td.num { (ms(e.p95_ms)) } td.num { (ms(e.p99_ms)) } td.num { (ms(e.budget_p95_ms)) }
                        td { @if e.budget_p95_ms.is_some() { (badge(e.within_budget)) } @else { "–" } }
                        td.num { (ms(e.service.as_ref().and_then(|s| s.p95_ms))) }
                        td.num { (format!("{:.1}%", e.late_pct)) " (p95 " (ms(e.lateness_p95_ms)) ")" }
                        td { (statuses.join(", ")) }
                        td.num { (e.db_writes_per_request.map_or("–".into(), |v| format!("{v:.1}"))) }
                        td.num { (e.external_calls_per_request.map_or("–".into(), |v| format!("{v:.1}"))) }
                    }
                }
            }
            @if a.endpoints.iter().any(|e| e.time_spent.is_some()) {
                p.meta { "Where the client's time went, where client and service p95 differ:" }
                ul.spent {
                    @for e in &a.endpoints {
                        @if let Some(t) = &e.time_spent { li { strong { (e.endpoint) } ": " (t) } }
                    }
                }
            }
            table {
                tr { th { "stream" } th { "users" } th { "sends" } th { "late" } th { "no user free" } th { "woke late" } th { "lateness p95" } th { "max" } }
                @for st in &a.load.streams {
                    tr.over[st.late_pct > a.load.max_late_pct] {
                        td { (st.name) } td.num { (st.max_in_flight) } td.num { (st.requests) } td.num { (format!("{:.2}%", st.late_pct)) }
                        td.num { (st.late_no_user) } td.num { (st.late_wakeup) } td.num { (ms(st.lateness_p95_ms)) } td.num { (ms(st.lateness_max_ms)) }
                    }
                }
            }
            ul.checks {
                @for c in &a.checks { li { (badge(c.passed)) " " strong { (c.name) } ": " (c.detail) } }
                @for k in &a.skipped { li { span.badge.skip { "SKIPPED" } " " strong { (k.check) } ": " (k.reason) } }
            }
            @for c in charts(r, a) { (chart::time_chart(&c)) }
        }
    }
}

/// The top of the page: verdict, contents, every arm's p95 against each budget, attribution.
fn summary(r: &Report) -> Markup {
    let pass = r.verdict == Verdict::Pass;
    let endpoints = r.budgeted_endpoints();
    let budget = |endpoint: &str| {
        r.arms
            .iter()
            .flat_map(|a| &a.endpoints)
            .find(|e| e.endpoint == endpoint)
            .and_then(|e| e.budget_p95_ms)
    };
    let mut flags: Vec<Flag> = Vec::new();
    for at in &r.attribution {
        if !flags.contains(&at.flag) {
            flags.push(at.flag);
        }
    }
    html! {
        section id="summary" {
            h1 { "incident-lab: " (r.scenario.name) }
            p.verdict.(if pass { "pass" } else { "fail" }) {
                "Verdict: " strong { (if pass { "PASS" } else { "FAIL" }) } " — "
                (if pass { "every arm showed what it must." } else { "an arm did not show what it must, or could not be judged." })
            }
            @if !r.scenario.description.is_empty() { p { (r.scenario.description) } }
            p.meta {
                (r.arms.len()) " arms, " (format!("{:.0}", r.wall_time_s)) " s; Postgres " (r.environment.postgres_backend)
                " (limits: " (r.environment.postgres_limits) "; " (r.environment.cores) " cores); commit "
                code { (r.environment.commit) } " on " (r.environment.machine)
                ". Latency is measured from each request's intended send time."
            }
            nav id="contents" {
                h2 { "Arms" }
                ol {
                    @for a in &r.arms {
                        @let (class, words) = status(a.status);
                        li { a href={ "#" (anchor(&a.name)) } { (a.name) } " " span.badge.(class) { (words) } }
                    }
                }
            }
            h2 { "p95 against each budget" }
            @for e in &endpoints {
                @if let Some(b) = budget(e) {
                    @let rows: Vec<BudgetRow> = r.arms.iter().map(|a| BudgetRow {
                        arm: a.name.clone(),
                        anchor: anchor(&a.name),
                        p95_ms: a.endpoints.iter().find(|x| &x.endpoint == e).and_then(|x| x.p95_ms),
                    }).collect();
                    (chart::budget_chart(e, b, &rows))
                }
            }
            @if !flags.is_empty() {
                h2 { "Which flag moves which budget" }
                p.meta { "p95 with the flag off → on, every other flag held equal (hover a cell for the two arms). "
                    span.badge.pass { "FIXES" } " the flag brings the endpoint within its budget; "
                    span.badge.fail { "OVER" } " still over it with the flag on." }
                table.attribution {
                    tr { th { "flag" } @for e in &endpoints { th { (e) " (budget " (ms(budget(e))) ")" } } }
                    @for f in &flags {
                        tr {
                            td { code { (f) } }
                            @for e in &endpoints {
                                @match r.attribution.iter().find(|at| at.flag == *f && &at.endpoint == e) {
                                    Some(at) => {
                                        @let within = |v: Option<f64>| matches!((v, budget(e)), (Some(v), Some(b)) if v <= b);
                                        @let (on, off) = (within(at.on_p95_ms), within(at.off_p95_ms));
                                        td.num title={ "off: " (at.off_arm) ", on: " (at.on_arm) } {
                                            (ms(at.off_p95_ms)) " → " (ms(at.on_p95_ms)) " "
                                            @if on && !off { span.badge.pass { "FIXES" } }
                                            @else if !on { span.badge.fail { "OVER" } }
                                        }
                                    }
                                    None => { td { "–" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

const STYLE: &str = "\
body{font-family:sans-serif;max-width:1000px;margin:auto;padding:0 12px;color:#1a1a1a}\
h1{font-size:24px}h2{font-size:19px;margin-top:28px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}\
td.num{text-align:right;white-space:nowrap}tr.over td{background:#fde8e8}\
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;font-weight:bold;border:1px solid}\
.pass{color:#0b5d27;background:#e3f4e8;border-color:#0b5d27}.fail{color:#9b111e;background:#fde8e8;border-color:#9b111e}\
.warn{color:#6b4500;background:#fff1cc;border-color:#6b4500}.skip{color:#333;background:#eee;border-color:#666}\
p.verdict{font-size:18px;padding:8px 12px;border:2px solid;border-radius:4px}\
.meta{font-size:13px;color:#333}ul.checks,ul.spent{font-size:13px}ul.checks li{margin:2px 0}\
figure{margin:12px 0}figcaption{font-size:13px;color:#333}svg{display:block;max-width:100%;height:auto}\
ul.legend{list-style:none;padding:0;margin:2px 0 0;font-size:12px;display:flex;flex-wrap:wrap;gap:4px 16px}\
.swatch{display:inline-block;width:22px;border-top:3px solid;vertical-align:middle;margin-right:5px}.swatch.dashed{border-top-style:dashed}\
section.arm{border-top:2px solid #ccc;margin-top:32px}\
@media print{body{max-width:none}section.arm{break-before:page}figure,table{break-inside:avoid}a{color:inherit;text-decoration:none}}";

pub fn render(r: &Report) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "incident-lab: " (r.scenario.name) " — " (if r.verdict == Verdict::Pass { "PASS" } else { "FAIL" }) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (summary(r))
                @for a in &r.arms { (arm_section(r, a)) }
            }
        }
    };
    page.into_string() + "\n"
}

#[cfg(test)]
mod tests;
