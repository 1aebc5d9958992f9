//! One decision for teams of 10 to 10,000 agents, for each strategy.
//!
//! Every agent is a member of the team, a fifth of them offline and a ninth at cap (so the
//! eligibility checks do real work), and the trace records every candidate, as in production.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use usher_core::model::{Agent, AgentId, Day, Presence, Strategy, Team, TeamId, Timestamp};
use usher_core::request::{AssignRequest, SkillRequirement};
use usher_core::{decide, Context, Snapshot};

fn snapshot(size: usize, strategy: Strategy) -> Snapshot {
    let team = TeamId(1);
    let agents = (0..size)
        .map(|i| {
            let mut a = Agent::new(AgentId(i as i64 + 1), 8);
            a.teams = vec![team];
            a.open = (i * 7 % 9) as u32; // some at cap (8)
            a.weight = 1 + (i % 3) as u32;
            a.presence = if i % 5 == 4 { Presence::Offline } else { Presence::Online };
            a.skills = vec![usher_core::model::Skill { name: "billing".into(), level: (i % 5) as u8 + 1 }];
            a.languages = vec!["en".into()];
            a
        })
        .collect();
    let mut t = Team::new(team, strategy);
    t.rotation.last_agent = Some(AgentId(size as i64 / 2));
    Snapshot::new(agents, vec![t]).expect("distinct ids")
}

fn bench(c: &mut Criterion) {
    let ctx = Context { now: Timestamp(1_700_000_000_000), today: Day(19_675) };
    for strategy in [Strategy::RoundRobin, Strategy::LeastOpen, Strategy::Weighted] {
        let mut group = c.benchmark_group(format!("decide/{}", strategy.as_str()));
        for size in [10usize, 100, 1_000, 10_000] {
            let snap = snapshot(size, strategy);
            let request = AssignRequest::to_team(usher_core::model::ConversationId(1), TeamId(1), ctx.now);
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
                b.iter(|| decide(black_box(&snap), black_box(&request), ctx))
            });
        }
        group.finish();
    }
    // Skills and language filter on top of least open: the costliest eligibility path.
    let mut group = c.benchmark_group("decide/least_open+skill+language");
    for size in [10usize, 100, 1_000, 10_000] {
        let snap = snapshot(size, Strategy::LeastOpen);
        let mut request = AssignRequest::to_team(usher_core::model::ConversationId(1), TeamId(1), ctx.now);
        request.requirements.skills = vec![SkillRequirement { name: "billing".into(), min_level: 3 }];
        request.requirements.language = Some("en".into());
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| decide(black_box(&snap), black_box(&request), ctx))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
