//! `report.md`: short enough for a CI step summary; and [`summary`], the results table the
//! README shows, rendered from a report.json so no figure there is typed by hand.

use std::fmt::Write;

use super::{ms, ArmReport, ArmStatus, Invariants, Report, Verdict};
use crate::model::{COUNTS_LABEL, PAGE_LABEL};

fn mark(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

fn status(a: &ArmReport) -> String {
    match a.status {
        ArmStatus::AsExpected => "✅ as expected".into(),
        ArmStatus::NotAsExpected => "❌ NOT as expected".into(),
        ArmStatus::Inconclusive => "⚠️ INCONCLUSIVE (load generator fell behind)".into(),
        ArmStatus::Interrupted => "⏹ interrupted (not judged)".into(),
    }
}

/// The arm × endpoint table: client p95 (from the intended time) and the service's own p95,
/// against the budget; statement timeouts; the generator's worst stream; the accounting; the
/// invariant.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let endpoints = r.budgeted_endpoints();
    let _ = write!(out, "| arm | expect | status |");
    for e in &endpoints {
        let _ = write!(out, " {e} p95 client / service (budget) |");
    }
    let _ = writeln!(
        out,
        " stmt timeouts | late sends (worst stream) | rows declared / counted | invariant |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(endpoints.len() + 7));
    for a in &r.arms {
        let _ = write!(out, "| `{}` | {:?} | {} |", a.name, a.expect, status(a));
        for name in &endpoints {
            match a.endpoints.iter().find(|e| &e.endpoint == name) {
                Some(e) => {
                    let _ = write!(
                        out,
                        " {} {} / {} ({}) |",
                        mark(e.within_budget),
                        ms(e.p95_ms),
                        service_p95(e),
                        ms(e.budget_p95_ms)
                    );
                }
                None => {
                    let _ = write!(out, " – |");
                }
            }
        }
        let worst = a
            .load
            .streams
            .iter()
            .max_by(|x, y| x.late_pct.total_cmp(&y.late_pct));
        let inv = &a.invariants;
        let acc = &a.accounting;
        let skipped = |start: &str| a.skipped.iter().any(|s| s.check.starts_with(start));
        let accounting = if skipped("the service's declared writes")
            || skipped(super::checks::ACCOUNTING_CHECK)
        {
            "skipped".to_owned()
        } else {
            format!(
                "{} {} / {}",
                mark(acc.holds),
                acc.db_writes_declared,
                acc.db_writes_measured
            )
        };
        let invariant = if skipped(super::checks::EXACTLY_ONCE_CHECK) {
            "skipped".to_owned()
        } else {
            format!(
                "{} {}{}/{} applied, {} lost, {} dup{}{}",
                mark(inv.holds),
                inv.sent.map_or(String::new(), |n| format!("sent {n}, ")),
                inv.applied,
                inv.acked,
                inv.lost,
                inv.duplicates,
                inv.worst_effect
                    .as_ref()
                    .map_or(String::new(), |w| format!(" ({w})")),
                failed_jobs(inv)
            )
        };
        let _ = writeln!(
            out,
            " {} | {} | {accounting} | {invariant} |",
            a.statement_timeouts,
            worst.map_or("–".into(), |s| format!("{:.1}%", s.late_pct)),
        );
    }
    out
}

/// Exactly once, on every side effect of EMAIL_SENT: one row per arm, one column per effect,
/// each `applied/expected` with what was lost or duplicated.
pub fn effects(r: &Report) -> String {
    let mut out = String::new();
    let Some(names) = r
        .arms
        .iter()
        .find(|a| !a.invariants.effects.is_empty())
        .map(|a| {
            a.invariants
                .effects
                .iter()
                .map(|e| e.effect.clone())
                .collect::<Vec<_>>()
        })
    else {
        return out;
    };
    let _ = writeln!(out, "\n## Exactly once, on every effect of EMAIL_SENT\n");
    let _ = writeln!(
        out,
        "Applied / expected per effect; `-N` lost, `+N` duplicated. Rows are counted per acknowledged event, counters and the GHL call per applied event.\n"
    );
    let _ = writeln!(out, "| arm | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(names.len()));
    for a in &r.arms {
        let cells: Vec<String> = a
            .invariants
            .effects
            .iter()
            .map(|e| {
                let mut cell = format!("{}/{}", e.applied, e.expected);
                if e.lost > 0 {
                    cell.push_str(&format!(" −{}", e.lost));
                }
                if e.duplicates > 0 {
                    cell.push_str(&format!(" +{}", e.duplicates));
                }
                cell
            })
            .collect();
        let _ = writeln!(out, "| `{}` | {} |", a.name, cells.join(" | "));
    }
    out
}

/// The health gate when LinkedIn accounts reconnected mid-run: re-admissions and false skips.
pub fn reconnections(r: &Report) -> String {
    let mut out = String::new();
    if r.arms.iter().all(|a| a.reconnect.is_none()) {
        return out;
    }
    let _ = writeln!(
        out,
        "\n## Reconnected LinkedIn accounts (Unipile health gate)\n\n\
         A false skip is a follow-up skipped for a workspace that had reconnected; past the \
         bound (recheck interval + the follow-ups ticks that probe every disconnected account, 25 a \
         tick, + one tick's budget) it fails the arm.\n"
    );
    let _ = writeln!(
        out,
        "| arm | gate | re-admitted | slowest re-admission | false skips | past the bound |\n|---|---|---|---|---|---|"
    );
    for a in &r.arms {
        let Some(g) = &a.reconnect else { continue };
        let gate = a.flags.get("UNIPILE_HEALTH_GATE").copied().unwrap_or(false);
        let _ = writeln!(
            out,
            "| `{}` | {} | {}/{} | {} | {} | {} (bound {:.0} s) |",
            a.name,
            if gate { "on" } else { "off" },
            g.readmitted,
            g.reconnected,
            g.slowest_readmission_s
                .map_or("-".into(), |s| format!("{s:.1} s")),
            g.false_skips,
            g.false_skips_late,
            g.bound_s
        );
    }
    out
}

/// Scale-out arms: instances over time, connections per instance, and the pooler's queue.
pub fn fleet(r: &Report) -> String {
    let mut out = String::new();
    if r.arms.iter().all(|a| a.fleet.is_none()) {
        return out;
    }
    let _ = writeln!(
        out,
        "\n## Instances and the pooler\n\n\
         Instances are service processes behind the front, each with its own pool; \
         \"waiting\" are PgBouncer's clients queued for a server connection (`SHOW POOLS` \
         cl_waiting, read each second), \"wait/txn\" the time they queued per transaction over \
         the arm (`SHOW STATS`).\n"
    );
    let _ = writeln!(
        out,
        "| arm | instances (min–max) | instances@second of the load | failed starts | most connections per instance | pooler (mode, pool, clients) | most waiting | longest wait | wait/txn | most server conns | refused clients |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for a in &r.arms {
        let Some(f) = &a.fleet else { continue };
        let started: Vec<String> = f
            .instances
            .iter()
            .map(|(t, n)| format!("{n}@{t:.1}"))
            .collect();
        let conns: Vec<String> = f
            .connections_max
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect();
        let pooler = |g: &dyn Fn(&crate::model::PoolerReport) -> String| {
            f.pooler.as_ref().map_or("-".to_owned(), g)
        };
        let _ = writeln!(
            out,
            "| `{}` | {}–{}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.name,
            f.min,
            f.max,
            f.per_instance_concurrency
                .map_or(String::new(), |c| format!(" (one per {c} in flight)")),
            started.join(", "),
            f.failed_starts,
            conns.join(" / "),
            pooler(&|p| format!(
                "{}, {}, {}",
                p.pool_mode, p.default_pool_size, p.max_client_conn
            )),
            pooler(&|p| format!("{:.0}", p.cl_waiting_max)),
            pooler(&|p| format!("{:.0} ms", p.maxwait_max_ms)),
            pooler(&|p| format!("{:.1} ms", p.wait_per_transaction_ms)),
            pooler(&|p| format!("{:.0}", p.sv_active_max)),
            pooler(&|p| p.refused_clients.to_string()),
        );
    }
    out
}

/// Where the sidebar counts came from, and the cron ticks against their budget.
pub fn background(r: &Report) -> String {
    let mut out = String::new();
    if r.arms.iter().all(|a| a.background == Default::default()) {
        return out;
    }
    let _ = writeln!(out, "\n## Counts sources and background work\n");
    let _ = writeln!(
        out,
        "| arm | counts: live / cache / fallback | cached scopes: at start → after | slot ledger: applied / skipped / acquire failed | cron ticks (runner: n, p95, max, budget) | cron: most connections held |\n|---|---|---|---|---|---|"
    );
    for a in &r.arms {
        let b = &a.background;
        let n = |k: &str| b.counts_answers.get(k).copied().unwrap_or(0);
        let total = (n("live") + n("cache") + n("fallback")).max(1) as f64;
        let share = |k: &str| format!("{} ({:.0}%)", n(k), n(k) as f64 * 100.0 / total);
        let ticks: Vec<String> = b
            .cron_ticks
            .iter()
            .map(|t| {
                format!(
                    "{}: {}, {}, {}, {}",
                    t.runner,
                    t.ticks,
                    ms(t.p95_ms),
                    ms(t.max_ms),
                    ms(Some(t.budget_ms))
                )
            })
            .collect();
        let ledger = |k: &str| b.ledger.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| `{}` | {} / {} / {} | {} → {} | {} / {} / {} | {} | {} |",
            a.name,
            share("live"),
            share("cache"),
            share("fallback"),
            b.counts_scopes_at_start,
            b.counts_scopes_at_end,
            ledger("applied"),
            ledger("skipped"),
            ledger("acquire_failed"),
            ticks.join("; "),
            b.cron_connections_max
        );
    }
    out
}

/// One phase of one arm, the counts and the page together: requests, failed, statement timeouts.
type PhaseTally = (u64, u64, u64);

/// The counts-serving endpoints per phase: requests, failures (5xx, timeouts) and statement
/// timeouts. Contention shows as more failures in the incident phase than in the phase before
/// it (the same counts traffic without the burst: the control).
pub fn timeouts_by_phase(r: &Report) -> String {
    let mut out = String::new();
    let phases: Vec<&str> = r.scenario.phases.iter().map(|p| p.name.as_str()).collect();
    let rows: Vec<(String, Vec<PhaseTally>)> = r
        .arms
        .iter()
        .map(|a| {
            let per_phase = phases
                .iter()
                .map(|ph| {
                    a.endpoints
                        .iter()
                        .filter(|e| e.endpoint == COUNTS_LABEL || e.endpoint == PAGE_LABEL)
                        .flat_map(|e| e.phases.iter().filter(|p| p.phase == *ph))
                        .fold((0, 0, 0), |(n, f, t), p| {
                            (n + p.requests, f + p.failed, t + p.statement_timeouts)
                        })
                })
                .collect();
            (a.name.clone(), per_phase)
        })
        .collect();
    if rows.iter().all(|(_, n)| n.iter().all(|v| v.0 == 0)) {
        return out;
    }
    let _ = writeln!(
        out,
        "\n## The counts and the page by phase: failed / requests (statement timeouts)\n"
    );
    let _ = writeln!(
        out,
        "| arm | {} |\n|---|{}",
        phases.join(" | "),
        "---|".repeat(phases.len())
    );
    for (arm, n) in rows {
        let cells: Vec<String> = n
            .iter()
            .map(|(req, failed, st)| format!("{failed} / {req} ({st})"))
            .collect();
        let _ = writeln!(out, "| `{arm}` | {} |", cells.join(" | "));
    }
    out
}

/// The faults injected, the flips made and the steady-state hypothesis, per arm.
pub fn faults(r: &Report) -> String {
    let mut out = String::new();
    if r.arms.iter().any(|a| !a.faults.is_empty()) {
        let _ = writeln!(
            out,
            "\n## Faults injected\n\n| arm | fault | what it did | from | to | connections through the link's proxy |\n|---|---|---|---|---|---|"
        );
        for a in &r.arms {
            for f in &a.faults {
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {:.1} s | {:.1} s | {} |",
                    a.name, f.kind, f.detail, f.from_s, f.to_s, f.connections_open
                );
            }
        }
    }
    if r.arms.iter().any(|a| !a.flips.is_empty()) {
        let _ = writeln!(
            out,
            "\n## Flags flipped mid-run\n\nTime to recover: from the flip to the first 1-s window after which the p95 stays within budget (to the next flip or the end of the load); time to degrade: to the first window over it.\n\n| arm | at | flip | made | budget | time to recover | time to degrade |\n|---|---|---|---|---|---|---|"
        );
        let secs = |t: Option<f64>, none: &str| t.map_or(none.to_owned(), |t| format!("{t:.0} s"));
        for a in &r.arms {
            for f in &a.flips {
                let head = format!(
                    "| `{}` | {:.1} s | `{}` {} → {} | {} |",
                    a.name,
                    f.at_s,
                    f.flag,
                    f.from,
                    f.to,
                    if f.made { "yes" } else { "**NO**" }
                );
                if f.effects.is_empty() {
                    let _ = writeln!(out, "{head} {} | | |", f.detail);
                }
                for e in &f.effects {
                    let _ = writeln!(
                        out,
                        "{head} {} ≤ {:.0} ms | {} | {} |",
                        e.endpoint,
                        e.budget_ms,
                        secs(e.time_to_recover_s, "never"),
                        secs(e.time_to_degrade_s, "not degraded")
                    );
                }
            }
        }
    }
    if r.arms.iter().any(|a| a.hypothesis.is_some()) {
        let _ = writeln!(
            out,
            "\n## Steady-state hypothesis\n\nThe budgets before the first fault or flip (they must hold, or the load stops there), during (recorded), and after the last (they must hold again within the declared time).\n\n| arm | stretch | endpoint | requests | p95 | budget | failed | holds |\n|---|---|---|---|---|---|---|---|"
        );
        for a in &r.arms {
            let Some(h) = &a.hypothesis else { continue };
            for (name, s) in [
                ("before", &h.before),
                ("during", &h.during),
                ("after", &h.after),
            ] {
                for e in &s.endpoints {
                    let _ = writeln!(
                        out,
                        "| `{}` | {name} ({:.0}–{:.0} s) | {} | {} | {} | {:.0} ms | {:.1} % | {} |",
                        a.name,
                        s.from_s,
                        s.to_s,
                        e.endpoint,
                        e.requests,
                        e.p95_ms.map_or("–".into(), |p| format!("{p:.0} ms")),
                        e.budget_ms,
                        e.failed_pct,
                        if e.holds { "yes" } else { "**no**" }
                    );
                }
            }
            if h.aborted {
                let _ = writeln!(
                    out,
                    "\n`{}`: **not steady** before the first fault or flip: the load was stopped there and nothing was injected.\n",
                    a.name
                );
            }
        }
    }
    out
}

/// The whole report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# incident-lab: {} — {}\n",
        r.scenario.name,
        match r.verdict {
            Verdict::Pass => "PASS ✅",
            Verdict::Fail => "FAIL ❌",
        }
    );
    let _ = writeln!(
        out,
        "{} arms, {:.0} s wall time; Postgres `{}` (limits: {}; ready in {:.2} s, seeded {} in {:.1} s); commit `{}` on {}.\n",
        r.arms.len(),
        r.wall_time_s,
        r.environment.postgres_backend,
        r.environment.postgres_limits,
        r.environment.postgres_ready_s,
        r.scenario.dataset,
        r.environment.seed_s,
        r.environment.commit,
        r.environment.machine
    );
    out.push_str(&table(r));
    let failed: Vec<_> = r
        .arms
        .iter()
        .flat_map(|a| a.checks.iter().filter(|c| !c.passed).map(move |c| (a, c)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Checks that did not hold\n");
        for (a, c) in failed {
            let _ = writeln!(out, "- `{}`: {} — {}", a.name, c.name, c.detail);
        }
    }
    let skipped: Vec<_> = r
        .arms
        .iter()
        .flat_map(|a| a.skipped.iter().map(move |s| (a, s)))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "\n## Checks this run could not make\n");
        for (a, s) in skipped {
            let _ = writeln!(out, "- `{}`: {} — skipped: {}", a.name, s.check, s.reason);
        }
    }
    out.push_str(&chaos_summary(r));
    out.push_str(&faults(r));
    out.push_str(&effects(r));
    out.push_str(&background(r));
    out.push_str(&reconnections(r));
    out.push_str(&fleet(r));
    out.push_str(&timeouts_by_phase(r));
    out.push_str(&wall_time(r));
    let _ = writeln!(out, "\n## Where the time went\n");
    let _ = writeln!(out, "| arm | endpoint | client p95 | service p95 | late starts p95 | where |\n|---|---|---|---|---|---|");
    for a in &r.arms {
        for e in a.endpoints.iter().filter(|e| e.budget_p95_ms.is_some()) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                a.name,
                e.endpoint,
                ms(e.p95_ms),
                service_p95(e),
                ms(e.lateness_p95_ms),
                e.time_spent.as_deref().unwrap_or("–")
            );
        }
    }
    if !r.attribution.is_empty() {
        let _ = writeln!(
            out,
            "\n## Which flag moves which budget (p95, flag off → on)\n"
        );
        let _ = writeln!(
            out,
            "| flag | endpoint | off arm | on arm | off | on |\n|---|---|---|---|---|---|"
        );
        for at in &r.attribution {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | `{}` | {} | {} |",
                at.flag,
                at.endpoint,
                at.off_arm,
                at.on_arm,
                ms(at.off_p95_ms),
                ms(at.on_p95_ms)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nClient latency is measured from each request's intended send time (open model); service latency from the handler's start to its response (its `/metrics`; per phase, each response's `server-timing`). See report.html for the timelines."
    );
    out
}

/// Where the run's own wall time went: the load (what the run is for), the queue drained after
/// it, and what is neither (Postgres, the dataset, clones, service starts, the rest).
struct WallTime {
    all: f64,
    load: f64,
    drain: f64,
    clone: f64,
    prepare: f64,
    start: f64,
    warm_up: f64,
    stop: f64,
    checks: f64,
    postgres: f64,
    dataset: f64,
}

impl WallTime {
    fn of(r: &Report) -> Self {
        let t = |f: fn(&crate::report::ArmTimings) -> f64| {
            r.arms.iter().map(|a| f(&a.timings)).sum::<f64>()
        };
        Self {
            all: r.wall_time_s,
            load: t(|x| x.load_s),
            drain: t(|x| x.drain_s),
            clone: t(|x| x.clone_s),
            prepare: t(|x| x.prepare_s),
            start: t(|x| x.service_start_s),
            warm_up: t(|x| x.warm_up_s),
            stop: t(|x| x.stop_s),
            checks: t(|x| x.checks_s),
            postgres: r.environment.postgres_ready_s,
            dataset: r.environment.seed_s,
        }
    }

    /// What no part covers: the reports, stopping Postgres.
    fn rest(&self) -> f64 {
        (self.all
            - self.load
            - self.drain
            - self.clone
            - self.prepare
            - self.start
            - self.warm_up
            - self.stop
            - self.checks
            - self.postgres
            - self.dataset)
            .max(0.0)
    }

    fn pct(&self, x: f64) -> f64 {
        if self.all > 0.0 {
            100.0 * x / self.all
        } else {
            0.0
        }
    }

    /// One clause: the load's and the drain's shares, and the rest (set-up, checks, reports).
    fn brief(&self) -> String {
        format!(
            "load {:.0} %, queue drain {:.0} %, set-up, checks and reports {:.0} %",
            self.pct(self.load),
            self.pct(self.drain),
            self.pct(self.all - self.load - self.drain).max(0.0)
        )
    }
}

/// report.md's "The run's wall time": the split, then each arm's parts.
pub fn wall_time(r: &Report) -> String {
    let w = WallTime::of(r);
    let mut out = format!(
        "\n## The run's wall time\n\n{:.0} s in all: the load {:.0} s ({:.0} %), the queue drained after it {:.0} s ({:.0} %); Postgres ready {:.1} s, the dataset {:.1} s, clones {:.1} s, fakes and baselines {:.1} s, service starts {:.1} s, warm-ups {:.1} s, stopping the service {:.1} s, checks and recordings {:.1} s, the rest {:.1} s (the reports, stopping Postgres).\n\n| arm | clone | fakes and baselines | service start | warm-up | load | drain | stop | checks | total |\n|---|---|---|---|---|---|---|---|---|---|\n",
        w.all,
        w.load,
        w.pct(w.load),
        w.drain,
        w.pct(w.drain),
        w.postgres,
        w.dataset,
        w.clone,
        w.prepare,
        w.start,
        w.warm_up,
        w.stop,
        w.checks,
        w.rest(),
    );
    for a in &r.arms {
        let x = &a.timings;
        let _ = writeln!(
            out,
            "| `{}` | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {:.1} s |",
            a.name,
            x.clone_s,
            x.prepare_s,
            x.service_start_s,
            x.warm_up_s,
            x.load_s,
            x.drain_s,
            x.stop_s,
            x.checks_s,
            x.total_s()
        );
    }
    out
}

/// The service's p95 of an endpoint; when it reads above the client's (a figure read linearly
/// inside a histogram bucket), the bucket it lies in beside it, so the reader sees why.
pub fn service_p95(e: &super::EndpointReport) -> String {
    let Some(s) = &e.service else {
        return ms(None);
    };
    match (s.p95_ms, e.p95_ms, s.p95_bucket_ms) {
        (Some(service), Some(client), Some((lo, hi))) if service > client => format!(
            "{} (read in the service's bucket {}–{})",
            ms(Some(service)),
            ms(Some(lo)),
            ms(Some(hi))
        ),
        (p95, ..) => ms(p95),
    }
}

/// The README's results block: the table, and what it was measured on.
pub fn summary(r: &Report) -> String {
    format!(
        "Measured by `incident-lab {}` at commit `{}` on {} (Postgres `{}`), {:.0} s wall time ({}), verdict {:?}:\n\n{}{}{}",
        r.command
            .clone()
            .unwrap_or_else(|| format!("matrix {}", r.scenario.source)),
        r.environment.commit,
        r.environment.machine,
        r.environment.postgres_backend,
        r.wall_time_s,
        WallTime::of(r).brief(),
        r.verdict,
        table(r),
        chaos_summary(r),
        fleet(r)
    )
}

/// One line per arm of a chaos run: what was done, the hypothesis, the flips' times to recover
/// and degrade, and the durability counts. Empty for a run without faults, flips or hypothesis.
pub fn chaos_summary(r: &Report) -> String {
    let chaotic = |a: &crate::report::ArmReport| {
        !a.faults.is_empty() || !a.flips.is_empty() || a.hypothesis.is_some()
    };
    if !r.arms.iter().any(chaotic) {
        return String::new();
    }
    let mut out = String::from(
        "\n| arm | faults and flips | steady before | recovered after (within) | flips: time to recover / degrade (webhook) | sent / acked / applied / lost / duplicated |\n|---|---|---|---|---|---|\n",
    );
    for a in r.arms.iter().filter(|a| chaotic(a)) {
        let done: Vec<String> = a
            .faults
            .iter()
            .map(|f| format!("{} at {:.0} s", f.kind, f.from_s))
            .chain(a.flips.iter().map(|f| {
                format!(
                    "`{}` → {} at {:.0} s{}",
                    f.flag,
                    f.to,
                    f.at_s,
                    if f.made { "" } else { " (not made)" }
                )
            }))
            .collect();
        let (steady, recovered) = match &a.hypothesis {
            None => ("–".to_owned(), "–".to_owned()),
            Some(h) if h.aborted => ("**no**: stopped".to_owned(), "–".to_owned()),
            Some(h) => {
                let slowest = h
                    .recovery
                    .iter()
                    .map(|(_, t)| *t)
                    .try_fold(0.0_f64, |m, t| t.map(|t| m.max(t)));
                (
                    if h.before.holds { "yes" } else { "**no**" }.to_owned(),
                    match (slowest, h.recover_within_s) {
                        (Some(t), Some(w)) => format!(
                            "{} in {t:.0} s ({w:.0} s)",
                            if t <= w { "yes" } else { "**no**" }
                        ),
                        (Some(t), None) => format!("in {t:.0} s (not judged)"),
                        (None, _) => "**never**".to_owned(),
                    },
                )
            }
        };
        let flips: Vec<String> = a
            .flips
            .iter()
            .flat_map(|f| f.effects.iter().filter(|e| e.endpoint.contains("webhook")))
            .map(|e| {
                format!(
                    "{} / {}",
                    e.time_to_recover_s
                        .map_or("never".into(), |t| format!("{t:.0} s")),
                    e.time_to_degrade_s
                        .map_or("–".into(), |t| format!("{t:.0} s"))
                )
            })
            .collect();
        let inv = &a.invariants;
        let _ = writeln!(
            out,
            "| `{}` | {} | {steady} | {recovered} | {} | {} / {} / {} / {} / {} |",
            a.name,
            done.join(", "),
            if flips.is_empty() {
                "–".to_owned()
            } else {
                flips.join(", ")
            },
            inv.sent.map_or("–".into(), |n| n.to_string()),
            inv.acked,
            inv.applied,
            inv.lost,
            inv.duplicates
        );
    }
    out
}

/// `, N jobs failed` when the queue gave up on some `EMAIL_SENT` jobs, else nothing.
fn failed_jobs(inv: &Invariants) -> String {
    match inv.failed_jobs {
        0 => String::new(),
        n => format!(", {n} jobs failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    /// A service p95 read above the client's (linear inside a wide bucket) is shown with its
    /// bucket, so the reader sees why; at or below the client's, the figure alone.
    #[test]
    fn a_service_time_above_the_clients_names_its_bucket() {
        let mut e = fixtures::endpoint("GET /", 10_020.0, Some(2000.0));
        e.service = Some(crate::report::ServiceSide {
            requests: 100,
            p50_ms: None,
            p95_ms: Some(10_330.0),
            p95_bucket_ms: Some((9_850.0, 10_800.0)),
            status_counts: Default::default(),
            pool_wait_p95_ms: None,
            phases: vec![],
            phases_per_request: false,
        });
        assert_eq!(
            service_p95(&e),
            "10.33 s (read in the service's bucket 9.85 s–10.80 s)"
        );
        e.p95_ms = Some(10_400.0);
        assert_eq!(service_p95(&e), "10.33 s");
    }

    /// Each part of the wall time is its own figure, and what is left is what no part covers.
    #[test]
    fn the_wall_time_splits_into_load_drain_and_set_up() {
        let mut a = fixtures::arm("legacy", &[], vec![]);
        a.timings = crate::report::ArmTimings {
            clone_s: 1.0,
            prepare_s: 0.3,
            service_start_s: 0.5,
            warm_up_s: 3.0,
            load_s: 30.0,
            drain_s: 8.0,
            stop_s: 2.0,
            checks_s: 1.0,
        };
        let mut b = fixtures::arm("all-on", &[], vec![]);
        b.timings = crate::report::ArmTimings {
            clone_s: 1.0,
            service_start_s: 0.5,
            load_s: 20.0,
            drain_s: 0.0,
            ..Default::default()
        };
        let mut r = fixtures::report(vec![a, b]);
        r.wall_time_s = 100.0;
        let md = wall_time(&r);
        // 100 − (2 + 0.3 + 1 + 3 + 50 + 8 + 2 + 1) − 0.5 (Postgres) − 1.0 (dataset) = 31.2.
        assert!(
            md.contains("100 s in all: the load 50 s (50 %), the queue drained after it 8 s (8 %)"),
            "{md}"
        );
        assert!(
            md.contains("fakes and baselines 0.3 s, service starts 1.0 s, warm-ups 3.0 s, stopping the service 2.0 s, checks and recordings 1.0 s, the rest 31.2 s"),
            "{md}"
        );
        assert!(
            md.contains(
                "| `legacy` | 1.0 s | 0.3 s | 0.5 s | 3.0 s | 30.0 s | 8.0 s | 2.0 s | 1.0 s | 45.8 s |"
            ),
            "{md}"
        );
        assert!(render(&r).contains("## The run's wall time"));
        assert!(
            summary(&r).contains(
                "100 s wall time (load 50 %, queue drain 8 %, set-up, checks and reports 42 %)"
            ),
            "{}",
            summary(&r)
        );
    }
}
