//! Spans of time as people type them on a command line: `250ms`, `90s` (or `90`), `15m`, `1h`,
//! `7d`.

use std::time::Duration;

pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a span like 250ms, 90s, 15m, 1h or 7d"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{raw:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

/// The span in its largest exact unit, as `parse` reads it back: `15m`, `90s`, `250ms`.
pub fn format(span: Duration) -> String {
    let ms = span.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    match units
        .iter()
        .find(|(per, _)| ms > 0 && ms.is_multiple_of(*per))
    {
        Some((per, unit)) => format!("{}{unit}", ms / per),
        None => format!("{ms}ms"),
    }
}

/// A span that must not be zero.
pub fn parse_positive(raw: &str) -> Result<Duration, String> {
    parse(raw).and_then(|d| {
        if d.is_zero() {
            Err(format!("{raw:?} must be longer than zero"))
        } else {
            Ok(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_scale_and_nonsense_is_refused() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "m", "1.5h", "-1s", "3 weeks", "18446744073709551615d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse_positive("0s").is_err());
        for span in ["15m", "90s", "250ms", "2h", "7d", "1500ms", "0ms"] {
            assert_eq!(format(parse(span).unwrap()), span);
        }
    }
}
