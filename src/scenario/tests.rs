//! Scenario mistakes, read in-process: each names the file, the line where it is written and
//! the field or value, and nothing else is accepted in its place.

use super::{Scenario, ScenarioError};
use crate::model::{Fault, FaultKind};

const SMOKE: &str = include_str!("../../scenarios/smoke.toml");
const CHAOS: &str = include_str!("../../scenarios/chaos-db-latency.toml");
const ROLLOUT: &str = include_str!("../../scenarios/rollout-mid-burst.toml");

/// `base` with the first `from` replaced by `to`, parsed as `bad.toml`.
fn edited(base: &str, from: &str, to: &str) -> Result<Scenario, ScenarioError> {
    assert!(base.contains(from), "the base has no {from:?}");
    Scenario::parse("bad.toml", &base.replacen(from, to, 1))
}

/// The 1-based line `needle` starts on in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or_else(|| panic!("no {needle:?}"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn the_shipped_scenarios_parse() {
    for (name, text) in [("smoke", SMOKE), ("chaos", CHAOS), ("rollout", ROLLOUT)] {
        Scenario::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn each_mistake_names_its_line_and_field() {
    // (replace, with, the text the error's line holds, what the message names)
    let cases = [
        (
            "seed = 53",
            "seed = 53\nmax_inflight = 3",
            "max_inflight = 3",
            "max_inflight",
        ),
        (
            "seed = 53",
            "seed = 53\nmax_in_flight = 200",
            "max_in_flight = 200",
            "per stream",
        ),
        (
            "pool_max = 10",
            "pool_max = \"ten\"",
            "pool_max = \"ten\"",
            "pool_max",
        ),
        (
            "request_timeout = \"3s\"",
            "request_timeout = \"3\"",
            "request_timeout = \"3\"",
            "ms, s, m or h",
        ),
        (
            "cpus = 2.0",
            "cpus = 0.0",
            "[postgres]",
            "field `cpus` = 0 must be a number of cores over 0",
        ),
        (
            "arrival = { kind = \"constant\", rate = 3.0 }",
            "arrival = { kind = \"constant\", rat = 3.0 }",
            "rat = 3.0",
            "rat",
        ),
        (
            "UNIPILE_HEALTH_GATE = true }",
            "UNIPILE_HEALTHGATE = true }",
            "UNIPILE_HEALTHGATE",
            "unknown flag \"UNIPILE_HEALTHGATE\"",
        ),
        (
            "UNIPILE_HEALTH_GATE = true }",
            "LEGACY_LEDGER_TX = true }",
            "LEGACY_LEDGER_TX",
            "unknown flag \"LEGACY_LEDGER_TX\"; flags are INBOXXIA_EMAIL_SENT_ASYNC",
        ),
        (
            "signed_out_pct = 10.0",
            "signed_out_pct = 10.0\nredeliver = { share = 2.0, after = \"1s\" }",
            "[[streams]]",
            "field `redeliver.share` is for webhooks only",
        ),
        (
            "concurrent_duplicates = 1.0",
            "concurrent_duplicates = 120.0",
            "[[streams]]",
            "field `concurrent_duplicates` = 120 must be 0–100 (%)",
        ),
        (
            "[budgets.\"GET /\"]",
            "[budgets.\"GET /inbox\"]",
            "[budgets.\"GET /inbox\"]",
            "unknown endpoint \"GET /inbox\"",
        ),
        (
            "duration = \"20s\"",
            "duration = \"1m30\"",
            "duration = \"1m30\"",
            "duration",
        ),
    ];
    for (from, to, on_line, says) in cases {
        let text = SMOKE.replacen(from, to, 1);
        let err = edited(SMOKE, from, to).unwrap_err();
        assert_eq!(err.file, "bad.toml");
        assert!(err.to_string().contains(says), "{to:?}: {err}");
        let line = err
            .line
            .unwrap_or_else(|| panic!("{to:?}: no line in {err}"));
        let written = text.lines().nth(line - 1).unwrap();
        if on_line.starts_with('[') {
            // A table-level check points at the table's header (or the entry's first line).
            let first = line_of(&text, on_line);
            assert!(
                line >= first,
                "{to:?}: line {line} is before {on_line:?} ({first}): {err}"
            );
        } else {
            assert!(
                written.contains(on_line),
                "{to:?}: line {line} is {written:?}: {err}"
            );
        }
        assert!(
            err.to_string().starts_with(&format!("bad.toml:{line}")),
            "{err}"
        );
    }
}

#[test]
fn durations_are_read_as_sums_of_units() {
    let s = edited(SMOKE, "duration = \"20s\"", "duration = \"1m 30s\"").unwrap();
    assert_eq!(s.duration.as_secs(), 90);
}

#[test]
fn a_fault_takes_its_own_parameters_and_no_other() {
    let cases = [
        ("kind = \"latency\"\nat = \"1s\"\nfor = \"2s\"", "kind \"latency\" needs field `latency`"),
        (
            "kind = \"hang\"\nat = \"1s\"\nfor = \"2s\"\nlatency = \"5ms\"",
            "kind \"hang\": field `latency` is not one of its parameters (it takes none)",
        ),
        ("kind = \"reset\"\nat = \"1s\"\nfor = \"2s\"", "kind \"reset\" is instant: it takes no `for`"),
        (
            "kind = \"refuse\"\nat = \"25s\"\nfor = \"2s\"",
            "field `at` = 25s must fall within the run (20s)",
        ),
        ("kind = \"flood\"\nat = \"1s\"", "unknown variant `flood`"),
        ("kind = \"restart\"\nat = \"1s\"", "kind \"restart\" needs `durable = true` in [postgres]"),
        (
            "kind = \"lock\"\nat = \"1s\"\nfor = \"2s\"\ntable = \"messages\"\nmode = \"very exclusive\"",
            "field `mode` = \"VERY EXCLUSIVE\" is not a lock mode",
        ),
        (
            "kind = \"lock\"\nat = \"1s\"\nfor = \"2s\"\ntable = \"messages; DROP TABLE leads\"",
            "must be a table name",
        ),
        ("kind = \"cpu\"\nat = \"1s\"\nfor = \"2s\"\nsessions = 0", "field `sessions` = 0 must be 1 to 64"),
        (
            "kind = \"bandwidth\"\nat = \"1s\"\nfor = \"2s\"\nbandwidth = 0",
            "kind \"bandwidth\" needs field `bandwidth`",
        ),
        (
            "kind = \"provider\"\nat = \"1s\"\nfor = \"2s\"\nprovider = \"ghl\"\nknobs = { errors = { server_errors = 50.0 } }",
            "unknown field `server_errors`",
        ),
        (
            "kind = \"provider\"\nat = \"1s\"\nfor = \"2s\"\nknobs = { truncation_pct = 50.0 }",
            "kind \"provider\" needs field `provider`",
        ),
    ];
    for (fault, says) in cases {
        let text = format!("{CHAOS}\n[[faults]]\n{fault}\n");
        let err = Scenario::parse("bad.toml", &text).unwrap_err();
        assert!(err.message.contains(says), "{fault}: {err}");
        // The entry's own lines, not the file's start.
        let entry = text.rfind("[[faults]]").unwrap();
        let first = text[..entry].matches('\n').count() + 1;
        assert!(err.line.is_some_and(|l| l >= first), "{fault}: {err}");
    }
}

#[test]
fn a_fault_carries_the_parameters_of_its_kind() {
    let text = format!(
        "{CHAOS}\n[[faults]]\nkind = \"lock\"\nat = \"3s\"\nfor = \"2s\"\ntable = \"leads\"\nmode = \"share\"\n\n[[faults]]\nkind = \"cpu\"\nat = \"3s\"\nfor = \"2s\"\n"
    );
    let s = Scenario::parse("ok.toml", &text).unwrap();
    let lock = s
        .faults
        .iter()
        .find(|f| f.kind() == FaultKind::Lock)
        .unwrap();
    assert_eq!(
        lock.fault,
        Fault::Lock {
            table: "leads".into(),
            mode: "SHARE".into()
        }
    );
    let cpu = s
        .faults
        .iter()
        .find(|f| f.kind() == FaultKind::Cpu)
        .unwrap();
    assert_eq!(cpu.fault, Fault::Cpu { sessions: 2 }, "the default count");
    assert_eq!((cpu.at.as_secs(), cpu.until.as_secs()), (3, 5));
}

#[test]
fn flips_and_the_hypothesis_are_checked_where_written() {
    let cases = [
        (
            "flag = \"INBOXXIA_EMAIL_SENT_ASYNC\"",
            "flag = \"EMAIL_ASYNC\"",
            "unknown flag \"EMAIL_ASYNC\"",
        ),
        ("at = \"8s\"", "at = \"30s\"", "[[flips]] field `at` = 30s"),
        (
            "steady_until = \"5s\"",
            "steady_until = \"9s\"",
            "field `steady_until` = 9s comes after the first fault or flip (8s)",
        ),
        (
            "recover_within = \"5s\"",
            "recover_within = \"15s\"",
            "recovery would be judged past the run's end",
        ),
        (
            "validate = [\"queue_writes\"]",
            "validate = [\"staging\"]",
            "unknown variant `staging`",
        ),
    ];
    for (from, to, says) in cases {
        let err = edited(ROLLOUT, from, to).unwrap_err();
        assert!(err.message.contains(says), "{to:?}: {err}");
        assert!(err.line.is_some(), "{to:?}: {err}");
    }
}

#[test]
fn a_hypothesis_needs_something_to_be_steady_around() {
    let text = format!("{SMOKE}\n[hypothesis]\nrecover_within = \"2s\"\n");
    let err = Scenario::parse("bare.toml", &text).unwrap_err();
    assert!(
        err.message
            .contains("needs a [[faults]] or [[flips]] entry"),
        "{err}"
    );
    assert_eq!(err.line, Some(line_of(&text, "[hypothesis]")));
}

#[test]
fn command_line_faults_and_flips_are_checked_as_the_files_are() {
    let mut s = Scenario::parse("chaos.toml", CHAOS).unwrap();
    let before = s.faults.len();
    s.add_timeline(&["at=2s,for=1s,kind=latency,latency=40ms".into()], &[])
        .unwrap();
    assert_eq!(s.faults.len(), before + 1);
    assert_eq!(
        s.faults.last().unwrap().fault.link().latency.as_millis(),
        40
    );
    let err = s
        .add_timeline(&["at=2s,for=1s,kind=cpu,sessions=100".into()], &[])
        .unwrap_err();
    assert!(err.contains("--fault") && err.contains("1 to 64"), "{err}");
    let err = s
        .add_timeline(&[], &["at=2s,flag=LEGACY_AUTH_NOISE,to=true".into()])
        .unwrap_err();
    assert!(
        err.contains("--flip") && err.contains("unknown flag"),
        "{err}"
    );
}

#[test]
fn an_abort_threshold_is_read_and_checked() {
    let ok = Scenario::parse(
        "ok.toml",
        &format!(
            "{SMOKE}\n[abort]\nfailed_share = \"20%\"\np95_over_budget = 3.0\nfor = \"10s\"\n"
        ),
    )
    .unwrap();
    let abort = ok.abort.unwrap();
    assert_eq!(
        (
            abort.failed_pct,
            abort.p95_over_budget,
            abort.lasting.as_secs()
        ),
        (Some(20.0), Some(3.0), 10)
    );
    for (body, says) in [
        (
            "failed_share = \"120%\"\nfor = \"5s\"",
            "`failed_share` = 120% must be over 0",
        ),
        ("failed_share = \"lots\"\nfor = \"5s\"", "is not a share"),
        ("for = \"5s\"", "needs `failed_share` or `p95_over_budget`"),
        (
            "p95_over_budget = 0.5\nfor = \"5s\"",
            "must be a multiple of the budget over 1",
        ),
        ("failed_share = 20.0\nfor = \"0s\"", "must be at least 1s"),
        (
            "failed_share = 20.0\nfor = \"5s\"\nwhen = 3",
            "unknown field `when`",
        ),
    ] {
        let text = format!("{SMOKE}\n[abort]\n{body}\n");
        let err = Scenario::parse("bad.toml", &text).unwrap_err();
        assert!(err.to_string().contains(says), "{body}: {err}");
        assert!(
            err.line.is_some_and(|l| l >= line_of(&text, "[abort]")),
            "{err}"
        );
    }
}
