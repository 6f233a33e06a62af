//! `report.html`: one self-contained page — tables and inline SVG charts (latency over time
//! per endpoint with the incident phase shaded, pool in use vs max, queue depth). No scripts,
//! no fonts, no external URL.

use std::fmt::Write;

use super::{escape, ms, ArmReport, Report};

const W: f64 = 640.0;
const H: f64 = 180.0;
const PAD: f64 = 40.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A fault or a flip on a chart: `from`–`to` seconds (equal for an instant), and what it was.
struct Mark {
    from: f64,
    to: f64,
    label: String,
}

/// The arm's faults and flips, as marks.
fn marks(a: &ArmReport) -> Vec<Mark> {
    let faults = a.faults.iter().map(|f| Mark {
        from: f.from_s,
        to: f.to_s,
        label: format!("fault: {} ({})", f.kind, f.detail),
    });
    let flips = a.flips.iter().map(|f| Mark {
        from: f.at_s,
        to: f.at_s,
        label: format!(
            "flip: {} {} → {}{}",
            f.flag,
            f.from,
            f.to,
            if f.made { "" } else { " (not made)" }
        ),
    });
    faults.chain(flips).collect()
}

/// A line chart of `series` (name, points (t, y)) over `[0, t_max]`, shading `shade`; each
/// mark drawn as a band (or a line, for an instant) with its label as a hover title.
fn chart(
    title: &str,
    unit: &str,
    t_max: f64,
    shade: Option<(f64, f64)>,
    marks: &[Mark],
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let y_max = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let x = |t: f64| PAD + (t / t_max.max(1.0)) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v / y_max) * (H - PAD);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">",
        escape(title)
    );
    if let Some((a, b)) = shade {
        let _ = write!(svg, "<rect class=\"phase\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4cccc\"/>", x(a), PAD / 2.0, x(b) - x(a), H - PAD);
    }
    for m in marks {
        let (a, b) = (x(m.from), x(m.to).max(x(m.from) + 1.5));
        let _ = write!(
            svg,
            "<rect class=\"mark\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#7f7f7f\" fill-opacity=\"0.25\" stroke=\"#555\" stroke-dasharray=\"3 2\"><title>{}</title></rect>",
            PAD / 2.0,
            b - a,
            H - PAD,
            escape(&m.label)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"{2:.1}\" x2=\"{PAD}\" y2=\"{0:.1}\" stroke=\"#888\"/>",
        y(0.0),
        W - PAD,
        PAD / 2.0
    );
    let _ = write!(svg, "<text x=\"2\" y=\"{:.1}\" font-size=\"10\">{:.0} {unit}</text><text x=\"2\" y=\"{:.1}\" font-size=\"10\">0</text>", PAD / 2.0 + 8.0, y_max, y(0.0));
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{t_max:.0} s</text>",
        W - PAD - 10.0,
        H - 4.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        if !path.is_empty() {
            let _ = write!(svg, "<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>", path.join(" "));
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{color}\">{}</text>",
            PAD + 4.0 + 200.0 * (i % 3) as f64,
            12.0 + 10.0 * (i / 3) as f64,
            escape(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn arm_section(r: &Report, a: &ArmReport) -> String {
    let t_max = r.scenario.duration_s;
    let shade = r
        .scenario
        .phases
        .iter()
        .find(|p| p.name == r.scenario.incident_phase)
        .map(|p| (p.from_s, p.to_s));
    let marks = marks(a);
    let mut s = format!(
        "<section><h2>{} <small>({:?}; {})</small></h2>",
        escape(&a.name),
        a.expect,
        a.status.word()
    );
    s.push_str("<table><tr><th>endpoint</th><th>requests</th><th>p50</th><th>p95</th><th>p99</th><th>budget</th><th>service p95</th><th>late</th><th>statuses</th><th>writes/req</th><th>calls/req</th><th>time spent</th></tr>");
    for e in &a.endpoints {
        let statuses: Vec<String> = e
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}% (p95 {})</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if e.within_budget { "ok" } else { "over" },
            escape(&e.endpoint),
            e.requests,
            ms(e.p50_ms),
            ms(e.p95_ms),
            ms(e.p99_ms),
            ms(e.budget_p95_ms),
            ms(e.service.as_ref().and_then(|s| s.p95_ms)),
            e.late_pct,
            ms(e.lateness_p95_ms),
            escape(&statuses.join(", ")),
            e.db_writes_per_request.map_or("–".into(), |v| format!("{v:.1}")),
            e.external_calls_per_request.map_or("–".into(), |v| format!("{v:.1}")),
            escape(e.time_spent.as_deref().unwrap_or("–"))
        );
    }
    s.push_str("</table><table><tr><th>stream</th><th>users</th><th>sends</th><th>late</th><th>no user free</th><th>woke late</th><th>lateness p95</th><th>max</th></tr>");
    for st in &a.load.streams {
        let _ = write!(
            s,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if st.late_pct <= a.load.max_late_pct { "ok" } else { "over" },
            escape(&st.name),
            st.max_in_flight,
            st.requests,
            st.late_pct,
            st.late_no_user,
            st.late_wakeup,
            ms(st.lateness_p95_ms),
            ms(st.lateness_max_ms)
        );
    }
    s.push_str("</table><ul>");
    for c in &a.checks {
        let _ = write!(
            s,
            "<li>{} {}: {}</li>",
            if c.passed { "✅" } else { "❌" },
            escape(&c.name),
            escape(&c.detail)
        );
    }
    for k in &a.skipped {
        let _ = write!(
            s,
            "<li>skipped {}: {}</li>",
            escape(&k.check),
            escape(&k.reason)
        );
    }
    s.push_str("</ul>");
    let latency: Vec<(String, Vec<(f64, f64)>)> = a
        .endpoints
        .iter()
        .filter(|e| !e.endpoint.contains("/cron/"))
        .map(|e| {
            (
                e.endpoint.clone(),
                e.windows
                    .iter()
                    .map(|(t, p95, _)| (*t as f64 + 0.5, *p95))
                    .collect(),
            )
        })
        .collect();
    s.push_str(&chart(
        "p95 latency per second (from intended send time); incident phase shaded, faults and flips marked in grey",
        "ms",
        t_max,
        shade,
        &marks,
        &latency,
    ));
    let pool = vec![
        (
            "pool in use".to_owned(),
            a.timeline.iter().map(|p| (p.t, p.pool_in_use)).collect(),
        ),
        (
            "pool max".to_owned(),
            a.timeline.iter().map(|p| (p.t, p.pool_max)).collect(),
        ),
        (
            "waiting for a connection".to_owned(),
            a.timeline.iter().map(|p| (p.t, p.pool_waiters)).collect(),
        ),
    ];
    s.push_str(&chart(
        "Connection pool",
        "conns",
        t_max,
        shade,
        &marks,
        &pool,
    ));
    let queue = vec![(
        "jobs queued or running".to_owned(),
        a.timeline.iter().map(|p| (p.t, p.queue_depth)).collect(),
    )];
    s.push_str(&chart(
        "Job queue depth",
        "jobs",
        t_max,
        shade,
        &marks,
        &queue,
    ));
    s.push_str("</section>");
    s
}

pub fn render(r: &Report) -> String {
    let mut body = format!(
        "<h1>incident-lab: {} — {}</h1><p>{}</p><p>{} arms, {:.0} s; Postgres {} (limits: {}; {} cores). Latency is measured from each request's intended send time.</p>",
        escape(&r.scenario.name),
        format!("{:?}", r.verdict).to_uppercase(),
        escape(&r.scenario.description),
        r.arms.len(),
        r.wall_time_s,
        escape(&r.environment.postgres_backend),
        escape(&r.environment.postgres_limits),
        r.environment.cores
    );
    for a in &r.arms {
        body.push_str(&arm_section(r, a));
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>incident-lab: {}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}tr.over td{{background:#fde0e0}}figure{{margin:8px 0}}figcaption{{font-size:12px;color:#444}}</style></head><body>{body}</body></html>\n",
        escape(&r.scenario.name)
    )
}
