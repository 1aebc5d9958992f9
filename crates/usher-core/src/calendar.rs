//! Business hours: when a workspace or a team is open, and when it opens next.
//!
//! A [`Calendar`] is a weekly schedule in a named time zone, plus holidays (closed all day)
//! and one-off exceptions (other hours on one date, e.g. a short Christmas Eve). Hours are
//! wall-clock times of that time zone, so "09:00-17:00" stays 09:00-17:00 across daylight
//! saving changes; the instants shift instead. Like the rest of the core it reads no clock:
//! the caller passes the instant it asks about.
//!
//! Precedence on a date: an exception's hours, else closed if it is a holiday, else the
//! weekly hours of that weekday. A span is `[from, to)` within one day (`to` may be `24:00`);
//! a night shift is two spans on adjacent days (`22:00-24:00` and `00:00-06:00`).
//!
//! Wall-clock times that do not exist (the hour skipped in spring) open at the first instant
//! that does; times that occur twice (the hour repeated in autumn) open at the first of them.
//!
//! The document form is [`CalendarSpec`] (JSON, as the API and workflows carry it):
//!
//! ```json
//! { "time_zone": "Europe/Paris",
//!   "weekly": { "mon": [["09:00", "12:30"], ["13:30", "18:00"]], "sat": [["10:00", "14:00"]] },
//!   "holidays": [{ "date": "2027-07-14", "name": "Fête nationale" }],
//!   "exceptions": [{ "date": "2027-12-24", "hours": [["09:00", "12:00"]] }] }
//! ```

use crate::clock::parse_time_zone;
use crate::model::Timestamp;
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// The most spans one day may have.
pub const SPANS_PER_DAY: usize = 12;
/// The most holidays, and separately the most exceptions, one calendar may list.
pub const DATES_PER_CALENDAR: usize = 1_000;
/// How far ahead [`Calendar::next_opening`] looks before it says "never".
pub const LOOKAHEAD_DAYS: i64 = 400;

/// A day of the week, as the document names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday, `mon`.
    Mon,
    /// Tuesday, `tue`.
    Tue,
    /// Wednesday, `wed`.
    Wed,
    /// Thursday, `thu`.
    Thu,
    /// Friday, `fri`.
    Fri,
    /// Saturday, `sat`.
    Sat,
    /// Sunday, `sun`.
    Sun,
}

impl Weekday {
    /// All seven, Monday first.
    pub const ALL: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self.index()]
    }

    fn of(date: NaiveDate) -> Weekday {
        Weekday::ALL[date.weekday().num_days_from_monday() as usize]
    }
}

/// A holiday: closed all day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidaySpec {
    /// The date, `YYYY-MM-DD`, in the calendar's time zone.
    pub date: String,
    /// What it is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Other hours on one date (none: closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    /// The date, `YYYY-MM-DD`, in the calendar's time zone.
    pub date: String,
    /// The hours that day, each `["HH:MM", "HH:MM"]`.
    #[serde(default)]
    pub hours: Vec<[String; 2]>,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A calendar as a document says it; [`Calendar::new`] checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// An IANA time zone name, e.g. `Europe/Paris`.
    pub time_zone: String,
    /// Hours per weekday, each `["HH:MM", "HH:MM"]`; a weekday not named is closed.
    #[serde(default)]
    pub weekly: BTreeMap<Weekday, Vec<[String; 2]>>,
    /// Dates closed all day.
    #[serde(default)]
    pub holidays: Vec<HolidaySpec>,
    /// Dates with other hours.
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
}

/// What is wrong with a calendar document, and where (`weekly.mon[1]`, `holidays[0].date`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct CalendarError {
    /// Where in the document.
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
}

/// Open from `from` to `to`, minutes after local midnight (`to` up to 1440).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// Opening, minutes after midnight.
    pub from: u16,
    /// Closing, minutes after midnight (exclusive).
    pub to: u16,
}

/// A checked calendar.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz: Tz,
    weekly: [Vec<Span>; 7],
    holidays: BTreeSet<NaiveDate>,
    exceptions: BTreeMap<NaiveDate, Vec<Span>>,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> CalendarError {
    CalendarError { path: path.into(), message: message.into() }
}

/// `HH:MM` to minutes after midnight; `24:00` only where `end` is set. (The simulator's shifts
/// and breaks read times of day with it too.)
pub fn minutes_of_day(text: &str, end: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn date(text: &str, path: &str) -> Result<NaiveDate, CalendarError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| err(path, format!("{text:?} is not a date (YYYY-MM-DD)")))
}

/// Checks one day's spans: well-formed, each ending after it starts, in order, not
/// overlapping.
fn spans(hours: &[[String; 2]], path: &str, errors: &mut Vec<CalendarError>) -> Vec<Span> {
    if hours.len() > SPANS_PER_DAY {
        errors.push(err(path, format!("at most {SPANS_PER_DAY} spans a day")));
        return Vec::new();
    }
    let mut out: Vec<Span> = Vec::new();
    for (i, [from, to]) in hours.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let (Some(f), Some(t)) = (minutes_of_day(from, false), minutes_of_day(to, true)) else {
            errors.push(err(here, format!("[{from:?}, {to:?}] is not two times HH:MM (00:00 to 24:00)")));
            continue;
        };
        if t <= f {
            errors.push(err(here, format!("{to} is not after {from}")));
            continue;
        }
        if let Some(prev) = out.last() {
            if f < prev.to {
                errors.push(err(here, format!("{from}-{to} starts before the span before it ends")));
                continue;
            }
        }
        out.push(Span { from: f, to: t });
    }
    out
}

impl Calendar {
    /// Checks a calendar document. Every problem is reported, each with its place.
    pub fn new(spec: &CalendarSpec) -> Result<Calendar, Vec<CalendarError>> {
        let mut errors = Vec::new();
        let tz = match parse_time_zone(&spec.time_zone) {
            Ok(tz) => tz,
            Err(e) => {
                errors.push(err("time_zone", e.to_string()));
                Tz::UTC
            }
        };
        let mut weekly: [Vec<Span>; 7] = Default::default();
        for (day, hours) in &spec.weekly {
            weekly[day.index()] = spans(hours, &format!("weekly.{}", day.name()), &mut errors);
        }
        for (list, what) in [(spec.holidays.len(), "holidays"), (spec.exceptions.len(), "exceptions")] {
            if list > DATES_PER_CALENDAR {
                errors.push(err(what, format!("at most {DATES_PER_CALENDAR} {what}")));
            }
        }
        let mut holidays = BTreeSet::new();
        for (i, h) in spec.holidays.iter().enumerate().take(DATES_PER_CALENDAR) {
            match date(&h.date, &format!("holidays[{i}].date")) {
                Ok(d) => {
                    holidays.insert(d);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut exceptions = BTreeMap::new();
        for (i, x) in spec.exceptions.iter().enumerate().take(DATES_PER_CALENDAR) {
            let hours = spans(&x.hours, &format!("exceptions[{i}].hours"), &mut errors);
            match date(&x.date, &format!("exceptions[{i}].date")) {
                Ok(d) => {
                    if exceptions.insert(d, hours).is_some() {
                        errors.push(err(
                            format!("exceptions[{i}].date"),
                            format!("{} is listed twice", x.date),
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Calendar { tz, weekly, holidays, exceptions })
        } else {
            Err(errors)
        }
    }

    /// Open around the clock, every day, in UTC (what "no calendar" means).
    pub fn always_open() -> Calendar {
        let all_day = vec![Span { from: 0, to: 1440 }];
        Calendar {
            tz: Tz::UTC,
            weekly: std::array::from_fn(|_| all_day.clone()),
            holidays: BTreeSet::new(),
            exceptions: BTreeMap::new(),
        }
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The hours on a local date: its exception's, else none on a holiday, else the
    /// weekday's.
    pub fn hours_on(&self, date: NaiveDate) -> &[Span] {
        if let Some(hours) = self.exceptions.get(&date) {
            return hours;
        }
        if self.holidays.contains(&date) {
            return &[];
        }
        &self.weekly[Weekday::of(date).index()]
    }

    /// Whether it is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let Some(local) = self.local(at) else { return false };
        let second = local.time().num_seconds_from_midnight();
        self.hours_on(local.date())
            .iter()
            .any(|s| u32::from(s.from) * 60 <= second && second < u32::from(s.to) * 60)
    }

    /// When it is next open: `at` itself if open now, else the start of the next span
    /// (within [`LOOKAHEAD_DAYS`]; none for a calendar that never opens).
    pub fn next_opening(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        let today = self.local(at)?.date();
        for offset in 0..=LOOKAHEAD_DAYS {
            let day = today.checked_add_signed(Duration::days(offset))?;
            for span in self.hours_on(day) {
                let start = self.instant(day, span.from)?;
                // A span whose start is skipped by a spring change starts after it; one that
                // began before `at` and were still open would have made `is_open` true.
                if start > at && self.is_open(start) {
                    return Some(start);
                }
            }
        }
        None
    }

    /// `at` as a wall-clock time of the calendar's zone.
    fn local(&self, at: Timestamp) -> Option<NaiveDateTime> {
        DateTime::from_timestamp_millis(at.0).map(|utc| utc.with_timezone(&self.tz).naive_local())
    }

    /// The first instant at or after the wall-clock time `minute` on `day`.
    fn instant(&self, day: NaiveDate, minute: u16) -> Option<Timestamp> {
        let midnight = day.and_time(NaiveTime::MIN);
        let mut wall = midnight + Duration::minutes(i64::from(minute));
        // A skipped wall-clock time: the first one after it that exists (gaps are at most a
        // few hours; a day is plenty).
        for _ in 0..=24 * 60 {
            match self.tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => return Some(Timestamp(t.timestamp_millis())),
                LocalResult::Ambiguous(first, _) => return Some(Timestamp(first.timestamp_millis())),
                LocalResult::None => wall += Duration::minutes(1),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(rfc3339: &str) -> Timestamp {
        Timestamp(DateTime::parse_from_rfc3339(rfc3339).map(|t| t.timestamp_millis()).unwrap_or_default())
    }

    fn spec(json: &str) -> CalendarSpec {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    fn calendar(json: &str) -> Calendar {
        Calendar::new(&spec(json)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const PARIS_OFFICE: &str = r#"{
        "time_zone": "Europe/Paris",
        "weekly": {
            "mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "17:00"]],
            "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]]
        },
        "holidays": [{ "date": "2027-07-14", "name": "Fête nationale" }],
        "exceptions": [{ "date": "2027-12-24", "hours": [["09:00", "12:00"]] },
                       { "date": "2027-03-27", "hours": [["10:00", "12:00"]] }]
    }"#;

    #[test]
    fn opening_hours_follow_the_wall_clock_across_the_spring_change() {
        let c = calendar(PARIS_OFFICE);
        // Friday 26 March 2027, winter time (UTC+1): 09:00 local is 08:00 UTC.
        assert!(!c.is_open(ts("2027-03-26T07:59:59Z")));
        assert!(c.is_open(ts("2027-03-26T08:00:00Z")));
        assert!(c.is_open(ts("2027-03-26T15:59:59Z")));
        assert!(!c.is_open(ts("2027-03-26T16:00:00Z")));
        // Clocks go forward on Sunday 28 March; Monday 29, summer time (UTC+2): 09:00 local is
        // 07:00 UTC. From Friday evening the next opening is Saturday's exception, then Monday.
        assert_eq!(c.next_opening(ts("2027-03-26T17:00:00Z")), Some(ts("2027-03-27T09:00:00Z")));
        assert_eq!(c.next_opening(ts("2027-03-27T11:00:00Z")), Some(ts("2027-03-29T07:00:00Z")));
        assert!(!c.is_open(ts("2027-03-29T06:59:59Z")));
        assert!(c.is_open(ts("2027-03-29T07:00:00Z")));
        assert!(!c.is_open(ts("2027-03-29T15:00:00Z")), "17:00 local is 15:00 UTC in summer");
    }

    #[test]
    fn the_autumn_change_moves_the_instants_back() {
        let c = calendar(PARIS_OFFICE);
        // Clocks go back on Sunday 31 October 2027; Monday 1 November opens at 08:00 UTC.
        assert_eq!(c.next_opening(ts("2027-10-29T15:00:00Z")), Some(ts("2027-11-01T08:00:00Z")));
        assert!(c.is_open(ts("2027-10-29T07:00:00Z")), "Friday 29 October is still summer time");
    }

    #[test]
    fn holidays_close_and_exceptions_replace_the_day() {
        let c = calendar(PARIS_OFFICE);
        // Wednesday 14 July 2027 is a holiday: closed all day, open again Thursday 09:00
        // (07:00 UTC).
        assert!(!c.is_open(ts("2027-07-14T10:00:00Z")));
        assert_eq!(c.next_opening(ts("2027-07-13T16:00:00Z")), Some(ts("2027-07-15T07:00:00Z")));
        // Friday 24 December 2027: 09:00-12:00 only (winter: 08:00-11:00 UTC).
        assert!(c.is_open(ts("2027-12-24T10:59:59Z")));
        assert!(!c.is_open(ts("2027-12-24T11:00:00Z")));
        assert_eq!(c.next_opening(ts("2027-12-24T11:00:00Z")), Some(ts("2027-12-27T08:00:00Z")));
    }

    #[test]
    fn a_span_in_the_skipped_hour_opens_when_the_clock_resumes() {
        // 02:30 does not exist in Paris on 28 March 2027 (02:00 -> 03:00): open at 03:00
        // local, 01:00 UTC.
        let c = calendar(r#"{ "time_zone": "Europe/Paris", "weekly": { "sun": [["02:30", "05:00"]] } }"#);
        assert_eq!(c.next_opening(ts("2027-03-27T12:00:00Z")), Some(ts("2027-03-28T01:00:00Z")));
        assert!(c.is_open(ts("2027-03-28T01:00:00Z")));
        // On the autumn Sunday 02:30 happens twice; it opens at the first (00:30 UTC).
        assert_eq!(c.next_opening(ts("2027-10-30T12:00:00Z")), Some(ts("2027-10-31T00:30:00Z")));
    }

    #[test]
    fn night_shifts_span_midnight_as_two_days() {
        let c = calendar(
            r#"{ "time_zone": "UTC", "weekly": { "mon": [["22:00", "24:00"]], "tue": [["00:00", "06:00"]] } }"#,
        );
        // Monday 1 February 2027.
        assert!(c.is_open(ts("2027-02-01T23:59:59Z")));
        assert!(c.is_open(ts("2027-02-02T00:00:00Z")));
        assert!(!c.is_open(ts("2027-02-02T06:00:00Z")));
        assert_eq!(c.next_opening(ts("2027-02-02T06:00:00Z")), Some(ts("2027-02-08T22:00:00Z")));
    }

    #[test]
    fn a_calendar_that_never_opens_has_no_next_opening() {
        let c = calendar(r#"{ "time_zone": "UTC" }"#);
        assert!(!c.is_open(ts("2027-02-01T12:00:00Z")));
        assert_eq!(c.next_opening(ts("2027-02-01T12:00:00Z")), None);
        let open = Calendar::always_open();
        assert_eq!(open.next_opening(ts("2027-02-01T12:00:00Z")), Some(ts("2027-02-01T12:00:00Z")));
    }

    #[test]
    fn every_mistake_is_reported_at_its_place() {
        let bad = spec(
            r#"{ "time_zone": "Europe/Atlantis",
                 "weekly": { "mon": [["09:00", "08:00"], ["25:00", "26:00"]],
                             "tue": [["09:00", "12:00"], ["11:00", "13:00"]], "wed": [["24:00", "24:00"]] },
                 "holidays": [{ "date": "2027-02-30" }],
                 "exceptions": [{ "date": "2027-12-24", "hours": [] }, { "date": "2027-12-24" }] }"#,
        );
        let errors = Calendar::new(&bad).err().unwrap_or_default();
        let places: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            places,
            vec![
                "time_zone",
                "weekly.mon[0]",
                "weekly.mon[1]",
                "weekly.tue[1]",
                "weekly.wed[0]",
                "holidays[0].date",
                "exceptions[1].date"
            ],
            "{errors:?}"
        );
        assert!(errors[1].message.contains("08:00 is not after 09:00"), "{}", errors[1]);
        // Unknown fields and wrong shapes are refused by the document's parser.
        assert!(serde_json::from_str::<CalendarSpec>(r#"{ "time_zone": "UTC", "weekley": {} }"#).is_err());
        assert!(serde_json::from_str::<CalendarSpec>(
            r#"{ "time_zone": "UTC", "weekly": { "funday": [] } }"#
        )
        .is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Random calendars: each weekday with up to three spans on a 30-minute grid, in a
        /// zone with daylight saving, plus a holiday and an exception in 2027.
        fn calendars() -> impl Strategy<Value = Calendar> {
            let day = prop::collection::vec((0u16..48, 1u16..16), 0..=3);
            (prop::collection::vec(day, 7), 0u32..365, 0u32..365, prop::bool::ANY).prop_map(
                |(days, holiday, exception, paris)| {
                    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
                    let mut weekly = BTreeMap::new();
                    for (i, spans) in days.into_iter().enumerate() {
                        let mut at = 0u16;
                        let mut hours = Vec::new();
                        for (gap, len) in spans {
                            let from = at + gap * 30;
                            let to = (from + len * 30).min(1440);
                            if from >= 1440 || to <= from {
                                break;
                            }
                            hours.push([hhmm(from), if to == 1440 { "24:00".into() } else { hhmm(to) }]);
                            at = to;
                        }
                        weekly.insert(Weekday::ALL[i], hours);
                    }
                    let jan1 = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
                    let on = |d: u32| (jan1 + Duration::days(i64::from(d))).format("%Y-%m-%d").to_string();
                    let spec = CalendarSpec {
                        time_zone: if paris { "Europe/Paris" } else { "America/New_York" }.into(),
                        weekly,
                        holidays: vec![HolidaySpec { date: on(holiday), name: None }],
                        exceptions: vec![ExceptionSpec {
                            date: on(exception),
                            hours: vec![["10:00".into(), "11:30".into()]],
                            name: None,
                        }],
                    };
                    Calendar::new(&spec).unwrap_or_else(|_| Calendar::always_open())
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// The next opening is open, not before the question, and nothing between the two
            /// is open (checked every minute up to a week, the gaps a weekly schedule can have).
            #[test]
            fn the_next_opening_is_the_first_open_instant(c in calendars(), minute in 0i64..(365 * 1440)) {
                let at = Timestamp(ts("2027-01-01T00:00:00Z").0 + minute * 60_000 + 17_000);
                match c.next_opening(at) {
                    Some(next) => {
                        prop_assert!(next >= at);
                        prop_assert!(c.is_open(next), "{next:?} is not open");
                        let mut t = at.0;
                        while t < next.0 && t < at.0 + 8 * 1440 * 60_000 {
                            prop_assert!(!c.is_open(Timestamp(t)), "open at {t} before the next opening {next:?}");
                            t += 60_000;
                        }
                    }
                    None => {
                        for d in 0..8 * 1440 {
                            prop_assert!(!c.is_open(Timestamp(at.0 + d * 60_000)));
                        }
                    }
                }
            }
        }
    }
}
