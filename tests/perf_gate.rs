//! The perf gate a pull request runs: `docs/ci/perf-gate.yml` calls `scripts/perf-gate` in a
//! shell that fails a pipe (so a regression is never tee's 0), with no step that hides a
//! failure; a baseline that fails to run is an error, not "no baseline". (CI runs the script
//! itself end to end, passing and failing: `scripts/perf-gate-check`.)

use std::process::Command;

const WORKFLOW: &str = include_str!("../docs/ci/perf-gate.yml");

/// The workflow's steps run under `bash -eo pipefail` and call the script CI tests; nothing
/// in it turns a failure into a pass.
#[test]
fn the_workflow_runs_the_tested_script_in_a_shell_that_fails_a_pipe() {
    assert!(
        WORKFLOW.contains("defaults:\n  run:\n    # bash -eo pipefail: a step whose command fails before a pipe into tee fails.\n    shell: bash"),
        "no job-wide `shell: bash`"
    );
    assert!(WORKFLOW.contains(
        "scripts/perf-gate ../base/target/release/incident-lab target/release/incident-lab"
    ));
    for line in WORKFLOW.lines().filter(|l| l.contains("|| true")) {
        assert!(
            line.contains("cat "),
            "only the step summary's cats may tolerate a missing file: {line}"
        );
    }
    for needed in [
        "permissions:\n  contents: read",
        "concurrency:",
        "cancel-in-progress: true",
        "RUST_TOOLCHAIN: \"1.95.0\"",
        "uses: actions/cache@v4",
    ] {
        assert!(WORKFLOW.contains(needed), "the workflow lacks {needed:?}");
    }
}

/// A baseline whose runs fail to start (here: a binary that only exits 1) stops the gate with
/// exit 3 and says so, before any comparison.
#[test]
fn a_baseline_that_fails_to_run_is_an_error_not_a_pass() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/perf-gate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["/bin/false", env!("CARGO_BIN_EXE_incident-lab")])
        .args(["--repeats", "1", "--out", &out.path().display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{text}");
    assert!(
        text.contains("the base side's run 1 failed to run (exit 1"),
        "{text}"
    );
    assert!(!out.path().join("compare.md").exists());
}
