//! Reports over a period and a team: what happened to conversations, how long people waited,
//! how the work was spread, and the queue over time.
//!
//! [`compute`] is a pure function over plain rows (the conversations opened in the period and
//! the routing events around it), tested on its own; [`Store::report`] reads the rows.
//!
//! - Counts: conversations opened in the period; of those, assigned, that waited in a queue,
//!   and closed.
//! - Times, each as count, median and 90th percentile (nearest rank), over the conversations
//!   opened in the period: time to assignment (opening to the latest assignment), first
//!   response (opening to the first agent answer after it), resolution (opening to the close).
//! - Per agent: assignments in the period (routed, drained or claimed) and their share.
//! - Over time, per bucket: assignments per agent, and the queue's length at the bucket's
//!   end (a conversation waits from its `conversation.queued` event to its next routing
//!   event). Events up to a day before the period are read so that waits that began before it
//!   count; the cost is linear in the events read.

use crate::db::Store;
use crate::error::StoreError;
use crate::sql::query;
use crate::types::{rfc3339, Millis};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The most buckets a report has (the bucket grows to fit a long period).
pub const MAX_BUCKETS: i64 = 400;
/// The most events a report reads.
pub const MAX_EVENTS: i64 = 200_000;
/// How far before the period events are read, for waits that began before it.
const LOOKBACK_MILLIS: i64 = 24 * 3_600_000;

/// A conversation's times, as the report needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationTimes {
    /// Its id.
    pub id: i64,
    /// Opened.
    pub opened_at: Millis,
    /// Last assigned.
    pub assigned_at: Option<Millis>,
    /// First answer after the assignment.
    pub first_response_at: Option<Millis>,
    /// Closed.
    pub closed_at: Option<Millis>,
}

/// A routing event, as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingEvent {
    /// When.
    pub at: Millis,
    /// Its kind.
    pub kind: String,
    /// The conversation.
    pub conversation: i64,
    /// The agent the event names (for a transfer to a team: the one it left).
    pub agent: Option<i64>,
    /// The agent it went to, when the event handed it to one.
    pub assigned: Option<i64>,
}

/// The period: `[from, to)` in buckets of `bucket` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Start (included).
    pub from: Millis,
    /// End (excluded).
    pub to: Millis,
    /// Bucket length.
    pub bucket: Millis,
}

impl Period {
    /// A period, its bucket widened so that there are at most [`MAX_BUCKETS`].
    pub fn new(from: Millis, to: Millis, bucket: Millis) -> Result<Period, StoreError> {
        if to <= from {
            return Err(StoreError::invalid("invalid_period", "`to` must come after `from`"));
        }
        let span = to - from;
        if span > 366 * 24 * 3_600_000 {
            return Err(StoreError::invalid("invalid_period", "a report covers at most a year"));
        }
        let bucket = bucket.max(60_000).max((span + MAX_BUCKETS - 1) / MAX_BUCKETS);
        Ok(Period { from, to, bucket })
    }

    fn buckets(&self) -> impl Iterator<Item = Millis> + '_ {
        (0..).map(move |i| self.from + i * self.bucket).take_while(move |s| *s < self.to)
    }
}

/// How many, median and 90th percentile of one measure, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// The measure: `time_to_assignment`, `first_response`, `resolution`.
    pub measure: &'static str,
    /// Conversations measured.
    pub count: usize,
    /// Median, seconds.
    pub median_seconds: Option<i64>,
    /// 90th percentile, seconds.
    pub p90_seconds: Option<i64>,
}

/// One agent's part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentShare {
    /// The agent.
    pub agent: i64,
    /// Its name.
    pub name: String,
    /// Assignments in the period.
    pub assigned: u32,
    /// Its share of all assignments (0 to 1).
    pub share: f64,
}

/// One bucket of the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start (RFC 3339).
    pub start: String,
    /// Assignments per agent in it.
    pub assigned: BTreeMap<i64, u32>,
    /// Conversations waiting at its end.
    pub waiting: u32,
}

/// The counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Opened in the period.
    pub opened: u32,
    /// Of those, assigned.
    pub assigned: u32,
    /// Of those, waited in a queue.
    pub waited: u32,
    /// Of those, closed.
    pub closed: u32,
}

/// A report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Start (RFC 3339).
    pub from: String,
    /// End.
    pub to: String,
    /// The team, if one.
    pub team: Option<i64>,
    /// Bucket length, seconds.
    pub bucket_seconds: i64,
    /// Counts.
    pub counts: Counts,
    /// Times.
    pub times: Vec<Spread>,
    /// Per agent, most assignments first.
    pub agents: Vec<AgentShare>,
    /// Over time.
    pub buckets: Vec<Bucket>,
    /// The longest wait that ended (or was still going) in the period, seconds.
    pub longest_wait_seconds: i64,
}

/// The nearest-rank percentile `p` (0 to 1) of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn spread(measure: &'static str, mut values: Vec<i64>) -> Spread {
    values.sort_unstable();
    Spread {
        measure,
        count: values.len(),
        median_seconds: percentile(&values, 0.5),
        p90_seconds: percentile(&values, 0.9),
    }
}

const ASSIGNED: [&str; 3] = ["conversation.assigned", "conversation.claimed", "conversation.transferred"];
/// Events that end a wait.
const LEAVES_QUEUE: [&str; 6] = [
    "conversation.assigned",
    "conversation.claimed",
    "conversation.closed",
    "conversation.unassigned",
    "conversation.transferred",
    "conversation.left_unassigned",
];

/// The report over `convs` (opened in the period) and `events` (in time order, the period's
/// and up to a day before it).
pub fn compute(
    convs: &[ConversationTimes],
    events: &[RoutingEvent],
    names: &BTreeMap<i64, String>,
    period: Period,
    team: Option<i64>,
    now: Millis,
) -> Report {
    let secs = |a: Millis, b: Millis| (b - a).max(0) / 1000;
    let queued: BTreeSet<i64> =
        events.iter().filter(|e| e.kind == "conversation.queued").map(|e| e.conversation).collect();
    let counts = Counts {
        opened: convs.len() as u32,
        assigned: convs.iter().filter(|c| c.assigned_at.is_some()).count() as u32,
        waited: convs.iter().filter(|c| queued.contains(&c.id)).count() as u32,
        closed: convs.iter().filter(|c| c.closed_at.is_some()).count() as u32,
    };
    let times = vec![
        spread(
            "time_to_assignment",
            convs.iter().filter_map(|c| c.assigned_at.map(|t| secs(c.opened_at, t))).collect(),
        ),
        spread(
            "first_response",
            convs.iter().filter_map(|c| c.first_response_at.map(|t| secs(c.opened_at, t))).collect(),
        ),
        spread(
            "resolution",
            convs.iter().filter_map(|c| c.closed_at.map(|t| secs(c.opened_at, t))).collect(),
        ),
    ];
    // Waits: from a queued event to the conversation's next routing event.
    let mut waiting_since: BTreeMap<i64, Millis> = BTreeMap::new();
    let mut waits: Vec<(Millis, Millis)> = Vec::new();
    for e in events {
        if e.kind == "conversation.queued" {
            waiting_since.entry(e.conversation).or_insert(e.at);
        } else if LEAVES_QUEUE.contains(&e.kind.as_str()) {
            if let Some(start) = waiting_since.remove(&e.conversation) {
                waits.push((start, e.at));
            }
        }
    }
    let end = period.to.min(now.max(period.from));
    waits.extend(waiting_since.values().map(|start| (*start, Millis::MAX)));
    let longest_wait_seconds = waits
        .iter()
        .filter(|(start, stop)| *stop >= period.from && *start < period.to)
        .map(|(start, stop)| secs(*start, (*stop).min(end)))
        .max()
        .unwrap_or(0);
    let mut per_agent: BTreeMap<i64, u32> = BTreeMap::new();
    let mut buckets: Vec<Bucket> = period
        .buckets()
        .map(|start| {
            let close = (start + period.bucket).min(period.to);
            let waiting = waits.iter().filter(|(a, b)| *a < close && *b >= close).count() as u32;
            Bucket { start: rfc3339(start), assigned: BTreeMap::new(), waiting }
        })
        .collect();
    for e in events
        .iter()
        .filter(|e| e.at >= period.from && e.at < period.to && ASSIGNED.contains(&e.kind.as_str()))
    {
        let Some(agent) = e.assigned else { continue };
        *per_agent.entry(agent).or_default() += 1;
        let i = usize::try_from((e.at - period.from) / period.bucket).unwrap_or(0);
        if let Some(b) = buckets.get_mut(i) {
            *b.assigned.entry(agent).or_default() += 1;
        }
    }
    let total: u32 = per_agent.values().sum();
    let mut agents: Vec<AgentShare> = per_agent
        .iter()
        .map(|(a, n)| AgentShare {
            agent: *a,
            name: names.get(a).cloned().unwrap_or_else(|| format!("agent {a}")),
            assigned: *n,
            share: if total == 0 { 0.0 } else { f64::from(*n) / f64::from(total) },
        })
        .collect();
    agents.sort_by(|a, b| b.assigned.cmp(&a.assigned).then(a.agent.cmp(&b.agent)));
    Report {
        from: rfc3339(period.from),
        to: rfc3339(period.to),
        team,
        bucket_seconds: period.bucket / 1000,
        counts,
        times,
        agents,
        buckets,
        longest_wait_seconds,
    }
}

impl Store {
    /// The report of workspace `ws` over `period`, for one team or all.
    pub async fn report(
        &self,
        ws: i64,
        period: Period,
        team: Option<i64>,
        now: Millis,
    ) -> Result<Report, StoreError> {
        if let Some(t) = team {
            self.team(ws, t).await?;
        }
        let team_filter = if team.is_some() { " AND team_id = $4" } else { " AND $4 = $4" };
        let convs = query(&format!(
            "SELECT id, opened_at, assigned_at, first_response_at, closed_at FROM conversations \
             WHERE workspace_id = $1 AND opened_at >= $2 AND opened_at < $3{team_filter} ORDER BY id"
        ))
        .bind(ws)
        .bind(period.from)
        .bind(period.to)
        .bind(team.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ConversationTimes {
                id: r.try_get("id")?,
                opened_at: r.try_get("opened_at")?,
                assigned_at: r.try_get("assigned_at")?,
                first_response_at: r.try_get("first_response_at")?,
                closed_at: r.try_get("closed_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        self.sequence_events(ws).await?;
        let team_filter = if team.is_some() {
            " AND e.conversation_id IN (SELECT id FROM conversations WHERE workspace_id = $1 AND team_id = $4)"
        } else {
            " AND $4 = $4"
        };
        let events = query(&format!(
            "SELECT e.at, e.kind, e.conversation_id, e.agent_id, e.data FROM events e WHERE e.workspace_id = $1 \
             AND e.at >= $2 AND e.at < $3 AND e.conversation_id IS NOT NULL AND e.kind LIKE 'conversation.%'{team_filter} \
             ORDER BY e.seq LIMIT {MAX_EVENTS}"
        ))
        .bind(ws)
        .bind(period.from - LOOKBACK_MILLIS)
        .bind(period.to)
        .bind(team.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            let agent: Option<i64> = r.try_get("agent_id")?;
            // A transfer names the agent it went to in its data (a transfer to a team names
            // none: the team's own assignment follows as its own event).
            let assigned = match kind.as_str() {
                "conversation.transferred" => serde_json::from_str::<serde_json::Value>(&r.try_get::<String, _>("data")?)?
                    .get("assigned")
                    .and_then(serde_json::Value::as_i64),
                _ => agent,
            };
            Ok(RoutingEvent { at: r.try_get("at")?, kind, conversation: r.try_get("conversation_id")?, agent, assigned })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        let names = query("SELECT id, name FROM agents WHERE workspace_id = $1")
            .bind(ws)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")?, r.try_get::<String, _>("name")?)))
            .collect::<Result<BTreeMap<_, _>, StoreError>>()?;
        Ok(compute(&convs, &events, &names, period, team, now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn ev(at: i64, kind: &str, conversation: i64, agent: Option<i64>) -> RoutingEvent {
        RoutingEvent { at, kind: kind.into(), conversation, agent, assigned: agent }
    }

    #[test]
    fn a_transfer_to_a_team_counts_for_the_agent_who_gets_it_not_the_one_it_left() {
        let period = Period::new(0, 60 * MIN, 60 * MIN).unwrap();
        let left = RoutingEvent {
            at: MIN,
            kind: "conversation.transferred".into(),
            conversation: 1,
            agent: Some(10),
            assigned: None,
        };
        let events = [
            ev(0, "conversation.assigned", 1, Some(10)),
            left,
            ev(MIN, "conversation.assigned", 1, Some(11)),
        ];
        let r = compute(&[], &events, &BTreeMap::new(), period, None, 60 * MIN);
        assert_eq!(r.agents.iter().map(|a| (a.agent, a.assigned)).collect::<Vec<_>>(), [(10, 1), (11, 1)]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.9), Some(9));
        assert_eq!(percentile(&[7], 0.9), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1, 2], 0.5), Some(1));
    }

    #[test]
    fn counts_times_shares_and_the_queue_over_time() {
        let period = Period::new(0, 60 * MIN, 10 * MIN).unwrap();
        let convs = [
            ConversationTimes {
                id: 1,
                opened_at: 0,
                assigned_at: Some(0),
                first_response_at: Some(60_000),
                closed_at: Some(600_000),
            },
            ConversationTimes {
                id: 2,
                opened_at: MIN,
                assigned_at: Some(21 * MIN),
                first_response_at: None,
                closed_at: None,
            },
            ConversationTimes {
                id: 3,
                opened_at: 2 * MIN,
                assigned_at: None,
                first_response_at: None,
                closed_at: None,
            },
        ];
        let events = [
            ev(0, "conversation.assigned", 1, Some(10)),
            ev(MIN, "conversation.queued", 2, None),
            ev(2 * MIN, "conversation.queued", 3, None),
            ev(21 * MIN, "conversation.assigned", 2, Some(11)),
            ev(30 * MIN, "conversation.claimed", 1, Some(11)),
        ];
        let names = BTreeMap::from([(10, "Ana".to_string()), (11, "Bob".to_string())]);
        let r = compute(&convs, &events, &names, period, None, 45 * MIN);
        assert_eq!(r.counts, Counts { opened: 3, assigned: 2, waited: 2, closed: 1 });
        assert_eq!(
            r.times[0],
            Spread {
                measure: "time_to_assignment",
                count: 2,
                median_seconds: Some(0),
                p90_seconds: Some(1200)
            }
        );
        assert_eq!((r.times[1].count, r.times[1].median_seconds), (1, Some(60)));
        assert_eq!((r.times[2].count, r.times[2].p90_seconds), (1, Some(600)));
        assert_eq!(
            r.agents.iter().map(|a| (a.name.as_str(), a.assigned)).collect::<Vec<_>>(),
            [("Bob", 2), ("Ana", 1)]
        );
        assert!((r.agents[0].share - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.buckets.len(), 6);
        // Waiting at each bucket's end: 2 and 3 until 21 min, then 3 alone (still waiting).
        assert_eq!(r.buckets.iter().map(|b| b.waiting).collect::<Vec<_>>(), [2, 2, 1, 1, 1, 1]);
        assert_eq!(r.buckets[0].assigned, BTreeMap::from([(10, 1)]));
        assert_eq!(r.buckets[2].assigned, BTreeMap::from([(11, 1)]));
        assert_eq!(r.buckets[3].assigned, BTreeMap::from([(11, 1)]));
        // Conversation 3 has waited from 2 min until now (45 min).
        assert_eq!(r.longest_wait_seconds, 43 * 60);
    }

    #[test]
    fn a_wait_that_began_before_the_period_counts_in_it() {
        let period = Period::new(60 * MIN, 120 * MIN, 30 * MIN).unwrap();
        let events =
            [ev(10 * MIN, "conversation.queued", 5, None), ev(70 * MIN, "conversation.assigned", 5, Some(1))];
        let r = compute(&[], &events, &BTreeMap::new(), period, None, 200 * MIN);
        assert_eq!(r.buckets.iter().map(|b| b.waiting).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(r.longest_wait_seconds, 60 * 60);
        assert_eq!(r.agents[0].name, "agent 1");
    }

    #[test]
    fn periods_are_checked_and_buckets_widen_to_fit() {
        assert!(Period::new(10, 10, MIN).is_err());
        assert!(Period::new(0, 400 * 24 * 3_600_000, MIN).is_err());
        let p = Period::new(0, 30 * 24 * 3_600_000, MIN).unwrap();
        assert!(p.buckets().count() as i64 <= MAX_BUCKETS);
        assert_eq!(Period::new(0, 10 * MIN, 1).unwrap().bucket, MIN, "a minute at least");
    }
}

/// The most conversations one trace export holds.
pub const MAX_TRACE: i64 = 1_000_000;

/// One conversation as the simulator replays it (`usher simulate --trace`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceRow {
    /// When it opened (RFC 3339).
    pub arrived_at: String,
    /// Its channel.
    pub channel: String,
    /// The contact's language.
    pub language: Option<String>,
    /// The skills its routing required, `name:level`.
    pub skills: Vec<String>,
    /// Its priority.
    pub priority: String,
    /// From its first assignment to its close, seconds (closed conversations only).
    pub handle_seconds: Option<i64>,
    /// Its team's name.
    pub team: Option<String>,
    /// How long the customer waited before the conversation closed unassigned, seconds
    /// (what patience the record shows; none for the answered).
    pub patience_seconds: Option<i64>,
    /// The contact's id: a contact seen before is returning, in the simulator too.
    pub contact: i64,
}

impl Store {
    /// The conversations opened in `period` (for one team or all), oldest first, as a trace
    /// for the simulator. A period holding more than `max` conversations is refused
    /// (`trace_too_long`) rather than cut short: a trace that stops early would replay a
    /// quieter desk than the real one. The API passes [`MAX_TRACE`].
    pub async fn traffic_trace(
        &self,
        ws: i64,
        period: Period,
        team: Option<i64>,
        max: i64,
    ) -> Result<Vec<TraceRow>, StoreError> {
        if let Some(t) = team {
            self.team(ws, t).await?;
        }
        let team_filter = if team.is_some() { " AND c.team_id = $4" } else { " AND $4 = $4" };
        let rows = query(&format!(
            "SELECT c.opened_at, c.channel, c.priority, c.request, c.assigned_at, c.closed_at, c.contact_id, k.language, \
             t.name AS team_name FROM conversations c JOIN contacts k ON k.id = c.contact_id \
             LEFT JOIN teams t ON t.id = c.team_id \
             WHERE c.workspace_id = $1 AND c.opened_at >= $2 AND c.opened_at < $3{team_filter} \
             ORDER BY c.opened_at, c.id LIMIT {}",
            max.max(0) + 1
        ))
        .bind(ws)
        .bind(period.from)
        .bind(period.to)
        .bind(team.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?;
        if rows.len() as i64 > max {
            return Err(StoreError::invalid(
                "trace_too_long",
                format!("the period holds more than {max} conversations; export it in shorter periods"),
            ));
        }
        rows.iter()
            .map(|r| {
                let opened: Millis = r.try_get("opened_at")?;
                let assigned: Option<Millis> = r.try_get("assigned_at")?;
                let closed: Option<Millis> = r.try_get("closed_at")?;
                let request: Option<usher_core::request::AssignRequest> = crate::db::json_col(r, "request")?;
                let secs = |a: Millis, b: Millis| (b - a).max(0) / 1000;
                Ok(TraceRow {
                    arrived_at: rfc3339(opened),
                    channel: r.try_get("channel")?,
                    language: r.try_get("language")?,
                    skills: request
                        .map(|q| {
                            q.requirements
                                .skills
                                .iter()
                                .map(|s| format!("{}:{}", s.name, s.min_level))
                                .collect()
                        })
                        .unwrap_or_default(),
                    priority: r.try_get("priority")?,
                    handle_seconds: assigned.zip(closed).map(|(a, c)| secs(a, c)),
                    team: r.try_get("team_name")?,
                    patience_seconds: match (assigned, closed) {
                        (None, Some(c)) => Some(secs(opened, c)),
                        _ => None,
                    },
                    contact: r.try_get("contact_id")?,
                })
            })
            .collect()
    }
}
