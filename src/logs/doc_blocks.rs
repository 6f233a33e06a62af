//! The generated blocks of docs/replay.md, rendered from what a run stored (never typed): the
//! fix list of the shipped export, a replay's questions (fidelity.json), a calibration's fit
//! (fit.json) and the parameter recoveries (docs/results/recovery/WORLD.json).
//! `scripts/readme-render` writes them with `incident-lab doc-block`; tests/readme.rs fails
//! when a page and its stored run disagree.

use std::path::Path;

use super::calibrate::{self, FitFile};
use super::fidelity::Fidelity;

/// The blocks there are, by marker name.
pub const NAMES: [&str; 4] = ["triage", "replay-fidelity", "calibrate-fit", "recovery"];

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A recovery as `scripts/recover` stores it: the world, its stretch and calibrate's fit.
#[derive(Debug, serde::Deserialize)]
struct RecoveryFile {
    world: String,
    slower: f64,
    fit: FitFile,
}

/// The block `name` from `sources` (the export for `triage`; the stored JSON files for the
/// others, several for `recovery`, one after the other). `root` resolves a recovery's world.
pub fn render(name: &str, sources: &[&Path], root: &Path) -> Result<String, String> {
    let one = || match sources {
        [one] => Ok(*one),
        _ => Err(format!("the {name} block takes one file")),
    };
    match name {
        "triage" => {
            let summary = super::summarize(one()?, &super::PathMap::defaults(), None, false)?;
            Ok(super::triage::table(&super::triage::triage(&summary)))
        }
        "replay-fidelity" => {
            let f: Fidelity = read_json(one()?)?;
            Ok(super::fidelity::checks_table(&f.checks))
        }
        "calibrate-fit" => {
            let f: FitFile = read_json(one()?)?;
            Ok(calibrate::fit_body(
                &f.base,
                &f.calibrated,
                &f.probes,
                &f.residuals,
                f.search_seconds,
            ))
        }
        "recovery" => {
            let mut out = String::new();
            for path in sources {
                let r: RecoveryFile = read_json(path)?;
                let world = crate::model::Scenario::load(&root.join(&r.world))
                    .map_err(|e| e.to_string())?;
                let truth = calibrate::base_setting(&world);
                let rows = calibrate::recovery(
                    &truth,
                    &r.fit.base,
                    &r.fit.calibrated,
                    r.fit.speed,
                    r.slower,
                );
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&calibrate::recovery_markdown(&r.world, &rows, &r.fit));
            }
            Ok(out)
        }
        other => Err(format!("no block {other:?}: one of {}", NAMES.join(", "))),
    }
}
