//! Calendar arithmetic for document timestamps, done by hand so encoding
//! stays a pure function of its input (no clock, no time-zone database).

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Nanoseconds since the epoch → RFC 3339 UTC with nine fractional digits,
/// the form `date_nanos` keeps without loss.
pub fn rfc3339_nanos(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let frac = ns % 1_000_000_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Start of the UTC day containing `secs` (epoch seconds).
pub fn start_of_day(secs: u64) -> u64 {
    secs - secs % 86_400
}

/// Start (Monday 00:00 UTC) of the week containing `secs`: what upstream gets
/// from Go's `Truncate(7 * 24h)`, whose zero time (year 1) is a Monday. The
/// epoch was a Thursday, hence the 3-day shift.
pub fn start_of_week(secs: u64) -> u64 {
    const WEEK: u64 = 7 * 86_400;
    const SHIFT: u64 = 3 * 86_400;
    if secs < 4 * 86_400 {
        // The first Monday after the epoch is day 4; earlier times clamp to 0
        // (epoch seconds are unsigned here).
        return 0;
    }
    (secs + SHIFT) / WEEK * WEEK - SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_nanoseconds() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        // Leap day.
        assert_eq!(
            rfc3339_nanos(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339_nanos(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn week_starts_on_monday() {
        // 2023-11-14 (Tuesday) → Monday 2023-11-13 00:00 UTC.
        assert_eq!(start_of_week(1_700_000_000), 1_699_833_600);
        assert_eq!(
            rfc3339_nanos(1_699_833_600 * 1_000_000_000),
            "2023-11-13T00:00:00.000000000Z"
        );
        // A Monday at 00:00 is its own start.
        assert_eq!(start_of_week(1_699_833_600), 1_699_833_600);
        assert_eq!(start_of_week(1_699_833_599), 1_699_833_600 - 7 * 86_400);
        assert_eq!(start_of_week(0), 0);
        // Every result is a Monday: days since epoch ≡ 4 (mod 7).
        for s in (400_000u64..2_000_000_000).step_by(86_400 * 3 + 17) {
            let w = start_of_week(s);
            assert!(w <= s && s - w < 7 * 86_400);
            assert_eq!((w / 86_400) % 7, 4);
            assert_eq!(w % 86_400, 0);
        }
    }

    #[test]
    fn day_start() {
        assert_eq!(start_of_day(1_700_000_000), 1_699_920_000);
    }
}
