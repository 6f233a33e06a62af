//! The service's named switches — the rollout flags, the slow-path logs and the legacy
//! switches — under the one name the service's environment, `/admin/flags`, scenario files,
//! flips, arm reports and the attribution table all use.

use std::fmt;
use std::str::FromStr;

/// One switch of the service, named as its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    /// `INBOXXIA_EMAIL_SENT_ASYNC`: EMAIL_SENT is one job insert; the worker applies it.
    EmailSentAsync,
    /// `INBOX_COUNTS_CACHE_FALLBACK`: bounded live counts, stale cached counts on timeout.
    CountsCacheFallback,
    /// `UNIPILE_HEALTH_GATE`: no LinkedIn sends for disconnected workspaces.
    UnipileHealthGate,
    /// `LOG_SLOW_PATHS`: step-level timing logs.
    LogSlowPaths,
    /// `LEGACY_AUTH_NOISE`: expected-unauthenticated requests logged at ERROR.
    LegacyAuthNoise,
    /// `LEGACY_AI_VERIFIER`: the step-3 verifier awaited without a bound.
    LegacyAiVerifier,
    /// `LEGACY_LEDGER_TX`: the slot ledger increment as an interactive transaction.
    LegacyLedgerTx,
    /// `LEGACY_PROVIDER_CALLS`: GHL calls with no timeout, no classification, no backoff.
    LegacyProviderCalls,
}

impl Flag {
    /// Every switch, in the order they are listed and exported.
    pub const ALL: [Flag; 8] = [
        Flag::EmailSentAsync,
        Flag::CountsCacheFallback,
        Flag::UnipileHealthGate,
        Flag::LogSlowPaths,
        Flag::LegacyAuthNoise,
        Flag::LegacyAiVerifier,
        Flag::LegacyLedgerTx,
        Flag::LegacyProviderCalls,
    ];

    /// The three rollout flags (the seed's plan flips these in production).
    pub const ROLLOUT: [Flag; 3] = [
        Flag::EmailSentAsync,
        Flag::CountsCacheFallback,
        Flag::UnipileHealthGate,
    ];

    /// The switches a scenario's arm or flip may set by name: the rollout flags and
    /// `LOG_SLOW_PATHS` (the legacy switches go together, as an arm's `legacy = true`).
    pub const SETTABLE: [Flag; 4] = [
        Flag::EmailSentAsync,
        Flag::CountsCacheFallback,
        Flag::UnipileHealthGate,
        Flag::LogSlowPaths,
    ];

    /// The environment variable's name.
    pub const fn name(self) -> &'static str {
        match self {
            Flag::EmailSentAsync => "INBOXXIA_EMAIL_SENT_ASYNC",
            Flag::CountsCacheFallback => "INBOX_COUNTS_CACHE_FALLBACK",
            Flag::UnipileHealthGate => "UNIPILE_HEALTH_GATE",
            Flag::LogSlowPaths => "LOG_SLOW_PATHS",
            Flag::LegacyAuthNoise => "LEGACY_AUTH_NOISE",
            Flag::LegacyAiVerifier => "LEGACY_AI_VERIFIER",
            Flag::LegacyLedgerTx => "LEGACY_LEDGER_TX",
            Flag::LegacyProviderCalls => "LEGACY_PROVIDER_CALLS",
        }
    }

    /// A rollout flag's short name in arm names (`async+counts`).
    pub const fn short(self) -> &'static str {
        match self {
            Flag::EmailSentAsync => "async",
            Flag::CountsCacheFallback => "counts",
            Flag::UnipileHealthGate => "gate",
            Flag::LogSlowPaths => "slow-logs",
            Flag::LegacyAuthNoise => "legacy-auth",
            Flag::LegacyAiVerifier => "legacy-ai",
            Flag::LegacyLedgerTx => "legacy-ledger",
            Flag::LegacyProviderCalls => "legacy-provider",
        }
    }

    /// The names of `flags`, comma-separated (for error messages).
    pub fn names(flags: &[Flag]) -> String {
        flags
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Flag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Flag::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown switch {s:?}; known: {}", Flag::names(&Flag::ALL)))
    }
}

impl serde::Serialize for Flag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Flag;

    #[test]
    fn every_name_reads_back_as_its_flag_and_an_unknown_one_is_named() {
        for f in Flag::ALL {
            assert_eq!(f.name().parse::<Flag>(), Ok(f));
        }
        let err = "INBOXXIA_EMAIL_SENT_SYNC".parse::<Flag>().unwrap_err();
        assert!(err.contains("INBOXXIA_EMAIL_SENT_SYNC") && err.contains("UNIPILE_HEALTH_GATE"));
    }
}
