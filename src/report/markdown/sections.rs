//! The sections of `report.md` after the results table, each about one concern of the run:
//! chaos (faults, flips, the steady-state hypothesis), the exactly-once effects, background
//! work, reconnections, the fleet, statement timeouts by phase, and the run's own wall time.

use std::fmt::Write;

use super::super::{ms, Invariants, Report};
use crate::model::{COUNTS_LABEL, PAGE_LABEL};

/// Exactly once, on every side effect of EMAIL_SENT: one row per arm, one column per effect,
/// each `applied/expected` with what was lost or duplicated.
pub(super) fn effects(r: &Report) -> String {
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
pub(super) fn reconnections(r: &Report) -> String {
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
pub(super) fn fleet(r: &Report) -> String {
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
pub(super) fn background(r: &Report) -> String {
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
pub(super) fn timeouts_by_phase(r: &Report) -> String {
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
pub(super) fn faults(r: &Report) -> String {
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

/// Where the run's own wall time went: the load (what the run is for), the queue drained after
/// it, and what is neither (Postgres, the dataset, clones, service starts, the rest).
pub(super) struct WallTime {
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
    pub(super) fn of(r: &Report) -> Self {
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
    pub(super) fn brief(&self) -> String {
        format!(
            "load {:.0} %, queue drain {:.0} %, set-up, checks and reports {:.0} %",
            self.pct(self.load),
            self.pct(self.drain),
            self.pct(self.all - self.load - self.drain).max(0.0)
        )
    }
}

/// report.md's "The run's wall time": the split, then each arm's parts.
pub(super) fn wall_time(r: &Report) -> String {
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

/// One line per arm of a chaos run: what was done, the hypothesis, the flips' times to recover
/// and degrade, and the durability counts. Empty for a run without faults, flips or hypothesis.
pub(super) fn chaos_summary(r: &Report) -> String {
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
pub(super) fn failed_jobs(inv: &Invariants) -> String {
    match inv.failed_jobs {
        0 => String::new(),
        n => format!(", {n} jobs failed"),
    }
}
