//! Durations as people write them in scenario files and on the command line: `250ms`, `3s`,
//! `1.5s`, `2m`, `1h`, `0`, and sums as k6 and goose take them (`1m30s`, `1h 15m`, read by
//! `humantime`). One reader for every crate, and serde adapters for
//! `#[serde(with = "incident_wire::duration")]` (and `duration::option` for `Option`).

use std::time::Duration;

/// A duration that could not be read; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration: expected a number with a unit: ms, s, m or h, or a sum of them (e.g. 500ms, 3s, 2m, 1m30s)"
)]
pub struct DurationError(pub String);

/// Parses `250ms`, `3s`, `1.5s`, `2m`, `1h`, `0`, or a sum (`1m30s`, `1h 15m`).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    // One number and one unit (fractions allowed) here; a sum of whole units by humantime.
    one_unit(text).or_else(|e| humantime::parse_duration(text.trim()).map_err(|_| e))
}

fn one_unit(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_owned());
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

/// Formats a duration the way [`parse`] reads it back (ms precision).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Writes the [`format`] text.
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Reads the [`parse`] text.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same for `Option<Duration>` (absent or `None` when unset; pair it with
/// `#[serde(default)]`).
pub mod option {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    /// Sums as k6 and goose write them.
    #[test]
    fn sums_of_units_parse() {
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h 15m"), Ok(Duration::from_secs(4500)));
        assert_eq!(parse("2s500ms"), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn a_duration_without_a_unit_is_refused_with_the_accepted_forms() {
        let err = parse("3").unwrap_err().to_string();
        assert!(err.contains("\"3\""), "{err}");
        assert!(err.contains("ms, s, m or h, or a sum of them"), "{err}");
        assert!(parse("3 fortnights").is_err());
        assert!(parse("1m30").is_err());
        assert!(parse("-1s").is_err());
    }

    #[test]
    fn durations_round_trip_through_their_format() {
        for d in [Duration::from_millis(1500), Duration::from_secs(8)] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
