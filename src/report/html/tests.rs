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
    let summary = &page[page.find("id=\"summary\"").unwrap()..page.find("class=\"arm\"").unwrap()];
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
    assert!(page
        .contains("<span class=\"badge fail\">FAIL</span> <strong>GET / within budget</strong>"));
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
    assert!(figure("Service instances answering").contains("<title>instances at 9 s: 2</title>"));
    let per_instance = figure("Connection pool per instance");
    assert!(per_instance.contains("<title>instance 2 at 9 s: 7</title>"));
    assert!(
        !per_instance.contains("instance 2 at 4 s"),
        "no point before it started"
    );
    assert!(figure("PgBouncer: server connections in use")
        .contains("<title>server connections in use at 9 s: 15</title>"));
    assert!(
        figure("PgBouncer: clients waiting").contains("<title>clients waiting at 9 s: 27</title>")
    );
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
