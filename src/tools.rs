//! External programs the harness runs beside its own (Chromium, wrk), found on PATH.

use std::path::PathBuf;

/// The first of `names` found as a file in a directory of PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}
