//! What a simulation is asked: traffic, staff and the routing to compare.
//!
//! The simplest setup is a rate, a handling time and a number of identical agents in one
//! team. A fuller one describes the desk: teams (each with its strategy, only-online rule and
//! channels), groups of agents (caps, per-channel caps, daily limits, weights, skills,
//! languages, shifts and breaks), the traffic's mix of channels, languages, priorities and
//! needed skills, handling times per channel, and the workflows whose assign steps route each
//! arrival, with the time zone, business hours and calendars they read ([`crate::clock`]). A
//! recorded trace ([`crate::trace`]) can replace the synthetic arrivals.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use usher_core::calendar::CalendarSpec;
pub use usher_core::calendar::Weekday;
use usher_core::model::{Channel, Presence, Priority, Strategy};
use usher_workflow::Workflow;

/// A distribution of durations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Exponential with this mean.
    Exponential {
        /// Mean, seconds.
        mean_seconds: f64,
    },
    /// Log-normal with this median and shape.
    LogNormal {
        /// Median, seconds.
        median_seconds: f64,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
    /// Always the same.
    Fixed {
        /// Seconds.
        seconds: f64,
    },
    /// Drawn from observed durations, each equally likely. Left empty in a setup with a
    /// trace, it is filled with the trace's handling times (of the channel, for a channel's
    /// distribution).
    Empirical {
        /// The observed durations, seconds.
        #[serde(default)]
        seconds: Vec<f64>,
    },
}

impl Dist {
    /// Its mean, seconds (0 for an empirical distribution without observations).
    pub fn mean_seconds(&self) -> f64 {
        match self {
            Dist::Exponential { mean_seconds } => *mean_seconds,
            Dist::LogNormal { median_seconds, sigma } => median_seconds * (sigma * sigma / 2.0).exp(),
            Dist::Fixed { seconds } => *seconds,
            Dist::Empirical { seconds } => {
                if seconds.is_empty() {
                    0.0
                } else {
                    seconds.iter().sum::<f64>() / seconds.len() as f64
                }
            }
        }
    }

    /// One draw, in milliseconds.
    pub fn draw_millis(&self, rng: &mut Rng) -> f64 {
        match self {
            Dist::Exponential { mean_seconds } => rng.exponential(*mean_seconds) * 1000.0,
            Dist::LogNormal { median_seconds, sigma } => {
                median_seconds * (sigma * rng.normal()).exp() * 1000.0
            }
            Dist::Fixed { seconds } => seconds * 1000.0,
            Dist::Empirical { seconds } => {
                let i = ((rng.unit() * seconds.len() as f64) as usize).min(seconds.len().saturating_sub(1));
                seconds.get(i).copied().unwrap_or(0.0) * 1000.0
            }
        }
    }

    fn check(&self, what: &str) -> Result<(), SetupError> {
        let ok = match self {
            Dist::Empirical { seconds } => {
                !seconds.is_empty() && seconds.iter().all(|s| s.is_finite() && *s >= 0.0)
            }
            Dist::LogNormal { sigma, .. } if !(sigma.is_finite() && *sigma >= 0.0) => false,
            _ => true,
        };
        let mean = self.mean_seconds();
        if ok && mean.is_finite() && mean > 0.0 {
            Ok(())
        } else {
            Err(SetupError::Invalid(format!(
                "{what} must have a positive, finite mean (an empirical one needs observations: a trace with handling times, or `seconds`)"
            )))
        }
    }
}

/// One simulation's setup (a JSON or TOML file, or flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// Arrivals per hour: one rate, or 168 (one per hour of the week, Monday 00:00 first).
    /// Ignored when a trace gives the arrivals.
    #[serde(default)]
    pub rate_per_hour: Vec<f64>,
    /// How long to simulate, hours (with a trace, 0 means the days it covers: up to the
    /// midnight after its last arrival).
    #[serde(default)]
    pub hours: f64,
    /// Handling time.
    pub handle: Dist,
    /// Handling time per channel, where it differs from `handle`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handle_by_channel: BTreeMap<Channel, Dist>,
    /// How long a customer waits before leaving (none: for ever).
    #[serde(default)]
    pub patience: Option<Dist>,
    /// What synthetic arrivals are made of (a trace says it row by row).
    #[serde(default, skip_serializing_if = "Mix::is_empty")]
    pub mix: Mix,
    /// Agents, when `staff` does not describe them: that many alike.
    #[serde(default = "one")]
    pub agents: u32,
    /// Conversations an agent holds at once (agents alike).
    #[serde(default = "one")]
    pub max_open: u32,
    /// Handling slows by this share for every conversation held beyond the first.
    #[serde(default)]
    pub slowdown: f64,
    /// Weights of the agents in order (the weighted strategy); 1 when not given.
    #[serde(default)]
    pub weights: Vec<u32>,
    /// Teams; none: one team, "desk", that every agent is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamSetup>,
    /// Groups of agents; none: `agents` alike, always online.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staff: Vec<StaffGroup>,
    /// Workflows that route arrivals: the first whose channels include the arrival's runs,
    /// and its assign step's settings (team, strategy, rules, skills, language) make the
    /// request. Without one, an arrival goes to its trace row's team, else the first team
    /// whose channels include it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<Workflow>,
    /// How contacts answer a workflow's questions: per field saved to, each answer's share.
    /// A question without one is answered with its first option.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, BTreeMap<String, f64>>,
    /// A recorded trace (CSV, see [`crate::trace`]) to replay instead of synthetic arrivals:
    /// its path, relative to the setup file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// The staff group the staffing advice varies (the largest when none is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staffing_group: Option<String>,
    /// The answer-time target of the service level, seconds.
    #[serde(default = "twenty")]
    pub target_seconds: f64,
    /// The service level to reach for the staffing advice (0 to 1).
    #[serde(default = "eighty")]
    pub service_goal: f64,
    /// The handling time the queue's estimate assumes before it has seen releases.
    #[serde(default = "three_hundred")]
    pub default_handle_seconds: u32,
    /// The seed: the same seed gives the same report, byte for byte.
    #[serde(default = "seed")]
    pub seed: u64,
    /// The desk's time zone (IANA, e.g. `Europe/Berlin`; default UTC): the hours of the
    /// week, shifts and midnights are its local time, and a trace's RFC 3339 times are read
    /// in it (see [`crate::clock`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A date (`YYYY-MM-DD`) in the week the simulation starts: it starts on that week's
    /// Monday, 00:00, which is what the calendars' holidays and exceptions are matched
    /// against (default 2027-01-04; a trace in RFC 3339 starts in its own first week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The workspace's business hours, a calendar as `POST /v1/calendars` takes it: what a
    /// workflow's `within_hours` condition without a calendar reads (none: always open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<CalendarSpec>,
    /// Other calendars by id, for the conditions that name one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calendars: BTreeMap<i64, CalendarSpec>,
}

impl Default for Setup {
    /// 120 arrivals an hour for 1,000 hours, five-minute exponential handling, 12 agents
    /// taking one conversation each, nobody leaving.
    fn default() -> Setup {
        Setup {
            rate_per_hour: vec![120.0],
            hours: 1_000.0,
            handle: Dist::Exponential { mean_seconds: 300.0 },
            handle_by_channel: BTreeMap::new(),
            patience: None,
            mix: Mix::default(),
            agents: 12,
            max_open: 1,
            slowdown: 0.0,
            weights: vec![],
            teams: vec![],
            staff: vec![],
            workflows: vec![],
            answers: BTreeMap::new(),
            trace: None,
            staffing_group: None,
            target_seconds: 20.0,
            service_goal: 0.8,
            default_handle_seconds: 300,
            seed: 1,
            time_zone: None,
            start: None,
            business_hours: None,
            calendars: BTreeMap::new(),
        }
    }
}

/// The make-up of synthetic arrivals: each a share (they need not sum to one; they are
/// normalised). Empty: web chat, no language, normal priority, no skills.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Channels.
    #[serde(default)]
    pub channels: BTreeMap<Channel, f64>,
    /// Contacts' languages.
    #[serde(default)]
    pub languages: BTreeMap<String, f64>,
    /// Priorities.
    #[serde(default)]
    pub priorities: BTreeMap<Priority, f64>,
    /// For each skill, the probability that a conversation needs it (level 1).
    #[serde(default)]
    pub skills: BTreeMap<String, f64>,
    /// The probability that an arrival comes from a contact who wrote before (drawn alike
    /// from those), 0 to 1: returning contacts meet their previous agent where the routing
    /// prefers it. 0 (the default): every arrival is a new contact.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub returning: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Mix {
    fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.languages.is_empty()
            && self.priorities.is_empty()
            && self.skills.is_empty()
            && self.returning == 0.0
    }
}

/// Picks a key by share.
pub(crate) fn pick<'a, K>(rng: &mut Rng, shares: &'a BTreeMap<K, f64>) -> Option<&'a K> {
    let total: f64 = shares.values().sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.unit() * total;
    let mut last = None;
    for (k, share) in shares {
        if *share > 0.0 {
            last = Some(k);
            if x < *share {
                return Some(k);
            }
            x -= share;
        }
    }
    last
}

/// A team of the simulated desk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamSetup {
    /// Its name (staff groups and traces name teams by it).
    pub name: String,
    /// Its id, as workflows' assign steps name it; its place in the list (from 1) if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Its strategy (a run that compares strategies replaces it).
    #[serde(default = "least_open")]
    pub strategy: Strategy,
    /// Only online agents take its conversations.
    #[serde(default = "yes")]
    pub only_online: bool,
    /// Without a workflow: only agents who speak the contact's language.
    #[serde(default)]
    pub match_language: bool,
    /// Without a workflow: the channels whose arrivals it takes (none: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// Without a workflow: a returning contact goes to its previous agent when that agent
    /// can take it (as a request's `prefer_previous_agent`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefer_previous_agent: bool,
}

/// A group of agents alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffGroup {
    /// Its name; its agents are "NAME 1", "NAME 2"… (just "NAME" when it is one).
    pub name: String,
    /// The agent's id, as a workflow's dedicated-agent step names it (a group of one only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
    /// The teams they are in, by name (none: every team).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Conversations each holds at once.
    #[serde(default = "one")]
    pub max_open: u32,
    /// Lower caps for some channels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_caps: BTreeMap<Channel, u32>,
    /// Conversations each receives a day at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<u32>,
    /// Weight in the weighted strategy.
    #[serde(default = "one")]
    pub weight: u32,
    /// Skills, name to level 1-5.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skills: BTreeMap<String, u8>,
    /// Languages spoken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// When they work (none: always). Outside them they are offline; they finish what they
    /// hold but take nothing new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shifts: Vec<Shift>,
    /// Breaks inside the shifts: away (or busy) for some minutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaks: Vec<Break>,
    /// Each agent's breaks start this many minutes after the previous agent's, so that the
    /// group does not leave all at once.
    #[serde(default)]
    pub stagger_minutes: u32,
    /// Handling slowdown per extra conversation held; the setup's when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowdown: Option<f64>,
}

/// A time of day, "HH:MM", as minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Clock(pub u32);

impl TryFrom<String> for Clock {
    type Error = String;
    fn try_from(s: String) -> Result<Clock, String> {
        // As business hours read them: 00:00 to 24:00.
        usher_core::calendar::minutes_of_day(&s, true)
            .map(|m| Clock(u32::from(m)))
            .ok_or_else(|| format!("{s:?} is not a time of day HH:MM (00:00 to 24:00)"))
    }
}

impl From<Clock> for String {
    fn from(c: Clock) -> String {
        format!("{:02}:{:02}", c.0 / 60, c.0 % 60)
    }
}

/// A working period on some days; one that ends at or before its start runs past midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shift {
    /// The days it starts on (none: every day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
    /// When it starts.
    pub start: Clock,
    /// When it ends.
    pub end: Clock,
}

/// A break on every day of a shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Break {
    /// When it starts.
    pub at: Clock,
    /// How long, minutes.
    pub minutes: u32,
    /// The presence meanwhile: away (the default) or busy.
    #[serde(default = "away")]
    pub presence: Presence,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn least_open() -> Strategy {
    Strategy::LeastOpen
}
fn away() -> Presence {
    Presence::Away
}
fn twenty() -> f64 {
    20.0
}
fn eighty() -> f64 {
    0.8
}
fn three_hundred() -> u32 {
    300
}
fn seed() -> u64 {
    1
}

/// Why a setup cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A value out of range, named.
    #[error("{0}")]
    Invalid(String),
    /// A trace that cannot be read: the line and why.
    #[error("trace line {line}: {message}")]
    Trace {
        /// The line, from 1 (the header).
        line: usize,
        /// Why.
        message: String,
    },
}

/// The most agents a setup may have.
pub const MAX_AGENTS: u32 = 100_000;

impl Setup {
    /// Checks the setup (`traced`: a trace gives the arrivals), and gives its desk.
    pub fn check(&self, traced: bool) -> Result<crate::desk::Desk, SetupError> {
        let bad = |m: String| Err(SetupError::Invalid(m));
        if !traced {
            if !(self.rate_per_hour.len() == 1 || self.rate_per_hour.len() == 168) {
                return bad("rate_per_hour holds one rate or 168 (one per hour of the week)".into());
            }
            if self.rate_per_hour.iter().any(|r| !r.is_finite() || *r < 0.0)
                || self.rate_per_hour.iter().all(|r| *r == 0.0)
            {
                return bad("rates are finite, not negative, and not all zero".into());
            }
        }
        let hours_ok = if traced { self.hours >= 0.0 } else { self.hours > 0.0 };
        if !(hours_ok && self.hours <= 24.0 * 366.0 * 10.0) {
            return bad("hours must be above 0 and at most ten years".into());
        }
        if self.staff.is_empty() && (self.agents == 0 || self.agents > MAX_AGENTS) {
            return bad(format!("agents must be 1 to {MAX_AGENTS}"));
        }
        if self.max_open == 0 || self.max_open > 1_000 {
            return bad("max_open must be 1 to 1000".into());
        }
        self.handle.check("handle")?;
        for (ch, d) in &self.handle_by_channel {
            d.check(&format!("handle_by_channel.{}", ch.as_str()))?;
        }
        if let Some(p) = &self.patience {
            p.check("patience")?;
        }
        let ranges = (0.0..=10.0).contains(&self.slowdown)
            && (0.0..=1.0).contains(&self.service_goal)
            && self.target_seconds >= 0.0
            && self.target_seconds.is_finite();
        if !ranges {
            return bad("slowdown is 0 to 10, service_goal 0 to 1, target_seconds not negative".into());
        }
        let shares =
            self.mix.channels.values().chain(self.mix.languages.values()).chain(self.mix.priorities.values());
        if shares.into_iter().any(|s| !(s.is_finite() && *s >= 0.0))
            || self.mix.skills.values().any(|p| !(0.0..=1.0).contains(p))
            || !(0.0..=1.0).contains(&self.mix.returning)
            || self.answers.values().flat_map(|a| a.values()).any(|s| !(s.is_finite() && *s >= 0.0))
        {
            return bad(
                "shares are finite and not negative; a skill's and returning's probability is 0 to 1".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, t) in self.teams.iter().enumerate() {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return bad(format!("team {:?}: every team needs a name of its own", t.name));
            }
            if !ids.insert(t.id.unwrap_or(i as i64 + 1)) {
                return bad(format!("team {:?}: two teams have the same id", t.name));
            }
        }
        let mut total = 0u64;
        let mut agent_ids = std::collections::BTreeSet::new();
        for g in &self.staff {
            let named = |m: &str| Err(SetupError::Invalid(format!("staff group {:?}: {m}", g.name)));
            if g.name.trim().is_empty() {
                return bad("every staff group needs a name".into());
            }
            if g.count == 0 || g.max_open == 0 || g.max_open > 1_000 || g.weight == 0 {
                return named("count, max_open (to 1000) and weight must be at least 1");
            }
            if let Some(id) = g.id {
                if g.count != 1 || id <= 0 || !agent_ids.insert(id) {
                    return named("an id belongs to a group of one, positive and its own");
                }
            }
            if g.skills.values().any(|l| !(1..=5).contains(l)) {
                return named("skill levels are 1 to 5");
            }
            if g.slowdown.is_some_and(|s| !(0.0..=10.0).contains(&s)) {
                return named("slowdown is 0 to 10");
            }
            if let Some(t) = g.teams.iter().find(|t| !self.teams.iter().any(|x| &x.name == *t)) {
                return named(&format!("no team is called {t:?}"));
            }
            if g.breaks
                .iter()
                .any(|b| b.minutes == 0 || b.minutes > 24 * 60 || b.presence == Presence::Offline)
            {
                return named("a break lasts 1 minute to a day, away or busy");
            }
            total += u64::from(g.count);
        }
        if let Some(g) = &self.staffing_group {
            if !self.staff.iter().any(|x| &x.name == g) {
                return bad(format!("staffing_group: no staff group is called {g:?}"));
            }
        }
        if total > u64::from(MAX_AGENTS) {
            return bad(format!("at most {MAX_AGENTS} agents in all"));
        }
        crate::clock::Clock::of(self)?;
        let desk = crate::desk::Desk::build(self);
        let directory = usher_workflow::Directory {
            teams: desk.teams.iter().map(|t| t.id.0).collect(),
            agents: desk.agents.iter().map(|a| a.agent.id.0).collect(),
            calendars: self.calendars.keys().copied().collect(),
            ..usher_workflow::Directory::default()
        };
        for w in &self.workflows {
            if let Some(p) = usher_workflow::validate(w, &directory).first() {
                return bad(format!("workflow {:?} is not valid: {} {}", w.name, p.path, p.message));
            }
        }
        Ok(desk)
    }

    /// The rate at virtual time `millis`, per millisecond.
    fn rate_at(&self, millis: f64) -> f64 {
        let hour = if self.rate_per_hour.len() == 1 { 0 } else { ((millis / 3_600_000.0) as usize) % 168 };
        self.rate_per_hour.get(hour).copied().unwrap_or(0.0) / 3_600_000.0
    }

    /// The next arrival after `now` (milliseconds): a Poisson process whose rate follows the
    /// hour of the week, drawn by thinning.
    pub fn next_arrival(&self, rng: &mut Rng, now: f64) -> Option<f64> {
        let top = self.rate_per_hour.iter().copied().fold(0.0, f64::max) / 3_600_000.0;
        if top <= 0.0 {
            return None;
        }
        let mut t = now;
        for _ in 0..1_000_000 {
            t += rng.exponential(1.0 / top);
            if rng.unit() * top <= self.rate_at(t) {
                return Some(t);
            }
        }
        None
    }

    /// The mean arrival rate over a week, per second.
    pub fn mean_rate_per_second(&self) -> f64 {
        if self.rate_per_hour.is_empty() {
            return 0.0;
        }
        self.rate_per_hour.iter().sum::<f64>() / self.rate_per_hour.len() as f64 / 3600.0
    }

    /// The handling-time distribution of a channel.
    pub fn handle_for(&self, channel: Channel) -> &Dist {
        self.handle_by_channel.get(&channel).unwrap_or(&self.handle)
    }

    /// Agents in all.
    pub fn agent_count(&self) -> u32 {
        if self.staff.is_empty() {
            self.agents
        } else {
            self.staff.iter().map(|g| g.count).sum()
        }
    }
}
