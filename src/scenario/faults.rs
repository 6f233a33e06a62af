//! `[[faults]]` entries (and `--fault`) checked into [`TimedFault`]s: each kind's parameters
//! present and no other, within the run; a provider storm's knobs merged over the scenario's.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_providers::{Knobs, Provider};

use super::file::FaultSpec;
use crate::model::{Fault, FaultKind, TimedFault, LOCK_MODES};

/// A `[[faults]]` entry checked: its kind's parameters present, no other, within the run.
pub(super) fn fault(
    f: &FaultSpec,
    duration: Duration,
    providers: &BTreeMap<Provider, Knobs>,
) -> Result<TimedFault, String> {
    let kind = f.kind.name();
    let fmt = incident_wire::duration::format;
    let given = [
        ("latency", f.latency.is_some()),
        ("jitter", f.jitter.is_some()),
        ("bandwidth", f.bandwidth.is_some()),
        ("delay", f.delay.is_some()),
        ("table", f.table.is_some()),
        ("mode", f.mode.is_some()),
        ("sessions", f.sessions.is_some()),
        ("provider", f.provider.is_some()),
        ("knobs", f.knobs.is_some()),
    ];
    let allowed: &[&str] = match f.kind {
        FaultKind::Latency => &["latency", "jitter"],
        FaultKind::Bandwidth => &["bandwidth"],
        FaultKind::SlowConnect => &["delay"],
        FaultKind::Lock => &["table", "mode"],
        FaultKind::Cpu => &["sessions"],
        FaultKind::Provider => &["provider", "knobs"],
        FaultKind::Hang
        | FaultKind::Refuse
        | FaultKind::Reset
        | FaultKind::Pause
        | FaultKind::Restart
        | FaultKind::Kill => &[],
    };
    if let Some((extra, _)) = given.iter().find(|g| g.1 && !allowed.contains(&g.0)) {
        let takes = if allowed.is_empty() {
            "it takes none".to_string()
        } else {
            format!("it takes {}", allowed.join(", "))
        };
        return Err(format!(
            "[[faults]] kind {kind:?}: field `{extra}` is not one of its parameters ({takes})"
        ));
    }
    let need = |name: &str| format!("[[faults]] kind {kind:?} needs field `{name}`");
    let fault = match f.kind {
        FaultKind::Latency => Fault::Latency {
            latency: f.latency.ok_or_else(|| need("latency"))?,
            jitter: f.jitter.unwrap_or_default(),
        },
        FaultKind::Bandwidth => Fault::Bandwidth {
            bytes_per_s: f
                .bandwidth
                .filter(|b| *b > 0)
                .ok_or_else(|| need("bandwidth"))?,
        },
        FaultKind::SlowConnect => Fault::SlowConnect {
            delay: f.delay.ok_or_else(|| need("delay"))?,
        },
        FaultKind::Hang => Fault::Hang,
        FaultKind::Refuse => Fault::Refuse,
        FaultKind::Reset => Fault::Reset,
        FaultKind::Pause => Fault::Pause,
        FaultKind::Restart => Fault::Restart,
        FaultKind::Kill => Fault::Kill,
        FaultKind::Lock => {
            let table = f.table.clone().ok_or_else(|| need("table"))?;
            let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
            if table.is_empty() || !table.chars().all(ident) {
                return Err(format!(
                    "[[faults]] kind \"lock\": field `table` = {table:?} must be a table name (lowercase letters, digits, _)"
                ));
            }
            let mode = f
                .mode
                .as_deref()
                .unwrap_or("ACCESS EXCLUSIVE")
                .to_ascii_uppercase();
            if !LOCK_MODES.contains(&mode.as_str()) {
                return Err(format!(
                    "[[faults]] kind \"lock\": field `mode` = {mode:?} is not a lock mode ({})",
                    LOCK_MODES.join(", ")
                ));
            }
            Fault::Lock { table, mode }
        }
        FaultKind::Cpu => {
            let sessions = f.sessions.unwrap_or(2);
            if !(1..=64).contains(&sessions) {
                return Err(format!(
                    "[[faults]] kind \"cpu\": field `sessions` = {sessions} must be 1 to 64"
                ));
            }
            Fault::Cpu { sessions }
        }
        FaultKind::Provider => {
            let provider = f.provider.ok_or_else(|| need("provider"))?;
            let over = f.knobs.as_ref().ok_or_else(|| need("knobs"))?;
            let base = providers.get(&provider).cloned().unwrap_or_default();
            Fault::Provider {
                provider,
                knobs: storm_knobs(&base, over)?,
            }
        }
    };
    if f.at >= duration {
        return Err(format!(
            "[[faults]] field `at` = {} must fall within the run ({})",
            fmt(f.at),
            fmt(duration)
        ));
    }
    let until = match (f.kind, f.lasts) {
        (k, Some(_)) if k.instant() => {
            return Err(format!(
                "[[faults]] kind {kind:?} is instant: it takes no `for`"
            ))
        }
        (k, None) if k.instant() => f.at,
        (FaultKind::Kill, None) => f.at,
        (_, None) => {
            return Err(format!(
                "[[faults]] kind {kind:?} needs field `for` (how long it lasts)"
            ))
        }
        (FaultKind::Kill, Some(d)) => (f.at + d).min(duration),
        (_, Some(d)) if d.is_zero() => {
            return Err("[[faults]] field `for` must be longer than 0".into())
        }
        (_, Some(d)) => (f.at + d).min(duration),
    };
    Ok(TimedFault {
        at: f.at,
        until,
        fault,
    })
}

/// A provider fault's knobs: the scenario's own for that provider with the fault's written
/// over them (tables merged key by key), checked as `[providers.*]` is.
fn storm_knobs(base: &Knobs, over: &toml::Value) -> Result<Knobs, String> {
    fn merge(into: &mut toml::Value, from: &toml::Value) {
        match (into, from) {
            (toml::Value::Table(a), toml::Value::Table(b)) => {
                for (k, v) in b {
                    match a.get_mut(k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            a.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }
    if !over.is_table() {
        return Err(
            "[[faults]] kind \"provider\": field `knobs` must be a table, e.g. { errors = { server_error_pct = 50.0 } }"
                .into(),
        );
    }
    let mut value =
        toml::Value::try_from(base).map_err(|e| format!("[[faults]] the provider's knobs: {e}"))?;
    merge(&mut value, over);
    value.try_into::<Knobs>().map_err(|e| {
        format!(
            "[[faults]] kind \"provider\": field `knobs`: {}",
            e.message()
        )
    })
}
