//! A small NCRONTAB evaluator: the 6-field schedules of Azure Functions timer triggers
//! (`sec min hour day month day-of-week`, UTC), so standalone `suroga serve` fires the timer jobs
//! on exactly the schedules the host would use.
//!
//! Spec: <https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions>.
//! Each field accepts `*`, `*/n`, single values, ranges `a-b`, stepped ranges `a-b/n` and `a/n`,
//! and comma lists of those; months and days of week also accept English three-letter names.
//! Day-of-week `0` and `7` are Sunday. As in NCrontab (the library the host uses), an occurrence
//! must match BOTH the day-of-month and the day-of-week fields.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};

/// Why a schedule string is not a usable NCRONTAB expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule does not have exactly six space-separated fields.
    #[error("NCRONTAB schedule {schedule:?} has {found} fields; 6 are required (sec min hour day month dow)")]
    FieldCount { schedule: String, found: usize },
    /// A field is not valid for its position.
    #[error("NCRONTAB field {field} has an invalid value {value:?}")]
    InvalidField { field: &'static str, value: String },
    /// The schedule parses but never fires (e.g. `0 0 0 30 2 *`).
    #[error("NCRONTAB schedule {schedule:?} has no occurrence within 5 years")]
    NoOccurrence { schedule: String },
}

/// One field's allowed values, as a bit set (values fit in 0..=59).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field(u64);

impl Field {
    fn contains(self, v: u32) -> bool {
        v < 64 && self.0 & (1 << v) != 0
    }
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// English three-letter names of the values, starting at `min` (months 1, days 0).
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[] };
const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[] };
const DAY: FieldSpec = FieldSpec { name: "day", min: 1, max: 31, names: &[] };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
// 7 is accepted as a second Sunday and folded onto 0 after parsing.
const DOW: FieldSpec =
    FieldSpec { name: "day-of-week", min: 0, max: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl FieldSpec {
    fn value(&self, s: &str) -> Option<u32> {
        let v = match s.parse::<u32>() {
            Ok(v) => v,
            Err(_) => {
                let lower = s.to_ascii_lowercase();
                self.min + self.names.iter().position(|n| *n == lower)? as u32
            }
        };
        (self.min..=self.max).contains(&v).then_some(v)
    }

    fn parse(&self, text: &str) -> Result<Field, ScheduleError> {
        let invalid = || ScheduleError::InvalidField { field: self.name, value: text.to_string() };
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(invalid)?)),
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a).ok_or_else(invalid)?, self.value(b).ok_or_else(invalid)?);
                if a > b {
                    return Err(invalid());
                }
                (a, b)
            } else {
                let a = self.value(range).ok_or_else(invalid)?;
                // `a/n` means "from a to the maximum, every n".
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        if self.name == DOW.name && bits & (1 << 7) != 0 {
            bits = (bits & !(1 << 7)) | 1;
        }
        Ok(Field(bits))
    }
}

/// A parsed 6-field NCRONTAB schedule, evaluated in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    seconds: Field,
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    days_of_week: Field,
}

impl Schedule {
    /// Parses `sec min hour day month dow`. Errors: [`ScheduleError::FieldCount`],
    /// [`ScheduleError::InvalidField`].
    pub fn parse(schedule: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        let [s, mi, h, d, mo, w] = fields[..] else {
            return Err(ScheduleError::FieldCount { schedule: schedule.to_string(), found: fields.len() });
        };
        Ok(Self {
            source: schedule.to_string(),
            seconds: SECOND.parse(s)?,
            minutes: MINUTE.parse(mi)?,
            hours: HOUR.parse(h)?,
            days: DAY.parse(d)?,
            months: MONTH.parse(mo)?,
            days_of_week: DOW.parse(w)?,
        })
    }

    /// The schedule text as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn date_matches(&self, d: NaiveDate) -> bool {
        self.months.contains(d.month())
            && self.days.contains(d.day())
            && self.days_of_week.contains(d.weekday().num_days_from_sunday())
    }

    /// The first occurrence strictly after `t` (sub-second parts of `t` are dropped first), or
    /// `None` if there is none within 5 years (an impossible date such as February 30).
    /// Pure: depends only on `self` and `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.naive_utc().with_nanosecond(0)? + Duration::seconds(1);
        let limit = start + Duration::days(5 * 366);
        let mut c: NaiveDateTime = start;
        // Each step jumps to the start of the next candidate unit of the first field that fails,
        // so the loop runs at most about (days + 24 + 60 + 60) times.
        while c < limit {
            if !self.date_matches(c.date()) {
                c = c.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
            } else if !self.hours.contains(c.hour()) {
                c = c.with_minute(0)?.with_second(0)? + Duration::hours(1);
            } else if !self.minutes.contains(c.minute()) {
                c = c.with_second(0)? + Duration::minutes(1);
            } else if !self.seconds.contains(c.second()) {
                c += Duration::seconds(1);
            } else {
                return Some(c.and_utc());
            }
        }
        None
    }
}

/// Parses `schedule` and returns its first occurrence strictly after `t`.
/// Errors: any [`ScheduleError`], including [`ScheduleError::NoOccurrence`].
pub fn next_after(schedule: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    Schedule::parse(schedule)?
        .next_after(t)
        .ok_or_else(|| ScheduleError::NoOccurrence { schedule: schedule.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_minute_fires_at_the_next_minute_boundary() {
        assert_eq!(next_after("0 */1 * * * *", at("2026-11-30T14:44:00.46239Z")).unwrap(), at("2026-11-30T14:45:00Z"));
    }

    #[test]
    fn an_occurrence_exactly_at_t_is_not_returned() {
        assert_eq!(next_after("0 */1 * * * *", at("2026-11-30T14:45:00Z")).unwrap(), at("2026-11-30T14:46:00Z"));
    }

    #[test]
    fn daily_at_three_rolls_over_to_the_next_day_and_month_and_year() {
        assert_eq!(next_after("0 0 3 * * *", at("2026-11-30T02:59:59Z")).unwrap(), at("2026-11-30T03:00:00Z"));
        assert_eq!(next_after("0 0 3 * * *", at("2026-11-30T03:00:00Z")).unwrap(), at("2026-12-01T03:00:00Z"));
        assert_eq!(next_after("0 0 3 * * *", at("2026-12-31T04:00:00Z")).unwrap(), at("2027-01-01T03:00:00Z"));
    }

    #[test]
    fn step_over_seconds_and_minutes() {
        assert_eq!(next_after("*/15 * * * * *", at("2026-01-01T00:00:44Z")).unwrap(), at("2026-01-01T00:00:45Z"));
        assert_eq!(next_after("*/15 * * * * *", at("2026-01-01T00:00:45Z")).unwrap(), at("2026-01-01T00:01:00Z"));
        assert_eq!(next_after("0 */5 * * * *", at("2026-01-01T00:56:00Z")).unwrap(), at("2026-01-01T01:00:00Z"));
    }

    #[test]
    fn lists_ranges_and_stepped_ranges() {
        let s = Schedule::parse("30 5,35 9-17/4 * * *").unwrap();
        assert_eq!(s.next_after(at("2026-01-01T08:00:00Z")).unwrap(), at("2026-01-01T09:05:30Z"));
        assert_eq!(s.next_after(at("2026-01-01T09:05:30Z")).unwrap(), at("2026-01-01T09:35:30Z"));
        assert_eq!(s.next_after(at("2026-01-01T09:35:30Z")).unwrap(), at("2026-01-01T13:05:30Z"));
        assert_eq!(s.next_after(at("2026-01-01T17:35:30Z")).unwrap(), at("2026-01-02T09:05:30Z"));
    }

    #[test]
    fn day_of_week_with_names_and_seven_as_sunday() {
        // 2026-01-01 is a Thursday.
        assert_eq!(next_after("0 30 9 * * Mon-Fri", at("2026-01-02T10:00:00Z")).unwrap(), at("2026-01-05T09:30:00Z"));
        assert_eq!(next_after("0 0 0 * * 7", at("2026-01-01T00:00:00Z")).unwrap(), at("2026-01-04T00:00:00Z"));
        assert_eq!(next_after("0 0 0 * * 0", at("2026-01-01T00:00:00Z")).unwrap(), at("2026-01-04T00:00:00Z"));
    }

    #[test]
    fn day_of_month_and_day_of_week_must_both_match() {
        // The next Friday the 13th after 2026-01-01 is 2026-02-13.
        assert_eq!(next_after("0 0 12 13 * 5", at("2026-01-01T00:00:00Z")).unwrap(), at("2026-02-13T12:00:00Z"));
    }

    #[test]
    fn month_names_and_leap_days() {
        assert_eq!(next_after("0 0 0 29 feb *", at("2026-03-01T00:00:00Z")).unwrap(), at("2028-02-29T00:00:00Z"));
        assert_eq!(next_after("0 0 0 1 Jun,DEC *", at("2026-07-01T00:00:00Z")).unwrap(), at("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn impossible_dates_have_no_occurrence() {
        assert!(matches!(
            next_after("0 0 0 30 2 *", at("2026-01-01T00:00:00Z")),
            Err(ScheduleError::NoOccurrence { .. })
        ));
    }

    #[test]
    fn five_field_unix_cron_is_rejected() {
        assert_eq!(
            Schedule::parse("*/5 * * * *"),
            Err(ScheduleError::FieldCount { schedule: "*/5 * * * *".into(), found: 5 })
        );
    }

    #[test]
    fn out_of_range_and_malformed_fields_are_rejected() {
        for (s, field) in [
            ("60 * * * * *", "second"),
            ("0 * 24 * * *", "hour"),
            ("0 * * 0 * *", "day"),
            ("0 * * * 13 *", "month"),
            ("0 * * * * 8", "day-of-week"),
            ("*/0 * * * * *", "second"),
            ("0 5-1 * * * *", "minute"),
            ("0 x * * * *", "minute"),
        ] {
            match Schedule::parse(s) {
                Err(ScheduleError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}
