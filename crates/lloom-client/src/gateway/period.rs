//! Budget periods: a key's budget can be whole again at the start of each UTC day, week
//! (from Monday) or month, as OpenRouter's and LiteLLM's key limits can.

use std::fmt;
use std::str::FromStr;

const DAY: u64 = 86_400;

/// How often every key's spend starts again from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// From 00:00 UTC each day.
    Daily,
    /// From Monday 00:00 UTC each week.
    Weekly,
    /// From 00:00 UTC on the first of each month.
    Monthly,
}

impl BudgetPeriod {
    /// When the period holding `unix_secs` began, in unix seconds.
    pub fn start(self, unix_secs: u64) -> u64 {
        let days = unix_secs / DAY;
        match self {
            Self::Daily => days * DAY,
            // 1970-01-01 was a Thursday: weeks counted from Monday 1969-12-29 (clamped to 0).
            Self::Weekly => ((days + 3) / 7 * 7).saturating_sub(3) * DAY,
            Self::Monthly => {
                let (year, month, _) = civil_from_days(days);
                days_from_civil(year, month, 1) * DAY
            }
        }
    }

    /// When the period after the one holding `unix_secs` begins.
    pub fn next_start(self, unix_secs: u64) -> u64 {
        let start = self.start(unix_secs);
        match self {
            Self::Daily => start + DAY,
            Self::Weekly => ((unix_secs / DAY + 3) / 7 * 7 + 4) * DAY,
            Self::Monthly => {
                let (year, month, _) = civil_from_days(start / DAY);
                let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                days_from_civil(year, month, 1) * DAY
            }
        }
    }

    /// Its name, as the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "daily" | "day" => Ok(Self::Daily),
            "weekly" | "week" => Ok(Self::Weekly),
            "monthly" | "month" => Ok(Self::Monthly),
            other => Err(format!("`{other}` is not a budget period: daily, weekly or monthly")),
        }
    }
}

/// Year, month (1–12) and day of the days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date from 1970 on (the inverse of [`civil_from_days`]).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year % 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * shifted_month + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// A unix time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days(unix_secs / DAY);
    let secs = unix_secs % DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03 (a Thursday) 13:05:00 UTC.
    const NOW: u64 = 1_796_256_000 + 13 * 3600 + 5 * 60;

    #[test]
    fn periods_start_at_midnight_monday_and_the_first_utc() {
        assert_eq!(BudgetPeriod::Daily.start(NOW), 1_796_256_000);
        assert_eq!(BudgetPeriod::Daily.next_start(NOW), 1_796_256_000 + DAY);
        assert_eq!(BudgetPeriod::Weekly.start(NOW), 1_795_996_800, "Monday 2026-11-30");
        assert_eq!(BudgetPeriod::Weekly.next_start(NOW), 1_795_996_800 + 7 * DAY);
        assert_eq!(BudgetPeriod::Monthly.start(NOW), 1_796_083_200, "2026-12-01");
        assert_eq!(rfc3339(BudgetPeriod::Monthly.next_start(NOW)), "2027-01-01T00:00:00Z");
        // The first of a month starts its own month; a leap day belongs to February.
        assert_eq!(BudgetPeriod::Monthly.start(1_796_083_200), 1_796_083_200);
        assert_eq!(rfc3339(BudgetPeriod::Monthly.start(1_709_164_800)), "2024-02-01T00:00:00Z");
        assert_eq!(
            rfc3339(BudgetPeriod::Monthly.next_start(1_709_164_800)),
            "2024-03-01T00:00:00Z"
        );
        assert_eq!(rfc3339(NOW), "2026-12-03T13:05:00Z");
        // The week that holds the epoch began before it: its start is clamped to 0.
        assert_eq!(BudgetPeriod::Weekly.start(0), 0);
    }

    #[test]
    fn dates_round_trip() {
        for days in [0, 59, 60, 365, 10_957, 11_016, 19_782, 20_789, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn periods_parse_from_their_names_only() {
        assert_eq!("monthly".parse(), Ok(BudgetPeriod::Monthly));
        assert_eq!("week".parse(), Ok(BudgetPeriod::Weekly));
        assert!("hourly".parse::<BudgetPeriod>().unwrap_err().contains("daily, weekly or monthly"));
    }
}
