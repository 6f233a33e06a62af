//! The scenario's sections checked one by one, each into its part of the model: the
//! platform's `[service]` keys, phases, `[reconnect]`, faults, flips, streams, the dataset,
//! the fleet and pooler, `[postgres]`, and the arms. Every error points at where the value is
//! written.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use fake_providers::{Knobs, Provider};
use inbox_service::Switches;
use loadgen::Arrival;
use serde::Deserialize;
use toml::Spanned;

use super::faults::fault;
use super::file::{AbortSpec, ArmSpec, DatasetSpec, FaultSpec, FlipSpec, ScenarioFile};
use super::ScenarioError;
use crate::model::{
    default_arms, Abort, Arm, Autoscale, EndpointKind, FaultKind, FaultTarget, FleetSpec, Flip,
    PgSettings, Phase, PoolerSpec, Reconnect, Scale, StreamSpec, TimedFault,
};

/// The text being read, to point errors at.
pub(super) struct Doc<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Doc<'_> {
    /// An error at `span` (a byte range of the text), or at the file when there is none.
    pub fn at(&self, span: Option<Range<usize>>, message: String) -> ScenarioError {
        let (line, column) = span.map(|s| line_col(self.text, s.start)).unzip();
        ScenarioError {
            file: self.file.to_owned(),
            line,
            column,
            message,
            source_line: line
                .and_then(|l| self.text.lines().nth(l - 1))
                .map(|t| t.trim().to_owned()),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// `[service]`'s `instances` and `autoscale`, read apart from the service's own limits.
#[derive(Default)]
pub(super) struct Platform {
    pub instances: Option<u32>,
    pub autoscale: Option<Autoscale>,
    /// Where the first of them is written.
    pub span: Option<Range<usize>>,
}

pub(super) fn platform(
    doc: &Doc<'_>,
    keys: &[(&'static str, String, usize)],
) -> Result<Platform, ScenarioError> {
    let (mut instances, mut autoscale, mut service_span) = (None, None, None);
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Value<T> {
        v: T,
    }
    for (key, value, offset) in keys {
        let span = Some(*offset..*offset + 1);
        let bad = |e: toml::de::Error| {
            doc.at(
                span.clone(),
                format!("[service] field `{key}`: {}", e.message().trim_end()),
            )
        };
        match *key {
            "instances" => {
                instances = Some(
                    toml::from_str::<Value<u32>>(&format!("v = {value}"))
                        .map_err(bad)?
                        .v,
                )
            }
            _ => {
                autoscale = Some(
                    toml::from_str::<Value<Autoscale>>(&format!("v = {value}"))
                        .map_err(bad)?
                        .v,
                )
            }
        }
        service_span = service_span.or(span);
    }
    Ok(Platform {
        instances,
        autoscale,
        span: service_span,
    })
}

/// The phases, each within the run, and the incident phase among them.
pub(super) fn phases(
    doc: &Doc<'_>,
    raw: &[Spanned<Phase>],
    duration: Duration,
    incident_phase: &str,
) -> Result<Vec<Phase>, ScenarioError> {
    let mut phases = Vec::new();
    for p in raw {
        let ph = p.get_ref();
        if ph.from >= ph.to || ph.to > duration {
            return Err(doc.at(
                Some(p.span()),
                format!(
                    "phase {:?}: `from` must be before `to`, and `to` within the duration",
                    ph.name
                ),
            ));
        }
        phases.push(ph.clone());
    }
    if !phases.iter().any(|p| p.name == incident_phase) {
        return Err(doc.at(
            None,
            format!(
                "field `incident_phase`: no phase named {:?}",
                incident_phase
            ),
        ));
    }
    Ok(phases)
}

pub(super) fn reconnect(
    doc: &Doc<'_>,
    raw: Option<&Spanned<Reconnect>>,
    duration: Duration,
) -> Result<Option<Reconnect>, ScenarioError> {
    Ok(match raw {
        None => None,
        Some(r) => {
            let v = *r.get_ref();
            if !(v.share > 0.0 && v.share <= 100.0) {
                return Err(doc.at(
                    Some(r.span()),
                    format!(
                        "[reconnect] field `share` = {} must be over 0 and at most 100",
                        v.share
                    ),
                ));
            }
            if v.at >= duration {
                return Err(doc.at(
                    Some(r.span()),
                    format!(
                        "[reconnect] field `at` = {} must fall within the run ({})",
                        incident_wire::duration::format(v.at),
                        incident_wire::duration::format(duration)
                    ),
                ));
            }
            Some(v)
        }
    })
}

/// The faults, each with its kind's parameters; a crash only on a durable server.
pub(super) fn faults(
    doc: &Doc<'_>,
    raw: &[Spanned<FaultSpec>],
    duration: Duration,
    providers: &BTreeMap<Provider, Knobs>,
    durable: bool,
) -> Result<Vec<TimedFault>, ScenarioError> {
    let mut faults = Vec::new();
    for f in raw {
        faults
            .push(fault(f.get_ref(), duration, providers).map_err(|m| doc.at(Some(f.span()), m))?);
    }
    if let Some(f) = raw.iter().find(|f| f.get_ref().kind == FaultKind::Restart) {
        if !durable {
            return Err(doc.at(
                Some(f.span()),
                "[[faults]] kind \"restart\" needs `durable = true` in [postgres]: without fsync and synchronous_commit a crash loses commits already acknowledged, which the exactly-once check would blame on the service".into(),
            ));
        }
    }
    Ok(faults)
}

/// The flips, in time order, each within the run.
pub(super) fn flips(
    doc: &Doc<'_>,
    raw: &[Spanned<FlipSpec>],
    duration: Duration,
) -> Result<Vec<Flip>, ScenarioError> {
    let mut flips = Vec::new();
    for f in raw {
        let v = f.get_ref();
        if v.at >= duration {
            return Err(doc.at(
                Some(f.span()),
                format!(
                    "[[flips]] field `at` = {} must fall within the run ({})",
                    incident_wire::duration::format(v.at),
                    incident_wire::duration::format(duration)
                ),
            ));
        }
        flips.push(Flip {
            at: v.at,
            flag: v.flag.0,
            to: v.to,
            validate: v.validate.clone(),
        });
    }
    flips.sort_by_key(|f| f.at);
    Ok(flips)
}

/// The streams, each with its concurrency resolved.
pub(super) fn streams(
    doc: &Doc<'_>,
    raw: &[Spanned<StreamSpec>],
    duration: Duration,
    client_timeout: Duration,
) -> Result<Vec<StreamSpec>, ScenarioError> {
    if raw.is_empty() {
        return Err(doc.at(None, "at least one [[streams]] is needed".into()));
    }
    let mut streams = Vec::new();
    for s in raw {
        let st = s.get_ref();
        let bad = |m: String| doc.at(Some(s.span()), format!("stream {:?}: {m}", st.name));
        match (&st.endpoint, &st.event) {
            (EndpointKind::Webhook, Some(e))
                if incident_wire::EVENT_TYPES.contains(&e.as_str()) => {}
            (EndpointKind::Webhook, Some(e)) => {
                return Err(bad(format!(
                    "field `event` = {e:?} is not one of {}",
                    incident_wire::EVENT_TYPES.join(", ")
                )))
            }
            (EndpointKind::Webhook, None) => {
                return Err(bad("field `event` is required for webhooks".into()))
            }
            (_, Some(_)) => return Err(bad("field `event` is for webhooks only".into())),
            _ => {}
        }
        let rates_ok = match &st.arrival {
            Arrival::Constant { rate } | Arrival::Burst { rate, .. } => *rate >= 0.0,
            Arrival::Ramp {
                from_rate, to_rate, ..
            } => *from_rate >= 0.0 && *to_rate >= 0.0,
            Arrival::Schedule { points } => points.iter().all(|p| p.1 >= 0.0),
            Arrival::Counts { every, .. } => {
                if every.is_zero() {
                    return Err(bad("arrival `every` must be longer than 0".into()));
                }
                true
            }
        };
        if !rates_ok {
            return Err(bad("arrival rates must be 0 or more".into()));
        }
        if !(0.0..=100.0).contains(&st.signed_out_pct) || st.users == 0 || st.scope_workspaces == 0
        {
            return Err(bad(
                "`signed_out_pct` must be 0–100, `users` and `scope_workspaces` at least 1".into(),
            ));
        }
        let shares = [
            st.redeliver.map(|r| ("redeliver.share", r.share)),
            st.concurrent_duplicates
                .map(|d| ("concurrent_duplicates", d)),
        ];
        for (field, share) in shares.into_iter().flatten() {
            if st.endpoint != EndpointKind::Webhook {
                return Err(bad(format!("field `{field}` is for webhooks only")));
            }
            if !(0.0..=100.0).contains(&share) {
                return Err(bad(format!("field `{field}` = {share} must be 0–100 (%)")));
            }
        }
        if st.max_in_flight == Some(0) {
            return Err(bad("field `max_in_flight` must be at least 1".into()));
        }
        let mut st = st.clone();
        let retry = st.retry_policy();
        st.max_in_flight = Some(st.max_in_flight.unwrap_or_else(|| {
            loadgen::Stream::default_max_in_flight(
                &st.arrival,
                retry.as_ref(),
                &st.delivery(),
                duration,
                client_timeout,
            )
        }));
        streams.push(st);
    }
    Ok(streams)
}

/// The dataset: a preset with the fields written over it.
pub(super) fn scale(doc: &Doc<'_>, d: &DatasetSpec) -> Result<Scale, ScenarioError> {
    let preset: Scale = d
        .scale
        .parse()
        .map_err(|e: String| doc.at(None, format!("field `dataset.scale`: {e}")))?;
    let scale = Scale {
        workspaces: d.workspaces.unwrap_or(preset.workspaces),
        leads: d.leads.unwrap_or(preset.leads),
        messages: d.messages.unwrap_or(preset.messages),
        disconnected_pct: d.disconnected_pct.unwrap_or(preset.disconnected_pct),
        followups_pct: d.followups_pct.unwrap_or(preset.followups_pct),
    };
    scale
        .validate()
        .map_err(|e| doc.at(None, format!("[dataset]: {e}")))?;
    Ok(scale)
}

/// The instances and the pooler, within the server's connections; the faults and flips that
/// several instances cannot take yet are refused.
pub(super) fn fleet(
    doc: &Doc<'_>,
    raw: &ScenarioFile,
    platform: Platform,
) -> Result<(Option<FleetSpec>, Option<PoolerSpec>), ScenarioError> {
    let Platform {
        instances,
        autoscale,
        span: service_span,
    } = platform;
    raw.service
        .validate()
        .map_err(|e| doc.at(None, format!("[service]: {e}")))?;
    let fleet = FleetSpec::from_file(instances, autoscale)
        .map_err(|e| doc.at(service_span.clone(), format!("[service] {e}")))?;
    let pooler = match &raw.pooler {
        None => None,
        Some(p) => {
            p.get_ref()
                .validate()
                .map_err(|e| doc.at(Some(p.span()), format!("[pooler] {e}")))?;
            Some(p.get_ref().clone())
        }
    };
    let fleet = fleet.or(pooler.as_ref().map(|_| FleetSpec::single()));
    if let Some(f) = &fleet {
        let span = service_span.or(raw.pooler.as_ref().map(|p| p.span()));
        crate::model::check_connections(
            f,
            raw.service.pool_max,
            pooler.as_ref(),
            raw.postgres.get_ref().max_connections,
        )
        .map_err(|e| doc.at(span.clone(), format!("[service] {e}")))?;
        let unsupported = raw.faults.iter().find(|f| {
            matches!(
                f.get_ref().kind.target(),
                FaultTarget::Link | FaultTarget::Service
            )
        });
        if let Some(fault) = unsupported {
            return Err(doc.at(
                Some(fault.span()),
                "[[faults]] on the database link or the service process are not supported with several instances or a pooler yet: run them on one instance".into(),
            ));
        }
        if let Some(flip) = raw.flips.first() {
            return Err(doc.at(
                Some(flip.span()),
                "[[flips]] are not supported with several instances or a pooler yet (a flip would have to reach every instance)".into(),
            ));
        }
    }
    Ok((fleet, pooler))
}

/// `[postgres]`: a CPU share over 0, enough memory for its shared buffers.
pub(super) fn postgres(
    doc: &Doc<'_>,
    raw: &Spanned<PgSettings>,
) -> Result<PgSettings, ScenarioError> {
    let postgres = raw.get_ref().clone();
    let bad_pg = |m: String| Err(doc.at(Some(raw.span()), format!("[postgres] {m}")));
    if let Some(cpus) = postgres.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return bad_pg(format!(
                "field `cpus` = {cpus} must be a number of cores over 0"
            ));
        }
    }
    if let Some(memory) = postgres.memory {
        if memory.bytes() < 64 << 20 || memory.bytes() < 2 * postgres.shared_buffers.bytes() {
            return bad_pg(format!(
                "field `memory` = {} MiB must be at least 64 MiB and twice shared_buffers",
                memory.bytes() >> 20
            ));
        }
    }
    Ok(postgres)
}

/// The arms, each named once; the default matrix when none is written.
pub(super) fn arms(
    doc: &Doc<'_>,
    raw: Option<&Vec<Spanned<ArmSpec>>>,
) -> Result<Vec<Arm>, ScenarioError> {
    Ok(match raw {
        Some(list) => {
            let mut names = BTreeSet::new();
            let mut arms = Vec::new();
            for a in list {
                let spec = a.get_ref();
                if !names.insert(spec.name.clone()) {
                    return Err(doc.at(
                        Some(a.span()),
                        format!("arm {:?} is declared twice", spec.name),
                    ));
                }
                let mut switches = if spec.legacy {
                    Switches::pre_phase_53()
                } else {
                    Switches::default()
                };
                for (flag, on) in &spec.flags {
                    switches.set(flag.0, *on);
                }
                arms.push(Arm {
                    name: spec.name.clone(),
                    switches,
                    expect: spec.expect,
                });
            }
            if arms.is_empty() {
                return Err(doc.at(
                    None,
                    "`arms` is empty: leave it out for the default matrix".into(),
                ));
            }
            arms
        }
        None => default_arms(),
    })
}

/// `[abort]`: a threshold to cross, a share within 0–100, a multiple over 1, and a stretch of
/// at least a second that fits in the run.
pub(super) fn abort(
    doc: &Doc<'_>,
    raw: Option<&Spanned<AbortSpec>>,
    duration: Duration,
) -> Result<Option<Abort>, ScenarioError> {
    let Some(spec) = raw else {
        return Ok(None);
    };
    let (a, span) = (spec.get_ref(), Some(spec.span()));
    let bad = |m: String| Err(doc.at(span.clone(), format!("[abort] {m}")));
    let failed_pct = a.failed_share.map(|s| s.0);
    if failed_pct.is_none() && a.p95_over_budget.is_none() {
        return bad("needs `failed_share` or `p95_over_budget`: a threshold to stop at".into());
    }
    if let Some(p) = failed_pct {
        if !(p > 0.0 && p <= 100.0) {
            return bad(format!(
                "field `failed_share` = {p}% must be over 0 and at most 100"
            ));
        }
    }
    if let Some(k) = a.p95_over_budget {
        if !(k.is_finite() && k > 1.0) {
            return bad(format!(
                "field `p95_over_budget` = {k} must be a multiple of the budget over 1"
            ));
        }
    }
    if a.lasting < Duration::from_secs(1) || a.lasting >= duration {
        return bad(format!(
            "field `for` = {} must be at least 1s and shorter than the run ({})",
            incident_wire::duration::format(a.lasting),
            incident_wire::duration::format(duration)
        ));
    }
    Ok(Some(Abort {
        failed_pct,
        p95_over_budget: a.p95_over_budget,
        lasting: a.lasting,
    }))
}
