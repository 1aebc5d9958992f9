//! The desk a setup describes, made concrete: every agent with its id, name, settings and
//! presence over time (from its group's shifts and breaks), and every team.

use crate::clock::Clock;
use crate::model::{Setup, StaffGroup, Weekday};
use usher_core::model::{Agent, AgentId, Channel, Presence, Skill, Strategy, TeamId};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// One agent of the desk.
#[derive(Debug, Clone)]
pub struct DeskAgent {
    /// The routing core's agent (presence as at time 0).
    pub agent: Agent,
    /// Its name.
    pub name: String,
    /// The staff group it comes from (none: the setup's agents alike).
    pub group: Option<usize>,
    /// Its place in its group, from 0 (its breaks are staggered by it).
    pub place: u32,
    /// Handling slowdown per extra conversation held.
    pub slowdown: f64,
}

/// One team of the desk.
#[derive(Debug, Clone)]
pub struct DeskTeam {
    /// Its id.
    pub id: TeamId,
    /// Its name.
    pub name: String,
    /// Its strategy.
    pub strategy: Strategy,
    /// Only online agents.
    pub only_online: bool,
    /// Without a workflow: the contact's language must be spoken.
    pub match_language: bool,
    /// Without a workflow: a returning contact goes to its previous agent if it can.
    pub prefer_previous_agent: bool,
    /// Without a workflow: the channels it takes (none: any).
    pub channels: Vec<Channel>,
}

/// The desk.
#[derive(Debug, Clone)]
pub struct Desk {
    /// Agents, in id order.
    pub agents: Vec<DeskAgent>,
    /// Teams, in the setup's order.
    pub teams: Vec<DeskTeam>,
    /// Its time zone, starting week and calendars.
    pub clock: Clock,
}

impl Desk {
    /// The desk of a setup (checked or not: what does not fit is left out, and
    /// [`Setup::check`] refuses it).
    pub fn build(setup: &Setup) -> Desk {
        let teams: Vec<DeskTeam> = if setup.teams.is_empty() {
            vec![DeskTeam {
                id: TeamId(1),
                name: "desk".into(),
                strategy: Strategy::LeastOpen,
                only_online: true,
                match_language: false,
                channels: vec![],
                prefer_previous_agent: false,
            }]
        } else {
            setup
                .teams
                .iter()
                .enumerate()
                .map(|(i, t)| DeskTeam {
                    id: TeamId(t.id.unwrap_or(i as i64 + 1)),
                    name: t.name.clone(),
                    strategy: t.strategy,
                    only_online: t.only_online,
                    match_language: t.match_language,
                    prefer_previous_agent: t.prefer_previous_agent,
                    channels: t.channels.clone(),
                })
                .collect()
        };
        let all: Vec<TeamId> = teams.iter().map(|t| t.id).collect();
        let mut agents = Vec::new();
        if setup.staff.is_empty() {
            for i in 1..=setup.agents.min(crate::model::MAX_AGENTS) {
                let mut a = Agent::new(AgentId(i64::from(i)), setup.max_open);
                a.teams = all.clone();
                a.weight = setup.weights.get(i as usize - 1).copied().unwrap_or(1).max(1);
                agents.push(DeskAgent {
                    agent: a,
                    name: format!("agent {i}"),
                    group: None,
                    place: i - 1,
                    slowdown: setup.slowdown,
                });
            }
        } else {
            let taken: std::collections::BTreeSet<i64> = setup.staff.iter().filter_map(|g| g.id).collect();
            let mut next = 0i64;
            for (gi, g) in setup.staff.iter().enumerate() {
                let team_ids: Vec<TeamId> = if g.teams.is_empty() {
                    all.clone()
                } else {
                    teams.iter().filter(|t| g.teams.contains(&t.name)).map(|t| t.id).collect()
                };
                for k in 0..g.count.min(crate::model::MAX_AGENTS) {
                    let id = match g.id {
                        Some(id) => id,
                        None => {
                            next += 1;
                            while taken.contains(&next) {
                                next += 1;
                            }
                            next
                        }
                    };
                    agents.push(DeskAgent {
                        agent: group_agent(g, AgentId(id), team_ids.clone()),
                        name: if g.count == 1 { g.name.clone() } else { format!("{} {}", g.name, k + 1) },
                        group: Some(gi),
                        place: k,
                        slowdown: g.slowdown.unwrap_or(setup.slowdown),
                    });
                }
            }
            agents.sort_by_key(|a| a.agent.id);
        }
        // A clock that cannot be read is refused by `Setup::check`; unchecked, UTC and no
        // calendars.
        let clock = Clock::of(setup).unwrap_or_default();
        Desk { agents, teams, clock }
    }

    /// An agent's presence changes from time 0 to `until` (milliseconds), in time order, and
    /// its presence at time 0. An agent without shifts is online throughout.
    pub fn timeline(&self, setup: &Setup, agent: usize, until: i64) -> (Presence, Vec<(i64, Presence)>) {
        let Some(g) = self.agents.get(agent).and_then(|a| a.group).and_then(|g| setup.staff.get(g)) else {
            return (Presence::Online, Vec::new());
        };
        if g.shifts.is_empty() {
            return (Presence::Online, Vec::new());
        }
        let stagger = i64::from(self.agents[agent].place) * i64::from(g.stagger_minutes) * MINUTE;
        let mut shifts: Vec<(i64, i64)> = Vec::new();
        let mut breaks: Vec<(i64, i64, Presence)> = Vec::new();
        // From the day before the start (a night shift running into Monday) to the end.
        for day in -1..=until.div_euclid(DAY) {
            let weekday = Weekday::ALL[day.rem_euclid(7) as usize];
            for s in &g.shifts {
                if !s.days.is_empty() && !s.days.contains(&weekday) {
                    continue;
                }
                let start = day * DAY + i64::from(s.start.0) * MINUTE;
                let mut end = day * DAY + i64::from(s.end.0) * MINUTE;
                if end <= start {
                    end += DAY;
                }
                shifts.push((start, end));
                for b in &g.breaks {
                    let mut at = day * DAY + i64::from(b.at.0) * MINUTE + stagger;
                    if at < start {
                        at += DAY;
                    }
                    let to = (at + i64::from(b.minutes) * MINUTE).min(end);
                    if at < end {
                        breaks.push((at, to, b.presence));
                    }
                }
            }
        }
        shifts.sort_unstable();
        breaks.sort_unstable_by_key(|b| (b.0, b.1));
        // Shifts and breaks last a day at most: only those that began in the day before `t`
        // can hold it, found by bisection (the cost grows with the days simulated, not their
        // square).
        let holds = |starts: &[(i64, i64)], t: i64| {
            let upto = starts.partition_point(|(s, _)| *s <= t);
            starts[..upto]
                .iter()
                .rev()
                .take_while(|(s, _)| *s > t - 2 * DAY)
                .position(|(_, e)| t < *e)
                .map(|back| upto - 1 - back)
        };
        let break_spans: Vec<(i64, i64)> = breaks.iter().map(|b| (b.0, b.1)).collect();
        let presence_at = |t: i64| {
            if holds(&shifts, t).is_none() {
                Presence::Offline
            } else {
                holds(&break_spans, t).map_or(Presence::Online, |i| breaks[i].2)
            }
        };
        let mut points: Vec<i64> = shifts
            .iter()
            .flat_map(|(s, e)| [*s, *e])
            .chain(breaks.iter().flat_map(|(s, e, _)| [*s, *e]))
            .filter(|t| *t > 0 && *t <= until)
            .collect();
        points.sort_unstable();
        points.dedup();
        let initial = presence_at(0);
        let mut last = initial;
        let mut changes = Vec::new();
        for t in points {
            let p = presence_at(t);
            if p != last {
                changes.push((t, p));
                last = p;
            }
        }
        (initial, changes)
    }
}

fn group_agent(g: &StaffGroup, id: AgentId, teams: Vec<TeamId>) -> Agent {
    let mut a = Agent::new(id, g.max_open);
    a.teams = teams;
    a.weight = g.weight;
    a.daily_limit = g.daily_limit;
    a.skills = g.skills.iter().map(|(name, level)| Skill { name: name.clone(), level: *level }).collect();
    a.languages = g.languages.clone();
    for (ch, cap) in &g.channel_caps {
        a.channel_caps.set(*ch, Some(*cap));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Break, Clock, Shift};

    fn setup(shift: Shift, breaks: Vec<Break>, stagger: u32) -> Setup {
        Setup {
            staff: vec![StaffGroup {
                name: "chat".into(),
                id: None,
                count: 2,
                teams: vec![],
                max_open: 1,
                channel_caps: Default::default(),
                daily_limit: None,
                weight: 1,
                skills: Default::default(),
                languages: vec![],
                shifts: vec![shift],
                breaks,
                stagger_minutes: stagger,
                slowdown: None,
            }],
            ..Setup::default()
        }
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_weekday_shift_with_a_staggered_break() {
        let s = setup(
            Shift { days: vec![Weekday::Mon, Weekday::Tue], start: Clock(8 * 60), end: Clock(16 * 60) },
            vec![Break { at: Clock(12 * 60), minutes: 30, presence: Presence::Away }],
            30,
        );
        let desk = Desk::build(&s);
        let (at0, first) = desk.timeline(&s, 0, 7 * 24 * H);
        assert_eq!(at0, Presence::Offline);
        let monday = vec![
            (8 * H, Presence::Online),
            (12 * H, Presence::Away),
            (12 * H + H / 2, Presence::Online),
            (16 * H, Presence::Offline),
        ];
        let tuesday: Vec<(i64, Presence)> = monday.iter().map(|(t, p)| (t + 24 * H, *p)).collect();
        assert_eq!(first, [monday.clone(), tuesday].concat());
        let (_, second) = desk.timeline(&s, 1, 24 * H);
        assert_eq!(
            second[1],
            (12 * H + H / 2, Presence::Away),
            "the second agent's break starts 30 minutes later"
        );
        assert_eq!(second[2], (13 * H, Presence::Online));
    }

    #[test]
    fn a_night_shift_runs_past_midnight_and_into_the_start() {
        let s = setup(Shift { days: vec![], start: Clock(22 * 60), end: Clock(6 * 60) }, vec![], 0);
        let desk = Desk::build(&s);
        let (at0, changes) = desk.timeline(&s, 0, 24 * H);
        assert_eq!(at0, Presence::Online, "Sunday's night shift is still on at Monday 00:00");
        assert_eq!(changes, vec![(6 * H, Presence::Offline), (22 * H, Presence::Online)]);
    }
}
