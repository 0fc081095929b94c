//! Intervals as text: Postgres keeps an interval as months, days and microseconds, each
//! with its own sign; this is the ISO 8601 duration form Postgres itself writes under
//! `IntervalStyle = iso_8601` (`P1Y2M3DT4H5M6.5S`, `P-1M`, `PT0S`), which keeps all three
//! exactly and can be read back.

/// The ISO 8601 text of an interval.
pub fn format(months: i32, days: i32, micros: i64) -> String {
    if months == 0 && days == 0 && micros == 0 {
        return "PT0S".into();
    }
    let mut s = String::from("P");
    let (years, months) = (months / 12, months % 12);
    if years != 0 {
        s.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        s.push_str(&format!("{months}M"));
    }
    if days != 0 {
        s.push_str(&format!("{days}D"));
    }
    if micros != 0 {
        s.push('T');
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let (hours, rest) = (m / 3_600_000_000, m % 3_600_000_000);
        let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (seconds, fraction) = (rest / 1_000_000, rest % 1_000_000);
        if hours != 0 {
            s.push_str(&format!("{sign}{hours}H"));
        }
        if minutes != 0 {
            s.push_str(&format!("{sign}{minutes}M"));
        }
        if seconds != 0 || fraction != 0 {
            if fraction == 0 {
                s.push_str(&format!("{sign}{seconds}S"));
            } else {
                let f = format!("{fraction:06}");
                s.push_str(&format!("{sign}{seconds}.{}S", f.trim_end_matches('0')));
            }
        }
    }
    s
}

/// Read the text [`format`] writes (any ISO 8601 duration with optionally signed,
/// integral parts and fractional seconds) into (months, days, microseconds).
pub fn parse(text: &str) -> Result<(i32, i32, i64), String> {
    let bad = || format!("{text:?} is not an ISO 8601 duration such as P1Y2M3DT4H5M6.5S");
    let rest = text.trim().strip_prefix('P').ok_or_else(bad)?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let (mut months, mut days, mut micros) = (0i64, 0i64, 0i64);
    for (value, unit) in parts(date).ok_or_else(bad)? {
        let n: i64 = value.parse().map_err(|_| bad())?;
        match unit {
            'Y' => months += n * 12,
            'M' => months += n,
            'W' => days += n * 7,
            'D' => days += n,
            _ => return Err(bad()),
        }
    }
    if let Some(time) = time {
        for (value, unit) in parts(time).ok_or_else(bad)? {
            match unit {
                'H' => micros += value.parse::<i64>().map_err(|_| bad())? * 3_600_000_000,
                'M' => micros += value.parse::<i64>().map_err(|_| bad())? * 60_000_000,
                'S' => micros += seconds(value).ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
    }
    Ok((
        i32::try_from(months).map_err(|_| bad())?,
        i32::try_from(days).map_err(|_| bad())?,
        micros,
    ))
}

/// `(number text, unit letter)` pairs of `1Y-2M3D`.
fn parts(text: &str) -> Option<Vec<(&str, char)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_alphabetic() {
            if i == start {
                return None;
            }
            out.push((&text[start..i], c));
            start = i + 1;
        }
    }
    (start == text.len()).then_some(out)
}

/// Seconds with up to six decimals, as microseconds.
fn seconds(text: &str) -> Option<i64> {
    let (negative, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().ok()?
    };
    let micros = whole * 1_000_000 + fraction;
    Some(if negative { -micros } else { micros })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip_through_iso_8601_text() {
        for (months, days, micros, text) in [
            (0, 0, 0, "PT0S"),
            (14, 3, 14_706_789_000, "P1Y2M3DT4H5M6.789S"),
            (-1, 0, 0, "P-1M"),
            (0, -3, -3_600_000_001, "P-3DT-1H-0.000001S"),
            (0, 0, 1_500_000, "PT1.5S"),
        ] {
            assert_eq!(format(months, days, micros), text);
            assert_eq!(parse(text), Ok((months, days, micros)), "{text}");
        }
        assert!(parse("1 day").is_err());
        assert!(parse("PT1.1234567S").is_err());
    }
}
