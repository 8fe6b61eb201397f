//! The one duration syntax of the product, for settings, flags, query parameters, deployment
//! requests and configuration content alike: humantime (`30s`, `500ms`, `1h 30m`), ISO-8601
//! (`PT5M`, `PT1H30M`, `PT0.5S`, `P1D`, `P2W`) or a bare number of whole seconds (`300`).

use std::time::Duration;

/// Longest duration accepted, in milliseconds: what a timestamp can still be moved by.
pub const MAX_DURATION_MS: u64 = i64::MAX as u64;

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration '{0}' must not be negative")]
    Negative(String),
    #[error("duration '{0}' is too large")]
    TooLarge(String),
    #[error("invalid duration '{0}': {1}")]
    Invalid(String, String),
}

/// Parses a duration written in any of the forms of the module doc.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    let millis = if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>()
            .ok()
            .and_then(|secs| secs.checked_mul(1000))
            .ok_or_else(|| DurationError::TooLarge(text.to_string()))?
    } else if text.starts_with(['P', 'p']) {
        iso8601_millis(text)?
    } else {
        let parsed = humantime::parse_duration(text).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => DurationError::TooLarge(text.to_string()),
            other => DurationError::Invalid(text.to_string(), other.to_string()),
        })?;
        u64::try_from(parsed.as_millis()).map_err(|_| DurationError::TooLarge(text.to_string()))?
    };
    if millis > MAX_DURATION_MS {
        return Err(DurationError::TooLarge(text.to_string()));
    }
    Ok(Duration::from_millis(millis))
}

/// ISO-8601 durations of the forms `PnW` and `P[nD][T[nH][nM][n[.f]S]]`, in milliseconds.
/// Years and months are refused: their length depends on the calendar.
fn iso8601_millis(text: &str) -> Result<u64, DurationError> {
    let bad = |why: &str| DurationError::Invalid(text.to_string(), why.to_string());
    let upper = text.to_ascii_uppercase();
    let body = upper.strip_prefix('P').ok_or_else(|| bad("no leading P"))?;
    let mut total_ms: f64 = 0.0;
    let mut in_time = false;
    let mut number = String::new();
    let mut components = 0;
    for ch in body.chars() {
        match ch {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | ',' => number.push(if ch == ',' { '.' } else { ch }),
            unit => {
                let value: f64 = number
                    .parse()
                    .map_err(|_| bad("expected a number before each unit"))?;
                number.clear();
                let unit_ms = match (in_time, unit) {
                    (false, 'W') => 7.0 * 86_400_000.0,
                    (false, 'D') => 86_400_000.0,
                    (true, 'H') => 3_600_000.0,
                    (true, 'M') => 60_000.0,
                    (true, 'S') => 1000.0,
                    (false, 'Y' | 'M') => return Err(bad("years and months have no fixed length")),
                    _ => return Err(bad("unknown unit")),
                };
                total_ms += value * unit_ms;
                components += 1;
            }
        }
    }
    if !number.is_empty() {
        return Err(bad("a number without a unit"));
    }
    if components == 0 {
        return Err(bad("no components"));
    }
    if !total_ms.is_finite() || total_ms > MAX_DURATION_MS as f64 {
        return Err(DurationError::TooLarge(text.to_string()));
    }
    Ok(total_ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<u64, &str>) {
        let got = parse_duration(input).map(|d| d.as_millis() as u64);
        match expected {
            Ok(millis) => assert_eq!(got, Ok(millis), "{input:?}"),
            Err(kind) => {
                let error = got.expect_err(input);
                let matches = matches!(
                    (&error, kind),
                    (DurationError::Empty, "empty")
                        | (DurationError::Negative(_), "negative")
                        | (DurationError::TooLarge(_), "too large")
                        | (DurationError::Invalid(..), "invalid")
                );
                assert!(matches, "{input:?}: {error:?}, expected {kind}");
            }
        }
    }

    #[test]
    fn every_form_of_duration() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            // humantime
            ("30s", Ok(30_000)),
            ("500ms", Ok(500)),
            ("5m", Ok(300_000)),
            ("1h 30m", Ok(5_400_000)),
            ("1h30m", Ok(5_400_000)),
            ("2d", Ok(172_800_000)),
            ("0s", Ok(0)),
            ("  10s  ", Ok(10_000)),
            // ISO-8601
            ("PT5M", Ok(300_000)),
            ("PT1H30M", Ok(5_400_000)),
            ("pt30s", Ok(30_000)),
            ("PT0.5S", Ok(500)),
            ("PT1,5S", Ok(1_500)),
            ("P1D", Ok(86_400_000)),
            ("P1DT2H", Ok(93_600_000)),
            ("P2W", Ok(1_209_600_000)),
            // bare seconds
            ("300", Ok(300_000)),
            ("0", Ok(0)),
            // refused
            ("", Err("empty")),
            ("   ", Err("empty")),
            ("-5s", Err("negative")),
            ("-PT5M", Err("negative")),
            ("-300", Err("negative")),
            ("PT", Err("invalid")),
            ("P", Err("invalid")),
            ("PTxS", Err("invalid")),
            ("PT5", Err("invalid")),
            ("P1Y", Err("invalid")),
            ("P1M", Err("invalid")),
            ("PT1D", Err("invalid")),
            ("5 parsecs", Err("invalid")),
            ("soon", Err("invalid")),
            ("1.5.2s", Err("invalid")),
            // overflow
            ("99999999999999999999", Err("too large")),
            ("18446744073709552s", Err("too large")),
            ("99999999999999999999999s", Err("too large")),
            ("PT99999999999999999999H", Err("too large")),
            ("P9999999999999999W", Err("too large")),
        ];
        for (input, expected) in cases {
            check(input, *expected);
        }
    }

    #[test]
    fn the_largest_accepted_duration_fits_a_timestamp() {
        let largest_secs = MAX_DURATION_MS / 1000;
        for text in [format!("{largest_secs}s"), largest_secs.to_string()] {
            let largest = parse_duration(&text).expect("largest");
            assert_eq!(largest.as_secs(), largest_secs, "{text}");
            assert!(i64::try_from(largest.as_millis()).is_ok(), "{text}");
        }
        for text in [
            format!("{}s", largest_secs + 1),
            (largest_secs + 1).to_string(),
        ] {
            assert!(
                matches!(parse_duration(&text), Err(DurationError::TooLarge(_))),
                "{text}"
            );
        }
    }
}
