//! Human-friendly units shared by the CLI and scenario files: durations (`500ms`, `3s`,
//! `2m`, read by [`incident_wire::duration`]) and memory sizes (`128MB`, `1GB`). Errors say
//! what was expected.

use std::fmt;
use std::str::FromStr;

/// Why a unit value could not be read; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind}: expected {expected}")]
pub struct UnitError {
    value: String,
    kind: &'static str,
    expected: &'static str,
}

pub use incident_wire::duration::{format as format_duration, parse as parse_duration};

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

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.kib * 1024
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

impl<'de> serde::Deserialize<'de> for MemSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
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
    fn memory_sizes_read_postgres_units() {
        assert_eq!("128MB".parse::<MemSize>(), Ok(MemSize::mib(128)));
        assert_eq!("1GB".parse::<MemSize>(), Ok(MemSize::mib(1024)));
        assert_eq!(MemSize::mib(1).to_string(), "1024kB");
        assert!("128".parse::<MemSize>().is_err());
        assert!("12XB".parse::<MemSize>().is_err());
    }
}
