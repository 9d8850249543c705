//! Interpretation of value text as typed values.
//!
//! Each parser returns the administrator-facing hint on failure; the caller
//! wraps it with the file, line, key and value into a
//! [`ConfigError::Value`](crate::ConfigError::Value).

use std::ops::RangeInclusive;
use std::time::Duration;

/// Hint for a value that is not a boolean.
pub(crate) const BOOL_HINT: &str = "not a boolean; use true or false";
/// Hint for a value that is not a duration.
pub(crate) const DURATION_HINT: &str = "not a duration; use e.g. 500ms, 30s, 3m or 1h";
/// Hint for a value that is not a `u32`.
pub(crate) const U32_HINT: &str = "not a number between 0 and 4294967295";
/// Hint for a value that is not a `u64`.
pub(crate) const U64_HINT: &str = "not a number between 0 and 18446744073709551615";
/// Hint for a value that is not a finite decimal number.
pub(crate) const F64_HINT: &str = "not a number; use a decimal number such as 0.5 or 10";
/// Hint for a value that is not written `LOW-HIGH`.
pub(crate) const RANGE_HINT: &str = "not a range; use LOW-HIGH, e.g. 1000000000-1099999999";

/// Parses a boolean using git's spellings, case-insensitively.
///
/// Unlike git, other integers (`2`) and the empty value (`Key =`) are
/// rejected: an administrator who wrote them most likely meant something else,
/// and a clear error beats a silent `false`.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    const TRUE: [&str; 4] = ["true", "yes", "on", "1"];
    const FALSE: [&str; 4] = ["false", "no", "off", "0"];
    if TRUE.iter().any(|t| text.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|f| text.eq_ignore_ascii_case(f)) {
        Ok(false)
    } else {
        Err(BOOL_HINT.to_owned())
    }
}

/// Parses a non-negative decimal integer made only of ASCII digits.
///
/// `str::parse` alone would also accept a leading `+`; the configuration
/// format has no use for it, so it is refused to keep values unambiguous.
fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a `u32`.
pub(crate) fn parse_u32(text: &str) -> Result<u32, String> {
    parse_digits(text).ok_or_else(|| U32_HINT.to_owned())
}

/// Parses a `u64`.
pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    parse_digits(text).ok_or_else(|| U64_HINT.to_owned())
}

/// Parses a finite `f64`.
///
/// `inf` and `NaN` parse in Rust but make no sense as a setting, so they are
/// rejected along with anything else that is not a number.
pub(crate) fn parse_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(F64_HINT.to_owned()),
    }
}

/// Parses an inclusive range written `LOW-HIGH`, with optional spaces around
/// the dash.
pub(crate) fn parse_u32_range(text: &str) -> Result<RangeInclusive<u32>, String> {
    let Some((low, high)) = text.split_once('-') else {
        return Err(RANGE_HINT.to_owned());
    };
    let (low, high) = (low.trim(), high.trim());
    if low.is_empty() || high.is_empty() {
        return Err(RANGE_HINT.to_owned());
    }
    let bound = |s: &str| {
        parse_digits::<u32>(s).ok_or_else(|| {
            format!("{RANGE_HINT}; each end must be a number between 0 and 4294967295")
        })
    };
    let (low, high) = (bound(low)?, bound(high)?);
    if low > high {
        return Err(format!(
            "the range is reversed ({low} is above {high}); write LOW-HIGH with LOW no greater than HIGH"
        ));
    }
    Ok(low..=high)
}

/// Parses a duration: one or more `<digits><unit>` parts (`1h30m`, `500ms`)
/// with units `ms`, `s`, `m`, `h`, or a bare integer meaning seconds.
///
/// Bare integers are seconds because that is how the settings these daemons
/// mirror (Posit Connect's) have historically been written.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = || DURATION_HINT.to_owned();
    if let Some(secs) = parse_digits::<u64>(text) {
        return Ok(Duration::from_secs(secs));
    }
    if text.is_empty() {
        return Err(hint());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(hint());
        }
        let number: u64 = rest[..digits_len].parse().map_err(|_| hint())?;
        rest = &rest[digits_len..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            _ => return Err(hint()),
        };
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(hint)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boolean_spelling() {
        for t in ["true", "TRUE", "True", "yes", "Yes", "on", "ON", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "FALSE", "False", "no", "NO", "off", "Off", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        for bad in ["maybe", "", "2", "tru", " true", "y", "n"] {
            assert_eq!(parse_bool(bad), Err(BOOL_HINT.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("3m", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("90", Duration::from_secs(90)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let bad = [
            "3 parsecs",
            "3parsecs",
            "-1s",
            "",
            "s",
            "1.5s",
            "1h 30m",
            "10d",
            "1H",
            "30s5",
            "99999999999999999999s",
            "18446744073709551615h",
        ];
        for text in bad {
            assert_eq!(
                parse_duration(text),
                Err(DURATION_HINT.to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u32("0"), Ok(0));
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
        for bad in ["4294967296", "-1", "+1", "", "1.0", "12abc", " 1"] {
            assert_eq!(parse_u32(bad), Err(U32_HINT.to_owned()), "{bad:?}");
        }
        for bad in ["18446744073709551616", "-5", "x"] {
            assert_eq!(parse_u64(bad), Err(U64_HINT.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64("0.5"), Ok(0.5));
        assert_eq!(parse_f64("10"), Ok(10.0));
        assert_eq!(parse_f64("-2.25"), Ok(-2.25));
        assert_eq!(parse_f64("1e3"), Ok(1000.0));
        for bad in ["abc", "", "inf", "NaN", "1,5", "0.5s"] {
            assert_eq!(parse_f64(bad), Err(F64_HINT.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_u32_range("1000000000-1099999999"),
            Ok(1_000_000_000..=1_099_999_999)
        );
        assert_eq!(parse_u32_range("5 - 5"), Ok(5..=5));
        assert_eq!(parse_u32_range("0-4294967295"), Ok(0..=u32::MAX));

        let reversed = parse_u32_range("10-5").unwrap_err();
        assert!(reversed.contains("reversed"), "{reversed}");
        for missing in ["1000", "", "-5", "5-", "1000 1099"] {
            assert_eq!(
                parse_u32_range(missing),
                Err(RANGE_HINT.to_owned()),
                "{missing:?}"
            );
        }
        for overflow in ["0-4294967296", "4294967296-4294967297", "1-2-3", "a-b"] {
            let err = parse_u32_range(overflow).unwrap_err();
            assert!(
                err.contains("between 0 and 4294967295"),
                "{overflow}: {err}"
            );
        }
    }
}
