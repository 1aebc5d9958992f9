//! Time as a value: the core never reads a clock. Callers pass `now` in; this module turns it
//! into the calendar day of a workspace's time zone, which is when daily reception counts
//! reset (midnight local time, daylight saving included).

use crate::model::{Day, Timestamp};
use chrono::{DateTime, Datelike, NaiveDate};
use chrono_tz::Tz;
use thiserror::Error;

/// A time zone name that the IANA database does not know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown time zone {0:?}")]
pub struct UnknownTimeZone(pub String);

/// Parses an IANA time zone name such as `Europe/Paris` or `UTC`.
pub fn parse_time_zone(name: &str) -> Result<Tz, UnknownTimeZone> {
    name.parse::<Tz>().map_err(|_| UnknownTimeZone(name.to_string()))
}

/// The calendar day `now` falls on in `tz`.
pub fn local_day(now: Timestamp, tz: Tz) -> Day {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    match DateTime::from_timestamp_millis(now.0) {
        Some(utc) => {
            let local = utc.with_timezone(&tz).date_naive();
            Day(local.num_days_from_ce() - epoch.num_days_from_ce())
        }
        None => Day(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(rfc3339: &str) -> Timestamp {
        let t = DateTime::parse_from_rfc3339(rfc3339).map(|t| t.timestamp_millis());
        Timestamp(t.unwrap_or_default())
    }

    #[test]
    fn days_turn_at_local_midnight() {
        let paris = parse_time_zone("Europe/Paris").unwrap_or(Tz::UTC);
        // 2026-03-28 is day 20540 since the epoch.
        assert_eq!(local_day(ts("2026-03-28T00:00:00Z"), Tz::UTC), Day(20540));
        // 23:30 UTC on the 28th is already the 29th in Paris (UTC+1 in winter).
        assert_eq!(local_day(ts("2026-03-28T23:30:00Z"), paris), Day(20541));
        assert_eq!(local_day(ts("2026-03-28T22:59:59Z"), paris), Day(20540));
        // After the spring change (29 March, UTC+2), midnight is at 22:00 UTC.
        assert_eq!(local_day(ts("2026-03-29T21:59:59Z"), paris), Day(20541));
        assert_eq!(local_day(ts("2026-03-29T22:00:00Z"), paris), Day(20542));
        let la = parse_time_zone("America/Los_Angeles").unwrap_or(Tz::UTC);
        assert_eq!(local_day(ts("2026-03-28T06:59:59Z"), la), Day(20539));
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert_eq!(parse_time_zone("Mars/Olympus"), Err(UnknownTimeZone("Mars/Olympus".into())));
    }
}
