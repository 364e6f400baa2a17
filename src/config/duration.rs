//! Human durations in configuration: "500ms", "10s", "15m", "1h30m", "30d".

use std::time::Duration;

/// Parses a duration written as one or more `<number><unit>` groups.
///
/// Units: `ms`, `s`, `m`, `h`, `d`. A bare `0` is accepted. Anything else is an error that
/// says what was expected, so the configuration error names both the key and the problem.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; expected e.g. \"10s\", \"15m\", \"30d\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {input:?}; expected e.g. \"10s\", \"15m\", \"30d\""
            ));
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("number too large in duration {input:?}"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "" => return Err(format!("duration {input:?} needs a unit (ms, s, m, h, d)")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {input:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total = total.saturating_add(part);
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration back in the same notation (used by `check-config` and in messages).
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// serde adapter: `#[serde(with = "crate::config::duration::serde_str")]`.
pub mod serde_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "m", "10x", "1.5s", "-1s", "10 s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["500ms", "10s", "15m", "2h", "30d", "0"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
