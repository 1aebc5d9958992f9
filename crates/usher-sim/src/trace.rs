//! A recorded trace: the arrivals a desk really had, replayed instead of synthetic ones.
//!
//! CSV with a header row; only `arrived_at` is required, and columns may come in any order:
//!
//! ```csv
//! arrived_at,channel,language,skills,priority,handle_seconds,team,patience_seconds
//! 2026-11-02T08:00:04Z,whatsapp,es,billing:3;refunds,high,412,,
//! 2026-11-02T08:00:31Z,email,en,,,1830,billing,
//! ```
//!
//! - `arrived_at`: RFC 3339, or seconds since the start of the simulation. Times in RFC 3339
//!   are replayed from the Monday 00:00 of the first arrival's week in the desk's time zone
//!   (the setup's `time_zone`, UTC by default; see [`crate::clock`]), so that the hours of
//!   the week (rates, shifts) and the calendars line up with the record.
//! - `channel` (default `web_chat`), `priority` (default `normal`): as the API spells them.
//! - `skills`: needed skills separated by `;`, each `name` or `name:level` (level 1-5).
//! - `handle_seconds`: how long the conversation took to handle; empty: drawn from the
//!   channel's distribution.
//! - `team`: the team it went to, by name; empty: routed as the setup says.
//! - `patience_seconds`: how long the customer would have waited; empty: drawn.
//! - `contact`: who wrote, any text that is the same for the same contact (Usher's export
//!   writes the contact's id); a contact seen before is returning (a workflow's
//!   `returning_contact`), and the agent who last answered it is its previous agent (an
//!   assign step's or a team's `prefer_previous_agent`). Empty: a contact of its own.

use crate::model::SetupError;
use serde::Deserialize;
use usher_core::model::{Channel, Priority};
use usher_core::request::SkillRequirement;

/// One arrival, recorded or drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// When, milliseconds of virtual time.
    pub at: i64,
    /// The channel.
    pub channel: Channel,
    /// The contact's language.
    pub language: Option<String>,
    /// Skills the conversation needs.
    pub skills: Vec<SkillRequirement>,
    /// Its priority.
    pub priority: Priority,
    /// Its handling time, milliseconds, if recorded.
    pub handle_millis: Option<f64>,
    /// The team it went to, by name, if recorded.
    pub team: Option<String>,
    /// The customer's patience, milliseconds, if recorded.
    pub patience_millis: Option<f64>,
    /// Who wrote (the same number for the same contact), if known: a contact seen before is
    /// returning, and the agent who last answered it is its previous agent.
    pub contact: Option<u64>,
}

/// A trace read: arrivals in time order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// The arrivals, in time order.
    pub arrivals: Vec<Arrival>,
    /// For a trace in RFC 3339: the instant (Unix milliseconds) its virtual time 0 stands
    /// for (see [`crate::clock::Clock::zoned`]). None: its times are virtual already.
    pub origin: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Row {
    arrived_at: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    skills: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    handle_seconds: Option<f64>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    patience_seconds: Option<f64>,
    #[serde(default)]
    contact: Option<String>,
}

const WEEK_MILLIS: i64 = 7 * 86_400_000;
/// 1970-01-01 was a Thursday: Monday 00:00 UTC weeks start 3 days before the epoch's.
const MONDAY_OFFSET: i64 = 3 * 86_400_000;

fn spelled<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_string())).ok()
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn duration(line: usize, what: &str, v: Option<f64>) -> Result<Option<f64>, SetupError> {
    match v {
        Some(s) if !(s.is_finite() && s >= 0.0) => Err(SetupError::Trace {
            line,
            message: format!("{what} must be a number of seconds, not negative"),
        }),
        other => Ok(other.map(|s| s * 1000.0)),
    }
}

/// Reads a trace.
pub fn parse(text: &str) -> Result<Trace, SetupError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers =
        reader.headers().map_err(|e| SetupError::Trace { line: 1, message: e.to_string() })?.clone();
    if !headers.iter().any(|h| h == "arrived_at") {
        return Err(SetupError::Trace { line: 1, message: "the header names no arrived_at column".into() });
    }
    let mut absolute: Vec<(Option<i64>, Option<f64>, Arrival)> = Vec::new();
    let mut contacts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (i, record) in reader.deserialize::<Row>().enumerate() {
        let line = i + 2;
        let bad = |message: String| SetupError::Trace { line, message };
        let row = record.map_err(|e| bad(e.to_string()))?;
        let (epoch, relative) = match row.arrived_at.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => (None, Some(s * 1000.0)),
            Ok(_) => return Err(bad("arrived_at in seconds must not be negative".into())),
            Err(_) => match chrono::DateTime::parse_from_rfc3339(&row.arrived_at) {
                Ok(t) => (Some(t.timestamp_millis()), None),
                Err(_) => {
                    return Err(bad(format!(
                        "arrived_at {:?} is neither RFC 3339 nor seconds",
                        row.arrived_at
                    )))
                }
            },
        };
        let channel = match nonempty(row.channel) {
            None => Channel::WebChat,
            Some(c) => spelled(&c).ok_or_else(|| bad(format!("{c:?} is not a channel")))?,
        };
        let priority = match nonempty(row.priority) {
            None => Priority::Normal,
            Some(p) => spelled(&p).ok_or_else(|| bad(format!("{p:?} is not a priority")))?,
        };
        let mut skills = Vec::new();
        for s in
            nonempty(row.skills).iter().flat_map(|s| s.split(';')).map(str::trim).filter(|s| !s.is_empty())
        {
            let (name, level) = match s.split_once(':') {
                None => (s, 1),
                Some((n, l)) => (n.trim(), l.trim().parse::<u8>().unwrap_or(0)),
            };
            if name.is_empty() || !(1..=5).contains(&level) {
                return Err(bad(format!("skill {s:?}: a name, or name:level with a level 1 to 5")));
            }
            skills.push(SkillRequirement { name: name.to_string(), min_level: level });
        }
        let arrival = Arrival {
            at: 0,
            channel,
            language: nonempty(row.language),
            skills,
            priority,
            handle_millis: duration(line, "handle_seconds", row.handle_seconds)?,
            team: nonempty(row.team),
            patience_millis: duration(line, "patience_seconds", row.patience_seconds)?,
            contact: nonempty(row.contact).map(|c| {
                let next = contacts.len() as u64 + 1;
                *contacts.entry(c).or_insert(next)
            }),
        };
        absolute.push((epoch, relative, arrival));
    }
    if absolute.is_empty() {
        return Err(SetupError::Trace { line: 1, message: "the trace holds no arrivals".into() });
    }
    let mixed = absolute.iter().any(|r| r.0.is_some()) && absolute.iter().any(|r| r.1.is_some());
    if mixed {
        return Err(SetupError::Trace {
            line: 1,
            message: "arrived_at is RFC 3339 on some lines and seconds on others".into(),
        });
    }
    let dated = absolute.iter().any(|r| r.0.is_some());
    let first = absolute.iter().filter_map(|r| r.0).min().unwrap_or(0);
    let base = (first + MONDAY_OFFSET).div_euclid(WEEK_MILLIS) * WEEK_MILLIS - MONDAY_OFFSET;
    let mut arrivals: Vec<Arrival> = absolute
        .into_iter()
        .map(|(epoch, relative, mut a)| {
            a.at = match (epoch, relative) {
                (Some(t), _) => t - base,
                (None, Some(ms)) => ms as i64,
                (None, None) => 0,
            };
            a
        })
        .collect();
    arrivals.sort_by_key(|a| a.at);
    Ok(Trace { arrivals, origin: dated.then_some(base) })
}

impl Trace {
    /// The instant of the first arrival, for a trace in RFC 3339.
    pub fn first_instant(&self) -> Option<i64> {
        Some(self.origin? + self.arrivals.first()?.at)
    }

    /// When the last arrival came, milliseconds.
    pub fn span_millis(&self) -> i64 {
        self.arrivals.last().map_or(0, |a| a.at)
    }

    /// The recorded handling times, seconds, of one channel or of all.
    pub fn handling_seconds(&self, channel: Option<Channel>) -> Vec<f64> {
        self.arrivals
            .iter()
            .filter(|a| channel.is_none_or(|c| a.channel == c))
            .filter_map(|a| a.handle_millis.map(|m| m / 1000.0))
            .collect()
    }

    /// The recorded patience, seconds.
    pub fn patience_seconds(&self) -> Vec<f64> {
        self.arrivals.iter().filter_map(|a| a.patience_millis.map(|m| m / 1000.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_read_with_its_columns_in_any_order() {
        let t = parse(
            "team,arrived_at,channel,skills,handle_seconds\n\
             billing,2026-11-04T09:30:00Z,email,billing:3;refunds,600\n\
             ,2026-11-04T09:00:00+01:00,,,\n",
        )
        .expect("a trace");
        // 2026-11-04 is a Wednesday: replayed from Monday 2026-11-02 00:00 UTC.
        assert_eq!(t.arrivals[0].at, (2 * 24 + 8) * 3_600_000, "sorted, the offset read");
        assert_eq!(t.arrivals[0].channel, Channel::WebChat);
        assert_eq!(t.arrivals[0].handle_millis, None);
        let b = &t.arrivals[1];
        assert_eq!(b.at, (2 * 24 + 9) * 3_600_000 + 30 * 60_000);
        assert_eq!(
            (b.channel, b.team.as_deref(), b.handle_millis),
            (Channel::Email, Some("billing"), Some(600_000.0))
        );
        assert_eq!(
            b.skills,
            vec![
                SkillRequirement { name: "billing".into(), min_level: 3 },
                SkillRequirement { name: "refunds".into(), min_level: 1 }
            ]
        );
        assert_eq!(t.handling_seconds(Some(Channel::Email)), vec![600.0]);
    }

    #[test]
    fn the_same_contact_is_the_same_number_and_an_empty_one_is_nobody_known() {
        let t =
            parse("arrived_at,contact\n0,+34 600 1\n1,mia@example.com\n2,+34 600 1\n3,\n").expect("a trace");
        let contacts: Vec<Option<u64>> = t.arrivals.iter().map(|a| a.contact).collect();
        assert_eq!(contacts, [Some(1), Some(2), Some(1), None]);
    }

    #[test]
    fn a_bad_trace_is_refused_with_its_line() {
        let line = |text: &str| match parse(text) {
            Err(SetupError::Trace { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(line("channel\nemail\n"), 1);
        assert_eq!(line("arrived_at\n"), 1);
        assert_eq!(line("arrived_at,channel\n1,email\n2,pigeon\n"), 3);
        assert_eq!(line("arrived_at\nyesterday\n"), 2);
        assert_eq!(line("arrived_at,skills\n1,billing:9\n"), 2);
        assert_eq!(line("arrived_at,handle_seconds\n1,-4\n"), 2);
        assert_eq!(line("arrived_at\n1\n2026-11-04T09:00:00Z\n"), 1);
    }
}
