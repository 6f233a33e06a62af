//! Scenario files for the tests: the shipped ones, and the smoke scenario cut down and edited.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use super::incident_lab;

/// A process's stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The endpoint `name` of a report's arm.
pub fn endpoint<'a>(arm: &'a Value, name: &str) -> &'a Value {
    arm["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
}

/// The arm `name` of a report.
pub fn arm<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no arm {name}"))
}

/// The path of a shipped scenario.
pub fn scenario_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
        .display()
        .to_string()
}

/// `incident-lab matrix PATH --postgres local --out OUT`.
pub fn run_matrix(path: &Path, out: &Path) -> Output {
    run_matrix_with(path, out, &["--postgres", "local"])
}

/// `incident-lab matrix PATH --out OUT EXTRA…`.
pub fn run_matrix_with(path: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "matrix",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    incident_lab(&args)
}

/// Writes `text` as `dir/name`.
pub fn write_scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `text` with `from` replaced by `to`; panics when `from` is not there, so an edit never
/// silently does nothing when the scenario's text drifts.
pub fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the scenario no longer contains {from:?}"
    );
    text.replacen(from, to, 1)
}

/// The smoke scenario cut down to one fixed arm, with `edit` applied to its text.
pub fn tiny_scenario(edit: impl Fn(String) -> String) -> String {
    let base = std::fs::read_to_string(scenario_path("smoke.toml")).unwrap();
    let arms_at = base.find("[[arms]]").unwrap();
    let mut s = base[..arms_at].to_owned();
    s = swap(&s, "duration = \"20s\"", "duration = \"6s\"");
    s = swap(
        &s,
        "from = \"5s\"\nto = \"13s\"",
        "from = \"2s\"\nto = \"4s\"",
    );
    s = swap(
        &s,
        "from = \"13s\"\nto = \"20s\"",
        "from = \"4s\"\nto = \"6s\"",
    );
    s = swap(&s, "to = \"5s\"\n", "to = \"2s\"\n");
    s = swap(
        &s,
        "rate = 80.0, from = \"5s\", to = \"13s\"",
        "rate = 20.0, from = \"2s\", to = \"4s\"",
    );
    s = swap(&s, "at = \"6s\"", "at = \"3s\"");
    s.push_str("[[arms]]\nname = \"all-on\"\nflags = { INBOXXIA_EMAIL_SENT_ASYNC = true, INBOX_COUNTS_CACHE_FALLBACK = true, UNIPILE_HEALTH_GATE = true }\nexpect = \"fixed\"\n");
    edit(s)
}
