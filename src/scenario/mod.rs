//! Scenario files (`scenarios/*.toml`): traffic, phases, dataset, Postgres and service limits,
//! provider behaviour, budgets, and the arms with what each must show. Parsed once into typed
//! values; every error names the file, line, field and value, and unknown keys or flag names
//! are errors — nothing is silently ignored.

mod checks;
mod faults;
mod file;
mod timeline;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::model::Scenario;
use checks::Doc;
use file::{take_fleet_keys, ScenarioFile};
use timeline::hypothesis;

/// A scenario error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// The offending line, as written.
    pub source_line: Option<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            _ => write!(f, "{}: {}", self.file, self.message)?,
        }
        match &self.source_line {
            Some(text) => write!(f, "\n  | {text}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
            source_line: None,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let doc = Doc { file, text };
        let (without_platform, platform_keys) = take_fleet_keys(text);
        let raw: ScenarioFile = toml::from_str(&without_platform)
            .map_err(|e| doc.at(e.span(), e.message().to_owned()))?;
        let platform = checks::platform(&doc, &platform_keys)?;
        let duration = raw.duration;
        if duration.is_zero() {
            return Err(doc.at(None, "field `duration` must be more than 0s".into()));
        }
        if let Some(old) = &raw.max_in_flight {
            return Err(doc.at(
                Some(old.span()),
                "field `max_in_flight` is per stream now: set it in each [[streams]] that needs more than its default (peak rate × client_timeout)".into(),
            ));
        }
        let client_timeout = raw.client_timeout.unwrap_or(Duration::from_secs(90));
        let max_late_pct = raw.max_late_pct.unwrap_or(1.0);
        if !(0.0..=100.0).contains(&max_late_pct) {
            return Err(doc.at(
                None,
                format!("field `max_late_pct` = {max_late_pct} must be 0–100"),
            ));
        }
        let phases = checks::phases(&doc, &raw.phases, duration, &raw.incident_phase)?;
        let reconnect = checks::reconnect(&doc, raw.reconnect.as_ref(), duration)?;
        let faults = checks::faults(
            &doc,
            &raw.faults,
            duration,
            &raw.providers,
            raw.postgres.get_ref().durable,
        )?;
        let flips = checks::flips(&doc, &raw.flips, duration)?;
        let hypothesis = match &raw.hypothesis {
            None => None,
            Some(h) => Some(
                hypothesis(h.get_ref(), &faults, &flips, duration)
                    .map_err(|m| doc.at(Some(h.span()), format!("[hypothesis] {m}")))?,
            ),
        };
        let streams = checks::streams(&doc, &raw.streams, duration, client_timeout)?;
        let scale = checks::scale(&doc, &raw.dataset)?;
        let (fleet, pooler) = checks::fleet(&doc, &raw, platform)?;
        let postgres = checks::postgres(&doc, &raw.postgres)?;
        let arms = checks::arms(&doc, raw.arms.as_ref())?;
        let abort = checks::abort(&doc, raw.abort.as_ref(), duration)?;

        Ok(Self {
            name: raw.name,
            description: raw.description,
            source: file.to_owned(),
            duration,
            seed: raw.seed,
            poisson: raw.poisson,
            client_timeout,
            late_after: raw.late_after.unwrap_or(Duration::from_millis(50)),
            max_late_pct,
            drain: raw.drain.unwrap_or(Duration::from_secs(30)),
            incident_phase: raw.incident_phase,
            scale,
            postgres,
            service: raw.service,
            fleet,
            pooler,
            providers: raw.providers,
            reconnect,
            phases,
            streams,
            budgets: raw.budgets,
            arms,
            observed: raw.observed,
            faults,
            flips,
            hypothesis,
            abort,
            access_log: false,
        })
    }
}
