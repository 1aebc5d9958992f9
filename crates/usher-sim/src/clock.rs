//! Where virtual time stands in real time: the desk's time zone, the Monday the simulation
//! starts on, and the calendars its workflows read.
//!
//! Virtual time 0 is a Monday 00:00 in the desk's time zone (UTC unless the setup names
//! one): the hours of the week of the rates, the shifts and the midnights of daily limits are
//! that zone's. The instant of time 0 ([`Clock::origin`]) is what a workflow's
//! `within_hours` condition is evaluated against, so holidays and exceptions fall on their
//! dates. A trace in RFC 3339 starts on the Monday of its first arrival's week in the zone;
//! otherwise the setup's `start` says the week.
//!
//! Virtual time runs in plain milliseconds from that instant: across a change of the clocks
//! (summer time) the shifts and rates keep the hours they had at the start, an hour off the
//! wall clock until the change back, while the calendars read the wall clock.

use crate::model::{Setup, SetupError};
use crate::trace::Trace;
use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use usher_core::calendar::{Calendar, CalendarSpec};

/// The week a simulation without a dated trace or a `start` begins in: Monday 4 January 2027.
pub fn default_start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 1, 4).unwrap_or_default()
}

/// The desk's clock and calendars, built once per setup.
#[derive(Debug, Clone)]
pub struct Clock {
    /// The desk's time zone.
    pub zone: Tz,
    /// The Monday the simulation starts on when no dated trace says otherwise.
    pub start: NaiveDate,
    /// The workspace's business hours (none: always open).
    pub hours: Option<Calendar>,
    /// Other calendars by id.
    pub calendars: BTreeMap<i64, Calendar>,
}

impl Default for Clock {
    /// UTC, from the default start, always open.
    fn default() -> Clock {
        Clock { zone: Tz::UTC, start: default_start(), hours: None, calendars: BTreeMap::new() }
    }
}

fn calendar(spec: &CalendarSpec, what: &str) -> Result<Calendar, SetupError> {
    Calendar::new(spec).map_err(|problems| {
        let first = problems.first().map(ToString::to_string).unwrap_or_default();
        SetupError::Invalid(format!("{what}: {first}"))
    })
}

/// The Monday of `date`'s week.
fn monday_of(date: NaiveDate) -> NaiveDate {
    date - Duration::days(i64::from(date.weekday().num_days_from_monday()))
}

impl Clock {
    /// The setup's clock, or why it cannot be read (a time zone, a date, a calendar).
    pub fn of(setup: &Setup) -> Result<Clock, SetupError> {
        let zone = match &setup.time_zone {
            None => Tz::UTC,
            Some(name) => usher_core::clock::parse_time_zone(name)
                .map_err(|_| SetupError::Invalid(format!("time_zone {name:?} is not an IANA time zone")))?,
        };
        let start = match &setup.start {
            None => default_start(),
            Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| SetupError::Invalid(format!("start {text:?} is not a date (YYYY-MM-DD)")))?,
        };
        let hours = setup.business_hours.as_ref().map(|s| calendar(s, "business_hours")).transpose()?;
        let mut calendars = BTreeMap::new();
        for (id, spec) in &setup.calendars {
            calendars.insert(*id, calendar(spec, &format!("calendars.{id}"))?);
        }
        Ok(Clock { zone, start: monday_of(start), hours, calendars })
    }

    /// The instant (Unix milliseconds) of 00:00 on `date` in the desk's zone (the first
    /// instant of the day where a clock change skips midnight).
    fn midnight(&self, date: NaiveDate) -> i64 {
        let local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        match self.zone.from_local_datetime(&local).earliest() {
            Some(t) => t.timestamp_millis(),
            // Midnight skipped: an hour later exists.
            None => self
                .zone
                .from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
                .map_or(0, |t| t.timestamp_millis()),
        }
    }

    /// The instant of virtual time 0: the Monday of `trace`'s first week in the zone when it
    /// is dated, else the setup's starting Monday.
    pub fn origin(&self, trace: Option<&Trace>) -> i64 {
        match trace.and_then(Trace::first_instant) {
            Some(first) => {
                let date = chrono::DateTime::from_timestamp_millis(first)
                    .map(|t| t.with_timezone(&self.zone).date_naive())
                    .unwrap_or(self.start);
                self.midnight(monday_of(date))
            }
            None => self.midnight(self.start),
        }
    }

    /// `trace` replayed from [`Clock::origin`] (a dated trace is read from the Monday of its
    /// week in UTC; in another zone its times move by the difference). None: as it is.
    pub fn zoned(&self, trace: &Trace) -> Option<Trace> {
        let from = trace.origin?;
        let to = self.origin(Some(trace));
        if from == to {
            return None;
        }
        let mut t = trace.clone();
        for a in &mut t.arrivals {
            a.at += from - to;
        }
        t.origin = Some(to);
        Some(t)
    }

    /// Which calendars are open at `instant` (Unix milliseconds): bit 0 the business hours,
    /// then one bit per calendar in id order (0 for a desk without any, at no cost). None for
    /// a desk of more than 63 calendars, whose openness does not fit.
    pub fn open_at(&self, instant: i64) -> Option<u64> {
        if self.calendars.len() > 63 {
            return None;
        }
        let at = usher_core::model::Timestamp(instant);
        let mut bits = u64::from(self.hours.as_ref().is_some_and(|c| c.is_open(at)));
        for (i, c) in self.calendars.values().enumerate() {
            if c.is_open(at) {
                bits |= 1 << (i + 1);
            }
        }
        Some(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(zone: &str, start: Option<&str>) -> Clock {
        let setup = Setup { time_zone: Some(zone.into()), start: start.map(Into::into), ..Setup::default() };
        Clock::of(&setup).expect("a clock")
    }

    #[test]
    fn time_zero_is_a_local_monday_midnight() {
        // 2027-01-04 is a Monday; 00:00 in Berlin (UTC+1 in winter) is 23:00 UTC the day before.
        let berlin = clock("Europe/Berlin", None);
        let utc_midnight = 1_799_020_800_000; // 2027-01-04T00:00:00Z
        assert_eq!(berlin.origin(None), utc_midnight - 3_600_000);
        // A Thursday start is the Monday of its week.
        assert_eq!(clock("UTC", Some("2027-01-07")).origin(None), utc_midnight);
        // New York in summer: 2027-07-05 00:00 EDT is 04:00 UTC.
        assert_eq!(
            clock("America/New_York", Some("2027-07-05")).origin(None),
            1_814_745_600_000 + 4 * 3_600_000
        );
    }

    #[test]
    fn a_dated_trace_moves_to_the_zones_monday() {
        // Sunday 23:30 UTC is already Monday 00:30 in Berlin: it is that week's first half hour.
        let t =
            crate::trace::parse("arrived_at\n2027-01-10T23:30:00Z\n2027-01-11T08:00:00Z\n").expect("a trace");
        assert_eq!(t.arrivals[0].at, 6 * 86_400_000 + 23 * 3_600_000 + 30 * 60_000, "UTC: a Sunday");
        let z = clock("Europe/Berlin", None).zoned(&t).expect("moved");
        assert_eq!(z.arrivals[0].at, 30 * 60_000);
        assert_eq!(z.arrivals[1].at, 9 * 3_600_000, "08:00 UTC is 09:00 in Berlin");
        assert!(clock("UTC", None).zoned(&t).is_none(), "UTC: as read");
        let seconds = crate::trace::parse("arrived_at\n0\n60\n").expect("a trace");
        assert!(clock("Europe/Berlin", None).zoned(&seconds).is_none(), "seconds are virtual time already");
    }

    #[test]
    fn bad_clocks_are_refused_with_their_field() {
        let bad = |s: Setup| match Clock::of(&s) {
            Err(SetupError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(bad(Setup { time_zone: Some("Mars/Olympus".into()), ..Setup::default() })
            .starts_with("time_zone"));
        assert!(bad(Setup { start: Some("next monday".into()), ..Setup::default() }).starts_with("start"));
        let spec: CalendarSpec = serde_json::from_value(serde_json::json!({
            "time_zone": "UTC", "weekly": { "mon": [["17:00", "09:00"]] }
        }))
        .expect("a spec");
        let m = bad(Setup { business_hours: Some(spec), ..Setup::default() });
        assert!(m.starts_with("business_hours: weekly.mon"), "{m}");
    }

    #[test]
    fn open_calendars_are_read_at_an_instant() {
        let spec = |zone: &str| -> CalendarSpec {
            serde_json::from_value(serde_json::json!({
                "time_zone": zone, "weekly": { "mon": [["09:00", "17:00"]] },
                "holidays": [{ "date": "2027-01-11" }]
            }))
            .expect("a spec")
        };
        let setup = Setup {
            business_hours: Some(spec("UTC")),
            calendars: [(7, spec("Asia/Tokyo"))].into(),
            ..Setup::default()
        };
        let c = Clock::of(&setup).expect("a clock");
        let monday = c.origin(None);
        let hour = 3_600_000;
        assert_eq!(c.open_at(monday + 8 * hour), Some(0), "08:00 UTC: closed here, 17:00 in Tokyo");
        assert_eq!(c.open_at(monday + 9 * hour), Some(1), "09:00 UTC: open here, closed in Tokyo");
        assert_eq!(c.open_at(monday + 7 * hour - 1), Some(0b10), "07:59 UTC is 16:59 in Tokyo");
        assert_eq!(c.open_at(monday + 7 * 86_400_000 + 10 * hour), Some(0), "the next Monday is a holiday");
        let many = Setup { calendars: (0..64).map(|i| (i, spec("UTC"))).collect(), ..Setup::default() };
        assert_eq!(Clock::of(&many).expect("a clock").open_at(monday), None, "too many to fit");
    }
}
