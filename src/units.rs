//! Human-friendly units shared by the CLI and scenario files: durations (`500ms`, `3s`,
//! `2m`) and memory sizes (`128MB`, `1GB`). Errors say what was expected.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a unit value could not be read; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}: expected {expected}")]
pub struct UnitError {
    value: String,
    kind: &'static str,
    expected: &'static str,
}

/// Parses `250ms`, `3s`, `1.5s`, `2m`, `1h`, or `0` into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        value: text.to_owned(),
        kind: "duration",
        expected: "a number with a unit: ms, s, m or h (e.g. 500ms, 3s, 2m)",
    };
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| err())?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(err()),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it back (ms precision).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A memory size in kibibytes, written `8192kB`, `128MB` or `1GB` (Postgres's own units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemSize {
    kib: u64,
}

impl MemSize {
    /// A size of `mib` mebibytes.
    pub const fn mib(mib: u64) -> Self {
        Self { kib: mib * 1024 }
    }

    /// The size in kibibytes.
    pub fn kib(self) -> u64 {
        self.kib
    }
}

impl FromStr for MemSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || UnitError {
            value: text.to_owned(),
            kind: "memory size",
            expected: "a whole number with a unit: kB, MB or GB (e.g. 128MB)",
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (number, unit) = t.split_at(split);
        let number: u64 = number.parse().map_err(|_| err())?;
        let factor = match unit.trim() {
            "kB" | "KB" => 1,
            "MB" => 1024,
            "GB" => 1024 * 1024,
            _ => return Err(err()),
        };
        Ok(Self {
            kib: number.checked_mul(factor).ok_or_else(err)?,
        })
    }
}

impl fmt::Display for MemSize {
    /// Postgres-readable, e.g. `131072kB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}kB", self.kib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_duration_without_a_unit_is_refused_with_the_accepted_forms() {
        let err = parse_duration("3").unwrap_err().to_string();
        assert!(err.contains("\"3\""), "{err}");
        assert!(err.contains("ms, s, m or h"), "{err}");
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn durations_round_trip_through_their_format() {
        for d in [Duration::from_millis(1500), Duration::from_secs(8)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn memory_sizes_read_postgres_units() {
        assert_eq!("128MB".parse::<MemSize>(), Ok(MemSize::mib(128)));
        assert_eq!("1GB".parse::<MemSize>().map(MemSize::kib), Ok(1024 * 1024));
        assert_eq!(MemSize::mib(1).to_string(), "1024kB");
        assert!("128".parse::<MemSize>().is_err());
        assert!("12XB".parse::<MemSize>().is_err());
    }
}
