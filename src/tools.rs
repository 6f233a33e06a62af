//! External programs the harness runs beside its own (Chromium, wrk, pgbench), found on PATH.

use std::path::PathBuf;

/// The first of `names` found as a file in a directory of PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A PostgreSQL client program: on PATH, else in Debian's `/usr/lib/postgresql/*/bin` (the
/// last by name).
pub fn postgres_tool(name: &str) -> Option<PathBuf> {
    on_path(&[name]).or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .filter(|p| p.is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}
