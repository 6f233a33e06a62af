//! The scenario file as written: the serde shapes of its tables, before validation, and the
//! `[service]` keys that belong to the platform.

use std::collections::BTreeMap;
use std::time::Duration;

use fake_providers::{Knobs, Provider};
use inbox_service::config::Limits;
use inbox_service::Flag;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::model::{
    Budget, EndpointName, Expect, FaultKind, FlipValidation, Observed, PgSettings, Phase,
    PoolerSpec, Reconnect, StreamSpec,
};

/// A flag an arm or a flip may set: one of [`Flag::SETTABLE`] (the legacy switches go
/// together, as an arm's `legacy = true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SettableFlag(pub Flag);

impl<'de> Deserialize<'de> for SettableFlag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match Flag::SETTABLE.into_iter().find(|f| f.name() == name) {
            Some(f) => Ok(SettableFlag(f)),
            None => Err(serde::de::Error::custom(format!(
                "unknown flag {name:?}; flags are {}",
                Flag::names(&Flag::SETTABLE)
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DatasetSpec {
    /// `smoke` or `default`; the fields below override it.
    #[serde(default = "default_scale")]
    pub scale: String,
    pub workspaces: Option<u32>,
    pub leads: Option<u32>,
    pub messages: Option<u64>,
    pub disconnected_pct: Option<u8>,
    pub followups_pct: Option<u8>,
}

fn default_scale() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArmSpec {
    pub name: String,
    #[serde(default)]
    pub flags: BTreeMap<SettableFlag, bool>,
    /// Also switch the unflagged fixes to their legacy behaviour (the pre-Phase-53 world).
    #[serde(default)]
    pub legacy: bool,
    pub expect: Expect,
}

/// The keys of `[service]` that are the platform's, not the service's: how many instances run.
const FLEET_KEYS: [&str; 2] = ["instances", "autoscale"];

/// Takes `[service]`'s `instances` and `autoscale` lines out of `text` (blanked, so every other
/// line and column stays where it was, and the service's own limits keep refusing unknown
/// keys): `(text without them, [(key, value as written, byte offset of its line)])`.
pub(super) fn take_fleet_keys(text: &str) -> (String, Vec<(&'static str, String, usize)>) {
    let mut out = String::with_capacity(text.len());
    let mut taken = Vec::new();
    let mut in_service = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let header = trimmed.split('#').next().unwrap_or_default().trim_end();
            in_service = header == "[service]";
        }
        let key = trimmed.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        match key {
            Some((k, v)) if in_service => match FLEET_KEYS.iter().find(|f| **f == k) {
                Some(f) => {
                    taken.push((*f, v.to_owned(), offset));
                    out.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
                }
                None => out.push_str(line),
            },
            _ => out.push_str(line),
        }
        offset += line.len();
    }
    (out, taken)
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScenarioFile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(with = "incident_wire::duration")]
    pub(super) duration: Duration,
    #[serde(default = "default_seed")]
    pub(super) seed: u64,
    #[serde(default = "default_true")]
    pub(super) poisson: bool,
    /// Moved to each stream; refused here with a message saying so.
    pub(super) max_in_flight: Option<Spanned<toml::Value>>,
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) client_timeout: Option<Duration>,
    /// A send that starts later than this after its intended time is late.
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) late_after: Option<Duration>,
    /// Most late sends a stream may have, in % of its sends, before the arm is inconclusive.
    pub(super) max_late_pct: Option<f64>,
    /// How long to let the queue drain after the load.
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) drain: Option<Duration>,
    #[serde(default = "default_incident_phase")]
    pub(super) incident_phase: String,
    pub(super) dataset: DatasetSpec,
    pub(super) postgres: Spanned<PgSettings>,
    #[serde(default)]
    pub(super) service: Limits,
    pub(super) pooler: Option<Spanned<PoolerSpec>>,
    #[serde(default)]
    pub(super) providers: BTreeMap<Provider, Knobs>,
    pub(super) reconnect: Option<Spanned<Reconnect>>,
    pub(super) phases: Vec<Spanned<Phase>>,
    pub(super) streams: Vec<Spanned<StreamSpec>>,
    pub(super) budgets: BTreeMap<EndpointName, Budget>,
    pub(super) arms: Option<Vec<Spanned<ArmSpec>>>,
    /// A replay's production figures (`scenario from-logs`).
    #[serde(default)]
    pub(super) observed: Option<Observed>,
    /// Faults on the load's timeline.
    #[serde(default)]
    pub(super) faults: Vec<Spanned<FaultSpec>>,
    /// Flag flips on the load's timeline.
    #[serde(default)]
    pub(super) flips: Vec<Spanned<FlipSpec>>,
    pub(super) hypothesis: Option<Spanned<HypothesisSpec>>,
    pub(super) abort: Option<Spanned<AbortSpec>>,
}

/// `[[faults]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultSpec {
    #[serde(with = "incident_wire::duration")]
    pub(super) at: Duration,
    #[serde(rename = "for", default, with = "incident_wire::duration::option")]
    pub(super) lasts: Option<Duration>,
    pub(super) kind: FaultKind,
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) latency: Option<Duration>,
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) jitter: Option<Duration>,
    pub(super) bandwidth: Option<u64>,
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) delay: Option<Duration>,
    pub(super) table: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) sessions: Option<u32>,
    pub(super) provider: Option<Provider>,
    pub(super) knobs: Option<toml::Value>,
}

/// `[[flips]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FlipSpec {
    #[serde(with = "incident_wire::duration")]
    pub(super) at: Duration,
    pub(super) flag: SettableFlag,
    pub(super) to: bool,
    /// Checked just before the flip; the flip is not made when it fails.
    #[serde(default)]
    pub(super) validate: Vec<FlipValidation>,
}

/// `[hypothesis]`: the steady state a chaos run must start from and come back to.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HypothesisSpec {
    /// Where the stretch that must be steady ends (default: the first fault or flip) — for a
    /// flip made into a burst on purpose, the burst's start.
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) steady_until: Option<Duration>,
    /// After the last fault ends (or the last flip), every budget must hold again within this.
    #[serde(default, with = "incident_wire::duration::option")]
    pub(super) recover_within: Option<Duration>,
    /// Most failed requests (5xx, timeouts, broken connections) per endpoint, in %, for a
    /// stretch to count as steady (default 1 %).
    pub(super) max_failed_pct: Option<f64>,
}

fn default_seed() -> u64 {
    53
}
fn default_true() -> bool {
    true
}
fn default_incident_phase() -> String {
    "burst".into()
}

/// `[abort]` as written: `failed_share = "20%"` (or `20.0`), `p95_over_budget = 3.0`,
/// `for = "10s"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AbortSpec {
    pub(super) failed_share: Option<Share>,
    pub(super) p95_over_budget: Option<f64>,
    #[serde(rename = "for", with = "incident_wire::duration")]
    pub(super) lasting: Duration,
}

/// A share in %: `"20%"` or `20.0`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Share(pub(super) f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(Share(n)),
            Written::Text(t) => t
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse().ok())
                .map(Share)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{t:?} is not a share: write it as \"20%\" or 20.0"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_fleet_keys;

    #[test]
    fn the_platform_keys_are_taken_out_of_service_only_and_every_offset_stays() {
        let text = "seed = 1\ninstances = 9\n[service] # the platform\npool_max = 10\ninstances = 3\nautoscale = { min = 1, max = 2, per_instance_concurrency = 5 }\n[pooler]\ninstances = 4\n";
        let (out, taken) = take_fleet_keys(text);
        assert_eq!(out.len(), text.len(), "offsets must not move");
        let keys: Vec<(&str, &str)> = taken.iter().map(|(k, v, _)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("instances", "3"),
                (
                    "autoscale",
                    "{ min = 1, max = 2, per_instance_concurrency = 5 }"
                )
            ]
        );
        // Outside [service] the keys stay (and are refused there as unknown).
        assert!(out.starts_with("seed = 1\ninstances = 9\n"));
        assert!(out.ends_with("[pooler]\ninstances = 4\n"));
        assert!(out.contains("pool_max = 10") && !out.contains("instances = 3"));
        assert_eq!(&text[taken[0].2..taken[0].2 + 13], "instances = 3");
    }
}
