//! The seeds' use cases as readable tables: who is on the team, what happens, and who should
//! get each conversation. Each table runs against the in-memory workspace, which drives the
//! core's pure functions exactly as the store does.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use usher_core::decide::Outcome;
use usher_core::manual::{ManualError, Status};
use usher_core::memory::{MemoryError, Workspace};
use usher_core::model::{
    Agent, AgentId, Channel, ConversationId, Day, Presence, Priority, Skill, Strategy, Team, TeamId,
    Timestamp,
};
use usher_core::queue::{estimate_wait, QueueKey, Throughput};
use usher_core::request::{AssignRequest, Otherwise, SkillRequirement, Target, WhenNobody};
use usher_core::{Context, Snapshot};

use Presence::{Away, Busy, Offline, Online};

/// One agent row of a table.
struct A {
    name: &'static str,
    presence: Presence,
    cap: u32,
    teams: &'static [&'static str],
    weight: u32,
    daily: Option<u32>,
    skills: &'static [(&'static str, u8)],
    speaks: &'static [&'static str],
}

fn a(name: &'static str, presence: Presence, cap: u32, teams: &'static [&'static str]) -> A {
    A { name, presence, cap, teams, weight: 1, daily: None, skills: &[], speaks: &["en"] }
}

impl A {
    fn weight(mut self, w: u32) -> A {
        self.weight = w;
        self
    }
    fn daily(mut self, d: u32) -> A {
        self.daily = Some(d);
        self
    }
    fn skills(mut self, s: &'static [(&'static str, u8)]) -> A {
        self.skills = s;
        self
    }
    fn speaks(mut self, l: &'static [&'static str]) -> A {
        self.speaks = l;
        self
    }
}

/// What a step expects.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    To(&'static str),
    Queued(u32),
    Unassigned,
}

/// A table and its running state: names to ids, the clock.
struct Desk {
    ws: Workspace,
    agents: BTreeMap<&'static str, AgentId>,
    teams: BTreeMap<&'static str, TeamId>,
    conversations: BTreeMap<&'static str, ConversationId>,
    ctx: Context,
}

fn desk(teams: &[(&'static str, Strategy)], agents: Vec<A>) -> Desk {
    let team_ids: BTreeMap<&str, TeamId> =
        teams.iter().enumerate().map(|(i, (n, _))| (*n, TeamId(i as i64 + 1))).collect();
    let mut ids = BTreeMap::new();
    let core_agents = agents
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let id = AgentId(i as i64 + 1);
            ids.insert(row.name, id);
            let mut ag = Agent::new(id, row.cap);
            ag.presence = row.presence;
            ag.weight = row.weight;
            ag.daily_limit = row.daily;
            ag.teams = row.teams.iter().map(|t| team_ids[t]).collect();
            ag.skills = row.skills.iter().map(|(n, l)| Skill { name: n.to_string(), level: *l }).collect();
            ag.languages = row.speaks.iter().map(|l| l.to_string()).collect();
            ag
        })
        .collect();
    let core_teams = teams.iter().map(|(n, s)| Team::new(team_ids[n], *s)).collect();
    Desk {
        ws: Workspace::new(Snapshot::new(core_agents, core_teams).unwrap()),
        agents: ids,
        teams: team_ids,
        conversations: BTreeMap::new(),
        ctx: Context { now: Timestamp(1_800_000_000_000), today: Day(20_000) },
    }
}

impl Desk {
    fn name(&self, id: AgentId) -> &'static str {
        self.agents.iter().find(|(_, v)| **v == id).map(|(k, _)| *k).unwrap_or("?")
    }

    fn tick(&mut self) {
        self.ctx.now = self.ctx.now.plus_seconds(1);
    }

    fn request(&mut self, conv: &'static str, team: &'static str) -> AssignRequest {
        let id = ConversationId(self.conversations.len() as i64 + 1);
        self.conversations.insert(conv, id);
        let mut r = AssignRequest::to_team(id, self.teams[team], self.ctx.now);
        r.when_nobody = WhenNobody::Queue;
        r
    }

    fn outcome(&self, o: Outcome) -> Expect {
        match o {
            Outcome::Assigned(a) => Expect::To(self.name(a)),
            Outcome::Queued { .. } => Expect::Queued(0),
            Outcome::Unassigned => Expect::Unassigned,
        }
    }

    /// Opens a conversation with a request and checks where it went. For `Queued(p)`, `p` is
    /// the position in its queue.
    fn open_with(&mut self, r: AssignRequest, expect: Expect) {
        self.tick();
        let conv = r.conversation;
        let d = self.ws.open(r.clone(), self.ctx).unwrap();
        let got = match self.outcome(d.outcome) {
            Expect::Queued(_) => {
                let key = usher_core::queue::queue_key(d.outcome).unwrap();
                let pos = self.ws.queue(key).iter().position(|w| w.conversation() == conv).unwrap();
                Expect::Queued(pos as u32 + 1)
            }
            other => other,
        };
        assert_eq!(got, expect, "{r:?}\n{}", d.trace.explain(|a| self.name(a).to_string()));
    }

    fn open(&mut self, conv: &'static str, team: &'static str, expect: Expect) {
        let r = self.request(conv, team);
        self.open_with(r, expect);
    }

    fn holder(&self, conv: &'static str) -> Option<&'static str> {
        self.ws.conversation(self.conversations[conv]).unwrap().state.assignee.map(|a| self.name(a))
    }

    /// Closes a conversation; `drained` lists (conversation, agent) handed out as a result.
    fn close(&mut self, conv: &'static str, drained: &[(&'static str, &'static str)]) {
        self.tick();
        let got = self.ws.close(self.conversations[conv], self.ctx).unwrap();
        self.check_drained(got, drained);
    }

    fn status(&mut self, agent: &'static str, p: Presence, drained: &[(&'static str, &'static str)]) {
        self.tick();
        let got = self.ws.set_presence(self.agents[agent], p, self.ctx).unwrap();
        self.check_drained(got, drained);
    }

    fn check_drained(&self, got: Vec<usher_core::queue::Drained>, want: &[(&'static str, &'static str)]) {
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|d| {
                let c =
                    self.conversations.iter().find(|(_, v)| **v == d.conversation).map(|(k, _)| *k).unwrap();
                (c, self.name(d.agent))
            })
            .collect();
        assert_eq!(got, want);
    }
}

use Expect::{Queued, To, Unassigned as Left};

/// Low cost (respond.io, "Assignment: Round Robin + Online Only"): distribute contacts equally
/// among online agents; offline, away and busy agents sit out and rejoin the rotation when
/// they come online.
#[test]
fn low_cost_round_robin_online_only() {
    let mut d = desk(
        &[("Support", Strategy::RoundRobin)],
        vec![
            a("Ana", Online, 5, &["Support"]),
            a("Bob", Away, 5, &["Support"]),
            a("Cara", Online, 5, &["Support"]),
            a("Dan", Offline, 5, &["Support"]),
            a("Eli", Busy, 5, &["Support"]),
        ],
    );
    d.open("c1", "Support", To("Ana"));
    d.open("c2", "Support", To("Cara"));
    d.open("c3", "Support", To("Ana"));
    d.status("Bob", Online, &[]);
    d.open("c4", "Support", To("Bob")); // next after Ana in id order, now online
    d.open("c5", "Support", To("Cara"));
    d.open("c6", "Support", To("Ana"));
    // A request may include busy agents.
    let mut r = d.request("c7", "Support");
    r.rules.include_busy = true;
    d.open_with(r, To("Bob"));
    let mut r = d.request("c8", "Support");
    r.rules.include_busy = true;
    d.open_with(r, To("Cara"));
    let mut r = d.request("c9", "Support");
    r.rules.include_busy = true;
    d.open_with(r, To("Eli"));
}

/// High quality ("Assignment: Least Open Contacts"): the agent with the fewest open
/// conversations, so agents keep a manageable caseload; equal loads still rotate.
#[test]
fn high_quality_least_open_contacts() {
    let mut d = desk(
        &[("Support", Strategy::LeastOpen)],
        vec![
            a("Ana", Online, 5, &["Support"]),
            a("Bob", Online, 5, &["Support"]),
            a("Cara", Online, 5, &["Support"]),
        ],
    );
    d.open("c1", "Support", To("Ana")); // all at 0, never assigned: lowest id
    d.open("c2", "Support", To("Bob"));
    d.open("c3", "Support", To("Cara"));
    d.open("c4", "Support", To("Ana")); // all at 1: Ana was assigned longest ago
    d.close("c2", &[]); // Bob drops to 0
    d.open("c5", "Support", To("Bob"));
    d.open("c6", "Support", To("Cara")); // Bob 1, Cara 1 (longer ago), Ana 2
}

/// Sales lead rotation (vendor's guide): leads are opportunities, so round robin gives every
/// representative an equal share.
#[test]
fn sales_lead_rotation_is_equal() {
    let mut d = desk(
        &[("Sales", Strategy::RoundRobin)],
        vec![
            a("Sam", Online, 100, &["Sales"]),
            a("Tia", Online, 100, &["Sales"]),
            a("Uma", Online, 100, &["Sales"]),
        ],
    );
    let names: Vec<&'static str> =
        (0..30).map(|i| Box::leak(format!("lead{i}").into_boxed_str()) as &str).collect();
    let order = ["Sam", "Tia", "Uma"];
    for (i, lead) in names.iter().enumerate() {
        d.open(lead, "Sales", To(order[i % 3]));
    }
    for rep in order {
        assert_eq!(d.ws.snapshot.agent(d.agents[rep]).unwrap().open, 10);
    }
}

/// Dedicated agent for VIPs (respond.io "Assign to a specific user"; vendor's guide on
/// high-value customers): the account manager gets them; when the manager is full, the VIP
/// waits for that manager, or falls back to the team, as the request says.
#[test]
fn dedicated_vip_agent() {
    let mut d = desk(
        &[("Support", Strategy::RoundRobin)],
        vec![a("Vera", Online, 1, &[]), a("Sam", Online, 5, &["Support"])],
    );
    let vip = |d: &mut Desk, conv: &'static str, otherwise: Otherwise| {
        let mut r = d.request(conv, "Support");
        r.target = Target::Agent { agent: d.agents["Vera"], otherwise };
        r
    };
    let r = vip(&mut d, "v1", Otherwise::WaitForAgent);
    d.open_with(r, To("Vera"));
    let r = vip(&mut d, "v2", Otherwise::WaitForAgent);
    d.open_with(r, Queued(1)); // Vera at cap 1/1: waits in Vera's own queue
    assert_eq!(d.ws.queue(QueueKey::Agent(d.agents["Vera"])).len(), 1);
    let team = d.teams["Support"];
    let r = vip(&mut d, "v3", Otherwise::Team { team, strategy: None });
    d.open_with(r, To("Sam")); // falls back to the team
    let r = vip(&mut d, "v4", Otherwise::LeaveUnassigned);
    d.open_with(r, Left);
    d.close("v1", &[("v2", "Vera")]); // Vera frees up: her VIP goes to her at once
}

/// Returning customers go back to the agent who handled them (vendor's guide; SaleSmartly
/// "old visitors"); if that agent is not available, the team's strategy decides.
#[test]
fn returning_customer_to_previous_agent() {
    let mut d = desk(
        &[("Support", Strategy::RoundRobin)],
        vec![
            a("Ana", Online, 5, &["Support"]),
            a("Bob", Online, 5, &["Support"]),
            a("Cara", Online, 5, &["Support"]),
        ],
    );
    d.open("c1", "Support", To("Ana"));
    d.open("c2", "Support", To("Bob"));
    let mut r = d.request("c3", "Support");
    r.previous_agent = Some(d.agents["Bob"]);
    d.open_with(r, To("Bob"));
    d.status("Bob", Offline, &[]);
    let mut r = d.request("c4", "Support");
    r.previous_agent = Some(d.agents["Bob"]);
    d.open_with(r, To("Cara")); // Bob offline: round robin continues after Bob
                                // Close and reopen: back to the last agent.
    d.close("c1", &[]);
    d.tick();
    let reopened = d.ws.reopen(d.conversations["c1"], d.ctx).unwrap();
    assert_eq!(reopened.outcome, Outcome::Assigned(d.agents["Ana"]));
}

/// Reception ratio (SaleSmartly): limits of 100 and 200 give 1/3 and 2/3 of new
/// conversations; and a daily reception limit stops an agent until the next day.
#[test]
fn reception_ratio_and_daily_limit() {
    let mut d = desk(
        &[("Support", Strategy::Weighted)],
        vec![
            a("Ana", Online, 1000, &["Support"]).weight(100),
            a("Bob", Online, 1000, &["Support"]).weight(200),
        ],
    );
    let (mut ana, mut bob) = (0i64, 0i64);
    for n in 1..=30i64 {
        let conv: &'static str = Box::leak(format!("c{n}").into_boxed_str());
        let r = d.request(conv, "Support");
        d.tick();
        let dec = d.ws.open(r, d.ctx).unwrap();
        match d.outcome(dec.outcome) {
            To("Ana") => ana += 1,
            To("Bob") => bob += 1,
            other => panic!("{other:?}"),
        }
        // Within one conversation of the exact share after every decision.
        assert!((ana * 3 - n).abs() <= 3 && (bob * 3 - 2 * n).abs() <= 3, "after {n}: {ana} vs {bob}");
    }
    assert_eq!((ana, bob), (10, 20));

    let mut d =
        desk(&[("Support", Strategy::RoundRobin)], vec![a("Ana", Online, 100, &["Support"]).daily(2)]);
    d.open("c1", "Support", To("Ana"));
    d.open("c2", "Support", To("Ana"));
    let mut r = d.request("c3", "Support");
    r.when_nobody = WhenNobody::LeaveUnassigned;
    d.tick();
    let dec = d.ws.open(r, d.ctx).unwrap();
    assert_eq!(dec.outcome, Outcome::Unassigned);
    let why = dec.trace.explain(|_| "Ana".into());
    assert_eq!(why, "left unassigned: nobody eligible: Ana daily limit reached 2/2");
    // Midnight in the workspace's time zone: the count starts again.
    d.ctx.today = Day(d.ctx.today.0 + 1);
    d.open("c4", "Support", To("Ana"));
}

/// Skills and language (SaleSmartly's airline: classify by language, then by need): only
/// agents with every skill at the level and the contact's language.
#[test]
fn skills_and_language_routing() {
    let mut d = desk(
        &[("Support", Strategy::LeastOpen)],
        vec![
            a("Ana", Online, 5, &["Support"]).skills(&[("billing", 4)]).speaks(&["en"]),
            a("Bob", Online, 5, &["Support"]).skills(&[("tech", 5)]).speaks(&["fr", "en"]),
            a("Cara", Online, 5, &["Support"]).skills(&[("billing", 2)]).speaks(&["fr-CA"]),
        ],
    );
    let need = |d: &mut Desk, conv: &'static str, skill: &str, level: u8, lang: Option<&str>| {
        let mut r = d.request(conv, "Support");
        r.requirements.skills.push(SkillRequirement { name: skill.into(), min_level: level });
        r.requirements.language = lang.map(str::to_string);
        r
    };
    let r = need(&mut d, "c1", "billing", 3, None);
    d.open_with(r, To("Ana"));
    let r = need(&mut d, "c2", "billing", 2, Some("fr"));
    d.open_with(r, To("Cara")); // fr-CA speaks fr
    let r = need(&mut d, "c3", "tech", 1, Some("fr"));
    d.open_with(r, To("Bob"));
    let mut r = need(&mut d, "c4", "billing", 3, Some("fr"));
    r.when_nobody = WhenNobody::LeaveUnassigned;
    d.tick();
    let dec = d.ws.open(r, d.ctx).unwrap();
    assert_eq!(dec.outcome, Outcome::Unassigned);
    let why = dec.trace.explain(|a| d.name(a).to_string());
    assert_eq!(
        why,
        "left unassigned: nobody eligible: Ana does not speak fr; Bob missing skill billing>=3; \
         Cara missing skill billing>=3 (has 2)"
    );
}

/// Overcapacity (vendor's guide): when every agent is at capacity the customer waits, told
/// their position and an estimated wait; urgent conversations go first; freed capacity takes
/// the head of the queue at once.
#[test]
fn overcapacity_queue_with_position_and_estimate() {
    let mut d = desk(
        &[("Support", Strategy::LeastOpen)],
        vec![a("Ana", Online, 1, &["Support"]), a("Bob", Online, 1, &["Support"])],
    );
    d.open("c1", "Support", To("Ana"));
    d.open("c2", "Support", To("Bob"));
    d.open("c3", "Support", Queued(1));
    d.open("c4", "Support", Queued(2));
    let mut urgent = d.request("c5", "Support");
    urgent.priority = Priority::Urgent;
    d.open_with(urgent, Queued(1)); // urgent jumps ahead of earlier normal ones
    let key = QueueKey::Team(d.teams["Support"]);
    let order: Vec<ConversationId> = d.ws.queue(key).iter().map(|w| w.conversation()).collect();
    assert_eq!(order, vec![d.conversations["c5"], d.conversations["c3"], d.conversations["c4"]]);

    // Estimates computed by hand.
    // Cold start: 2 serving slots, 300 s per conversation: position p waits ceil(p*300/2).
    let cold = Throughput { releases: 0, window_seconds: 900, serving_slots: 2, default_handle_seconds: 300 };
    let places = d.ws.places(key, cold);
    let waits: Vec<(u32, Option<u64>)> =
        places.iter().map(|p| (p.position, p.estimated_wait_seconds)).collect();
    assert_eq!(waits, vec![(1, Some(150)), (2, Some(300)), (3, Some(450))]);
    // With history: 12 releases in 900 s is one every 75 s: position p waits 75p.
    let warm =
        Throughput { releases: 12, window_seconds: 900, serving_slots: 2, default_handle_seconds: 300 };
    assert_eq!(estimate_wait(1, warm), Some(75));
    assert_eq!(estimate_wait(3, warm), Some(225));
    // 7 releases in 900 s: ceil(2 * 900 / 7) = ceil(257.14) = 258.
    assert_eq!(estimate_wait(2, Throughput { releases: 7, ..warm }), Some(258));
    // Fewer than 3 releases: too little history, the cold start applies.
    assert_eq!(estimate_wait(2, Throughput { releases: 2, ..warm }), Some(300));
    // Nobody available and no history: no honest number.
    assert_eq!(estimate_wait(1, Throughput { serving_slots: 0, ..cold }), None);

    d.close("c1", &[("c5", "Ana")]);
    d.close("c2", &[("c3", "Bob")]);
    assert_eq!(d.ws.queue(key).len(), 1);
}

/// Manual operations (SaleSmartly "Join Session"; respond.io's pick-and-assign default):
/// agents claim unassigned conversations, a second claim fails cleanly, a manager may exceed
/// a cap only on purpose.
#[test]
fn manual_claims_assignments_and_transfers() {
    let mut d = desk(
        &[("Support", Strategy::RoundRobin), ("Billing", Strategy::LeastOpen)],
        vec![
            a("Ana", Offline, 1, &["Support"]),
            a("Bob", Offline, 1, &["Support"]),
            a("Cid", Online, 3, &["Billing"]),
        ],
    );
    let mut r = d.request("c1", "Support");
    r.when_nobody = WhenNobody::LeaveUnassigned;
    d.open_with(r, Left);
    let c1 = d.conversations["c1"];
    d.ws.claim(c1, d.agents["Ana"], d.ctx).unwrap();
    assert_eq!(d.holder("c1"), Some("Ana"));
    let second = d.ws.claim(c1, d.agents["Bob"], d.ctx);
    assert_eq!(second, Err(MemoryError::Manual(ManualError::AlreadyHeld { by: d.agents["Ana"] })));
    d.ws.claim(c1, d.agents["Ana"], d.ctx).unwrap(); // one's own: no-op

    let mut r = d.request("c2", "Support");
    r.when_nobody = WhenNobody::LeaveUnassigned;
    d.open_with(r, Left);
    let c2 = d.conversations["c2"];
    // Ana is at cap 1/1: refused unless forced.
    let refused = d.ws.assign(c2, d.agents["Ana"], false, d.ctx);
    assert!(matches!(refused, Err(MemoryError::Manual(ManualError::Ineligible { .. }))), "{refused:?}");
    d.ws.assign(c2, d.agents["Ana"], true, d.ctx).unwrap();
    assert_eq!(d.ws.snapshot.agent(d.agents["Ana"]).unwrap().open, 2);
    // A claim by someone outside the conversation's team is refused.
    let mut r = d.request("c3", "Support");
    r.when_nobody = WhenNobody::LeaveUnassigned;
    d.open_with(r, Left);
    let outsider = d.ws.claim(d.conversations["c3"], d.agents["Cid"], d.ctx);
    assert!(matches!(outsider, Err(MemoryError::Manual(ManualError::Ineligible { .. }))));

    // Unassign, transfer to another team (routed there), close, reopen.
    d.ws.unassign(c2, d.ctx).unwrap();
    assert_eq!(d.ws.conversation(c2).unwrap().state.status, Status::Unassigned);
    d.ws.transfer_to_team(c2, d.teams["Billing"], d.ctx).unwrap();
    assert_eq!(d.holder("c2"), Some("Cid"));
    d.ws.close(c1, d.ctx).unwrap();
    assert_eq!(d.ws.claim(c1, d.agents["Bob"], d.ctx), Err(MemoryError::Manual(ManualError::Closed)));
    assert_eq!(d.ws.unassign(c1, d.ctx), Err(MemoryError::Manual(ManualError::Closed)));
    d.ws.reopen(c1, d.ctx).unwrap();
    assert_eq!(d.ws.conversation(c1).unwrap().state.status, Status::Unassigned); // Ana offline, nobody online
    assert_eq!(d.ws.snapshot.agent(d.agents["Ana"]).unwrap().open, 0);
}

/// "Why did Bob get this chat?": the trace names the strategy, every candidate and its reason.
#[test]
fn the_trace_explains_the_decision() {
    let mut d = desk(
        &[("Support", Strategy::LeastOpen)],
        vec![
            a("Ana", Online, 5, &["Support"]),
            a("Bob", Online, 5, &["Support"]),
            a("Ravi", Offline, 5, &["Support"]),
            a("Zoe", Online, 1, &["Support"]),
        ],
    );
    for (i, (who, n)) in [("Ana", 4), ("Bob", 2), ("Zoe", 1)].into_iter().enumerate() {
        for k in 0..n {
            let conv: &'static str = Box::leak(format!("pre{i}-{k}").into_boxed_str());
            let mut r = d.request(conv, "Support");
            r.when_nobody = WhenNobody::LeaveUnassigned;
            r.target = Target::Agent { agent: d.agents[who], otherwise: Otherwise::LeaveUnassigned };
            d.tick();
            d.ws.open(r, d.ctx).unwrap();
            if d.holder(conv).is_none() {
                d.ws.assign(d.conversations[conv], d.agents[who], true, d.ctx).unwrap();
            }
        }
    }
    let r = d.request("chat", "Support");
    d.tick();
    let dec = d.ws.open(r, d.ctx).unwrap();
    assert_eq!(
        dec.trace.explain(|a| d.name(a).to_string()),
        "assigned to Bob by least open contacts: Ana had 4 open; Bob had 2 open; Ravi offline; Zoe at cap 1/1"
    );
    let json = serde_json::to_value(&dec.trace).unwrap();
    assert_eq!(json["attempts"][0]["candidates"][2]["verdict"]["reason"]["kind"], "presence");
    assert_eq!(json["attempts"][0]["candidates"][3]["verdict"]["reason"]["kind"], "at_cap");
    assert_eq!(json["attempts"][0]["candidates"][0]["verdict"]["why"]["kind"], "more_open");
}

/// Per-channel caps: an agent who holds five chats may hold ten e-mail threads.
#[test]
fn per_channel_caps() {
    let mut d = desk(&[("Support", Strategy::RoundRobin)], vec![a("Ana", Online, 10, &["Support"])]);
    let ana = d.agents["Ana"];
    let mut agents: Vec<Agent> = d.ws.snapshot.agents().to_vec();
    agents[0].channel_caps.set(Channel::WebChat, Some(2));
    d.ws = Workspace::new(Snapshot::new(agents, d.ws.snapshot.teams().to_vec()).unwrap());
    for conv in ["w1", "w2"] {
        let mut r = d.request(conv, "Support");
        r.channel = Channel::WebChat;
        d.open_with(r, To("Ana"));
    }
    let mut r = d.request("w3", "Support");
    r.channel = Channel::WebChat;
    d.open_with(r, Queued(1));
    for conv in ["e1", "e2", "e3"] {
        let mut r = d.request(conv, "Support");
        r.channel = Channel::Email;
        d.open_with(r, To("Ana"));
    }
    assert_eq!(d.ws.snapshot.agent(ana).unwrap().open, 5);
}
