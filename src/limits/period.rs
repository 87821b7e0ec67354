//! Calendar periods of budgets, in UTC: a day, an ISO week (from Monday), a month.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

const DAY: i64 = 86_400;

fn unix(wall: SystemTime) -> i64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// (year, month 1-12) of a day count since 1970-01-01 (Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// Days since 1970-01-01 of the first of (year, month) (Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Period {
    /// Which period `wall` falls in (comparable only within one kind).
    pub fn index(self, wall: SystemTime) -> i64 {
        let days = unix(wall).div_euclid(DAY);
        match self {
            Period::Day => days,
            // 1970-01-01 was a Thursday: shifted so weeks start on Monday.
            Period::Week => (days + 3).div_euclid(7),
            Period::Month => {
                let (year, month) = civil(days);
                year * 12 + month
            }
        }
    }

    /// Seconds from `wall` to the start of the next period.
    pub fn seconds_left(self, wall: SystemTime) -> u64 {
        let now = unix(wall);
        let days = now.div_euclid(DAY);
        let next = match self {
            Period::Day => (days + 1) * DAY,
            Period::Week => ((days + 3).div_euclid(7) * 7 - 3 + 7) * DAY,
            Period::Month => {
                let (year, month) = civil(days);
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                days_from_civil(year, month) * DAY
            }
        };
        u64::try_from(next - now).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        // 2026-12-05 03:49:33 UTC, a Saturday.
        let t = at(1_796_442_573);
        assert_eq!(
            Period::Day.seconds_left(t),
            86_400 - (3 * 3600 + 49 * 60 + 33)
        );
        // To Monday 2026-12-07 00:00.
        assert_eq!(
            Period::Week.seconds_left(t),
            2 * 86_400 - (3 * 3600 + 49 * 60 + 33)
        );
        // To 2027-01-01 00:00: 26 days and the rest of today.
        assert_eq!(
            Period::Month.seconds_left(t),
            26 * 86_400 + 86_400 - (3 * 3600 + 49 * 60 + 33)
        );
        assert_eq!(civil(0), (1970, 1));
        assert_eq!(days_from_civil(2024, 3) - days_from_civil(2024, 2), 29);
        // The month index changes exactly at midnight of the first.
        let jan = days_from_civil(2027, 1) as u64 * 86_400;
        assert_ne!(
            Period::Month.index(at(jan - 1)),
            Period::Month.index(at(jan))
        );
        assert_eq!(
            Period::Month.index(at(jan)),
            Period::Month.index(at(jan + 86_400 * 30))
        );
        // Monday 2026-12-07 starts a week; Sunday the 6th ends the previous one.
        let monday = days_from_civil(2026, 12) as u64 * 86_400 + 6 * 86_400;
        assert_ne!(
            Period::Week.index(at(monday - 1)),
            Period::Week.index(at(monday))
        );
    }
}
