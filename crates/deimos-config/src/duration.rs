//! Durations in the file: humantime's `"100ms"`, `"30s"`, `"5m"`, `"1h 30m"`, or a plain number of seconds
//! (Deimos's unit for `session_timeout`, `heartbeat_interval`, `max_wait_time`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses a duration as humantime writes it (`"250ms"`, `"30s"`, `"5m"`, `"1h 30m"`, `"2 days"`), or a plain
/// number of seconds (`"30"`, `"1.5"`: Deimos's unit).
///
/// ```
/// use std::time::Duration;
/// use deimos_config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}` is not a duration: {e}"));
    }
    // humantime: the units and the error messages (which name the unknown unit and list the known ones).
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration: {e}; write a number and a unit, such as \"250ms\", \"30s\", \"5m\" or \"1h 30m\"")
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration: a string such as \"250ms\", \"30s\", \"5m\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("a duration cannot be negative ({v})")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|e| E::custom(format!("{v} is not a duration: {e}")))
    }
}

/// `#[serde(deserialize_with)]` for `Option<Duration>`.
pub(crate) fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_any(DurationVisitor).map(Some)
}

/// `#[serde(deserialize_with)]` for `Option<(Duration, Duration)>`: `["1s", "60s"]`.
pub(crate) fn option_pair<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<(Duration, Duration)>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "plain")] Duration);
    let pair: (Wrapped, Wrapped) = serde::Deserialize::deserialize(deserializer)?;
    if pair.0.0 > pair.1.0 {
        return Err(de::Error::custom(format!(
            "backoff [{:?}, {:?}]: the first (minimum) is larger than the second (maximum)",
            pair.0.0, pair.1.0
        )));
    }
    Ok(Some((pair.0.0, pair.1.0)))
}

fn plain<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2 days"), Ok(Duration::from_secs(2 * 86_400)));
        let err = parse_duration("10 fortnights").unwrap_err();
        assert!(err.contains("unknown time unit \"fortnights\""), "{err}");
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
