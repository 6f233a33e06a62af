//! The chaos timeline's checks: the steady-state hypothesis around the faults and flips, and
//! faults and flips added on the command line (`--fault`, `--flip`) as `k=v` lists.

use std::time::Duration;

use super::faults::fault;
use super::file::{FaultSpec, FlipSpec, HypothesisSpec};
use crate::model::{Flip, Hypothesis, Scenario, TimedFault};

/// The hypothesis over these faults and flips: "before" ends at the first, "after" starts
/// when the last ends.
pub(super) fn hypothesis(
    spec: &HypothesisSpec,
    faults: &[TimedFault],
    flips: &[Flip],
    duration: Duration,
) -> Result<Hypothesis, String> {
    let (recover_within, max_failed_pct) = (spec.recover_within, spec.max_failed_pct);
    let fmt = incident_wire::duration::format;
    let starts = faults
        .iter()
        .map(|f| f.at)
        .chain(flips.iter().map(|f| f.at));
    let ends = faults
        .iter()
        .map(|f| f.until)
        .chain(flips.iter().map(|f| f.at));
    let (Some(disrupted_at), Some(settled_at)) = (starts.min(), ends.max()) else {
        return Err(
            "needs a [[faults]] or [[flips]] entry: there is nothing to be steady before and after"
                .into(),
        );
    };
    let disrupted_at = match spec.steady_until {
        Some(u) if u > disrupted_at => {
            return Err(format!(
                "field `steady_until` = {} comes after the first fault or flip ({})",
                fmt(u),
                fmt(disrupted_at)
            ))
        }
        Some(u) => u,
        None => disrupted_at,
    };
    if disrupted_at < Duration::from_secs(2) {
        return Err(format!(
            "the steady stretch ends at {}: at least 2s of load are needed to judge the steady state",
            fmt(disrupted_at)
        ));
    }
    let max_failed_pct = max_failed_pct.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&max_failed_pct) {
        return Err(format!(
            "field `max_failed_pct` = {max_failed_pct} must be a percentage (0 to 100)"
        ));
    }
    if let Some(r) = recover_within {
        if settled_at + r > duration {
            return Err(format!(
                "field `recover_within` = {}: the last fault or flip ends at {}, so recovery would be judged past the run's end ({})",
                fmt(r),
                fmt(settled_at),
                fmt(duration)
            ));
        }
    }
    Ok(Hypothesis {
        disrupted_at,
        settled_at,
        recover_within,
        max_failed_pct,
        steady_until: spec.steady_until,
    })
}

/// `k=v,k=v` from the command line as TOML lines: numbers and booleans as they are, other
/// values quoted; dotted keys (`knobs.errors.server_error_pct=50`) as TOML dotted keys.
fn cli_toml(spec: &str) -> Result<String, String> {
    let mut lines = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        let (k, v) = (k.trim(), v.trim());
        let bare = v.parse::<f64>().is_ok() || v == "true" || v == "false";
        let value = if bare {
            v.to_owned()
        } else {
            toml::Value::String(v.to_owned()).to_string()
        };
        lines.push(format!("{k} = {value}"));
    }
    Ok(lines.join("\n"))
}

impl Scenario {
    /// Adds faults (`--fault at=5s,for=8s,kind=latency,latency=40ms`) and flips (`--flip
    /// at=10s,flag=INBOXXIA_EMAIL_SENT_ASYNC,to=true`) given on the command line, checked as
    /// the file's are; the hypothesis (if any) is measured around all of them.
    pub fn add_timeline(&mut self, faults: &[String], flips: &[String]) -> Result<(), String> {
        for spec in faults {
            let f: FaultSpec = cli_toml(spec)
                .and_then(|t| toml::from_str(&t).map_err(|e| e.message().to_owned()))
                .map_err(|m| format!("--fault {spec:?}: {m}"))?;
            self.faults.push(
                fault(&f, self.duration, &self.providers)
                    .map_err(|m| format!("--fault {spec:?}: {m}"))?,
            );
        }
        for spec in flips {
            let f: FlipSpec = cli_toml(spec)
                .and_then(|t| toml::from_str(&t).map_err(|e| e.message().to_owned()))
                .map_err(|m| format!("--flip {spec:?}: {m}"))?;
            if f.at >= self.duration {
                return Err(format!(
                    "--flip {spec:?}: `at` must fall within the run ({})",
                    incident_wire::duration::format(self.duration)
                ));
            }
            self.flips.push(Flip {
                at: f.at,
                flag: f.flag.0,
                to: f.to,
                validate: f.validate,
            });
        }
        self.flips.sort_by_key(|f| f.at);
        if let Some(h) = self.hypothesis {
            let spec = HypothesisSpec {
                steady_until: h.steady_until,
                recover_within: h.recover_within,
                max_failed_pct: Some(h.max_failed_pct),
            };
            self.hypothesis = Some(
                hypothesis(&spec, &self.faults, &self.flips, self.duration)
                    .map_err(|m| format!("[hypothesis] with the command line's faults: {m}"))?,
            );
        }
        Ok(())
    }
}
