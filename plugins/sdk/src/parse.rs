//! Dates and timestamps written as text, into Arrow's values: days since 1970-01-01 and
//! microseconds since the epoch (UTC). Shared by the sources that read text (CSV, JSON
//! Lines, message payloads) so that each accepts the same forms. Parsing works on bytes
//! and never allocates; every parser returns `None` for a value that does not fit.

/// `YYYY-MM-DD` as days since 1970-01-01.
pub fn parse_date(value: &[u8]) -> Option<i32> {
    let v = value.trim_ascii();
    if v.len() != 10 {
        return None;
    }
    let days = parse_ymd(v)?;
    i32::try_from(days).ok()
}

/// An ISO 8601 / RFC 3339 timestamp as microseconds since the epoch, UTC:
/// `YYYY-MM-DD`, then optionally `T` or a space, `HH:MM[:SS[.fraction]]` and `Z` or an
/// offset (`+HH:MM`, `+HHMM`, `+HH`). No zone means UTC.
pub fn parse_timestamp(value: &[u8]) -> Option<i64> {
    let v = value.trim_ascii();
    parse_timestamp_seconds_utc(v).or_else(|| parse_timestamp_general(v))
}

/// Every form [`parse_timestamp`] accepts, from the trimmed text.
fn parse_timestamp_general(v: &[u8]) -> Option<i64> {
    if v.len() < 10 {
        return None;
    }
    let days = parse_ymd(&v[..10])?;
    let mut rest = &v[10..];
    let mut micros_of_day: i64 = 0;
    if let Some((&sep, time)) = rest.split_first() {
        if !matches!(sep, b'T' | b't' | b' ') {
            return None;
        }
        let hour = two_digits(time.get(0..2)?)?;
        if time.get(2) != Some(&b':') {
            return None;
        }
        let minute = two_digits(time.get(3..5)?)?;
        rest = &time[5..];
        let mut second = 0;
        let mut fraction_micros = 0;
        if rest.first() == Some(&b':') {
            second = two_digits(rest.get(1..3)?)?;
            rest = &rest[3..];
            if let Some(b'.' | b',') = rest.first() {
                let digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                for (i, &b) in rest[1..=digits].iter().enumerate() {
                    if i < 6 {
                        fraction_micros = fraction_micros * 10 + i64::from(b - b'0');
                    }
                }
                for _ in digits..6 {
                    fraction_micros *= 10;
                }
                rest = &rest[1 + digits..];
            }
        }
        micros_of_day = seconds_of_day(hour, minute, second)? * 1_000_000 + fraction_micros;
    }
    let offset_seconds = parse_offset(rest)?;
    days.checked_mul(86_400_000_000)?
        .checked_add(micros_of_day)?
        .checked_sub(offset_seconds * 1_000_000)
}

/// The most common form, `YYYY-MM-DDTHH:MM:SS` (or a space for `T`) with `Z` or no zone,
/// in one pass without the general parser's steps; `None` for anything else, which the
/// general parser then judges. Years have four digits, so nothing here can overflow.
#[inline]
fn parse_timestamp_seconds_utc(v: &[u8]) -> Option<i64> {
    let v: &[u8; 19] = match v {
        [head @ .., b'Z'] => head.try_into().ok()?,
        _ => v.try_into().ok()?,
    };
    let separators_ok = v[4] == b'-'
        && v[7] == b'-'
        && (v[10] == b'T' || v[10] == b' ')
        && v[13] == b':'
        && v[16] == b':';
    let d = |i: usize| u32::from(v[i].wrapping_sub(b'0'));
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if !separators_ok || DIGITS.iter().any(|&i| d(i) > 9) {
        return None;
    }
    let year = i64::from(d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3));
    let days = civil_days(year, d(5) * 10 + d(6), d(8) * 10 + d(9))?;
    let seconds = seconds_of_day(d(11) * 10 + d(12), d(14) * 10 + d(15), d(17) * 10 + d(18))?;
    Some((days * 86_400 + seconds) * 1_000_000)
}

/// Days since 1970-01-01 of a calendar date (proleptic Gregorian), when the date exists.
#[inline]
fn civil_days(year: i64, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let last = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > last {
        return None;
    }
    // Days from civil, counting years from March so the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// Seconds since midnight of a wall-clock time, when it is one (no leap second).
#[inline]
fn seconds_of_day(hour: u32, minute: u32, second: u32) -> Option<i64> {
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(i64::from(hour * 3600 + minute * 60 + second))
}

/// `Z`, `+HH:MM`, `+HHMM`, `+HH` (or `-`), or nothing, as seconds east of UTC.
fn parse_offset(zone: &[u8]) -> Option<i64> {
    match zone {
        [] | [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => (two_digits(&[*h1, *h2])?, 0),
                [h1, h2, m1, m2] => (two_digits(&[*h1, *h2])?, two_digits(&[*m1, *m2])?),
                [h1, h2, b':', m1, m2] => (two_digits(&[*h1, *h2])?, two_digits(&[*m1, *m2])?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = i64::from(h) * 3600 + i64::from(m) * 60;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => None,
    }
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD` (exactly ten bytes) as days since 1970-01-01.
fn parse_ymd(v: &[u8]) -> Option<i64> {
    if v.len() != 10 || v[4] != b'-' || v[7] != b'-' {
        return None;
    }
    let year = i64::from(two_digits(&v[0..2])? * 100 + two_digits(&v[2..4])?);
    civil_days(year, two_digits(&v[5..7])?, two_digits(&v[8..10])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_since_the_epoch() {
        assert_eq!(parse_date(b"1970-01-01"), Some(0));
        assert_eq!(parse_date(b"2024-02-29"), Some(19_782));
        assert_eq!(parse_date(b"1969-12-31"), Some(-1));
        assert_eq!(parse_date(b"2023-02-29"), None);
        assert_eq!(parse_date(b"2024-13-01"), None);
        assert_eq!(parse_date(b"2024-1-01"), None);
    }

    #[test]
    fn the_timestamp_fast_path_agrees_with_the_general_parser() {
        let mut taken = 0;
        for year in [
            "0000", "0001", "1600", "1900", "1969", "1970", "2000", "2024", "9999",
        ] {
            for month in 0..=13 {
                for day in [0, 1, 28, 29, 30, 31, 32] {
                    for (hour, minute, second) in
                        [(0, 0, 0), (23, 59, 59), (24, 0, 0), (0, 60, 0), (0, 0, 60)]
                    {
                        for sep in ['T', ' ', 't', 'x'] {
                            for zone in ["", "Z", "z", "+00:00", "Zx"] {
                                let text = format!(
                                    "{year}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:\
                                     {second:02}{zone}"
                                );
                                let v = text.as_bytes();
                                let general = parse_timestamp_general(v);
                                if let Some(fast) = parse_timestamp_seconds_utc(v) {
                                    assert_eq!(Some(fast), general, "{text}");
                                    taken += 1;
                                }
                                assert_eq!(parse_timestamp(v), general, "{text}");
                            }
                        }
                    }
                }
            }
        }
        assert!(taken > 3_000, "the fast path took {taken} values");
        for text in [
            "2024-02-29T12:0a:00Z",
            "2024/02/29T12:00:00",
            "+024-02-29T12:00:00",
        ] {
            assert_eq!(parse_timestamp_seconds_utc(text.as_bytes()), None, "{text}");
            assert_eq!(parse_timestamp(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn timestamps_accept_rfc3339_and_space_separated_forms() {
        let noon = 19_782 * 86_400_000_000 + 12 * 3_600_000_000;
        assert_eq!(parse_timestamp(b"2024-02-29T12:00:00Z"), Some(noon));
        assert_eq!(parse_timestamp(b"2024-02-29 12:00:00"), Some(noon));
        assert_eq!(parse_timestamp(b"2024-02-29T12:00"), Some(noon));
        assert_eq!(parse_timestamp(b"2024-02-29T14:00:00+02:00"), Some(noon));
        assert_eq!(parse_timestamp(b"2024-02-29T07:30:00-0430"), Some(noon));
        assert_eq!(
            parse_timestamp(b"2024-02-29T12:00:00.5Z"),
            Some(noon + 500_000)
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29T12:00:00.123456789Z"),
            Some(noon + 123_456)
        );
        assert_eq!(
            parse_timestamp(b"2024-02-29"),
            Some(noon - 12 * 3_600_000_000)
        );
        assert_eq!(parse_timestamp(b"2024-02-29T25:00:00Z"), None);
        assert_eq!(parse_timestamp(b"2024-02-29T12:00:00.Z"), None);
        assert_eq!(parse_timestamp(b"2024-02-29T12:00:00 UTC"), None);
        assert_eq!(parse_timestamp(b"yesterday"), None);
    }
}
