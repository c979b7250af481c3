//! ISO 8601 weeks ("2026-W47") from Unix milliseconds — weekly
//! leaderboards and reports: pure arithmetic, no calendar crate.

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Day of the year, 1-based.
fn ordinal(y: i64, m: u32, d: u32) -> i64 {
    const BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    BEFORE[(m - 1) as usize] + i64::from(d) + i64::from(m > 2 && leap(y))
}

/// ISO weekday of a day count since 1970-01-01 (a Thursday): Monday 1 … Sunday 7.
fn weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7) + 1
}

fn weeks_in(y: i64) -> i64 {
    // A year has 53 weeks when it starts on a Thursday, or on a Wednesday in a leap year.
    let jan1 = days_of(y, 1, 1);
    let wd = weekday(jan1);
    if wd == 4 || (wd == 3 && leap(y)) { 53 } else { 52 }
}

/// Days since 1970-01-01 of a date (`days_from_civil`).
fn days_of(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The ISO week of an instant, e.g. "2026-W47".
pub fn iso_week(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (y, m, d) = civil(days);
    let week = (ordinal(y, m, d) - weekday(days) + 10) / 7;
    let (year, week) = if week < 1 {
        (y - 1, weeks_in(y - 1))
    } else if week > weeks_in(y) {
        (y + 1, 1)
    } else {
        (y, week)
    };
    format!("{year}-W{week:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: u32, d: u32) -> i64 {
        days_of(y, m, d) * 86_400_000 + 12 * 3_600_000
    }

    #[test]
    fn known_weeks() {
        assert_eq!(iso_week(0), "1970-W01");
        assert_eq!(iso_week(at(2026, 11, 22)), "2026-W47"); // a Sunday
        assert_eq!(iso_week(at(2026, 11, 23)), "2026-W48"); // the Monday after
        assert_eq!(iso_week(at(2021, 1, 3)), "2020-W53"); // 2020 has 53 weeks
        assert_eq!(iso_week(at(2024, 12, 30)), "2025-W01");
        assert_eq!(iso_week(at(2027, 1, 1)), "2026-W53");
        assert_eq!(civil(days_of(2024, 2, 29)), (2024, 2, 29));
    }
}

/// The UTC date of an instant, e.g. "2026-11-18".
pub fn utc_date(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC date and time of an instant, e.g. "2026-11-18 10:04:05 UTC".
pub fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{} {:02}:{:02}:{:02} UTC", utc_date(ms), secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn a_utc_time_is_the_date_and_the_time_of_day() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_time(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[test]
    fn a_utc_date_is_the_civil_day_of_the_instant() {
        assert_eq!(super::utc_date(0), "1970-01-01");
        assert_eq!(super::utc_date(1_795_000_000_000), "2026-11-18");
        assert_eq!(super::utc_date(951_782_400_000), "2000-02-29");
        assert_eq!(super::utc_date(-1), "1969-12-31");
    }
}
