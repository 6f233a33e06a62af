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
mod tests {
    use super::*;
    use crate::report::fixtures::{arm, endpoint, report};
    use crate::report::{Attribution, Check, TimelinePoint};

    fn sample() -> Report {
        let mut off = arm(
            "all-off",
            &[],
            vec![endpoint("GET /", 3000.0, Some(2000.0))],
        );
        off.status = ArmStatus::NotAsExpected;
        off.checks.push(Check {
            name: "GET / within budget".into(),
            passed: false,
            detail: "p95 3.00 s > 2.00 s".into(),
        });
        off.timeline = (0..10)
            .map(|t| TimelinePoint {
                t: f64::from(t),
                pool_in_use: 10.0,
                pool_max: 10.0,
                pool_waiters: 440.0,
                queue_depth: 0.0,
                ..TimelinePoint::default()
            })
            .collect();
        let on = arm(
            "all on",
            &[("INBOXXIA_EMAIL_SENT_ASYNC", true)],
            vec![endpoint("GET /", 30.0, Some(2000.0))],
        );
        let mut r = report(vec![off, on]);
        r.verdict = Verdict::Fail;
        r.scenario.description = "<script>alert(1)</script>".into();
        r.attribution.push(Attribution {
            flag: inbox_service::Flag::EmailSentAsync,
            endpoint: "GET /".into(),
            off_arm: "all-off".into(),
            on_arm: "all on".into(),
            off_p95_ms: Some(3000.0),
            on_p95_ms: Some(30.0),
        });
        r
    }

    /// The summary comes first with the verdict in words, links to every arm's section, a
    /// budget chart per budgeted endpoint and the attribution table naming the fix.
    #[test]
    fn the_summary_links_every_arm_and_names_the_fixing_flag() {
        let page = render(&sample());
        let summary =
            &page[page.find("id=\"summary\"").unwrap()..page.find("class=\"arm\"").unwrap()];
        assert!(summary.contains("Verdict: <strong>FAIL</strong>"));
        for id in ["arm-all-off", "arm-all-on"] {
            assert!(summary.contains(&format!("href=\"#{id}\"")), "{id}");
            assert_eq!(page.matches(&format!("id=\"{id}\"")).count(), 1, "{id}");
        }
        assert_eq!(summary.matches("class=\"chart budget\"").count(), 1);
        let table = &summary[summary.find("class=\"attribution\"").unwrap()..];
        assert!(
            table.contains("3.00 s → 30 ms <span class=\"badge pass\">FIXES</span>"),
            "{table}"
        );
    }

    /// Pass and fail are words on a coloured badge — no emoji, which render as boxes where no
    /// emoji font is installed.
    #[test]
    fn pass_and_fail_are_said_in_words_not_emoji() {
        let page = render(&sample());
        assert!(page.contains("<span class=\"badge fail\">FAIL — not as expected</span>"));
        assert!(page.contains("<span class=\"badge pass\">PASS — as expected</span>"));
        assert!(page.contains(
            "<span class=\"badge fail\">FAIL</span> <strong>GET / within budget</strong>"
        ));
        for emoji in ['✅', '❌', '⚠', '⏹'] {
            assert!(!page.contains(emoji), "{emoji}");
        }
    }

    /// The sample's first arm's section of `page`.
    fn first_arm(page: &str) -> &str {
        &page[page.find("id=\"arm-all-off\"").unwrap()..page.find("id=\"arm-all-on\"").unwrap()]
    }

    /// The chart captioned `caption` in `arm`, up to its end.
    fn figure<'a>(arm: &'a str, caption: &str) -> &'a str {
        let at = arm
            .find(caption)
            .unwrap_or_else(|| panic!("no chart {caption}"));
        &arm[at..at + arm[at..].find("</figure>").unwrap()]
    }

    /// The pool in use (≤ 10) and the waiters (440) are on charts of their own, so neither
    /// flattens the other.
    #[test]
    fn pool_in_use_and_waiters_have_their_own_charts() {
        let page = render(&sample());
        let arm = first_arm(&page);
        let figure = |caption: &str| figure(arm, caption);
        let pool = figure("Connection pool");
        assert!(pool.contains("<title>in use at 9 s: 10</title>") && !pool.contains("waiting"));
        // Its axis tops out near 10, not near 440.
        assert!(pool.contains(">10</text>") && !pool.contains(">400</text>"));
        assert!(figure("Requests waiting").contains("<title>waiting at 9 s: 440</title>"));
        assert_eq!(
            arm.matches("<figure class=\"chart\">").count(),
            4,
            "no other endpoint: no chart of them"
        );
    }

    /// A run with instances and a pooler charts them; a single service without one does not
    /// (the sample's arms above have four charts each).
    #[test]
    fn instances_and_the_pooler_have_charts_when_the_arm_had_them() {
        let mut r = sample();
        r.arms[0].timeline = (0..10)
            .map(|t| TimelinePoint {
                t: f64::from(t),
                pool_max: 20.0,
                instances: Some(if t < 5 { 1.0 } else { 2.0 }),
                instance_pool_in_use: if t < 5 { vec![10.0] } else { vec![10.0, 7.0] },
                pooler_sv_active: Some(15.0),
                pooler_cl_waiting: Some(f64::from(t) * 3.0),
                pooler_wait_ms: Some(120.0),
                ..TimelinePoint::default()
            })
            .collect();
        let page = render(&r);
        let arm = first_arm(&page);
        let figure = |caption: &str| figure(arm, caption);
        assert!(
            figure("Service instances answering").contains("<title>instances at 9 s: 2</title>")
        );
        let per_instance = figure("Connection pool per instance");
        assert!(per_instance.contains("<title>instance 2 at 9 s: 7</title>"));
        assert!(
            !per_instance.contains("instance 2 at 4 s"),
            "no point before it started"
        );
        assert!(figure("PgBouncer: server connections in use")
            .contains("<title>server connections in use at 9 s: 15</title>"));
        assert!(figure("PgBouncer: clients waiting")
            .contains("<title>clients waiting at 9 s: 27</title>"));
        assert!(
            figure("PgBouncer: wait for a server connection per transaction")
                .contains("<title>wait per transaction at 9 s: 120 ms</title>")
        );
        assert_eq!(arm.matches("<figure class=\"chart\">").count(), 9);
        let other = &page[page.find("id=\"arm-all-on\"").unwrap()..];
        assert!(!other.contains("PgBouncer") && !other.contains("instances answering"));
    }

    /// Text from the report is escaped: a description holding markup is shown, never run.
    #[test]
    fn text_from_the_report_is_escaped() {
        let page = render(&sample());
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script"));
        for external in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }
}
