//! CAP date-times: `YYYY-MM-DDThh:mm:ss±hh:mm` (CAP 1.2) and the GB/T 35965.1 form with a
//! space, `YYYY-MM-DD hh:mm:ss+08:00`.
//!
//! Written out rather than pulled from a date crate: one fixed format, and the arithmetic
//! is a few lines (days from the civil calendar, after Howard Hinnant's algorithm).

use tocsin_core::Timestamp;

/// Parses a CAP date-time to milliseconds since the epoch.
///
/// Accepted beyond the letter of CAP 1.2, because refusing a warning over them would help
/// no one: `Z` for UTC, a space instead of `T` (the GB profile), fractional seconds.
/// An offset is required: a time without one is ambiguous.
pub(crate) fn parse_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let b = s.as_bytes();
    let date = b.get(..10)?;
    if date.get(4) != Some(&b'-') || date.get(7) != Some(&b'-') {
        return None;
    }
    let year = digits(date.get(0..4)?)?;
    let month = digits(date.get(5..7)?)?;
    let day = digits(date.get(8..10)?)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let time = b.get(11..19)?;
    if time.get(2) != Some(&b':') || time.get(5) != Some(&b':') {
        return None;
    }
    let hour = digits(time.get(0..2)?)?;
    let minute = digits(time.get(3..5)?)?;
    let second = digits(time.get(6..8)?)?;
    let mut rest = b.get(19..)?;
    let mut millis = 0i64;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Keep milliseconds; finer digits are checked but dropped.
        for (i, c) in frac.iter().take(n).enumerate() {
            if i < 3 {
                millis = millis * 10 + i64::from(c - b'0');
            }
        }
        for _ in n..3 {
            millis *= 10;
        }
        rest = frac.get(n..)?;
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 14 || m > 59 {
                return None;
            }
            let total = h * 60 + m;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // A leap second is written as :60; it is the same instant as :59 plus one.
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(Timestamp(seconds * 1_000 + millis))
}

/// A run of ASCII digits as a number (at most four digits are ever passed).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, c| n * 10 + i64::from(c - b'0')))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0..=9999 here).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_and_gb_forms_to_the_same_instant() {
        // 2024-07-01T02:30:00Z is 1_719_801_000 s after the epoch.
        let utc = Timestamp(1_719_801_000_000);
        assert_eq!(parse_time("2024-07-01T10:30:00+08:00"), Some(utc));
        assert_eq!(parse_time("2024-07-01 10:30:00+08:00"), Some(utc));
        assert_eq!(parse_time("2024-07-01T02:30:00-00:00"), Some(utc));
        assert_eq!(parse_time("2024-07-01T02:30:00Z"), Some(utc));
        assert_eq!(
            parse_time(" 2024-07-01T02:30:00.250Z "),
            Some(Timestamp(utc.0 + 250))
        );
        assert_eq!(parse_time("2024-06-30T21:30:00-05:00"), Some(utc));
        assert_eq!(parse_time("1970-01-01T00:00:00+00:00"), Some(Timestamp(0)));
        assert_eq!(
            parse_time("2024-02-29T00:00:00+00:00"),
            Some(Timestamp(1_709_164_800_000))
        );
    }

    #[test]
    fn refuses_what_is_not_a_date_time() {
        for bad in [
            "",
            "2024-07-01",
            "2024-07-01T10:30:00",
            "2024-07-01T10:30+08:00",
            "2024-13-01T10:30:00+08:00",
            "2023-02-29T10:30:00+08:00",
            "2024-07-01T24:00:00+08:00",
            "2024-07-01T10:30:00+0800",
            "2024-07-01T10:30:00+15:00",
            "2024-07-01X10:30:00+08:00",
            "２０２４-07-01T10:30:00+08:00",
            "2024-07-01T10:30:00.+08:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }
}
