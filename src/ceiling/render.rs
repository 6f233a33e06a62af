//! `ceiling.md` and the block docs/performance.md shows: what was measured where, the
//! generator's ceiling beside wrk's, its steps, and the database's ingest and drain beside
//! pgbench's.

use super::database::{self, DatabaseCeiling};
use super::{lowest_failed, soak, CeilingReport, GeneratorCeiling, Reference, Step};

/// ceiling.md: a title, then [`body`].
pub fn markdown(r: &CeilingReport) -> String {
    format!("# Harness ceilings\n\n{}", body(r))
}

/// What was measured where, the generator's ceiling and ratio, its steps (docs/performance.md's block).
pub fn body(r: &CeilingReport) -> String {
    let g = &r.generator;
    let mut out = format!(
        "Measured by `incident-lab ceiling` at commit `{}` on {}; each step {:.0} s.\n\n**Load generator** (open model, a trivial endpoint): {} Steal: the share of the machine's CPU its hypervisor took during the step (a shared virtual machine's figures move with it).\n\n{}",
        r.commit,
        r.machine,
        r.step_s,
        ceiling_words(g, r.max_lateness_p99_ms),
        steps_table(&g.steps)
    );
    if let Some(h) = &r.https {
        out.push_str(&format!(
            "\n**Over HTTPS** (the same ramp, the endpoint behind TLS: HTTP/1.1, a certificate made for the run, its CA trusted as `--ca-cert` trusts one): {}{}\n\n{}",
            ceiling_words(h, r.max_lateness_p99_ms),
            tls_cost_words(g, h),
            steps_table(&h.steps)
        ));
    }
    out.push_str(&soak::body(r.soak.as_ref()));
    out.push_str(&database_body(r.database.as_ref()));
    out
}

/// "ceiling …, lateness p99 ≤ …; 0.52 of wrk (…). wrk: …/s (…). CPU per request …".
fn ceiling_words(g: &GeneratorCeiling, max_lateness_p99_ms: f64) -> String {
    let ceiling = match (g.ceiling_rate, lowest_failed(&g.steps)) {
        (None, _) => "no rate held".to_owned(),
        (Some(c), None) => format!("≥ {c:.0}/s (every step held; try higher --rates)"),
        (Some(c), Some(f)) => format!("{c:.0}/s ({f:.0}/s did not hold)"),
    };
    let ratio = ratio_words(
        g.ratio,
        g.goal,
        g.above_last_step,
        "rate held",
        &g.reference,
    );
    format!(
        "ceiling {ceiling}, lateness p99 ≤ {max_lateness_p99_ms} ms; {ratio}. wrk: {}.{}",
        g.reference
            .rate
            .map_or(g.reference.detail.clone(), |w| format!(
                "{w:.0}/s (`{}`; steal {})",
                g.reference.detail,
                steal_words(g.wrk_steal_pct)
            )),
        cpu_words(g)
    )
}

/// " TLS costs the generator … µs of CPU a request …", where both ramps held a rate.
fn tls_cost_words(http: &GeneratorCeiling, https: &GeneratorCeiling) -> String {
    let Some(c) = super::tls_cost(http, https) else {
        return " What TLS costs a request: no rate held both over HTTP and over HTTPS.".into();
    };
    format!(
        " TLS costs the generator {:.1} µs of CPU a request ({:.1} over HTTPS against {:.1} over HTTP, both at {:.0}/s){}.",
        c.generator_https_us - c.generator_http_us,
        c.generator_https_us,
        c.generator_http_us,
        c.rate,
        c.wrk.map_or(String::new(), |(plain, tls)| format!(
            ", wrk {:.1} µs ({tls:.1} against {plain:.1})",
            tls - plain
        ))
    )
}

/// The ramp's steps by rate: the refining steps, run last, between the two they split.
fn steps_table(steps: &[Step]) -> String {
    let mut out = "| rate /s | sent | failed | unsent | lateness p99 | late, no connection free | steal | held |\n|---|---|---|---|---|---|---|---|\n".to_owned();
    let mut steps: Vec<&Step> = steps.iter().collect();
    steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    for s in steps {
        out.push_str(&format!(
            "| {:.0}{} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.rate,
            if s.refining { " (refining)" } else { "" },
            s.sent,
            s.failed,
            s.unsent,
            crate::report::ms(s.lateness_p99_ms),
            s.late_no_user,
            steal_words(s.steal_pct),
            if s.held { "yes" } else { "**no**" }
        ));
    }
    out
}

/// A step's steal, e.g. `4.1 %`; `n/a` where `/proc/stat` could not be read.
pub(super) fn steal_words(pct: Option<f64>) -> String {
    pct.map_or("n/a".to_owned(), |p| format!("{p:.1} %"))
}

/// What one request costs the generator at its ceiling beside what it costs wrk, where both
/// were measured: on one machine, the client's cost per request bounds the ratio.
pub(super) fn cpu_words(g: &GeneratorCeiling) -> String {
    let at_ceiling = g
        .ceiling_rate
        .and_then(|c| g.steps.iter().find(|s| s.rate == c))
        .and_then(|s| s.cpu_us_per_request);
    match (at_ceiling, g.wrk_cpu_us_per_request) {
        (Some(generator), Some(wrk)) if wrk > 0.0 => format!(
            " CPU per request (user + system, each whole process): the generator {generator:.1} µs at its ceiling, wrk {wrk:.1} µs ({:.1}×).",
            generator / wrk
        ),
        _ => String::new(),
    }
}

/// A ratio against a reference, with its goal; or why there is none. `lower_bound`: the ramp
/// ended before the thing measured did.
pub(super) fn ratio_words(
    ratio: Option<f64>,
    goal: f64,
    lower_bound: bool,
    what: &str,
    reference: &Reference,
) -> String {
    match (ratio, reference.rate) {
        (Some(x), _) if lower_bound && x < goal => format!(
            "≥ {x:.2} of {} (a lower bound; goal ≥ {goal})",
            reference.tool
        ),
        (Some(x), _) => format!(
            "{x:.2} of {} ({}; goal ≥ {goal})",
            reference.tool,
            if x >= goal {
                "goal met"
            } else {
                "goal NOT met"
            }
        ),
        (None, None) => format!(
            "no ratio: {} did not run ({})",
            reference.tool, reference.detail
        ),
        (None, Some(_)) => format!("no ratio: no {what}"),
    }
}

/// How the drain ran. A report from before the drain ran apart from the scenario's model
/// (no `drain_workers`) ran it with the scenario's own provider latency and workers.
pub(super) fn drain_setting(d: &DatabaseCeiling) -> String {
    if d.drain_workers == 0 {
        return String::new();
    }
    format!(
        ", {} jobs at once, the fake GHL answering at once{}",
        d.drain_workers,
        d.drain_modelled_bound.map_or(String::new(), |b| format!(
            "; the scenario's own GHL latency and workers would bound it at {b:.0} jobs/s, whatever the code"
        ))
    )
}

/// What a drained job costs in rows, beside pgbench's one row per transaction.
pub(super) fn rows_per_job_words(d: &DatabaseCeiling, jobs_per_s: f64) -> String {
    let Some(rows) = d.drain_rows_per_job else {
        return String::new();
    };
    let rows_per_s = rows * jobs_per_s;
    format!(
        "; {rows:.1} rows written per job (the runner's declared writes: claim, effects, ledger, outbox, completion, leases), {rows_per_s:.0} rows/s{}",
        d.reference
            .rate
            .map_or(String::new(), |p| format!(", {:.2} of pgbench's rows/s", rows_per_s / p))
    )
}

/// How the drain's `EMAIL_SENT`s were applied: several to a transaction, on average.
pub(super) fn batch_words(d: &DatabaseCeiling) -> String {
    d.drain_jobs_per_batch.map_or(String::new(), |n| {
        format!("; where a claim held several `EMAIL_SENT`s, {n:.1} jobs per transaction")
    })
}

pub(super) fn database_body(d: Option<&DatabaseCeiling>) -> String {
    let Some(d) = d else {
        return "\n**Ingest and drain**: not measured (`--no-database`).\n".into();
    };
    // The ramp ended before the service did: every step held, or the generator fell behind.
    let ingest_open = database::ingest_open(&d.ingest_steps);
    let mut out = format!(
        "\n**Ingest** (`EMAIL_SENT` on the queued path, the all-on arm, pool {}): ceiling {} with p95 ≤ 500 ms; {}. **Drain** (background-jobs cron ticked back to back, the per-job work of the fixed path{}): {}; {}. pgbench: {}.\n\nA step holds only if every request it answered 202 left its job in the queue.\n\n| rate /s | users | sent | failed | p95 | lateness p99 | > 50 ms late: no user free, woke late | 202s, jobs queued | held |\n|---|---|---|---|---|---|---|---|---|\n",
        d.pool_max,
        match (d.ingest_rate, ingest_open) {
            (None, _) => "— no rate held".into(),
            (Some(r), true) => format!("≥ {r:.0}/s (the service was not the limit)"),
            (Some(r), false) => format!("{r:.0}/s"),
        },
        ratio_words(
            d.ingest_ratio,
            d.ingest_goal,
            ingest_open,
            "rate held",
            &d.reference
        ),
        drain_setting(d),
        d.drain_jobs_per_s.map_or("no job applied".into(), |j| format!(
            "{j:.0} jobs/s ({} jobs{}{}{})",
            d.drained,
            if d.drain_left > 0 { format!(", {} left after 60 s", d.drain_left) } else { String::new() },
            rows_per_job_words(d, j),
            batch_words(d),
        )),
        ratio_words(d.drain_ratio, d.drain_goal, false, "job applied", &d.reference),
        d.reference.rate.map_or(d.reference.detail.clone(), |p| format!("{p:.0} inserts/s (`{}`)", d.reference.detail)),
    );
    for (i, s) in d.ingest_steps.iter().enumerate() {
        let again = database::ingest_run_again(&d.ingest_steps, i);
        out.push_str(&format!(
            "| {:.0}{} | {} | {} | {} | {} | {} | {}, {} | {} | {} |\n",
            s.rate,
            if s.refining { " (refining)" } else { "" },
            s.users,
            s.sent,
            s.failed,
            crate::report::ms(s.p95_ms),
            crate::report::ms(s.lateness_p99_ms),
            s.late_no_user,
            s.late_wakeup,
            match (s.accepted, s.queued) {
                (Some(a), Some(q)) => format!("{a}, {q}"),
                _ => "—".into(),
            },
            if s.lost() > 0 {
                "**no**: 202s without their job"
            } else if again {
                "no verdict: the generator fell behind (run again below)"
            } else if s.harness_limited {
                "no verdict: the generator fell behind"
            } else if s.held {
                "yes"
            } else {
                "**no**"
            }
        ));
    }
    out
}
