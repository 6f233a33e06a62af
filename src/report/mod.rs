//! The run's results and how they are written: `report.json` (its versioned schema is
//! [`crate::model::report`], re-exported here; documented in docs/report-schema.md), `report.md`
//! (a CI step summary), `junit.xml` (one testcase per arm × budget),
//! `report.html` (self-contained, inline SVG charts, no external URL); [`browser`] opens a page
//! in headless Chromium to check it and take its picture.

pub mod browser;
#[cfg(test)]
pub mod fixtures;
pub mod html;
pub mod junit;
pub mod markdown;

pub use crate::model::report::*;

use std::path::Path;

use anyhow::Context;

impl Report {
    /// Writes every output into `dir`.
    pub fn write_all(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("report.json", serde_json::to_string_pretty(self)?)?;
        write("report.md", markdown::render(self))?;
        write("junit.xml", junit::render(self))?;
        write("report.html", html::render(self))?;
        Ok(())
    }
}

/// Formats an optional millisecond figure.
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}
