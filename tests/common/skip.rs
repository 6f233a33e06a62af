//! Tests that need something a machine may lack (a Docker daemon, a Chromium) run whenever it is
//! there. When it is not they report themselves skipped, by name and reason, on stderr and in
//! `target/skipped-tests.txt` (which `.ci/run` prints) — and fail instead when the need's
//! `INCIDENT_LAB_REQUIRE_*` variable is set, as CI sets it where the thing is installed, so a
//! broken install never passes as a skip.

use std::io::Write;
use std::path::Path;

/// Something a test needs, and the variable that makes it required.
#[derive(Debug)]
pub struct Need {
    pub what: &'static str,
    pub required_by: &'static str,
}

pub const DOCKER: Need = Need {
    what: "Docker",
    required_by: "INCIDENT_LAB_REQUIRE_DOCKER",
};

pub const AUTOGROUP: Need = Need {
    what: "the kernel's session autogroups",
    required_by: "INCIDENT_LAB_REQUIRE_AUTOGROUP",
};

pub const BROWSER: Need = Need {
    what: "Chromium",
    required_by: "INCIDENT_LAB_REQUIRE_BROWSER",
};

/// `Some(())` when the test can go on; `None` after reporting `test` skipped for why `ready`
/// is not. Panics instead of skipping when the need is required.
pub fn or_skip(test: &str, need: &Need, ready: Result<(), String>) -> Option<()> {
    let required = std::env::var_os(need.required_by).is_some();
    let Some(line) = skip_line(test, need, ready, required) else {
        return Some(());
    };
    eprintln!("{line}");
    let record = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
    {
        let _ = writeln!(f, "{line}");
    }
    None
}

/// The line that reports `test` skipped, or `None` when it can run; panics when the need is
/// `required` and not `ready`.
pub fn skip_line(
    test: &str,
    need: &Need,
    ready: Result<(), String>,
    required: bool,
) -> Option<String> {
    let why = ready.err()?;
    if required {
        panic!(
            "{test}: {} is required here ({}) but {why}",
            need.what, need.required_by
        );
    }
    Some(format!("skipped: {test}: {why}"))
}
