//! The report's charts, as inline SVG: each a small function of its data. Axes carry ticks and
//! light grid lines; legends are an HTML row under the chart (they wrap, never overlap); every
//! point and bar has a hover title (SVG `<title>`), so no script is needed.

use std::fmt::Write;

use maud::{html, Markup, Render};

use crate::report::ms;

/// Colours of series, in order; each readable on white (contrast ≥ 3:1 for graphics).
pub const COLORS: [&str; 6] = [
    "#1f5fa8", "#c0392b", "#1e7b34", "#7d3c98", "#b35900", "#5d4037",
];

const W: f64 = 960.0;
const H: f64 = 220.0;
/// Room for the y labels (left), the phase names (top) and the time labels (bottom).
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 24.0;

/// A number written into SVG with one decimal.
struct N(f64);

impl Render for N {
    fn render_to(&self, out: &mut String) {
        let _ = write!(out, "{:.1}", self.0);
    }
}

/// What the y axis counts, for its tick labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Count,
}

impl Unit {
    pub fn label(self, v: f64) -> String {
        match self {
            Unit::Ms => axis_ms(v),
            Unit::Count if v.fract() == 0.0 => format!("{v:.0}"),
            Unit::Count => format!("{v:.1}"),
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Index into [`COLORS`].
    pub color: usize,
    /// Drawn dashed (a second view of the series of the same colour).
    pub dashed: bool,
}

/// A stretch of the run named on every time chart: a phase, a fault, a flip (`from == to`).
#[derive(Debug, Clone)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    pub kind: BandKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandKind {
    /// A phase of the load; the incident phase is shaded.
    Phase { incident: bool },
    /// A fault or a flip.
    Mark,
}

/// A horizontal reference line (a budget) on a time chart.
#[derive(Debug, Clone)]
pub struct Rule {
    pub y: f64,
    pub label: String,
    pub color: usize,
}

/// A chart of values over the run's seconds.
#[derive(Debug, Clone)]
pub struct TimeChart {
    pub title: String,
    pub unit: Unit,
    pub t_max: f64,
    pub bands: Vec<Band>,
    pub series: Vec<Series>,
    pub rules: Vec<Rule>,
}

/// Ticks for a linear axis from 0 covering `max`: a step of 1, 2 or 5 × 10ⁿ giving about
/// `count` intervals; the last tick is at or above `max`.
pub fn linear_ticks(max: f64, count: usize) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let rough = max / count.max(1) as f64;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * mag);
    let n = (max / step - 1e-9).ceil() as usize;
    (0..=n.max(1)).map(|i| i as f64 * step).collect()
}

/// Ticks for a log axis covering `[lo, hi]` (both > 0): every decade, with 2 and 5 between
/// when the range spans at most three decades; the last tick is the first 1, 2 or 5 × 10ⁿ at
/// or above `hi`, so the axis ends near the data.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let b = b.max(a + 1);
    let fine = b - a <= 3;
    let mut ticks = Vec::new();
    for e in a..=b {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            let last = v >= hi * (1.0 - 1e-9);
            if m == 1.0 || fine || last {
                ticks.push(v);
            }
            if last && ticks.len() > 1 {
                return ticks;
            }
        }
    }
    ticks
}

/// A millisecond figure for an axis: `500 ms`, `2 s`, `1.5 s`.
pub fn axis_ms(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
    };
    if v >= 1000.0 {
        format!("{} s", trim(v / 1000.0))
    } else {
        format!("{} ms", trim(v))
    }
}

/// The legend under a chart: one entry per distinct name, in order.
fn legend(entries: &[(String, usize, bool)]) -> Markup {
    html! {
        ul.legend {
            @for (name, color, dashed) in entries {
                li {
                    span.swatch.dashed[*dashed] style={ "border-color:" (COLORS[color % COLORS.len()]) } {}
                    (name)
                }
            }
        }
    }
}

/// A line chart over `[0, t_max]` seconds: phases named and the incident phase shaded, faults
/// and flips drawn as grey bands or lines with a hover title, budgets as dashed rules.
pub fn time_chart(c: &TimeChart) -> Markup {
    let data_max = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_ticks = linear_ticks(data_max, 4);
    let y_max = *y_ticks.last().unwrap_or(&1.0);
    let t_max = c.t_max.max(1.0);
    let x = |t: f64| LEFT + (t.clamp(0.0, t_max) / t_max) * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - (v.clamp(0.0, y_max) / y_max) * (H - TOP - BOTTOM);
    let t_ticks = linear_ticks(t_max, 10);
    let rules: Vec<&Rule> = c.rules.iter().filter(|r| r.y <= y_max).collect();
    let mut entries: Vec<(String, usize, bool)> = Vec::new();
    for s in &c.series {
        if !entries.iter().any(|e| e.0 == s.name) {
            entries.push((s.name.clone(), s.color, s.dashed));
        }
    }
    html! {
        figure.chart {
            figcaption { (c.title) }
            svg viewBox={ "0 0 " (W) " " (H) } width="100%" role="img" aria-label=(c.title) {
                @for b in &c.bands {
                    @match b.kind {
                        BandKind::Phase { incident } => {
                            @if incident {
                                rect.phase x=(N(x(b.from))) y=(N(TOP)) width=(N(x(b.to) - x(b.from))) height=(N(H - TOP - BOTTOM)) fill="#fbe3e3" {
                                    title { "incident phase: " (b.label) }
                                }
                            } @else {
                                line.phase-edge x1=(N(x(b.from))) x2=(N(x(b.from))) y1=(N(TOP)) y2=(N(H - BOTTOM)) stroke="#bbb" {}
                            }
                            text.phase-name x=(N(x(b.from) + 3.0)) y=(N(TOP - 6.0)) font-size="11" fill="#555" { (b.label) }
                        }
                        BandKind::Mark => {
                            rect.mark x=(N(x(b.from))) y=(N(TOP)) width=(N((x(b.to) - x(b.from)).max(1.5))) height=(N(H - TOP - BOTTOM)) fill="#777" fill-opacity="0.22" stroke="#444" stroke-dasharray="3 2" {
                                title { (b.label) }
                            }
                        }
                    }
                }
                @for v in &y_ticks {
                    line.grid x1=(N(LEFT)) x2=(N(W - RIGHT)) y1=(N(y(*v))) y2=(N(y(*v))) stroke="#e3e3e3" {}
                    text x=(N(LEFT - 6.0)) y=(N(y(*v) + 4.0)) font-size="11" text-anchor="end" fill="#333" { (c.unit.label(*v)) }
                }
                @for t in &t_ticks {
                    line.grid x1=(N(x(*t))) x2=(N(x(*t))) y1=(N(H - BOTTOM)) y2=(N(H - BOTTOM + 4.0)) stroke="#888" {}
                    text x=(N(x(*t))) y=(N(H - 6.0)) font-size="11" text-anchor="middle" fill="#333" { (format!("{t:.0} s")) }
                }
                line x1=(N(LEFT)) x2=(N(W - RIGHT)) y1=(N(H - BOTTOM)) y2=(N(H - BOTTOM)) stroke="#888" {}
                line x1=(N(LEFT)) x2=(N(LEFT)) y1=(N(TOP)) y2=(N(H - BOTTOM)) stroke="#888" {}
                @for r in &rules {
                    line.rule x1=(N(LEFT)) x2=(N(W - RIGHT)) y1=(N(y(r.y))) y2=(N(y(r.y))) stroke=(COLORS[r.color % COLORS.len()]) stroke-dasharray="6 3" stroke-opacity="0.7" {
                        title { (r.label) }
                    }
                }
                @for s in &c.series {
                    @let color = COLORS[s.color % COLORS.len()];
                    @if !s.points.is_empty() {
                        polyline.series fill="none" stroke=(color) stroke-width="1.6" stroke-dasharray=[s.dashed.then_some("5 3")] points=(polyline(&s.points, &x, &y)) {}
                    }
                    @for (t, v) in &s.points {
                        circle cx=(N(x(*t))) cy=(N(y(*v))) r="2.2" fill=(color) {
                            title { (s.name) " at " (format!("{t:.0} s")) ": " (c.unit.label(*v)) }
                        }
                    }
                }
            }
            (legend(&entries))
        }
    }
}

fn polyline(points: &[(f64, f64)], x: &impl Fn(f64) -> f64, y: &impl Fn(f64) -> f64) -> String {
    let mut out = String::new();
    for (t, v) in points {
        let _ = write!(out, "{:.1},{:.1} ", x(*t), y(*v));
    }
    out.trim_end().to_owned()
}

/// One row of a budget chart: an arm's p95 on one endpoint.
#[derive(Debug, Clone)]
pub struct BudgetRow {
    pub arm: String,
    /// The arm's section, linked from its name.
    pub anchor: String,
    pub p95_ms: Option<f64>,
}

/// Every arm's p95 on one endpoint as a bar on a log scale, the budget drawn as a line: which
/// arms hold it is read at a glance. Bars within budget are green, over it red, and say so in
/// their hover title.
pub fn budget_chart(endpoint: &str, budget_ms: f64, rows: &[BudgetRow]) -> Markup {
    const LABEL: f64 = 150.0;
    const ROW: f64 = 22.0;
    let values = rows.iter().filter_map(|r| r.p95_ms).filter(|v| *v > 0.0);
    let lo = values.clone().fold(budget_ms, f64::min).max(0.1);
    let hi = values.fold(budget_ms, f64::max);
    let ticks = log_ticks(lo, hi);
    let (t0, t1) = (ticks[0].log10(), ticks[ticks.len() - 1].log10());
    let height = TOP + ROW * rows.len() as f64 + BOTTOM;
    let x = |v: f64| {
        LEFT + LABEL
            + (v.max(ticks[0]).log10() - t0) / (t1 - t0) * (W - LEFT - LABEL - RIGHT - 50.0)
    };
    let bottom = height - BOTTOM;
    let title = format!(
        "{endpoint}: p95 per arm (log scale), budget {}",
        ms(Some(budget_ms))
    );
    html! {
        figure.chart.budget {
            figcaption { (title) }
            svg viewBox={ "0 0 " (W) " " (N(height)) } width="100%" role="img" aria-label=(title) {
                @for v in &ticks {
                    line.grid x1=(N(x(*v))) x2=(N(x(*v))) y1=(N(TOP)) y2=(N(bottom)) stroke="#e3e3e3" {}
                    text x=(N(x(*v))) y=(N(height - 6.0)) font-size="11" text-anchor="middle" fill="#333" { (axis_ms(*v)) }
                }
                @for (i, r) in rows.iter().enumerate() {
                    @let top = TOP + ROW * i as f64;
                    a href={ "#" (r.anchor) } {
                        text x="4" y=(N(top + ROW * 0.68)) font-size="12" fill="#1f5fa8" { (r.arm) }
                    }
                    @match r.p95_ms {
                        Some(v) => {
                            @let over = v > budget_ms;
                            rect.bar.over[over].within[!over] x=(N(x(ticks[0]))) y=(N(top + 4.0)) width=(N((x(v) - x(ticks[0])).max(1.0))) height=(N(ROW - 8.0)) fill=(if over { "#c0392b" } else { "#1e7b34" }) {
                                title { (r.arm) ": p95 " (ms(Some(v))) (if over { " — OVER the budget of " } else { " — within the budget of " }) (ms(Some(budget_ms))) }
                            }
                            text x=(N(x(v) + 4.0)) y=(N(top + ROW * 0.68)) font-size="11" fill="#222" { (ms(Some(v))) (if over { " over" } else { "" }) }
                        }
                        None => {
                            text x=(N(x(ticks[0]) + 4.0)) y=(N(top + ROW * 0.68)) font-size="11" fill="#555" { "no requests" }
                        }
                    }
                }
                line x1=(N(x(ticks[0]))) x2=(N(x(ticks[0]))) y1=(N(TOP)) y2=(N(bottom)) stroke="#888" {}
                line.budget x1=(N(x(budget_ms))) x2=(N(x(budget_ms))) y1=(N(TOP - 6.0)) y2=(N(bottom)) stroke="#222" stroke-width="1.5" stroke-dasharray="6 3" {
                    title { "budget: p95 ≤ " (ms(Some(budget_ms))) }
                }
                text x=(N(x(budget_ms) + 4.0)) y=(N(TOP - 8.0)) font-size="11" fill="#222" { "budget " (ms(Some(budget_ms))) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks step by 1, 2 or 5 × 10ⁿ from 0 and cover the maximum.
    #[test]
    fn linear_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(linear_ticks(440.0, 4), vec![0.0, 200.0, 400.0, 600.0]);
        assert_eq!(linear_ticks(10.0, 4), vec![0.0, 5.0, 10.0]);
        assert_eq!(
            linear_ticks(35.0, 10),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0]
        );
        assert_eq!(linear_ticks(0.0, 4), vec![0.0, 0.5, 1.0]);
        let t = linear_ticks(10_076.0, 4);
        assert!(t.last().unwrap() >= &10_076.0 && t.len() <= 6, "{t:?}");
    }

    /// Axis labels are short: no trailing decimals.
    #[test]
    fn axis_labels_are_short() {
        assert_eq!(axis_ms(500.0), "500 ms");
        assert_eq!(axis_ms(2000.0), "2 s");
        assert_eq!(axis_ms(1500.0), "1.5 s");
        assert_eq!(axis_ms(0.5), "0.5 ms");
    }

    /// A log axis shows each decade, with 2 and 5 between when there is room.
    #[test]
    fn log_ticks_cover_both_ends_by_decade() {
        assert_eq!(
            log_ticks(3.0, 500.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(
            log_ticks(3.0, 10_080.0),
            vec![1.0, 10.0, 100.0, 1000.0, 10_000.0, 20_000.0]
        );
        assert_eq!(log_ticks(0.5, 0.8), vec![0.1, 0.2, 0.5, 1.0]);
    }

    fn chart(series: Vec<Series>) -> String {
        time_chart(&TimeChart {
            title: "t".into(),
            unit: Unit::Count,
            t_max: 10.0,
            bands: vec![
                Band {
                    from: 0.0,
                    to: 4.0,
                    label: "baseline".into(),
                    kind: BandKind::Phase { incident: false },
                },
                Band {
                    from: 4.0,
                    to: 8.0,
                    label: "burst".into(),
                    kind: BandKind::Phase { incident: true },
                },
                Band {
                    from: 5.0,
                    to: 6.0,
                    label: "fault: pause".into(),
                    kind: BandKind::Mark,
                },
            ],
            series,
            rules: vec![Rule {
                y: 5.0,
                label: "budget 5".into(),
                color: 0,
            }],
        })
        .into_string()
    }

    fn series(name: &str, color: usize, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            color,
            dashed: false,
        }
    }

    /// Series names go to a legend row, once each, and never into the drawing where they could
    /// overlap; each point has a hover title; phases are named, the incident one shaded.
    #[test]
    fn a_time_chart_has_a_legend_row_grid_ticks_and_titles() {
        let svg = chart(vec![
            series("GET /", 0, vec![(0.5, 1.0), (1.5, 9.0)]),
            series("POST /api/webhooks/email", 1, vec![(0.5, 2.0)]),
        ]);
        let legend = &svg[svg.find("<ul class=\"legend\">").unwrap()..];
        assert_eq!(legend.matches("<li>").count(), 2);
        assert!(legend.contains("GET /") && legend.contains("POST /api/webhooks/email"));
        let drawing = &svg[..svg.find("</svg>").unwrap()];
        assert!(
            !drawing.contains(">GET /<"),
            "a series label inside the drawing"
        );
        assert_eq!(drawing.matches("<circle").count(), 3);
        assert!(
            drawing.contains("<title>GET / at 2 s: 9</title>"),
            "{drawing}"
        );
        assert!(drawing.contains("class=\"phase\"") && drawing.contains(">burst</text>"));
        assert!(drawing.contains("<title>incident phase: burst</title>"));
        assert!(drawing.contains("<title>fault: pause</title>"));
        // y ticks 0, 5, 10 with grid lines, x ticks every second, the budget rule.
        assert!(drawing.matches("class=\"grid\"").count() >= 3 + 10);
        assert!(drawing.contains(">10 s</text>") && drawing.contains(">5</text>"));
        assert!(drawing.contains("<title>budget 5</title>"));
    }

    /// A rule above every value is left out rather than squashing the data under it.
    #[test]
    fn a_budget_far_above_the_data_is_not_drawn() {
        let svg = chart(vec![series("GET /", 0, vec![(0.5, 1.0)])]);
        assert!(!svg.contains("class=\"rule\""), "{svg}");
    }

    /// On the budget chart a value ten times another sits one decade further, bars over the
    /// budget say so in words, and each arm links to its section.
    #[test]
    fn the_budget_chart_is_logarithmic_and_says_over_in_words() {
        let rows = [
            BudgetRow {
                arm: "all-off".into(),
                anchor: "arm-all-off".into(),
                p95_ms: Some(10_000.0),
            },
            BudgetRow {
                arm: "all-on".into(),
                anchor: "arm-all-on".into(),
                p95_ms: Some(100.0),
            },
            BudgetRow {
                arm: "empty".into(),
                anchor: "arm-empty".into(),
                p95_ms: None,
            },
        ];
        let svg = budget_chart("GET /", 1000.0, &rows).into_string();
        let widths: Vec<f64> = svg
            .match_indices("class=\"bar ")
            .map(|(i, _)| {
                let w = &svg[i..];
                let w = &w[w.find("width=\"").unwrap() + 7..];
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        // 10 s and 100 ms on an axis from 100 ms to 10 s: the first bar spans it, the second is
        // at its origin.
        assert_eq!(widths.len(), 2);
        assert!(widths[1] <= 1.0 && widths[0] > 500.0, "{widths:?}");
        assert!(svg.contains("all-off: p95 10.00 s — OVER the budget of 1.00 s"));
        assert!(svg.contains("all-on: p95 100 ms — within the budget of 1.00 s"));
        assert!(svg.contains("href=\"#arm-all-off\"") && svg.contains("no requests"));
        assert!(svg.contains("class=\"budget\""));
    }
}
