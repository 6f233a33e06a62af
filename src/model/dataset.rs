//! How much data a scenario seeds.

use std::fmt;
use std::str::FromStr;

/// How much data to seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Number of workspaces (tenants).
    pub workspaces: u32,
    /// Number of leads, spread evenly over the workspaces.
    pub leads: u32,
    /// Number of historical messages, spread pseudo-randomly over the leads.
    pub messages: u64,
    /// Percentage of workspaces whose Unipile (LinkedIn) account is disconnected.
    pub disconnected_pct: u8,
    /// Percentage of leads with a follow-up due now.
    pub followups_pct: u8,
}

impl Scale {
    /// Small enough for tests: about a second to seed.
    pub const SMOKE: Scale = Scale {
        workspaces: 20,
        leads: 2_000,
        messages: 40_000,
        disconnected_pct: 20,
        followups_pct: 10,
    };
    /// Large enough that the legacy inbox-count aggregation is genuinely heavy.
    pub const DEFAULT: Scale = Scale {
        workspaces: 200,
        leads: 100_000,
        messages: 2_000_000,
        disconnected_pct: 20,
        followups_pct: 5,
    };

    /// Checks the knobs make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.workspaces == 0 || self.leads == 0 {
            return Err("scale needs at least one workspace and one lead".into());
        }
        if self.leads < self.workspaces {
            return Err(format!(
                "scale has {} leads for {} workspaces: every workspace needs at least one lead",
                self.leads, self.workspaces
            ));
        }
        if self.disconnected_pct > 100 || self.followups_pct > 100 {
            return Err("percentages must be between 0 and 100".into());
        }
        Ok(())
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smoke" => Ok(Self::SMOKE),
            "default" => Ok(Self::DEFAULT),
            other => Err(format!(
                "{other:?} is not a scale preset: expected smoke or default (or set --workspaces/--leads/--messages)"
            )),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} workspaces, {} leads, {} messages",
            self.workspaces, self.leads, self.messages
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_unknown_ones_are_named() {
        assert_eq!("smoke".parse(), Ok(Scale::SMOKE));
        assert_eq!("default".parse(), Ok(Scale::DEFAULT));
        let err = "huge".parse::<Scale>().unwrap_err();
        assert!(
            err.contains("\"huge\"") && err.contains("smoke or default"),
            "{err}"
        );
    }

    #[test]
    fn both_presets_are_valid() {
        assert_eq!(Scale::DEFAULT.validate(), Ok(()));
        assert_eq!(Scale::SMOKE.validate(), Ok(()));
    }

    #[test]
    fn scales_that_cannot_be_seeded_are_refused() {
        let few_leads = Scale {
            leads: 5,
            ..Scale::SMOKE
        };
        assert!(few_leads
            .validate()
            .unwrap_err()
            .contains("5 leads for 20 workspaces"));
        let bad_pct = Scale {
            disconnected_pct: 101,
            ..Scale::SMOKE
        };
        assert!(bad_pct.validate().is_err());
    }
}
