//! The store conformance suite: one set of scenarios, each written once as an `async fn`
//! taking a [`Db`] (the store plus a raw pool for looking under it), run against both
//! backends:
//!
//! - SQLite, always, on a fresh file in a fresh temporary directory;
//! - PostgreSQL, when `USHER_TEST_POSTGRES` names a server (e.g.
//!   `postgres://postgres@127.0.0.1:5432/test`): each test creates its own database there and
//!   drops it afterwards. Unset, the PostgreSQL variants say they were skipped and pass.
//!
//! `scenarios!` turns each scenario into `sqlite_<name>` and `postgres_<name>` tests.
//! Times are milliseconds handed in by the caller (`T0` plus offsets), never the clock.

#![allow(clippy::unwrap_used)]

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use usher_core::manual::Status;
use usher_core::model::{AgentId, Channel, Presence, Priority, Strategy, TeamId, Timestamp};
use usher_core::request::{Rules, WhenNobody};
use usher_core::trace::{AttemptKind, Skip, TraceResult, Verdict, Why, WhyNot};
use usher_store::reports::Period;
use usher_store::{
    rfc3339, AgentPatch, Backend, Conversation, ConversationFilter, Event, NewAgent, NewContact,
    NewConversation, NewTeam, Principal, Role, Store, StoreError, TeamPatch,
};

/// 2027-01-15 08:00:00 UTC: every scenario's clock starts here.
const T0: i64 = 1_800_000_000_000;

// ---------------------------------------------------------------------------------------
// The scenarios, each declared once, each run on both backends.
// ---------------------------------------------------------------------------------------

macro_rules! scenarios {
    ($($body:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                run_sqlite($body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                run_postgres(stringify!($postgres), $body).await;
            }
        )*
    };
}

scenarios! {
    tokens_and_authentication => sqlite_tokens_and_authentication, postgres_tokens_and_authentication;
    open_routes_by_strategy => sqlite_open_routes_by_strategy, postgres_open_routes_by_strategy;
    queue_positions_estimates_and_drains =>
        sqlite_queue_positions_estimates_and_drains, postgres_queue_positions_estimates_and_drains;
    manual_claim_assign_unassign_close =>
        sqlite_manual_claim_assign_unassign_close, postgres_manual_claim_assign_unassign_close;
    reopen_and_transfer => sqlite_reopen_and_transfer, postgres_reopen_and_transfer;
    dedicated_agent_and_reserved_queue =>
        sqlite_dedicated_agent_and_reserved_queue, postgres_dedicated_agent_and_reserved_queue;
    channel_caps_and_daily_limits => sqlite_channel_caps_and_daily_limits, postgres_channel_caps_and_daily_limits;
    idempotent_open => sqlite_idempotent_open, postgres_idempotent_open;
    workspace_isolation => sqlite_workspace_isolation, postgres_workspace_isolation;
    invalid_input_changes_nothing => sqlite_invalid_input_changes_nothing, postgres_invalid_input_changes_nothing;
    event_log => sqlite_event_log, postgres_event_log;
    counters_equal_the_truth_after_random_workloads =>
        sqlite_counters_equal_the_truth_after_random_workloads,
        postgres_counters_equal_the_truth_after_random_workloads;
    concurrent_opens_fill_exactly_the_capacity =>
        sqlite_concurrent_opens_fill_exactly_the_capacity, postgres_concurrent_opens_fill_exactly_the_capacity;
    concurrent_opens_and_closes_keep_invariants =>
        sqlite_concurrent_opens_and_closes_keep_invariants, postgres_concurrent_opens_and_closes_keep_invariants;
    concurrent_claims_have_one_winner =>
        sqlite_concurrent_claims_have_one_winner, postgres_concurrent_claims_have_one_winner;
    reopen_does_not_overtake_the_queue =>
        sqlite_reopen_does_not_overtake_the_queue, postgres_reopen_does_not_overtake_the_queue;
    the_store_agrees_with_the_reference_engine =>
        sqlite_the_store_agrees_with_the_reference_engine, postgres_the_store_agrees_with_the_reference_engine;
    open_and_drain_of_one_contact_do_not_deadlock => sqlite_open_and_drain_of_one_contact_do_not_deadlock, postgres_open_and_drain_of_one_contact_do_not_deadlock;
    status_change_and_open_do_not_deadlock => sqlite_status_change_and_open_do_not_deadlock, postgres_status_change_and_open_do_not_deadlock;
    close_and_open_for_one_agent_leave_nobody_waiting => sqlite_close_and_open_for_one_agent_leave_nobody_waiting, postgres_close_and_open_for_one_agent_leave_nobody_waiting;
    close_and_team_join_leave_nobody_waiting => sqlite_close_and_team_join_leave_nobody_waiting, postgres_close_and_team_join_leave_nobody_waiting;
    freed_dedicated_agent_takes_its_conversation_from_the_team_queue => sqlite_freed_dedicated_agent_takes_its_conversation_from_the_team_queue, postgres_freed_dedicated_agent_takes_its_conversation_from_the_team_queue;
    events_of_two_nodes_are_numbered_once => sqlite_events_of_two_nodes_are_numbered_once, postgres_events_of_two_nodes_are_numbered_once;
    the_language_is_detected_when_unknown => sqlite_the_language_is_detected_when_unknown, postgres_the_language_is_detected_when_unknown;
    runs_wait_survive_a_restart_and_step_once => sqlite_runs_wait_survive_a_restart_and_step_once, postgres_runs_wait_survive_a_restart_and_step_once;
    webhook_deliveries_survive_a_restart_retry_and_pause => sqlite_webhook_deliveries_survive_a_restart_retry_and_pause, postgres_webhook_deliveries_survive_a_restart_retry_and_pause;
    presence_follows_the_console_with_a_grace_period => sqlite_presence_follows_the_console_with_a_grace_period, postgres_presence_follows_the_console_with_a_grace_period;
    inbound_messages_race_into_one_conversation => sqlite_inbound_messages_race_into_one_conversation, postgres_inbound_messages_race_into_one_conversation;
    a_trace_too_long_is_refused_not_cut => sqlite_a_trace_too_long_is_refused_not_cut, postgres_a_trace_too_long_is_refused_not_cut;
    a_new_day_drains_the_queues_daily_limits_held_back =>
        sqlite_a_new_day_drains_the_queues_daily_limits_held_back,
        postgres_a_new_day_drains_the_queues_daily_limits_held_back;
}

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// What a scenario gets: the store, a raw pool on the same database (to look at tables the
/// interface does not show), and the URL (to connect a second store).
struct Db {
    store: Store,
    raw: AnyPool,
    url: String,
}

impl Db {
    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql).fetch_one(&self.raw).await.expect(sql).try_get::<i64, _>(0).expect(sql)
    }

    /// Row counts of every table, to show that a refused command changed nothing.
    async fn table_counts(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        for table in [
            "workspaces",
            "tokens",
            "teams",
            "agents",
            "team_members",
            "contacts",
            "conversations",
            "decisions",
            "events",
            "idempotency",
            "releases",
        ] {
            let n = match table {
                // On PostgreSQL a sequencer moves events from pending_events into events at
                // any moment: count both, which only commands change.
                "events" => {
                    self.count("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM pending_events)")
                        .await
                }
                _ => self.count(&format!("SELECT COUNT(*) FROM {table}")).await,
            };
            out.push((table, n));
        }
        out
    }

    /// A second, independent store on the same database (a restart, or a second node).
    async fn reconnect(&self) -> Store {
        Store::connect(&self.url).await.expect("second connection")
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A name no other test (of this run or an earlier one) uses.
#[allow(clippy::disallowed_methods)] // names for scratch databases, not routing time
fn unique() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{}_{}_{ms}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs the body in its own task so that a failing assertion still lets the caller clean
/// up, then re-raises the failure.
async fn supervise<Fut>(body: Fut) -> Result<(), tokio::task::JoinError>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(body).await
}

fn rethrow(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("scenario task failed: {e}");
    }
}

async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("usher-conformance-{}", unique()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let url = format!("sqlite://{}", dir.join("usher.db").display());
    let store = Store::connect(&url).await.expect("connect to SQLite");
    sqlx::any::install_default_drivers();
    let raw = AnyPoolOptions::new()
        .max_connections(2)
        .connect(&format!("{url}?mode=rw"))
        .await
        .expect("raw SQLite pool");
    let result = supervise(body(Db { store, raw, url })).await;
    let _ = std::fs::remove_dir_all(&dir);
    rethrow(result);
}

/// The URL of database `name` on the server of `admin` (same credentials and options).
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    format!("{root}/{name}{query}")
}

async fn run_postgres<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin) = std::env::var("USHER_TEST_POSTGRES").ok().filter(|u| !u.trim().is_empty()) else {
        eprintln!("{test}: skipped (USHER_TEST_POSTGRES is not set)");
        return;
    };
    sqlx::any::install_default_drivers();
    let admin_pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .expect("connect to USHER_TEST_POSTGRES");
    let name = format!("usher_t_{}", unique());
    sqlx::Executor::execute(&admin_pool, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the test database");
    let url = database_url(&admin, &name);
    let result = {
        let store = Store::connect(&url).await.expect("connect to the test database");
        let raw = AnyPoolOptions::new().max_connections(2).connect(&url).await.expect("raw PostgreSQL pool");
        supervise(body(Db { store, raw, url })).await
    };
    // FORCE ends the connections of the pools the body dropped.
    let _ =
        sqlx::Executor::execute(&admin_pool, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    admin_pool.close().await;
    rethrow(result);
}

// ---------------------------------------------------------------------------------------
// Builders and checks
// ---------------------------------------------------------------------------------------

fn new_team(name: &str, strategy: Strategy, when_nobody: WhenNobody) -> NewTeam {
    NewTeam {
        name: name.into(),
        strategy,
        only_online: true,
        time_zone: "UTC".into(),
        when_nobody,
        default_handle_seconds: 60,
    }
}

fn new_agent(name: &str, teams: &[i64], max_open: u32, status: Presence) -> NewAgent {
    NewAgent {
        name: name.into(),
        email: format!("{}@example.test", name.to_lowercase()),
        teams: teams.to_vec(),
        max_open,
        daily_limit: None,
        weight: 1,
        skills: BTreeMap::new(),
        languages: vec![],
        channel_caps: BTreeMap::new(),
        status,
    }
}

fn new_conv(team: Option<i64>, contact: &str) -> NewConversation {
    NewConversation {
        channel: Channel::Sms,
        contact: NewContact { external_id: contact.into(), name: None, language: None, tags: vec![] },
        message: None,
        team,
        agent: None,
        wait_for_agent: false,
        priority: Priority::Normal,
        strategy: None,
        skills: vec![],
        match_language: false,
        prefer_previous_agent: false,
        rules: Rules::default(),
        when_nobody: None,
    }
}

async fn workspace(s: &Store, name: &str) -> i64 {
    s.create_workspace(name, "UTC", T0).await.expect("create workspace").id
}

async fn team(s: &Store, ws: i64, t: &NewTeam) -> i64 {
    s.create_team(ws, t, T0).await.expect("create team").id
}

async fn agent(s: &Store, ws: i64, a: &NewAgent) -> i64 {
    s.create_agent(ws, a, T0).await.expect("create agent").id
}

async fn open(s: &Store, ws: i64, new: &NewConversation, now: i64) -> Conversation {
    let (c, replayed) = s.open_conversation(ws, new, None, now).await.expect("open conversation");
    assert!(!replayed, "a call without an idempotency key is never a replay");
    c
}

async fn conv(s: &Store, ws: i64, id: i64, now: i64) -> Conversation {
    s.conversation(ws, id, now).await.expect("read conversation")
}

async fn open_count(s: &Store, ws: i64, id: i64) -> u32 {
    s.agent(ws, id, T0).await.expect("read agent").open
}

fn place(c: &Conversation) -> Option<(u32, Option<u64>)> {
    c.queue.map(|q| (q.position, q.estimated_wait_seconds))
}

async fn audit_clean(s: &Store, ws: i64) {
    assert_eq!(
        s.audit_counters(ws).await.expect("audit"),
        vec![],
        "counters disagree with the conversations"
    );
}

/// Every conversation of the workspace (optionally of one status), in id order.
async fn list(s: &Store, ws: i64, status: Option<Status>, now: i64) -> Vec<Conversation> {
    let mut out: Vec<Conversation> = Vec::new();
    loop {
        let filter = ConversationFilter {
            status,
            after: out.last().map(|c| c.id),
            limit: Some(500),
            ..ConversationFilter::default()
        };
        let page = s.conversations(ws, &filter, now).await.expect("list conversations");
        let done = page.len() < 500;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// The whole event log of a workspace.
async fn all_events(s: &Store, ws: i64) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    loop {
        let page = s.events(ws, out.last().map_or(0, |e| e.seq), 1000).await.expect("read events");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Sequence numbers 1, 2, …, n with nothing missing or repeated.
fn assert_gap_free(events: &[Event]) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "event sequence numbers must be 1..=n without gaps");
}

#[track_caller]
fn expect_conflict<T: Debug>(r: Result<T, StoreError>, code: &str) {
    match r {
        Err(StoreError::Conflict { code: c, .. }) if c == code => {}
        other => panic!("expected Conflict {code:?}, got {other:?}"),
    }
}

#[track_caller]
fn expect_invalid<T: Debug>(r: Result<T, StoreError>, code: &str) {
    match r {
        Err(StoreError::Invalid { code: c, .. }) if c == code => {}
        other => panic!("expected Invalid {code:?}, got {other:?}"),
    }
}

#[track_caller]
fn expect_not_found<T: Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serialize")
}

// ---------------------------------------------------------------------------------------
// 1. Workspaces, teams, agents, tokens
// ---------------------------------------------------------------------------------------

async fn tokens_and_authentication(db: Db) {
    let s = &db.store;
    let w = s.create_workspace("Acme", "Europe/Paris", T0).await.expect("workspace");
    assert_eq!((w.name.as_str(), w.time_zone.as_str()), ("Acme", "Europe/Paris"));
    let read = s.workspace(w.id).await.expect("read workspace");
    assert_eq!((read.id, read.name.as_str(), read.time_zone.as_str()), (w.id, "Acme", "Europe/Paris"));
    let ws = w.id;

    let mut nt = new_team("Support", Strategy::Weighted, WhenNobody::Queue);
    nt.only_online = false;
    nt.time_zone = "America/Sao_Paulo".into();
    nt.default_handle_seconds = 240;
    let t = s.create_team(ws, &nt, T0).await.expect("team");
    assert_eq!(t.name, "Support");
    assert_eq!(t.strategy, Strategy::Weighted);
    assert!(!t.only_online);
    assert_eq!(t.time_zone, "America/Sao_Paulo");
    assert_eq!(t.when_nobody, WhenNobody::Queue);
    assert_eq!(t.default_handle_seconds, 240);
    assert!(t.members.is_empty());

    let mut na = new_agent("Ana", &[t.id], 3, Presence::Away);
    na.skills.insert("billing".into(), 4);
    na.languages = vec!["en".into(), "pt-BR".into()];
    na.daily_limit = Some(50);
    na.weight = 2;
    na.channel_caps.insert(Channel::Email, 1);
    let a = s.create_agent(ws, &na, T0).await.expect("agent");
    assert_eq!(a.name, "Ana");
    assert_eq!(a.email, "ana@example.test");
    assert_eq!(a.status, Presence::Away);
    assert_eq!(a.max_open, 3);
    assert_eq!(a.daily_limit, Some(50));
    assert_eq!(a.weight, 2);
    assert_eq!(a.skills, na.skills);
    assert_eq!(a.languages, na.languages);
    assert_eq!(a.channel_caps, na.channel_caps);
    assert_eq!(a.teams, vec![t.id]);
    assert_eq!((a.open, a.received_today, a.last_assigned_at.as_deref()), (0, 0, None));
    assert_eq!(json(&s.agent(ws, a.id, T0).await.expect("read agent")), json(&a));
    assert_eq!(s.team(ws, t.id).await.expect("read team").members, vec![a.id]);
    assert_eq!(s.teams(ws).await.expect("teams").len(), 1);
    assert_eq!(s.agents(ws, T0).await.expect("agents").len(), 1);

    // Tokens: a random secret, shown once.
    let admin = s.create_token(ws, Role::Admin, None, None, T0).await.expect("admin token");
    assert_eq!((admin.role, admin.agent, admin.workspace), (Role::Admin, None, ws));
    assert!(admin.token.len() >= 32, "a secret long enough not to be guessed: {}", admin.token);
    let agent_token = s.create_token(ws, Role::Agent, Some(a.id), None, T0).await.expect("agent token");
    assert_ne!(admin.token, agent_token.token);
    let fixed = "integration-secret-0123456789";
    let integration =
        s.create_token(ws, Role::Integration, None, Some(fixed), T0).await.expect("integration token");
    assert_eq!(integration.token, fixed);

    assert_eq!(
        s.authenticate(&admin.token).await.expect("auth"),
        Some(Principal { workspace: ws, role: Role::Admin, agent: None, token_id: admin.id })
    );
    assert_eq!(
        s.authenticate(&agent_token.token).await.expect("auth"),
        Some(Principal { workspace: ws, role: Role::Agent, agent: Some(a.id), token_id: agent_token.id })
    );
    assert_eq!(
        s.authenticate(fixed).await.expect("auth"),
        Some(Principal { workspace: ws, role: Role::Integration, agent: None, token_id: integration.id })
    );

    // Unknown tokens: none.
    let mut altered = admin.token.clone();
    let last = altered.pop().expect("non-empty");
    altered.push(if last == '0' { '1' } else { '0' });
    for unknown in ["", "usher_0000000000000000000000000000000000000000000000000000000000000000", &altered] {
        assert_eq!(s.authenticate(unknown).await.expect("auth"), None, "{unknown:?} is no token");
    }
    assert_eq!(s.authenticate(&admin.token.to_uppercase()).await.expect("auth"), None);

    // Only hashes are stored: no secret appears in the tokens table, and a stored value is
    // not itself a token.
    let rows = sqlx::query("SELECT hash, role FROM tokens WHERE workspace_id = $1 ORDER BY id")
        .bind(ws)
        .fetch_all(&db.raw)
        .await
        .expect("read tokens");
    assert_eq!(rows.len(), 3);
    let secrets = [admin.token.as_str(), agent_token.token.as_str(), fixed];
    for r in &rows {
        let hash: String = r.try_get("hash").expect("hash");
        let role: String = r.try_get("role").expect("role");
        for secret in secrets {
            assert!(!hash.contains(secret) && !secret.contains(&hash), "the secret is stored in clear");
        }
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "a SHA-256 in hex, got {hash:?}"
        );
        assert!(Role::parse(&role).is_some());
        assert_eq!(s.authenticate(&hash).await.expect("auth"), None, "a stored hash is not a token");
    }
    for secret in secrets {
        let n = sqlx::query("SELECT COUNT(*) FROM tokens WHERE hash = $1")
            .bind(secret)
            .fetch_one(&db.raw)
            .await
            .expect("count")
            .try_get::<i64, _>(0)
            .expect("count");
        assert_eq!(n, 0);
    }

    // Refused tokens change nothing.
    let before = db.table_counts().await;
    expect_invalid(s.create_token(ws, Role::Agent, None, None, T0).await, "agent_required");
    expect_invalid(s.create_token(ws, Role::Admin, Some(a.id), None, T0).await, "agent_not_allowed");
    expect_invalid(s.create_token(ws, Role::Manager, None, Some("short"), T0).await, "token_too_short");
    expect_conflict(s.create_token(ws, Role::Manager, None, Some(fixed), T0).await, "token_exists");
    expect_not_found(s.create_token(ws, Role::Agent, Some(a.id + 1_000_000), None, T0).await);
    assert_eq!(db.table_counts().await, before);

    // Another workspace's token speaks for that workspace.
    let other = workspace(s, "Other").await;
    let tok = s.create_token(other, Role::Manager, None, None, T0).await.expect("token");
    let p = s.authenticate(&tok.token).await.expect("auth").expect("known token");
    assert_eq!((p.workspace, p.role, p.token_id), (other, Role::Manager, tok.id));
}

// ---------------------------------------------------------------------------------------
// 2. Opening routes by the team's strategy
// ---------------------------------------------------------------------------------------

async fn open_routes_by_strategy(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let rr = team(s, ws, &new_team("RR", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let lo = team(s, ws, &new_team("LO", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let mut r = Vec::new();
    for name in ["R1", "R2", "R3"] {
        r.push(agent(s, ws, &new_agent(name, &[rr], 10, Presence::Online)).await);
    }
    let mut l = Vec::new();
    for name in ["L1", "L2", "L3"] {
        l.push(agent(s, ws, &new_agent(name, &[lo], 10, Presence::Online)).await);
    }
    let mut now = T0;

    // The response of an open, field by field.
    now += 1_000;
    let mut first = new_conv(Some(rr), "rr0");
    first.channel = Channel::Whatsapp;
    first.priority = Priority::High;
    first.message = Some("hello".into());
    first.contact.name = Some("Zoe".into());
    first.contact.language = Some("fr".into());
    first.contact.tags = vec!["vip".into()];
    let c = open(s, ws, &first, now).await;
    assert_eq!(c.status, Status::Assigned);
    assert_eq!(c.assignee, Some(r[0]));
    assert_eq!(c.team, Some(rr));
    assert_eq!(c.reserved_for, None);
    assert_eq!(c.channel, Channel::Whatsapp);
    assert_eq!(c.priority, Priority::High);
    assert_eq!(c.message.as_deref(), Some("hello"));
    assert_eq!(c.contact.channel, Channel::Whatsapp);
    assert_eq!(c.contact.external_id, "rr0");
    assert_eq!(c.contact.name.as_deref(), Some("Zoe"));
    assert_eq!(c.contact.language.as_deref(), Some("fr"));
    assert_eq!(c.contact.tags, vec!["vip".to_string()]);
    assert!(c.queue.is_none());
    assert_eq!(c.opened_at, rfc3339(now));
    assert_eq!(c.assigned_at, Some(rfc3339(now)));
    assert_eq!(c.closed_at, None);
    assert_eq!(json(&conv(s, ws, c.id, now).await), json(&c), "reading it back shows the same");
    assert_eq!(json(&s.contact(ws, c.contact.id).await.expect("contact")), json(&c.contact));

    // Its decision, with the trace.
    let trace = s.trace(ws, c.id).await.expect("trace");
    assert_eq!(trace.len(), 1);
    let d = &trace[0];
    assert_eq!((d.outcome.as_str(), d.agent, d.at.as_str()), ("assigned", Some(r[0]), rfc3339(now).as_str()));
    assert!(d.explanation.contains("R1") && d.explanation.contains("round robin"), "{}", d.explanation);
    assert_eq!(d.trace.result, TraceResult::Assigned { agent: AgentId(r[0]) });
    assert_eq!(d.trace.attempts.len(), 1);
    let attempt = &d.trace.attempts[0];
    assert_eq!(attempt.kind, AttemptKind::Team { team: TeamId(rr), strategy: Strategy::RoundRobin });
    assert_eq!(attempt.chosen, Some(AgentId(r[0])));
    let verdicts: Vec<(i64, Verdict)> =
        attempt.candidates.iter().map(|c| (c.agent.0, c.verdict.clone())).collect();
    assert_eq!(
        verdicts,
        vec![
            (r[0], Verdict::Chosen { why: Why::RoundRobin { after: None } }),
            (r[1], Verdict::Passed { why: WhyNot::NotNext }),
            (r[2], Verdict::Passed { why: WhyNot::NotNext }),
        ]
    );

    // Round robin continues across calls...
    let mut got = Vec::new();
    for i in 1..=5 {
        now += 1_000;
        got.push(open(s, ws, &new_conv(Some(rr), &format!("rr{i}")), now).await.assignee);
    }
    assert_eq!(got, vec![Some(r[1]), Some(r[2]), Some(r[0]), Some(r[1]), Some(r[2])]);
    // ...and is stored, not remembered: a second store (a restart, another node) goes on.
    let other_node = db.reconnect().await;
    now += 1_000;
    let c = open(&other_node, ws, &new_conv(Some(rr), "rr6"), now).await;
    assert_eq!(c.assignee, Some(r[0]));
    let d = other_node.trace(ws, c.id).await.expect("trace");
    assert_eq!(
        d[0].trace.attempts[0].candidates[0].verdict,
        Verdict::Chosen { why: Why::RoundRobin { after: Some(AgentId(r[2])) } }
    );
    now += 1_000;
    assert_eq!(open(s, ws, &new_conv(Some(rr), "rr7"), now).await.assignee, Some(r[1]));
    other_node.shutdown().await;
    // An ineligible agent is skipped, and the rotation goes on after it.
    s.set_status(ws, r[2], Presence::Offline, now).await.expect("status");
    now += 1_000;
    let c = open(s, ws, &new_conv(Some(rr), "rr8"), now).await;
    assert_eq!(c.assignee, Some(r[0]));
    let d = s.trace(ws, c.id).await.expect("trace");
    assert_eq!(
        d[0].trace.attempts[0].candidates[2].verdict,
        Verdict::Skipped { reason: Skip::Presence { presence: Presence::Offline } }
    );
    let agents = s.agents(ws, now).await.expect("agents");
    let opens: Vec<u32> = r.iter().map(|id| agents.iter().find(|a| a.id == *id).unwrap().open).collect();
    assert_eq!(opens, vec![4, 3, 2]);
    let r1 = agents.iter().find(|a| a.id == r[0]).unwrap();
    assert_eq!(r1.received_today, 4);
    assert_eq!(r1.last_assigned_at, Some(rfc3339(now)));

    // Least open: fewest open first, then the longest since an assignment, then the lowest id.
    let mut lo_convs = Vec::new();
    let mut got = Vec::new();
    for i in 0..3 {
        now += 1_000;
        let c = open(s, ws, &new_conv(Some(lo), &format!("lo{i}")), now).await;
        got.push(c.assignee);
        lo_convs.push(c.id);
    }
    assert_eq!(got, vec![Some(l[0]), Some(l[1]), Some(l[2])]);
    let l2_assigned_at = now - 1_000;
    now += 1_000;
    s.close(ws, lo_convs[1], now).await.expect("close");
    now += 1_000;
    let c = open(s, ws, &new_conv(Some(lo), "lo3"), now).await;
    assert_eq!(c.assignee, Some(l[1]), "L2 has the fewest open");
    let d = s.trace(ws, c.id).await.expect("trace");
    let candidates = &d[0].trace.attempts[0].candidates;
    assert_eq!(
        candidates[1].verdict,
        Verdict::Chosen {
            why: Why::LeastOpen { open: 0, last_assigned_at: Some(Timestamp(l2_assigned_at)) }
        }
    );
    assert_eq!(candidates[0].verdict, Verdict::Passed { why: WhyNot::MoreOpen { open: 1, winner_open: 0 } });
    assert!(
        d[0].explanation.contains("L2") && d[0].explanation.contains("least open"),
        "{}",
        d[0].explanation
    );
    now += 1_000;
    assert_eq!(
        open(s, ws, &new_conv(Some(lo), "lo4"), now).await.assignee,
        Some(l[0]),
        "all at 1: L1 waited longest"
    );
    now += 1_000;
    assert_eq!(
        open(s, ws, &new_conv(Some(lo), "lo5"), now).await.assignee,
        Some(l[2]),
        "L3 before L2 (more recent)"
    );
    now += 1_000;
    assert_eq!(open(s, ws, &new_conv(Some(lo), "lo6"), now).await.assignee, Some(l[1]));
    // A strategy in the request overrides the team's.
    now += 1_000;
    let mut rr_here = new_conv(Some(lo), "lo7");
    rr_here.strategy = Some(Strategy::RoundRobin);
    let c = open(s, ws, &rr_here, now).await;
    assert_eq!(c.assignee, Some(l[0]), "round robin from the start of the rotation");
    let d = s.trace(ws, c.id).await.expect("trace");
    assert_eq!(
        d[0].trace.attempts[0].kind,
        AttemptKind::Team { team: TeamId(lo), strategy: Strategy::RoundRobin }
    );
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 3. The queue: positions, estimates, drains
// ---------------------------------------------------------------------------------------

async fn queue_positions_estimates_and_drains(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let mut nt = new_team("Q", Strategy::LeastOpen, WhenNobody::Queue);
    nt.default_handle_seconds = 100;
    let q = team(s, ws, &nt).await;
    let a1 = agent(s, ws, &new_agent("A1", &[q], 1, Presence::Online)).await;
    let a2 = agent(s, ws, &new_agent("A2", &[q], 2, Presence::Online)).await;
    let a3 = agent(s, ws, &new_agent("A3", &[q], 1, Presence::Offline)).await;
    let mut now = T0;
    let mut held = Vec::new();
    for i in 0..3 {
        now += 1_000;
        let c = open(s, ws, &new_conv(Some(q), &format!("h{i}")), now).await;
        assert_eq!(c.status, Status::Assigned);
        held.push(c);
    }
    assert_eq!(held.iter().map(|c| c.assignee).collect::<Vec<_>>(), vec![Some(a1), Some(a2), Some(a2)]);

    // Full: the next ones wait, each told its place. Serving slots = 1 + 2 (A3 is offline):
    // ceil(p × 100 / 3).
    let mut waiting = Vec::new();
    for (i, expected) in [(1, 34), (2, 67), (3, 100)] {
        now += 1_000;
        let c = open(s, ws, &new_conv(Some(q), &format!("w{i}")), now).await;
        assert_eq!((c.status, c.assignee, c.team), (Status::Queued, None, Some(q)));
        assert_eq!(place(&c), Some((i, Some(expected))), "w{i}");
        assert_eq!(c.assigned_at, None);
        waiting.push(c.id);
    }
    let d = s.trace(ws, waiting[0]).await.expect("trace");
    assert_eq!((d.len(), d[0].outcome.as_str(), d[0].agent), (1, "queued", None));
    assert_eq!(d[0].trace.result, TraceResult::Queued { team: Some(TeamId(q)), reserved_for: None });
    let reasons: Vec<Verdict> = d[0].trace.attempts[0].candidates.iter().map(|c| c.verdict.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            Verdict::Skipped { reason: Skip::AtCap { open: 1, cap: 1 } },
            Verdict::Skipped { reason: Skip::AtCap { open: 2, cap: 2 } },
            Verdict::Skipped { reason: Skip::Presence { presence: Presence::Offline } },
        ]
    );
    assert!(d[0].explanation.contains("queued"), "{}", d[0].explanation);

    // An urgent conversation goes to the head; the others move down one place.
    now += 1_000;
    let mut urgent = new_conv(Some(q), "u");
    urgent.priority = Priority::Urgent;
    let u = open(s, ws, &urgent, now).await;
    assert_eq!(place(&u), Some((1, Some(34))));
    assert_eq!(place(&conv(s, ws, waiting[0], now).await), Some((2, Some(67))));
    assert_eq!(place(&conv(s, ws, waiting[2], now).await), Some((4, Some(134))));
    let tq = s.team_queue(ws, q, now).await.expect("team queue");
    assert_eq!(tq.team, q);
    assert_eq!(
        tq.waiting.iter().map(|w| (w.conversation, w.position, w.estimated_wait_seconds)).collect::<Vec<_>>(),
        vec![
            (u.id, 1, Some(34)),
            (waiting[0], 2, Some(67)),
            (waiting[1], 3, Some(100)),
            (waiting[2], 4, Some(134))
        ]
    );
    assert_eq!(tq.waiting[0].priority, Priority::Urgent);
    assert_eq!(tq.waiting[1].waited_seconds, 3, "w1 was opened three seconds ago");
    assert_eq!((tq.recent_releases, tq.window_seconds), (0, 900));
    let listed = list(s, ws, Some(Status::Queued), now).await;
    assert_eq!(listed.len(), 4);
    for c in &listed {
        let entry = tq.waiting.iter().find(|w| w.conversation == c.id).expect("listed in the queue");
        assert_eq!(place(c), Some((entry.position, entry.estimated_wait_seconds)));
    }

    // Nobody online (an offline member, or no members): no estimate.
    let night = team(s, ws, &new_team("Night", Strategy::RoundRobin, WhenNobody::Queue)).await;
    agent(s, ws, &new_agent("Owl", &[night], 4, Presence::Offline)).await;
    let empty = team(s, ws, &new_team("Empty", Strategy::RoundRobin, WhenNobody::Queue)).await;
    for t in [night, empty] {
        now += 1_000;
        let c = open(s, ws, &new_conv(Some(t), &format!("n{t}")), now).await;
        assert_eq!((c.status, place(&c)), (Status::Queued, Some((1, None))));
    }

    // Closing frees A1: the head (the urgent one) goes to it in the same transaction.
    now += 1_000;
    let closed = s.close(ws, held[0].id, now).await.expect("close");
    assert_eq!((closed.status, closed.assignee), (Status::Closed, None));
    assert_eq!(closed.closed_at, Some(rfc3339(now)));
    let u_now = conv(s, ws, u.id, now).await;
    assert_eq!(
        (u_now.status, u_now.assignee, u_now.assigned_at.clone()),
        (Status::Assigned, Some(a1), Some(rfc3339(now)))
    );
    assert!(u_now.queue.is_none());
    let d = s.trace(ws, u.id).await.expect("trace");
    assert_eq!(
        d.iter().map(|d| (d.outcome.as_str(), d.agent)).collect::<Vec<_>>(),
        vec![("queued", None), ("assigned", Some(a1))]
    );
    assert_eq!(place(&conv(s, ws, waiting[0], now).await), Some((1, Some(34))));
    assert_eq!(s.team_queue(ws, q, now).await.expect("queue").recent_releases, 1);

    // A3 comes online: it takes the head, and the serving slots become 4.
    now += 1_000;
    let a3_view = s.set_status(ws, a3, Presence::Online, now).await.expect("online");
    assert_eq!((a3_view.status, a3_view.open), (Presence::Online, 1));
    assert_eq!(conv(s, ws, waiting[0], now).await.assignee, Some(a3));
    assert_eq!(place(&conv(s, ws, waiting[1], now).await), Some((1, Some(25))));
    assert_eq!(place(&conv(s, ws, waiting[2], now).await), Some((2, Some(50))));

    // A2's cap rises: it takes the head.
    now += 1_000;
    let a2_view = s
        .update_agent(ws, a2, &AgentPatch { max_open: Some(3), ..AgentPatch::default() }, now)
        .await
        .expect("raise cap");
    assert_eq!((a2_view.max_open, a2_view.open), (3, 3));
    assert_eq!(conv(s, ws, waiting[1], now).await.assignee, Some(a2));
    assert_eq!(place(&conv(s, ws, waiting[2], now).await), Some((1, Some(20))), "ceil(100 / 5)");
    // A change that frees nothing assigns nothing.
    now += 1_000;
    s.update_agent(ws, a1, &AgentPatch { weight: Some(3), ..AgentPatch::default() }, now)
        .await
        .expect("patch");
    assert_eq!(conv(s, ws, waiting[2], now).await.status, Status::Queued);

    // Three releases in the window: the estimate follows the release rate, ceil(p × 900 / 3).
    let mut more = Vec::new();
    for i in 4..=5 {
        now += 1_000;
        more.push(open(s, ws, &new_conv(Some(q), &format!("w{i}")), now).await.id);
    }
    now += 1_000;
    s.close(ws, held[1].id, now).await.expect("close");
    assert_eq!(conv(s, ws, waiting[2], now).await.assignee, Some(a2));
    now += 1_000;
    s.close(ws, waiting[0], now).await.expect("close");
    assert_eq!(conv(s, ws, more[0], now).await.assignee, Some(a3));
    let last = conv(s, ws, more[1], now).await;
    assert_eq!(place(&last), Some((1, Some(300))));
    assert_eq!(s.team_queue(ws, q, now).await.expect("queue").recent_releases, 3);
    // Once those releases leave the window, the cold start again: ceil(100 / 5).
    let later = now + 901_000;
    assert_eq!(place(&conv(s, ws, more[1], later).await), Some((1, Some(20))));
    assert_eq!(s.team_queue(ws, q, later).await.expect("queue").recent_releases, 0);
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 4. Manual operations
// ---------------------------------------------------------------------------------------

async fn manual_claim_assign_unassign_close(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::LeaveUnassigned)).await;
    let a1 = agent(s, ws, &new_agent("A1", &[t], 1, Presence::Online)).await;
    let a2 = agent(s, ws, &new_agent("A2", &[t], 2, Presence::Online)).await;
    let mut now = T0;

    // Opened without a team: nobody decides, it waits to be picked.
    now += 1_000;
    let c1 = open(s, ws, &new_conv(None, "k1"), now).await;
    assert_eq!((c1.status, c1.assignee, c1.team), (Status::Unassigned, None, None));
    assert!(s.trace(ws, c1.id).await.expect("trace").is_empty());

    // Claim; a second claim by someone else fails; one's own again is a no-op.
    now += 1_000;
    let claimed = s.claim(ws, c1.id, a1, now).await.expect("claim");
    assert_eq!((claimed.status, claimed.assignee), (Status::Assigned, Some(a1)));
    assert_eq!(claimed.assigned_at, Some(rfc3339(now)));
    assert_eq!(open_count(s, ws, a1).await, 1);
    let before = db.table_counts().await;
    expect_conflict(s.claim(ws, c1.id, a2, now).await, "already_assigned");
    assert_eq!(db.table_counts().await, before, "a refused claim changes nothing");
    assert_eq!(conv(s, ws, c1.id, now).await.assignee, Some(a1));
    let again = s.claim(ws, c1.id, a1, now + 1).await.expect("claim own");
    assert_eq!(again.assignee, Some(a1));
    assert_eq!(open_count(s, ws, a1).await, 1, "claiming one's own counts once");

    // A1 is at its cap: a claim or a plain assignment is refused, a forced one is not.
    now += 1_000;
    let c2 = open(s, ws, &new_conv(None, "k2"), now).await;
    expect_conflict(s.claim(ws, c2.id, a1, now).await, "agent_unavailable");
    expect_conflict(s.assign(ws, c2.id, a1, false, now).await, "agent_unavailable");
    assert_eq!(conv(s, ws, c2.id, now).await.status, Status::Unassigned);
    now += 1_000;
    let forced = s.assign(ws, c2.id, a1, true, now).await.expect("forced assign");
    assert_eq!((forced.status, forced.assignee), (Status::Assigned, Some(a1)));
    assert_eq!(open_count(s, ws, a1).await, 2, "force exceeds the cap");
    audit_clean(s, ws).await;

    // A manager moves it to A2: A1 lets go.
    now += 1_000;
    let moved = s.assign(ws, c2.id, a2, false, now).await.expect("assign to A2");
    assert_eq!(moved.assignee, Some(a2));
    assert_eq!((open_count(s, ws, a1).await, open_count(s, ws, a2).await), (1, 1));

    // Unassign: nobody holds it; twice is refused.
    now += 1_000;
    let un = s.unassign(ws, c2.id, now).await.expect("unassign");
    assert_eq!((un.status, un.assignee), (Status::Unassigned, None));
    assert_eq!(open_count(s, ws, a2).await, 0);
    expect_conflict(s.unassign(ws, c2.id, now).await, "not_assigned");

    // Close; everything but reopening is refused afterwards.
    now += 1_000;
    let closed = s.close(ws, c1.id, now).await.expect("close");
    assert_eq!((closed.status, closed.assignee), (Status::Closed, None));
    assert_eq!(closed.closed_at, Some(rfc3339(now)));
    assert_eq!(open_count(s, ws, a1).await, 0);
    let before = db.table_counts().await;
    expect_conflict(s.claim(ws, c1.id, a2, now).await, "conversation_closed");
    expect_conflict(s.assign(ws, c1.id, a2, false, now).await, "conversation_closed");
    expect_conflict(s.assign(ws, c1.id, a2, true, now).await, "conversation_closed");
    expect_conflict(s.unassign(ws, c1.id, now).await, "conversation_closed");
    expect_conflict(s.close(ws, c1.id, now).await, "conversation_closed");
    expect_conflict(s.reroute(ws, c1.id, Some(t), now).await, "conversation_closed");
    assert_eq!(db.table_counts().await, before);

    // A claim respects team membership: an agent outside the conversation's team is refused.
    let other = team(s, ws, &new_team("Other", Strategy::RoundRobin, WhenNobody::LeaveUnassigned)).await;
    let outsider = agent(s, ws, &new_agent("Out", &[other], 5, Presence::Online)).await;
    s.set_status(ws, a1, Presence::Offline, now).await.expect("offline");
    s.set_status(ws, a2, Presence::Offline, now).await.expect("offline");
    now += 1_000;
    let c3 = open(s, ws, &new_conv(Some(t), "k3"), now).await;
    assert_eq!(c3.status, Status::Unassigned, "nobody online and the team leaves it unassigned");
    expect_conflict(s.claim(ws, c3.id, outsider, now).await, "agent_unavailable");
    // A manager may assign anyone with room, whatever the presence.
    let by_manager = s.assign(ws, c3.id, a1, false, now).await.expect("assign offline agent");
    assert_eq!(by_manager.assignee, Some(a1));
    audit_clean(s, ws).await;
}

async fn reopen_and_transfer(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let t2 = team(s, ws, &new_team("T2", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let t3 = team(s, ws, &new_team("T3", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let a1 = agent(s, ws, &new_agent("A1", &[t], 5, Presence::Online)).await;
    let a2 = agent(s, ws, &new_agent("A2", &[t], 5, Presence::Online)).await;
    let b1 = agent(s, ws, &new_agent("B1", &[t2], 5, Presence::Online)).await;
    agent(s, ws, &new_agent("C1", &[t3], 5, Presence::Offline)).await;
    let mut now = T0;

    // Reopened, it goes back to its last agent.
    now += 1_000;
    let c = open(s, ws, &new_conv(Some(t), "k1"), now).await;
    assert_eq!(c.assignee, Some(a1));
    now += 1_000;
    s.close(ws, c.id, now).await.expect("close");
    expect_not_found(s.reroute(ws, c.id + 1_000_000, None, now).await);
    now += 1_000;
    let re = s.reroute(ws, c.id, None, now).await.expect("reopen");
    assert_eq!((re.status, re.assignee, re.closed_at.clone()), (Status::Assigned, Some(a1), None));
    let d = s.trace(ws, c.id).await.expect("trace");
    assert_eq!(d.len(), 2);
    assert_eq!(d[1].trace.attempts[0].kind, AttemptKind::PreviousAgent { agent: AgentId(a1) });
    assert_eq!(d[1].trace.attempts[0].chosen, Some(AgentId(a1)));
    assert!(d[1].explanation.contains("previous agent"), "{}", d[1].explanation);
    expect_conflict(s.reroute(ws, c.id, None, now).await, "conversation_open");

    // Its last agent is away: the team's strategy picks someone else.
    now += 1_000;
    let d2 = open(s, ws, &new_conv(Some(t), "k2"), now).await;
    assert_eq!(d2.assignee, Some(a2));
    now += 1_000;
    s.close(ws, d2.id, now).await.expect("close");
    s.set_status(ws, a2, Presence::Offline, now).await.expect("offline");
    now += 1_000;
    let re = s.reroute(ws, d2.id, None, now).await.expect("reopen");
    assert_eq!(re.assignee, Some(a1));
    let d = s.trace(ws, d2.id).await.expect("trace");
    let last = &d[1].trace;
    assert_eq!(last.attempts.len(), 2);
    assert_eq!(
        last.attempts[0].candidates[0].verdict,
        Verdict::Skipped { reason: Skip::Presence { presence: Presence::Offline } }
    );
    assert_eq!(last.attempts[1].kind, AttemptKind::Team { team: TeamId(t), strategy: Strategy::RoundRobin });
    assert_eq!(last.attempts[1].chosen, Some(AgentId(a1)));

    // Transfer to another team: A1 lets go, the new team's strategy decides.
    let a1_before = open_count(s, ws, a1).await;
    now += 1_000;
    let moved = s.reroute(ws, c.id, Some(t2), now).await.expect("transfer");
    assert_eq!((moved.status, moved.assignee, moved.team), (Status::Assigned, Some(b1), Some(t2)));
    assert_eq!(open_count(s, ws, a1).await, a1_before - 1);
    assert_eq!(open_count(s, ws, b1).await, 1);
    let d = s.trace(ws, c.id).await.expect("trace");
    assert_eq!(d.len(), 3);
    assert_eq!(
        d[2].trace.attempts[0].kind,
        AttemptKind::Team { team: TeamId(t2), strategy: Strategy::LeastOpen }
    );
    let events = all_events(s, ws).await;
    let transferred = events.iter().rfind(|e| e.kind == "conversation.transferred").expect("transfer event");
    assert_eq!(
        (transferred.conversation, transferred.agent, transferred.team),
        (Some(c.id), Some(a1), Some(t2))
    );
    assert_eq!(transferred.data["from_team"], serde_json::json!(t));
    assert_eq!(transferred.data["to_team"], serde_json::json!(t2));

    // To a team where nobody is online: it waits there; then back, where someone takes it.
    now += 1_000;
    let waiting = s.reroute(ws, c.id, Some(t3), now).await.expect("transfer");
    assert_eq!((waiting.status, waiting.team, place(&waiting)), (Status::Queued, Some(t3), Some((1, None))));
    assert_eq!(open_count(s, ws, b1).await, 0);
    now += 1_000;
    let back = s.reroute(ws, c.id, Some(t), now).await.expect("transfer back");
    assert_eq!((back.status, back.assignee, back.team), (Status::Assigned, Some(a1), Some(t)));
    assert_eq!(s.team_queue(ws, t3, now).await.expect("queue").waiting.len(), 0);
    // Releases counted for the team let go of: two closes and one transfer out of T.
    assert_eq!(s.team_queue(ws, t, now).await.expect("queue").recent_releases, 3);
    audit_clean(s, ws).await;
}

async fn dedicated_agent_and_reserved_queue(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let a1 = agent(s, ws, &new_agent("A1", &[t], 1, Presence::Online)).await;
    let a2 = agent(s, ws, &new_agent("A2", &[t], 5, Presence::Online)).await;
    let mut now = T0;
    let dedicated = |contact: &str, team: Option<i64>, wait: bool| {
        let mut c = new_conv(team, contact);
        c.agent = Some(a1);
        c.wait_for_agent = wait;
        c
    };
    now += 1_000;
    let first = open(s, ws, &dedicated("d1", None, true), now).await;
    assert_eq!(first.assignee, Some(a1));
    let d = s.trace(ws, first.id).await.expect("trace");
    assert_eq!(d[0].trace.attempts[0].kind, AttemptKind::Dedicated { agent: AgentId(a1) });
    assert!(d[0].explanation.contains("dedicated"), "{}", d[0].explanation);
    // A1 is full: the next two wait for A1 alone, with no estimate.
    let mut reserved = Vec::new();
    for (i, pos) in [(2, 1), (3, 2)] {
        now += 1_000;
        let c = open(s, ws, &dedicated(&format!("d{i}"), None, true), now).await;
        assert_eq!((c.status, c.reserved_for, c.team), (Status::Queued, Some(a1), None));
        assert_eq!(place(&c), Some((pos, None)));
        reserved.push(c.id);
    }
    // Not waiting: left unassigned; with a team to fall back on: the team decides.
    now += 1_000;
    let loose = open(s, ws, &dedicated("d4", None, false), now).await;
    assert_eq!((loose.status, loose.reserved_for), (Status::Unassigned, None));
    now += 1_000;
    let fallback = open(s, ws, &dedicated("d5", Some(t), false), now).await;
    assert_eq!(fallback.assignee, Some(a2));
    // A1 lets go: the head of its own queue goes to it.
    now += 1_000;
    s.close(ws, first.id, now).await.expect("close");
    let got = conv(s, ws, reserved[0], now).await;
    assert_eq!((got.status, got.assignee, got.reserved_for), (Status::Assigned, Some(a1), None));
    assert_eq!(place(&conv(s, ws, reserved[1], now).await), Some((1, None)));
    audit_clean(s, ws).await;
}

async fn channel_caps_and_daily_limits(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let mut na = new_agent("A", &[t], 5, Presence::Online);
    na.channel_caps.insert(Channel::Email, 1);
    na.daily_limit = Some(3);
    let a = agent(s, ws, &na).await;
    let mut now = T0;
    let email = |contact: &str| {
        let mut c = new_conv(Some(t), contact);
        c.channel = Channel::Email;
        c
    };
    now += 1_000;
    assert_eq!(open(s, ws, &email("e1"), now).await.assignee, Some(a));
    now += 1_000;
    let e2 = open(s, ws, &email("e2"), now).await;
    assert_eq!(e2.status, Status::Queued, "one e-mail at a time");
    let d = s.trace(ws, e2.id).await.expect("trace");
    assert_eq!(
        d[0].trace.attempts[0].candidates[0].verdict,
        Verdict::Skipped { reason: Skip::AtChannelCap { channel: Channel::Email, open: 1, cap: 1 } }
    );
    // Other channels still flow, up to the daily limit.
    for i in 0..2 {
        now += 1_000;
        assert_eq!(open(s, ws, &new_conv(Some(t), &format!("s{i}")), now).await.assignee, Some(a));
    }
    now += 1_000;
    let s3 = open(s, ws, &new_conv(Some(t), "s3"), now).await;
    assert_eq!(s3.status, Status::Queued);
    let d = s.trace(ws, s3.id).await.expect("trace");
    assert_eq!(
        d[0].trace.attempts[0].candidates[0].verdict,
        Verdict::Skipped { reason: Skip::DailyLimit { received: 3, limit: 3 } }
    );
    let view = s.agent(ws, a, now).await.expect("agent");
    assert_eq!((view.open, view.received_today), (3, 3));
    assert_eq!(s.agent(ws, a, now + 86_400_000).await.expect("agent").received_today, 0, "a new day");
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 5. Idempotency
// ---------------------------------------------------------------------------------------

async fn idempotent_open(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let a = agent(s, ws, &new_agent("A", &[t], 50, Presence::Online)).await;
    let req = new_conv(Some(t), "idem");
    let (c1, replayed) = s.open_conversation(ws, &req, Some("key-1"), T0).await.expect("open");
    assert!(!replayed);
    assert_eq!(c1.assignee, Some(a));
    let before = db.table_counts().await;
    let (c2, replayed) = s.open_conversation(ws, &req, Some("key-1"), T0 + 5_000).await.expect("retry");
    assert!(replayed, "the retry is a replay");
    assert_eq!(c2.id, c1.id);
    assert_eq!(c2.assignee, c1.assignee);
    assert_eq!(c2.opened_at, c1.opened_at);
    assert_eq!(db.table_counts().await, before, "a replay changes nothing");
    assert_eq!(list(s, ws, None, T0).await.len(), 1);
    assert_eq!(open_count(s, ws, a).await, 1);
    assert_eq!(s.trace(ws, c1.id).await.expect("trace").len(), 1);
    assert_eq!(all_events(s, ws).await.iter().filter(|e| e.kind == "conversation.opened").count(), 1);

    // The same key with another request is refused.
    let mut different = req.clone();
    different.priority = Priority::Urgent;
    expect_conflict(s.open_conversation(ws, &different, Some("key-1"), T0).await, "idempotency_key_reused");
    assert_eq!(db.table_counts().await, before);

    // Keys are per workspace; other keys and no key open new conversations.
    let other = workspace(s, "Other").await;
    let ot = team(s, other, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let (oc, replayed) =
        s.open_conversation(other, &new_conv(Some(ot), "idem"), Some("key-1"), T0).await.expect("open");
    assert!(!replayed);
    assert_ne!(oc.id, c1.id);
    let (c3, replayed) = s.open_conversation(ws, &req, Some("key-2"), T0).await.expect("open");
    assert!(!replayed);
    assert_ne!(c3.id, c1.id);
    let c4 = open(s, ws, &req, T0).await;
    let c5 = open(s, ws, &req, T0).await;
    assert_ne!(c4.id, c5.id);
    assert_eq!(list(s, ws, None, T0).await.len(), 4);
    assert_eq!(s.contacts(ws, None, 0, 100).await.expect("contacts").len(), 1, "one contact, found again");

    // Concurrent retries with one key: one conversation, one first call.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            s.open_conversation(ws, &req, Some("key-concurrent"), T0 + i).await.expect("open")
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        let (c, replayed) = task.await.expect("task");
        results.push((c.id, replayed));
    }
    let ids: BTreeSet<i64> = results.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| !r.1).count(), 1, "{results:?}");
    assert_eq!(list(s, ws, None, T0).await.len(), 5);
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 6. Workspace isolation
// ---------------------------------------------------------------------------------------

async fn workspace_isolation(db: Db) {
    let s = &db.store;
    let now = T0 + 1_000;
    let wa = workspace(s, "A").await;
    let ta = team(s, wa, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let aa = agent(s, wa, &new_agent("Ana", &[ta], 5, Presence::Online)).await;
    let ca = open(s, wa, &new_conv(Some(ta), "ca"), now).await;
    assert_eq!(ca.assignee, Some(aa));
    let wb = workspace(s, "B").await;
    let tb = team(s, wb, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let ab = agent(s, wb, &new_agent("Ana", &[tb], 5, Presence::Online)).await;
    let cb = open(s, wb, &new_conv(None, "cb"), now).await;
    let a_before = (json(&conv(s, wa, ca.id, now).await), json(&s.agents(wa, now).await.expect("agents")));
    let counts = db.table_counts().await;

    // A's conversation seen from B.
    expect_not_found(s.conversation(wb, ca.id, now).await);
    expect_not_found(s.trace(wb, ca.id).await);
    expect_not_found(s.claim(wb, ca.id, ab, now).await);
    expect_not_found(s.assign(wb, ca.id, ab, true, now).await);
    expect_not_found(s.unassign(wb, ca.id, now).await);
    expect_not_found(s.close(wb, ca.id, now).await);
    expect_not_found(s.reroute(wb, ca.id, None, now).await);
    expect_not_found(s.reroute(wb, ca.id, Some(tb), now).await);
    // A's team seen from B.
    expect_not_found(s.team(wb, ta).await);
    expect_not_found(s.team_queue(wb, ta, now).await);
    expect_not_found(
        s.update_team(wb, ta, &TeamPatch { name: Some("X".into()), ..TeamPatch::default() }, now).await,
    );
    expect_not_found(s.open_conversation(wb, &new_conv(Some(ta), "x1"), None, now).await);
    expect_not_found(s.open_conversation(wb, &new_conv(Some(ta), "x2"), Some("k"), now).await);
    expect_not_found(s.create_agent(wb, &new_agent("Bob", &[ta], 5, Presence::Online), now).await);
    expect_not_found(s.reroute(wb, cb.id, Some(ta), now).await);
    // A's agent seen from B.
    expect_not_found(s.agent(wb, aa, now).await);
    expect_not_found(s.set_status(wb, aa, Presence::Offline, now).await);
    expect_not_found(
        s.update_agent(wb, aa, &AgentPatch { max_open: Some(9), ..AgentPatch::default() }, now).await,
    );
    let mut to_a = new_conv(None, "x3");
    to_a.agent = Some(aa);
    expect_not_found(s.open_conversation(wb, &to_a, None, now).await);
    expect_not_found(s.claim(wb, cb.id, aa, now).await);
    expect_not_found(s.assign(wb, cb.id, aa, false, now).await);
    expect_not_found(s.assign(wb, cb.id, aa, true, now).await);
    expect_not_found(s.create_token(wb, Role::Agent, Some(aa), None, now).await);
    expect_not_found(s.contact(wb, ca.contact.id).await);

    // Nothing changed anywhere, and B's lists show nothing of A.
    assert_eq!(db.table_counts().await, counts, "refused cross-workspace calls change nothing");
    assert_eq!(
        (json(&conv(s, wa, ca.id, now).await), json(&s.agents(wa, now).await.expect("agents"))),
        a_before
    );
    assert_eq!(s.teams(wb).await.expect("teams").iter().map(|t| t.id).collect::<Vec<_>>(), vec![tb]);
    assert_eq!(s.agents(wb, now).await.expect("agents").iter().map(|a| a.id).collect::<Vec<_>>(), vec![ab]);
    assert_eq!(list(s, wb, None, now).await.iter().map(|c| c.id).collect::<Vec<_>>(), vec![cb.id]);
    assert!(all_events(s, wb).await.iter().all(|e| e.conversation != Some(ca.id) && e.agent != Some(aa)));
    audit_clean(s, wa).await;
    audit_clean(s, wb).await;
}

// ---------------------------------------------------------------------------------------
// 7. Invalid input
// ---------------------------------------------------------------------------------------

async fn invalid_input_changes_nothing(db: Db) {
    let s = &db.store;
    let now = T0;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("Sales", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let t2 = team(s, ws, &new_team("Support", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let a = agent(s, ws, &new_agent("Ana", &[t], 5, Presence::Online)).await;
    let state = || async {
        (
            db.table_counts().await,
            json(&s.teams(ws).await.expect("teams")),
            json(&s.agents(ws, now).await.expect("agents")),
        )
    };
    let before = state().await;

    // Workspaces.
    expect_invalid(s.create_workspace("X", "Mars/Olympus_Mons", now).await, "unknown_time_zone");
    expect_invalid(s.create_workspace("", "UTC", now).await, "invalid_field");
    expect_invalid(s.create_workspace("   ", "UTC", now).await, "invalid_field");
    expect_invalid(s.create_workspace(&"x".repeat(201), "UTC", now).await, "too_long");

    // Teams.
    let mut bad = new_team("Night", Strategy::RoundRobin, WhenNobody::Queue);
    bad.time_zone = "Europe/Atlantis".into();
    expect_invalid(s.create_team(ws, &bad, now).await, "unknown_time_zone");
    expect_invalid(
        s.create_team(ws, &new_team("", Strategy::RoundRobin, WhenNobody::Queue), now).await,
        "invalid_field",
    );
    expect_invalid(
        s.create_team(ws, &new_team("bad\0name", Strategy::RoundRobin, WhenNobody::Queue), now).await,
        "invalid_field",
    );
    expect_conflict(
        s.create_team(ws, &new_team("Sales", Strategy::LeastOpen, WhenNobody::LeaveUnassigned), now).await,
        "name_taken",
    );
    expect_conflict(
        s.update_team(ws, t2, &TeamPatch { name: Some("Sales".into()), ..TeamPatch::default() }, now).await,
        "name_taken",
    );
    expect_invalid(
        s.update_team(
            ws,
            t2,
            &TeamPatch { time_zone: Some("Nowhere/City".into()), ..TeamPatch::default() },
            now,
        )
        .await,
        "unknown_time_zone",
    );
    expect_invalid(
        s.update_team(ws, t2, &TeamPatch { name: Some(String::new()), ..TeamPatch::default() }, now).await,
        "invalid_field",
    );

    // Agents.
    for level in [0u8, 6, 255] {
        let mut na = new_agent("Bob", &[t], 5, Presence::Online);
        na.skills.insert("billing".into(), level);
        expect_invalid(s.create_agent(ws, &na, now).await, "invalid_skill_level");
        let mut skills = BTreeMap::new();
        skills.insert("billing".to_string(), level);
        expect_invalid(
            s.update_agent(ws, a, &AgentPatch { skills: Some(skills), ..AgentPatch::default() }, now).await,
            "invalid_skill_level",
        );
    }
    expect_invalid(s.create_agent(ws, &new_agent("", &[t], 5, Presence::Online), now).await, "invalid_field");
    let mut no_email = new_agent("Bob", &[t], 5, Presence::Online);
    no_email.email = String::new();
    expect_invalid(s.create_agent(ws, &no_email, now).await, "invalid_field");
    no_email.email = "bob.example.test".into();
    expect_invalid(s.create_agent(ws, &no_email, now).await, "invalid_email");
    let mut heavy = new_agent("Bob", &[t], 5, Presence::Online);
    heavy.weight = 1_000_001;
    expect_invalid(s.create_agent(ws, &heavy, now).await, "invalid_weight");
    let mut dup = new_agent("Another Ana", &[t2], 5, Presence::Online);
    dup.email = "ana@example.test".into();
    expect_conflict(s.create_agent(ws, &dup, now).await, "email_taken");
    expect_invalid(
        s.update_agent(ws, a, &AgentPatch { name: Some(" ".into()), ..AgentPatch::default() }, now).await,
        "invalid_field",
    );
    expect_not_found(
        s.create_agent(ws, &new_agent("Bob", &[t, t + 1_000_000], 5, Presence::Online), now).await,
    );

    // Conversations to nowhere.
    expect_not_found(s.open_conversation(ws, &new_conv(Some(t + 1_000_000), "c"), None, now).await);
    let mut to_nobody = new_conv(Some(t), "c");
    to_nobody.agent = Some(a + 1_000_000);
    expect_not_found(s.open_conversation(ws, &to_nobody, None, now).await);
    expect_not_found(s.claim(ws, 1_000_000, a, now).await);

    assert_eq!(state().await, before, "refused input changes nothing");

    // The boundaries themselves are accepted.
    let mut edge = new_agent("Bob", &[t], 5, Presence::Online);
    edge.skills.insert("a".into(), 1);
    edge.skills.insert("b".into(), 5);
    s.create_agent(ws, &edge, now).await.expect("levels 1 and 5 are valid");
    s.create_workspace(&"x".repeat(200), "Asia/Kolkata", now).await.expect("200 bytes is the limit");
    let mut other_ws_dup = new_agent("Ana", &[], 5, Presence::Online);
    other_ws_dup.email = "ana@example.test".into();
    let other = workspace(s, "Other").await;
    s.create_agent(other, &other_ws_dup, now).await.expect("e-mails are unique per workspace");
    s.create_team(other, &new_team("Sales", Strategy::RoundRobin, WhenNobody::Queue), now)
        .await
        .expect("team names are unique per workspace");
}

// ---------------------------------------------------------------------------------------
// 8. The event log
// ---------------------------------------------------------------------------------------

async fn event_log(db: Db) {
    let s = &db.store;
    let mut now = T0;
    let ws = workspace(s, "W").await;
    let other = workspace(s, "Other").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let ot = team(s, other, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let a = agent(s, ws, &new_agent("A", &[t], 1, Presence::Online)).await;
    let oa = agent(s, other, &new_agent("O", &[ot], 1, Presence::Online)).await;
    now += 1_000;
    let c1 = open(s, ws, &new_conv(Some(t), "e1"), now).await.id;
    let oc = open(s, other, &new_conv(Some(ot), "o1"), now).await.id;
    now += 1_000;
    let c2 = open(s, ws, &new_conv(Some(t), "e2"), now).await.id;
    // Refused or empty commands append nothing.
    let len = all_events(s, ws).await.len();
    expect_conflict(s.claim(ws, c2, a, now).await, "agent_unavailable");
    s.set_status(ws, a, Presence::Online, now).await.expect("same status");
    assert_eq!(all_events(s, ws).await.len(), len);
    now += 1_000;
    s.close(ws, c1, now).await.expect("close"); // c2 drains to A
    now += 1_000;
    s.reroute(ws, c1, None, now).await.expect("reopen"); // A is full: c1 waits
    now += 1_000;
    s.close(ws, c2, now).await.expect("close"); // c1 drains to A
    now += 1_000;
    s.set_status(ws, a, Presence::Offline, now).await.expect("offline");
    let tok = s.create_token(ws, Role::Admin, None, None, now).await.expect("token");

    let events = all_events(s, ws).await;
    assert_gap_free(&events);
    let rows: Vec<(&str, Option<i64>, Option<i64>)> =
        events.iter().map(|e| (e.kind.as_str(), e.conversation, e.agent)).collect();
    assert_eq!(
        rows,
        vec![
            ("team.created", None, None),
            ("agent.created", None, Some(a)),
            ("conversation.opened", Some(c1), None),
            ("conversation.assigned", Some(c1), Some(a)),
            ("conversation.opened", Some(c2), None),
            ("conversation.queued", Some(c2), None),
            ("conversation.closed", Some(c1), Some(a)),
            ("conversation.assigned", Some(c2), Some(a)),
            ("conversation.reopened", Some(c1), None),
            ("conversation.queued", Some(c1), None),
            ("conversation.closed", Some(c2), Some(a)),
            ("conversation.assigned", Some(c1), Some(a)),
            ("agent.status_changed", None, Some(a)),
            ("token.created", None, None),
        ]
    );
    assert_eq!(events[0].team, Some(t));
    assert_eq!(events[2].team, Some(t));
    assert_eq!(events[2].at, rfc3339(T0 + 1_000));
    assert_eq!(events[6].at, rfc3339(T0 + 3_000));
    assert!(events[3].data["explanation"].as_str().is_some_and(|e| e.contains('A')), "{}", events[3].data);
    assert!(events[3].data["trace"]["attempts"].is_array(), "{}", events[3].data);
    assert_eq!(events[6].data["status"], "closed");
    assert_eq!(events[12].data["to"], "offline");
    assert_eq!(events[13].data["token"], serde_json::json!(tok.id));

    // Paging.
    let page = |after: i64, limit: i64| async move {
        s.events(ws, after, limit).await.expect("events").iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(page(0, 5).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(page(5, 5).await, vec![6, 7, 8, 9, 10]);
    assert_eq!(page(10, 5).await, vec![11, 12, 13, 14]);
    assert_eq!(page(14, 5).await, Vec::<i64>::new());
    assert_eq!(page(100, 5).await, Vec::<i64>::new());
    assert_eq!(page(0, 0).await, vec![1], "the limit is at least 1");
    assert_eq!(page(-3, 2).await, vec![1, 2]);
    assert_eq!(page(0, 1_000_000).await.len(), 14);

    // The other workspace has its own numbering.
    let others = all_events(s, other).await;
    assert_gap_free(&others);
    assert_eq!(
        others.iter().map(|e| (e.kind.as_str(), e.conversation, e.agent)).collect::<Vec<_>>(),
        vec![
            ("team.created", None, None),
            ("agent.created", None, Some(oa)),
            ("conversation.opened", Some(oc), None),
            ("conversation.assigned", Some(oc), Some(oa)),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// 9. Counters equal the truth after random workloads
// ---------------------------------------------------------------------------------------

/// xorshift64: a tiny deterministic generator, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

async fn counters_equal_the_truth_after_random_workloads(db: Db) {
    for seed in [0x9E37_79B9_7F4A_7C15, 7, 42, 20_240_601] {
        random_workload(&db.store, seed).await;
    }
}

async fn random_workload(s: &Store, seed: u64) {
    const STEPS: usize = 150;
    let mut rng = Rng(seed);
    let mut now = T0;
    let ws = workspace(s, &format!("seed {seed}")).await;
    let teams = vec![
        team(s, ws, &new_team("RR", Strategy::RoundRobin, WhenNobody::Queue)).await,
        team(s, ws, &new_team("LO", Strategy::LeastOpen, WhenNobody::Queue)).await,
    ];
    let mut agents = Vec::new();
    for i in 0..6 {
        let member_of: Vec<i64> = match i % 3 {
            0 => vec![teams[0]],
            1 => vec![teams[1]],
            _ => teams.clone(),
        };
        let max_open = u32::try_from(1 + rng.below(3)).unwrap();
        let status = if rng.below(3) == 0 { Presence::Offline } else { Presence::Online };
        agents.push(agent(s, ws, &new_agent(&format!("A{i}"), &member_of, max_open, status)).await);
    }
    let mut convs: Vec<i64> = Vec::new();
    // Agents whose open count may legitimately exceed the cap: a forced assignment or a
    // lowered cap.
    let mut may_exceed: BTreeSet<i64> = BTreeSet::new();
    let mut opened = 0usize;
    for step in 0..STEPS {
        now += 1_000;
        let ctx = format!("seed {seed}, step {step}");
        let op = if convs.is_empty() { 0 } else { rng.below(10) };
        let result: Result<(), StoreError> = match op {
            0..=2 => {
                let mut new = new_conv(Some(rng.pick(&teams)), &format!("c{}", rng.below(25)));
                new.channel = rng.pick(&[Channel::Sms, Channel::Email, Channel::Whatsapp]);
                new.priority = rng.pick(&[Priority::Urgent, Priority::High, Priority::Normal, Priority::Low]);
                new.when_nobody =
                    rng.pick(&[None, None, Some(WhenNobody::Queue), Some(WhenNobody::LeaveUnassigned)]);
                new.prefer_previous_agent = rng.below(2) == 0;
                if rng.below(8) == 0 {
                    new.agent = Some(rng.pick(&agents));
                }
                s.open_conversation(ws, &new, None, now).await.map(|(c, replayed)| {
                    assert!(!replayed, "{ctx}");
                    assert_ne!(c.status, Status::Closed, "{ctx}");
                    if c.status == Status::Queued {
                        assert!(c.queue.is_some_and(|q| q.position >= 1), "{ctx}: {c:?}");
                    }
                    opened += 1;
                    convs.push(c.id);
                })
            }
            3 => {
                let (c, a) = (rng.pick(&convs), rng.pick(&agents));
                s.claim(ws, c, a, now).await.map(|c| {
                    assert_eq!((c.status, c.assignee), (Status::Assigned, Some(a)), "{ctx}");
                })
            }
            4 => {
                let (c, a, force) = (rng.pick(&convs), rng.pick(&agents), rng.below(3) == 0);
                s.assign(ws, c, a, force, now).await.map(|c| {
                    assert_eq!((c.status, c.assignee), (Status::Assigned, Some(a)), "{ctx}");
                    if force {
                        may_exceed.insert(a);
                    }
                })
            }
            5 => s.unassign(ws, rng.pick(&convs), now).await.map(|c| {
                assert_eq!((c.status, c.assignee), (Status::Unassigned, None), "{ctx}");
            }),
            6 => s.close(ws, rng.pick(&convs), now).await.map(|c| {
                assert_eq!((c.status, c.assignee), (Status::Closed, None), "{ctx}");
            }),
            7 => {
                let to = if rng.below(2) == 0 { None } else { Some(rng.pick(&teams)) };
                s.reroute(ws, rng.pick(&convs), to, now).await.map(|c| {
                    assert_ne!(c.status, Status::Closed, "{ctx}");
                    if let Some(t) = to {
                        assert_eq!(c.team, Some(t), "{ctx}");
                    }
                })
            }
            8 => {
                let status =
                    rng.pick(&[Presence::Online, Presence::Online, Presence::Offline, Presence::Busy]);
                s.set_status(ws, rng.pick(&agents), status, now).await.map(|a| {
                    assert_eq!(a.status, status, "{ctx}");
                })
            }
            _ => {
                let a = rng.pick(&agents);
                let max_open = u32::try_from(rng.below(4)).unwrap();
                let was = s.agent(ws, a, now).await.expect("agent");
                if max_open < was.open {
                    may_exceed.insert(a);
                }
                let patch = AgentPatch { max_open: Some(max_open), ..AgentPatch::default() };
                s.update_agent(ws, a, &patch, now).await.map(|v| {
                    assert_eq!(v.max_open, max_open, "{ctx}");
                })
            }
        };
        match result {
            Ok(()) | Err(StoreError::Conflict { .. } | StoreError::Invalid { .. }) => {}
            Err(e) => panic!("{ctx}: unexpected error {e:?}"),
        }
        assert_eq!(s.audit_counters(ws).await.expect("audit"), vec![], "{ctx}");
    }
    let ctx = format!("seed {seed}");

    // Caps hold, except where a manager forced or lowered them.
    let list_agents = s.agents(ws, now).await.expect("agents");
    for a in &list_agents {
        if !may_exceed.contains(&a.id) {
            assert!(a.open <= a.max_open, "{ctx}: {a:?} is above its cap");
        }
    }
    // Each agent's open count is the number of conversations it holds.
    let all = list(s, ws, None, now).await;
    assert_eq!(all.len(), opened, "{ctx}");
    for a in &list_agents {
        let held = all.iter().filter(|c| c.assignee == Some(a.id)).count();
        assert_eq!(usize::try_from(a.open).unwrap(), held, "{ctx}: agent {}", a.id);
    }
    for c in &all {
        assert_eq!(c.assignee.is_some(), c.status == Status::Assigned, "{ctx}: {c:?}");
        assert_eq!(c.closed_at.is_some(), c.status == Status::Closed, "{ctx}: {c:?}");
    }
    // Nobody idle while work waits: no requirements, caps or limits other than max_open are
    // used, so a conversation waiting in a team's queue means every online member is full.
    for c in all.iter().filter(|c| c.status == Status::Queued) {
        let team = c.team.expect("a queued conversation of this workload has a team");
        for a in list_agents.iter().filter(|a| a.teams.contains(&team) && a.status == Presence::Online) {
            assert!(
                a.open >= a.max_open,
                "{ctx}: conversation {} waits in team {team} while agent {} has room ({}/{})",
                c.id,
                a.id,
                a.open,
                a.max_open
            );
        }
    }
    // Queue places agree with the team queues.
    for &t in &teams {
        let tq = s.team_queue(ws, t, now).await.expect("queue");
        let positions: Vec<u32> = tq.waiting.iter().map(|w| w.position).collect();
        assert_eq!(positions, (1..=u32::try_from(tq.waiting.len()).unwrap()).collect::<Vec<_>>(), "{ctx}");
        for w in &tq.waiting {
            let c = all.iter().find(|c| c.id == w.conversation).expect("queued conversation listed");
            assert_eq!(c.status, Status::Queued, "{ctx}");
            assert_eq!(place(c), Some((w.position, w.estimated_wait_seconds)), "{ctx}");
        }
        let queued_here = all.iter().filter(|c| c.status == Status::Queued && c.team == Some(t)).count();
        assert_eq!(tq.waiting.len(), queued_here, "{ctx}");
    }
    // The log is gap-free and saw every opening.
    let events = all_events(s, ws).await;
    assert_gap_free(&events);
    assert_eq!(events.iter().filter(|e| e.kind == "conversation.opened").count(), opened, "{ctx}");
}

// ---------------------------------------------------------------------------------------
// 10. Concurrency
// ---------------------------------------------------------------------------------------

async fn concurrent_opens_fill_exactly_the_capacity(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(agent(s, ws, &new_agent(&format!("A{i}"), &[t], 10, Presence::Online)).await);
    }
    let mut tasks = Vec::new();
    for task in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let c = open(&s, ws, &new_conv(Some(t), &format!("{task}-{i}")), T0 + i).await;
                assert!(matches!(c.status, Status::Assigned | Status::Queued), "{c:?}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("opening task");
    }
    let now = T0 + 1_000;
    assert_eq!(list(s, ws, Some(Status::Assigned), now).await.len(), 30);
    assert_eq!(list(s, ws, Some(Status::Queued), now).await.len(), 170);
    audit_clean(s, ws).await;
    for a in s.agents(ws, now).await.expect("agents") {
        assert_eq!(a.open, 10, "{a:?}");
    }
    let tq = s.team_queue(ws, t, now).await.expect("queue");
    assert_eq!(tq.waiting.iter().map(|w| w.position).collect::<Vec<_>>(), (1..=170).collect::<Vec<_>>());
    let events = all_events(s, ws).await;
    assert_gap_free(&events);
    assert_eq!(events.len(), 1 + 3 + 200 + 200);
}

async fn concurrent_opens_and_closes_keep_invariants(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    for i in 0..3 {
        agent(s, ws, &new_agent(&format!("A{i}"), &[t], 3, Presence::Online)).await;
    }
    let mut tasks = Vec::new();
    for task in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                open(&s, ws, &new_conv(Some(t), &format!("{task}-{i}")), T0 + i).await;
            }
        }));
    }
    for task in 0..2usize {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut closed = 0;
            let mut tries = 0;
            while closed < 15 {
                tries += 1;
                assert!(tries < 10_000, "nothing to close for too long");
                let held = list(&s, ws, Some(Status::Assigned), T0).await;
                if held.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
                let c = held[(task + closed) % held.len()].id;
                match s.close(ws, c, T0 + 100).await {
                    Ok(c) => {
                        assert_eq!(c.status, Status::Closed);
                        closed += 1;
                    }
                    Err(StoreError::Conflict { code: "conversation_closed", .. }) => {}
                    Err(e) => panic!("close: {e:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let now = T0 + 1_000;
    audit_clean(s, ws).await;
    let agents = s.agents(ws, now).await.expect("agents");
    for a in &agents {
        assert!(a.open <= a.max_open, "{a:?}");
    }
    let all = list(s, ws, None, now).await;
    assert_eq!(all.len(), 60);
    assert_eq!(all.iter().filter(|c| c.status == Status::Closed).count(), 30);
    let queued = all.iter().filter(|c| c.status == Status::Queued).count();
    if queued > 0 {
        assert!(
            agents.iter().all(|a| a.open == a.max_open),
            "{queued} waiting while someone has room: {agents:?}"
        );
    }
    assert_gap_free(&all_events(s, ws).await);
}

async fn concurrent_claims_have_one_winner(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::LeaveUnassigned)).await;
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(agent(s, ws, &new_agent(&format!("A{i}"), &[t], 5, Presence::Offline)).await);
    }
    let mut convs = Vec::new();
    for i in 0..4 {
        let c = open(s, ws, &new_conv(if i % 2 == 0 { Some(t) } else { None }, &format!("k{i}")), T0).await;
        assert_eq!(c.status, Status::Unassigned);
        convs.push(c.id);
    }
    for &c in &convs {
        let mut tasks = Vec::new();
        for &a in &agents {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { (a, s.claim(ws, c, a, T0 + 1).await) }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("claim task") {
                (a, Ok(view)) => {
                    assert_eq!(view.assignee, Some(a));
                    winners.push(a);
                }
                (_, Err(StoreError::Conflict { code: "already_assigned", .. })) => {}
                (_, Err(e)) => panic!("claim: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
        assert_eq!(conv(s, ws, c, T0).await.assignee, Some(winners[0]));
    }
    audit_clean(s, ws).await;
    let total: u32 = s.agents(ws, T0).await.expect("agents").iter().map(|a| a.open).sum();
    assert_eq!(total, 4);
}

// ---------------------------------------------------------------------------------------
// 11. Concurrent commands on PostgreSQL: no deadlock, no stale read
// ---------------------------------------------------------------------------------------
//
// lib.rs promises that every command locks teams, then agents, then the workspace row, so
// that nodes "cannot deadlock each other" and never decide on stale state. These scenarios
// arrange, with a raw transaction that holds one agent row for a moment (a slow command
// elsewhere), an interleaving in which two commands meet, then check:
// - the first two, that PostgreSQL detected no deadlock (a deadlock is retried by the store,
//   so both calls still succeed; but each costs `deadlock_timeout` of latency, and under
//   load the five retries run out and the caller gets error 40P01);
// - the last two, that nobody is left idle while work waits (a command must read the queues
//   and memberships it acts on after locking them, not before).
// On SQLite the same calls simply run one after the other.

fn is_postgres(db: &Db) -> bool {
    db.store.backend() == Backend::Postgres
}

/// Holds an agent's row, as a slow transaction elsewhere would, until committed.
async fn hold_agent_row(db: &Db, agent: i64) -> Option<sqlx::Transaction<'static, sqlx::Any>> {
    if !is_postgres(db) {
        return None;
    }
    let mut tx = db.raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM agents WHERE id = $1 FOR UPDATE")
        .bind(agent)
        .fetch_one(&mut *tx)
        .await
        .expect("lock the agent row");
    Some(tx)
}

/// Waits until `n` connections of this test's database wait for a lock (PostgreSQL only).
async fn wait_for_lock_waiters(db: &Db, n: i64, what: &str) {
    if !is_postgres(db) {
        return;
    }
    for _ in 0..2_000 {
        let waiting = db
            .count(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
            )
            .await;
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Checks that PostgreSQL detected no deadlock in this test's database. Calls that finished
/// within `deadlock_timeout` cannot have met one; otherwise the store is shut down (so its
/// connections flush their statistics) and the server's count is read. Call it last.
async fn assert_no_deadlock(db: &Db, elapsed: std::time::Duration) {
    if !is_postgres(db) {
        return;
    }
    let timeout_ms =
        db.count("SELECT CAST(setting AS BIGINT) FROM pg_settings WHERE name = 'deadlock_timeout'").await;
    if elapsed < std::time::Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)) {
        return;
    }
    db.store.shutdown().await;
    let mut deadlocks = 0;
    for _ in 0..40 {
        deadlocks =
            db.count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").await;
        if deadlocks > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(deadlocks, 0, "PostgreSQL detected {deadlocks} deadlock(s); the calls took {elapsed:?}");
}

/// A contact writes again while its earlier conversation waits in the queue, and a close
/// drains that conversation at the same moment. The close holds the team and updates the
/// contact (its last agent); the open must not hold the contact while waiting for the team.
async fn open_and_drain_of_one_contact_do_not_deadlock(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let a = agent(s, ws, &new_agent("A", &[t], 1, Presence::Online)).await;
    let held = open(s, ws, &new_conv(Some(t), "first"), T0 + 1_000).await;
    assert_eq!(held.assignee, Some(a));
    let waiting = open(s, ws, &new_conv(Some(t), "x"), T0 + 2_000).await;
    assert_eq!(waiting.status, Status::Queued);

    let started = std::time::Instant::now();
    let blocker = hold_agent_row(&db, a).await;
    // The close locks the team, then waits for A's row.
    let close = {
        let s = s.clone();
        tokio::spawn(async move { s.close(ws, held.id, T0 + 3_000).await })
    };
    wait_for_lock_waiters(&db, 1, "the close to wait for the agent row").await;
    // Contact x writes again: the open waits for the team.
    let again = {
        let s = s.clone();
        tokio::spawn(async move { s.open_conversation(ws, &new_conv(Some(t), "x"), None, T0 + 3_000).await })
    };
    wait_for_lock_waiters(&db, 2, "the open to wait for the team row").await;
    if let Some(blocker) = blocker {
        blocker.commit().await.expect("release the agent row");
    }
    let closed = close.await.expect("close task").expect("close");
    let (again, _) = again.await.expect("open task").expect("open");
    let elapsed = started.elapsed();

    assert_eq!(closed.status, Status::Closed);
    assert_eq!(conv(s, ws, waiting.id, T0 + 3_000).await.assignee, Some(a), "the head took the freed place");
    assert_eq!(again.status, Status::Queued);
    assert_eq!(again.contact.id, waiting.contact.id);
    audit_clean(s, ws).await;
    assert_no_deadlock(&db, elapsed).await;
}

/// An agent comes online (or its cap rises) while a conversation is being routed to its
/// team. The open holds the team and locks the members in id order; the status change must
/// not hold the agent's row while waiting for the team.
async fn status_change_and_open_do_not_deadlock(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let y = agent(s, ws, &new_agent("Y", &[t], 5, Presence::Online)).await;
    let x = agent(s, ws, &new_agent("X", &[t], 5, Presence::Offline)).await;
    assert!(y < x, "Y is locked before X");
    let started = std::time::Instant::now();
    for round in 0..2 {
        let blocker = hold_agent_row(&db, y).await;
        // The open locks the team, then waits for Y's row (before X's).
        let opening = {
            let s = s.clone();
            tokio::spawn(async move {
                s.open_conversation(ws, &new_conv(Some(t), &format!("c{round}")), None, T0 + 1_000).await
            })
        };
        wait_for_lock_waiters(&db, 1, "the open to wait for Y's row").await;
        // X comes online (round 0) or its cap rises (round 1): its row first, then its teams.
        let change = {
            let s = s.clone();
            tokio::spawn(async move {
                if round == 0 {
                    s.set_status(ws, x, Presence::Online, T0 + 1_000).await
                } else {
                    s.update_agent(
                        ws,
                        x,
                        &AgentPatch { max_open: Some(6), ..AgentPatch::default() },
                        T0 + 1_000,
                    )
                    .await
                }
            })
        };
        wait_for_lock_waiters(&db, 2, "the agent change to wait for the team row").await;
        if let Some(blocker) = blocker {
            blocker.commit().await.expect("release Y's row");
        }
        let (c, _) = opening.await.expect("open task").expect("open");
        assert_eq!(c.status, Status::Assigned);
        let x_view = change.await.expect("change task").expect("agent change");
        assert_eq!(x_view.status, Presence::Online);
    }
    let elapsed = started.elapsed();
    audit_clean(s, ws).await;
    assert_no_deadlock(&db, elapsed).await;
}

/// A conversation starts waiting for a dedicated agent while that agent's conversation is
/// being closed. Whatever the order, once both are done the agent has room, so the waiting
/// conversation must be its: the close has to see the queue as it is after locking the agent.
async fn close_and_open_for_one_agent_leave_nobody_waiting(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let x = agent(s, ws, &new_agent("X", &[], 1, Presence::Online)).await;
    let mut for_x = new_conv(None, "h");
    for_x.agent = Some(x);
    for_x.wait_for_agent = true;
    let held = open(s, ws, &for_x, T0 + 1_000).await;
    assert_eq!(held.assignee, Some(x));

    let blocker = hold_agent_row(&db, x).await;
    // The open reads X's queue, then waits for X's row.
    let opening = {
        let s = s.clone();
        let mut new = for_x.clone();
        new.contact.external_id = "w".into();
        tokio::spawn(async move { s.open_conversation(ws, &new, None, T0 + 2_000).await })
    };
    wait_for_lock_waiters(&db, 1, "the open to wait for X's row").await;
    // The close reads X's queue (the open has not committed), then waits for X's row.
    let closing = {
        let s = s.clone();
        tokio::spawn(async move { s.close(ws, held.id, T0 + 2_000).await })
    };
    wait_for_lock_waiters(&db, 2, "the close to wait for X's row").await;
    if let Some(blocker) = blocker {
        blocker.commit().await.expect("release X's row");
    }
    let (w, _) = opening.await.expect("open task").expect("open");
    closing.await.expect("close task").expect("close");

    let w = conv(s, ws, w.id, T0 + 2_000).await;
    let x_view = s.agent(ws, x, T0 + 2_000).await.expect("agent");
    assert_eq!(
        (w.status, w.assignee),
        (Status::Assigned, Some(x)),
        "conversation {} waits for X while X holds {}/{}",
        w.id,
        x_view.open,
        x_view.max_open
    );
    audit_clean(s, ws).await;
}

/// An agent joins a second team (whose queue waits) while its conversation in the first
/// team is being closed. Whatever the order, once both are done the agent has room and is a
/// member of the waiting team, so the waiting conversation must be its: the close has to
/// drain the queues of the teams the agent belongs to when it locks it, not before.
async fn close_and_team_join_leave_nobody_waiting(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t1 = team(s, ws, &new_team("T1", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let t2 = team(s, ws, &new_team("T2", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let y = agent(s, ws, &new_agent("Y", &[t1], 5, Presence::Offline)).await;
    let x = agent(s, ws, &new_agent("X", &[t1], 1, Presence::Online)).await;
    let held = open(s, ws, &new_conv(Some(t1), "h"), T0 + 1_000).await;
    assert_eq!(held.assignee, Some(x));
    let q = open(s, ws, &new_conv(Some(t2), "q"), T0 + 2_000).await;
    assert_eq!(q.status, Status::Queued, "T2 has no members yet");

    let blocker = hold_agent_row(&db, y).await;
    // X joins T2: its row, then the teams, then the members in id order (Y first: waits).
    let joining = {
        let s = s.clone();
        tokio::spawn(async move {
            let patch = AgentPatch { teams: Some(vec![t1, t2]), ..AgentPatch::default() };
            s.update_agent(ws, x, &patch, T0 + 3_000).await
        })
    };
    wait_for_lock_waiters(&db, 1, "the team change to wait for Y's row").await;
    // The close reads X's teams (T1 only: the join has not committed), then waits for T1.
    let closing = {
        let s = s.clone();
        tokio::spawn(async move { s.close(ws, held.id, T0 + 3_000).await })
    };
    wait_for_lock_waiters(&db, 2, "the close to wait for T1's row").await;
    if let Some(blocker) = blocker {
        blocker.commit().await.expect("release Y's row");
    }
    let joined = joining.await.expect("join task").expect("join");
    assert_eq!(joined.teams, vec![t1, t2]);
    closing.await.expect("close task").expect("close");

    let q = conv(s, ws, q.id, T0 + 3_000).await;
    let x_view = s.agent(ws, x, T0 + 3_000).await.expect("agent");
    assert_eq!(
        (q.status, q.assignee),
        (Status::Assigned, Some(x)),
        "conversation {} waits in T2 while its member X holds {}/{}",
        q.id,
        x_view.open,
        x_view.max_open
    );
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 12. Drains reach every agent able to serve
// ---------------------------------------------------------------------------------------

/// A conversation for a dedicated agent with its team as the fallback waits in the team's
/// queue when both are full. When the dedicated agent (not a member of that team) frees a
/// place, the conversation is the agent's: nobody able to take it stays idle while it waits
/// (as usher-core's in-memory engine does, which drains every queue after every change).
async fn freed_dedicated_agent_takes_its_conversation_from_the_team_queue(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let a = agent(s, ws, &new_agent("A", &[t], 1, Presence::Online)).await;
    let x = agent(s, ws, &new_agent("X", &[], 1, Presence::Online)).await;
    let mut mine = new_conv(None, "x-held");
    mine.agent = Some(x);
    let held_x = open(s, ws, &mine, T0 + 1_000).await;
    assert_eq!(held_x.assignee, Some(x));
    assert_eq!(open(s, ws, &new_conv(Some(t), "a-held"), T0 + 1_000).await.assignee, Some(a));
    let mut for_x = new_conv(Some(t), "w");
    for_x.agent = Some(x);
    let w = open(s, ws, &for_x, T0 + 2_000).await;
    assert_eq!((w.status, w.team), (Status::Queued, Some(t)), "X and team T are both full");
    s.close(ws, held_x.id, T0 + 3_000).await.expect("close");
    let w = conv(s, ws, w.id, T0 + 3_000).await;
    assert_eq!(
        (w.status, w.assignee),
        (Status::Assigned, Some(x)),
        "conversation {} for X waits in team T while X has room",
        w.id
    );
    audit_clean(s, ws).await;
}

/// After midnight a daily limit frees capacity without any command. A reopened conversation
/// must not overtake one waiting since yesterday: like an opening (and like usher-core's
/// in-memory engine's reopen), a reopen serves the queue first.
async fn reopen_does_not_overtake_the_queue(db: Db) {
    let s = &db.store;
    let day1 = T0;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let mut ana = new_agent("Ana", &[t], 10, Presence::Online);
    ana.daily_limit = Some(1);
    let ana = agent(s, ws, &ana).await;
    let first = open(s, ws, &new_conv(Some(t), "a"), day1).await;
    assert_eq!(first.assignee, Some(ana));
    s.close(ws, first.id, day1 + 1_000).await.expect("close");
    let waiting = open(s, ws, &new_conv(Some(t), "b"), day1 + 2_000).await;
    assert_eq!(waiting.status, Status::Queued, "Ana's daily limit is reached");
    let day2 = day1 + 86_400_000;
    let reopened = s.reroute(ws, first.id, None, day2).await.expect("reopen");
    let waiting = conv(s, ws, waiting.id, day2).await;
    assert_eq!(
        (waiting.assignee, reopened.status),
        (Some(ana), Status::Queued),
        "the conversation waiting since yesterday goes first; the reopened one waits"
    );
    audit_clean(s, ws).await;
}

// ---------------------------------------------------------------------------------------
// 13. The store against usher-core's in-memory reference engine
// ---------------------------------------------------------------------------------------

/// The reference engine, fed the same commands as the store, plus what the store keeps that
/// the engine does not: each contact's last agent and each team's nobody policy.
struct Reference {
    engine: usher_core::memory::Workspace,
    contact_of: BTreeMap<i64, (Channel, String)>,
    last_agent: BTreeMap<(Channel, String), i64>,
    policy: BTreeMap<i64, WhenNobody>,
}

impl Reference {
    fn ctx(now: i64) -> usher_core::Context {
        let utc = usher_core::clock::parse_time_zone("UTC").expect("UTC");
        usher_core::Context { now: Timestamp(now), today: usher_core::clock::local_day(Timestamp(now), utc) }
    }

    fn states(&self) -> BTreeMap<i64, (Status, Option<i64>)> {
        self.engine
            .conversations()
            .map(|(id, r)| (id.0, (r.state.status, r.state.assignee.map(|a| a.0))))
            .collect()
    }

    /// Runs one engine command and records, like the store, the last agent of each contact
    /// whose conversation it assigned (the command's own assignment first for a manual
    /// command, last for a routing decision; drained conversations in serving order).
    fn run<T>(
        &mut self,
        own: Option<i64>,
        own_first: bool,
        f: impl FnOnce(&mut usher_core::memory::Workspace) -> T,
    ) -> T {
        let before = self.states();
        let decisions_before = |e: &usher_core::memory::Workspace, id: i64| {
            e.conversation(usher_core::model::ConversationId(id)).map_or(0, |r| r.decisions.len())
        };
        let own_decisions = own.map_or(0, |id| decisions_before(&self.engine, id));
        let out = f(&mut self.engine);
        let mut newly: Vec<(usher_core::queue::Waiting, i64)> = Vec::new();
        let mut own_assigned = None;
        for (id, (status, assignee)) in self.states() {
            let Some(agent) = assignee else { continue };
            // A conversation decided again counts even when it went back to the same agent
            // (a transfer to a team that agent is in), as the store records it.
            let decided_again = Some(id) == own && decisions_before(&self.engine, id) > own_decisions;
            if status != Status::Assigned
                || (before.get(&id).is_some_and(|b| b.1 == Some(agent)) && !decided_again)
            {
                continue;
            }
            if Some(id) == own {
                own_assigned = Some((id, agent));
            } else if let Some(r) = self.engine.conversation(usher_core::model::ConversationId(id)) {
                newly.push((usher_core::queue::Waiting { request: r.request.clone() }, agent));
            }
        }
        newly.sort_by(|a, b| usher_core::queue::queue_order(&a.0, &b.0));
        let mut order: Vec<(i64, i64)> = newly.iter().map(|(w, a)| (w.conversation().0, *a)).collect();
        if let Some(o) = own_assigned {
            if own_first {
                order.insert(0, o);
            } else {
                order.push(o);
            }
        }
        for (id, agent) in order {
            if let Some(contact) = self.contact_of.get(&id) {
                self.last_agent.insert(contact.clone(), agent);
            }
        }
        out
    }
}

fn manual_code(e: &usher_core::memory::MemoryError) -> &'static str {
    use usher_core::manual::ManualError;
    use usher_core::memory::MemoryError;
    match e {
        MemoryError::Manual(ManualError::AlreadyHeld { .. }) => "already_assigned",
        MemoryError::Manual(ManualError::Closed) => "conversation_closed",
        MemoryError::Manual(ManualError::NotClosed) => "conversation_open",
        MemoryError::Manual(ManualError::NotAssigned) => "not_assigned",
        MemoryError::Manual(ManualError::Ineligible { .. }) => "agent_unavailable",
        _ => "other",
    }
}

fn store_code<T>(r: &Result<T, StoreError>) -> Option<&'static str> {
    match r {
        Ok(_) => None,
        Err(StoreError::Conflict { code, .. }) => Some(code),
        Err(_) => Some("other"),
    }
}

fn engine_code<T>(r: &Result<T, usher_core::memory::MemoryError>) -> Option<&'static str> {
    r.as_ref().err().map(manual_code)
}

async fn the_store_agrees_with_the_reference_engine(db: Db) {
    for seed in [3, 1_234_567, 0xDEAD_BEEF, 77] {
        differential(&db.store, seed).await;
    }
}

async fn differential(s: &Store, seed: u64) {
    const STEPS: usize = 150;
    let mut rng = Rng(seed);
    let ws = workspace(s, &format!("differential {seed}")).await;
    let strategies = [Strategy::RoundRobin, Strategy::LeastOpen, Strategy::Weighted];
    let mut teams = Vec::new();
    let mut core_teams = Vec::new();
    let mut policy = BTreeMap::new();
    for (i, strategy) in strategies.into_iter().enumerate() {
        let when = if i == 2 { WhenNobody::LeaveUnassigned } else { WhenNobody::Queue };
        let id = team(s, ws, &new_team(&format!("T{i}"), strategy, when)).await;
        teams.push(id);
        policy.insert(id, when);
        core_teams.push(usher_core::model::Team::new(TeamId(id), strategy));
    }
    let mut agents = Vec::new();
    let mut core_agents = Vec::new();
    for i in 0..7 {
        let member_of: Vec<i64> = teams.iter().copied().filter(|_| rng.below(2) == 0).collect();
        let mut na = new_agent(
            &format!("A{i}"),
            &member_of,
            u32::try_from(rng.below(5)).unwrap() + 1,
            Presence::Online,
        );
        na.weight = u32::try_from(rng.below(3)).unwrap() + 1;
        if rng.below(4) == 0 {
            na.status = Presence::Offline;
        }
        let id = agent(s, ws, &na).await;
        agents.push(id);
        let mut a = usher_core::model::Agent::new(AgentId(id), na.max_open);
        a.presence = na.status;
        a.weight = na.weight;
        a.teams = member_of.iter().map(|t| TeamId(*t)).collect();
        core_agents.push(a);
    }
    let mut reference = Reference {
        engine: usher_core::memory::Workspace::new(
            usher_core::Snapshot::new(core_agents, core_teams).expect("snapshot"),
        ),
        contact_of: BTreeMap::new(),
        last_agent: BTreeMap::new(),
        policy,
    };
    let mut convs: Vec<i64> = Vec::new();
    let mut now = T0;
    for step in 0..STEPS {
        now += 1_000;
        let ctx = Reference::ctx(now);
        let what;
        let op = if convs.is_empty() { 0 } else { rng.below(11) };
        let (store_result, engine_result): (Option<&'static str>, Option<&'static str>) = match op {
            0..=3 => {
                let team_id = rng.pick(&teams);
                let mut new = new_conv(Some(team_id), &format!("c{}", rng.below(6)));
                new.channel = rng.pick(&[Channel::Sms, Channel::Sms, Channel::Email]);
                new.priority = rng.pick(&[Priority::Urgent, Priority::Normal, Priority::Low]);
                new.when_nobody =
                    rng.pick(&[None, None, Some(WhenNobody::Queue), Some(WhenNobody::LeaveUnassigned)]);
                new.prefer_previous_agent = rng.below(2) == 0;
                what = format!("open {new:?}");
                let contact = (new.channel, new.contact.external_id.clone());
                let previous = if new.prefer_previous_agent {
                    reference.last_agent.get(&contact).copied()
                } else {
                    None
                };
                let (c, _) = s.open_conversation(ws, &new, None, now).await.expect("open");
                convs.push(c.id);
                reference.contact_of.insert(c.id, contact);
                let request = usher_core::request::AssignRequest {
                    conversation: usher_core::model::ConversationId(c.id),
                    channel: new.channel,
                    priority: new.priority,
                    arrived_at: Timestamp(now),
                    target: usher_core::request::Target::Team { team: TeamId(team_id), strategy: None },
                    previous_agent: previous.map(AgentId),
                    requirements: usher_core::request::Requirements::default(),
                    rules: Rules::default(),
                    when_nobody: new.when_nobody.unwrap_or(reference.policy[&team_id]),
                };
                let r = reference.run(Some(c.id), false, |e| e.open(request, ctx));
                (None, engine_code(&r))
            }
            4 => {
                let (c, a) = (rng.pick(&convs), rng.pick(&agents));
                what = format!("claim {c} by {a}");
                let sr = s.claim(ws, c, a, now).await;
                let er = reference
                    .run(Some(c), true, |e| e.claim(usher_core::model::ConversationId(c), AgentId(a), ctx));
                (store_code(&sr), engine_code(&er))
            }
            5 => {
                let (c, a, force) = (rng.pick(&convs), rng.pick(&agents), rng.below(3) == 0);
                what = format!("assign {c} to {a} force {force}");
                let sr = s.assign(ws, c, a, force, now).await;
                let er = reference.run(Some(c), true, |e| {
                    e.assign(usher_core::model::ConversationId(c), AgentId(a), force, ctx)
                });
                (store_code(&sr), engine_code(&er))
            }
            6 => {
                let c = rng.pick(&convs);
                what = format!("unassign {c}");
                let sr = s.unassign(ws, c, now).await;
                let er = reference.run(None, true, |e| e.unassign(usher_core::model::ConversationId(c), ctx));
                (store_code(&sr), engine_code(&er))
            }
            7 => {
                let c = rng.pick(&convs);
                what = format!("close {c}");
                let sr = s.close(ws, c, now).await;
                let er = reference.run(None, true, |e| e.close(usher_core::model::ConversationId(c), ctx));
                (store_code(&sr), engine_code(&er))
            }
            9 => {
                let (c, t) = (rng.pick(&convs), rng.pick(&teams));
                what = format!("transfer {c} to team {t}");
                let sr = s.reroute(ws, c, Some(t), now).await;
                let when = reference.policy[&t];
                // Those waiting go first, then the transferred conversation: its own last.
                let er = reference.run(Some(c), false, |e| {
                    e.transfer_to_team_with(usher_core::model::ConversationId(c), TeamId(t), Some(when), ctx)
                });
                (store_code(&sr), engine_code(&er))
            }
            8 => {
                let c = rng.pick(&convs);
                what = format!("reopen {c}");
                let sr = s.reroute(ws, c, None, now).await;
                let er =
                    reference.run(Some(c), false, |e| e.reopen(usher_core::model::ConversationId(c), ctx));
                (store_code(&sr), engine_code(&er))
            }
            _ => {
                let a = rng.pick(&agents);
                if rng.below(2) == 0 {
                    let p = rng.pick(&[Presence::Online, Presence::Offline]);
                    what = format!("status {a} {p:?}");
                    let sr = s.set_status(ws, a, p, now).await;
                    let er = reference.run(None, true, |e| e.set_presence(AgentId(a), p, ctx));
                    (store_code(&sr), engine_code(&er))
                } else {
                    let m = u32::try_from(rng.below(4)).unwrap();
                    what = format!("max_open {a} {m}");
                    let patch = AgentPatch { max_open: Some(m), ..AgentPatch::default() };
                    let sr = s.update_agent(ws, a, &patch, now).await;
                    let er = reference.run(None, true, |e| e.set_max_open(AgentId(a), m, ctx));
                    (store_code(&sr), engine_code(&er))
                }
            }
        };
        let at = format!("seed {seed}, step {step} ({what})");
        assert_eq!(store_result, engine_result, "{at}: the outcome differs");
        let store_states: BTreeMap<i64, (Status, Option<i64>)> =
            list(s, ws, None, now).await.iter().map(|c| (c.id, (c.status, c.assignee))).collect();
        let engine_states = reference.states();
        if store_states != engine_states {
            let diff: Vec<_> = store_states
                .iter()
                .filter(|(id, st)| engine_states.get(id) != Some(st))
                .map(|(id, st)| {
                    format!("conversation {id}: store {st:?}, engine {:?}", engine_states.get(id))
                })
                .collect();
            panic!("{at}: conversations differ:\n{}", diff.join("\n"));
        }
        for &t in &teams {
            let store_queue: Vec<i64> = s
                .team_queue(ws, t, now)
                .await
                .expect("queue")
                .waiting
                .iter()
                .map(|w| w.conversation)
                .collect();
            let engine_queue: Vec<i64> = reference
                .engine
                .queue(usher_core::queue::QueueKey::Team(TeamId(t)))
                .iter()
                .map(|w| w.conversation().0)
                .collect();
            assert_eq!(store_queue, engine_queue, "{at}: team {t}'s queue differs");
        }
    }
    let store_open: Vec<(i64, u32)> =
        s.agents(ws, now).await.expect("agents").iter().map(|a| (a.id, a.open)).collect();
    let engine_open: Vec<(i64, u32)> =
        reference.engine.snapshot.agents().iter().map(|a| (a.id.0, a.open)).collect();
    assert_eq!(store_open, engine_open, "seed {seed}: open counts differ");
    audit_clean(s, ws).await;
}

/// Two stores (two nodes) open conversations at once in two teams: every command's events
/// reach the log exactly once, numbered 1..=n without gaps, each command's own events in
/// order, and each is readable as soon as its command has answered (on PostgreSQL a
/// sequencer numbers them after the commit).
async fn events_of_two_nodes_are_numbered_once(db: Db) {
    let s = &db.store;
    let other = db.reconnect().await;
    let ws = workspace(s, "W").await;
    let t1 = team(s, ws, &new_team("One", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let t2 = team(s, ws, &new_team("Two", Strategy::LeastOpen, WhenNobody::Queue)).await;
    agent(s, ws, &new_agent("A", &[t1], 3, Presence::Online)).await;
    agent(s, ws, &new_agent("B", &[t2], 3, Presence::Online)).await;
    let before = all_events(s, ws).await.len();
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let node = if i % 2 == 0 { s.clone() } else { other.clone() };
        let team = if i % 4 < 2 { t1 } else { t2 };
        tasks.push(tokio::spawn(async move {
            let c = open(&node, ws, &new_conv(Some(team), &format!("c{i}")), T0 + i).await;
            // Readable at once, from either node.
            let seen = all_events(&node, ws).await;
            assert!(
                seen.iter().any(|e| e.kind == "conversation.opened" && e.conversation == Some(c.id)),
                "conversation {} answered before its opening was in the log",
                c.id
            );
            c.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task"));
    }
    let events = all_events(&other, ws).await;
    assert_gap_free(&events);
    for id in ids {
        let mine: Vec<&str> =
            events.iter().filter(|e| e.conversation == Some(id)).map(|e| e.kind.as_str()).collect();
        assert_eq!(mine.first(), Some(&"conversation.opened"), "conversation {id}: {mine:?}");
        assert_eq!(
            mine.iter().filter(|k| **k == "conversation.opened").count(),
            1,
            "conversation {id}: {mine:?}"
        );
        assert!(
            matches!(mine.get(1), Some(&"conversation.assigned") | Some(&"conversation.queued")),
            "conversation {id}: {mine:?}"
        );
    }
    assert_eq!(events.len(), before + 80, "an opening and its decision for each of 40");
}

/// A contact whose channel gives no language gets the one its first message is in, with the
/// detection's confidence, and language routing uses it at once; a language the request or a
/// person gives wins, and a known language is never overwritten by a later detection.
async fn the_language_is_detected_when_unknown(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let mut en = new_agent("En", &[t], 5, Presence::Online);
    en.languages = vec!["en".into()];
    let en = agent(s, ws, &en).await;
    let mut fr = new_agent("Fr", &[t], 5, Presence::Online);
    fr.languages = vec!["fr".into()];
    let fr = agent(s, ws, &fr).await;

    let mut first = new_conv(Some(t), "léa");
    first.match_language = true;
    first.message =
        Some("Bonjour, je voudrais changer la date de mon vol de demain matin, s'il vous plaît.".into());
    let c = open(s, ws, &first, T0).await;
    assert_eq!(c.contact.language.as_deref(), Some("fr"));
    let confidence = c.contact.language_confidence.expect("a detected language has a confidence");
    assert!(confidence > 0.15 && confidence <= 1.0, "{confidence}");
    assert_eq!(c.assignee, Some(fr), "routed by the detected language");

    // A later message in English does not overwrite what is known.
    let mut later = first.clone();
    later.message =
        Some("Hello, I would like to change the date of my flight tomorrow morning, please.".into());
    let c2 = open(s, ws, &later, T0 + 1_000).await;
    assert_eq!(
        (c2.contact.language.as_deref(), c2.contact.language_confidence),
        (Some("fr"), Some(confidence))
    );

    // A language the request gives wins and is not a detection.
    let mut given = later.clone();
    given.contact.language = Some("en".into());
    let c3 = open(s, ws, &given, T0 + 2_000).await;
    assert_eq!((c3.contact.language.as_deref(), c3.contact.language_confidence), (Some("en"), None));
    assert_eq!(c3.assignee, Some(en));

    // Too little text says nothing; a person's correction clears the confidence.
    let mut short = new_conv(Some(t), "sam");
    short.message = Some("ok".into());
    let c4 = open(s, ws, &short, T0 + 3_000).await;
    assert_eq!((c4.contact.language.as_deref(), c4.contact.language_confidence), (None, None));
    let mut spanish = new_conv(Some(t), "ana");
    spanish.message =
        Some("Hola, quisiera cambiar la fecha de mi vuelo de mañana por la mañana, por favor.".into());
    let c5 = open(s, ws, &spanish, T0 + 4_000).await;
    assert_eq!(c5.contact.language.as_deref(), Some("es"));
    let patch = usher_store::ContactPatch { language: Some("ca".into()), ..Default::default() };
    let corrected = s.update_contact(ws, c5.contact.id, &patch, T0 + 5_000).await.expect("patch");
    assert_eq!((corrected.language.as_deref(), corrected.language_confidence), (Some("ca"), None));
    audit_clean(s, ws).await;
}

/// A run that waits (a question with a time-out, then a wait step) lives in the database: a
/// second store (a restarted node) finds it due exactly when its timer falls, steps it once
/// even when two nodes try at the same moment, and each message is sent once.
async fn runs_wait_survive_a_restart_and_step_once(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let ana = agent(s, ws, &new_agent("Ana", &[t], 5, Presence::Online)).await;
    let doc: usher_workflow::Workflow = serde_json::from_value(serde_json::json!({
        "name": "Ask, then wait, then assign", "trigger": { "kind": "conversation_opened" }, "start": "ask",
        "steps": {
            "ask": { "kind": "ask", "text": "Order number?", "save_to": "order", "next": "thanks",
                     "timeout_minutes": 10, "on_timeout": "later" },
            "later": { "kind": "send_message", "text": "No worries, an agent will help.", "next": "pause" },
            "pause": { "kind": "wait", "minutes": 5, "next": "assign" },
            "thanks": { "kind": "send_message", "text": "Thanks!", "next": "assign" },
            "assign": { "kind": "assign", "team": t }
        }
    }))
    .unwrap();
    let w = s.create_workflow(ws, &doc, T0).await.expect("create");
    s.publish_workflow(ws, w.id, T0).await.expect("publish");
    let mut open_req = new_conv(Some(t), "c1");
    open_req.prefer_previous_agent = true;
    let c = open(s, ws, &open_req, T0 + 1_000).await;
    assert_eq!(c.status, Status::Unassigned, "waiting for the answer");
    let minute = 60_000;
    assert!(
        s.due_runs(T0 + 1_000 + 10 * minute - 1).await.unwrap().is_empty(),
        "not due before its time-out"
    );

    // The node restarts: a new store on the same database finds the run due at its time-out.
    let node2 = db.reconnect().await;
    let due = node2.due_runs(T0 + 1_000 + 10 * minute).await.unwrap();
    assert_eq!(due.len(), 1);
    let (run, run_ws) = due[0];
    assert_eq!(run_ws, ws);
    // Two nodes step it at the same moment, a worker (which leaves a run another holds) and
    // a command (which waits for it): it moves on once.
    let at = T0 + 1_000 + 10 * minute;
    let (a, b) = tokio::join!(s.process_due_run(ws, run, at), node2.process_run(ws, run, at));
    a.unwrap();
    b.unwrap();
    let texts = |msgs: Vec<usher_store::Message>| msgs.into_iter().map(|m| m.text).collect::<Vec<_>>();
    assert_eq!(
        texts(s.messages(ws, c.id, 0, 100).await.unwrap()),
        vec!["Order number?", "No worries, an agent will help."]
    );
    assert_eq!(conv(s, ws, c.id, at).await.status, Status::Unassigned, "still waiting five minutes");
    // Five minutes later (another restart): assigned, the run finished, nothing sent twice.
    let node3 = db.reconnect().await;
    let later = at + 5 * minute;
    assert_eq!(node3.due_runs(later).await.unwrap(), vec![(run, ws)]);
    node3.process_run(ws, run, later).await.unwrap();
    node3.process_run(ws, run, later).await.unwrap();
    let c = conv(s, ws, c.id, later).await;
    assert_eq!((c.status, c.assignee), (Status::Assigned, Some(ana)));
    assert_eq!(texts(s.messages(ws, c.id, 0, 100).await.unwrap()).len(), 2);
    let r = s.run(ws, run).await.unwrap();
    assert_eq!(r.status, "finished");
    assert!(s.due_runs(later + 60 * minute).await.unwrap().is_empty());
    let inputs: Vec<String> =
        r.steps.iter().map(|st| st.input["input"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(inputs, vec!["start", "timer", "timer", "assigned"]);
    audit_clean(s, ws).await;
}

/// Webhook deliveries come from the committed log, so none is lost across a restart; each
/// event is dispatched once however often dispatch runs; a failing receiver is retried with
/// growing waits and its subscription paused after ten failures in a row, then resumed.
async fn webhook_deliveries_survive_a_restart_retry_and_pause(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    agent(s, ws, &new_agent("Ana", &[t], 50, Presence::Online)).await;
    let w = s.create_webhook(ws, "http://127.0.0.1:9/hook", &[], T0).await.expect("webhook");
    for i in 0..3 {
        open(s, ws, &new_conv(Some(t), &format!("c{i}")), T0 + 1_000).await;
    }
    let expected =
        s.events(ws, 0, 1000).await.unwrap().iter().filter(|e| e.kind.starts_with("conversation.")).count();
    // A restart before anything was sent: the new node dispatches everything, once.
    let node2 = db.reconnect().await;
    let made = node2.dispatch_webhooks(T0 + 2_000).await.unwrap();
    assert_eq!(node2.dispatch_webhooks(T0 + 2_000).await.unwrap(), 0, "dispatching again adds nothing");
    let due = node2.due_deliveries(T0 + 2_000).await.unwrap();
    assert!(made >= expected, "{made} deliveries for {expected} conversation events");
    assert_eq!(due.len(), made);
    assert!(node2.due_deliveries(T0 + 2_000).await.unwrap().is_empty(), "leased: not handed out twice");
    // The receiver blinks: every delivery fails twice; that is no reason to pause.
    let first = due[0].id;
    let mut now = T0 + 3_000;
    for _ in 0..2 {
        for d in &due {
            node2.record_attempt(d.id, Some(503), None, 5, now).await.unwrap();
        }
    }
    assert!(due.len() * 2 >= 10, "a burst of {} failures", due.len() * 2);
    assert_eq!(
        s.webhook(ws, w.id).await.unwrap().status,
        "active",
        "a burst of single failures does not pause"
    );
    // It stays down: one delivery fails ten times with no success between, and the
    // subscription pauses.
    for _ in 2..10 {
        now += 1;
        node2.record_attempt(first, Some(503), None, 5, now).await.unwrap();
    }
    let hook = s.webhook(ws, w.id).await.unwrap();
    assert_eq!((hook.status.as_str(), hook.failures), ("paused", i64::try_from(due.len()).unwrap() * 2 + 8));
    assert!(hook.paused_reason.unwrap().contains("answered 503"));
    assert!(
        s.due_deliveries(now + 10_000_000).await.unwrap().is_empty(),
        "a paused subscription sends nothing"
    );
    assert!(s.events(ws, 0, 1000).await.unwrap().iter().any(|e| e.kind == "webhook.paused"));
    // Resumed: due again at once; a success delivers and resets the failures.
    s.resume_webhook(ws, w.id, now).await.unwrap();
    let again = s.due_deliveries(now).await.unwrap();
    assert!(again.iter().any(|d| d.id == first));
    s.record_attempt(first, Some(200), None, 3, now).await.unwrap();
    s.record_attempt(first, Some(200), None, 3, now).await.unwrap();
    let list = s.deliveries(ws, w.id, 100).await.unwrap();
    let d = list.iter().find(|d| d.id == first).unwrap();
    let failed_first = 10;
    assert_eq!(
        (d.status.as_str(), d.attempts),
        ("delivered", failed_first + 1),
        "its failures, one success, and a second report for a delivered one changes nothing"
    );
    assert_eq!(s.webhook(ws, w.id).await.unwrap().failures, 0);
    // Backoff: a failure waits 2^attempts seconds (plus jitter) before the next try.
    let other = again.iter().find(|d| d.id != first).unwrap().id;
    let attempts_of =
        |list: Vec<usher_store::webhooks::Delivery>| list.into_iter().find(|d| d.id == other).unwrap();
    let before = attempts_of(s.deliveries(ws, w.id, 100).await.unwrap()).attempts;
    s.record_attempt(other, None, Some("connection refused"), 1, now).await.unwrap();
    let d = attempts_of(s.deliveries(ws, w.id, 100).await.unwrap());
    let next = chrono::DateTime::parse_from_rfc3339(d.next_attempt_at.as_deref().unwrap())
        .unwrap()
        .timestamp_millis();
    let wait = 1_000 * (1i64 << before);
    assert!(
        (now + wait..=now + wait + wait / 4).contains(&next),
        "after {before} failures: {} ms later",
        next - now
    );
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));
}

/// Presence follows the console's links, on a fake clock: nothing within the grace period;
/// turned away after it (work queues instead of reaching the agent); back with the presence
/// taken (busy stays busy) when a link returns, and the queue drains to it; a link of a dead
/// node goes stale; a presence set by hand is never undone; an agent that never connected is
/// never touched.
async fn presence_follows_the_console_with_a_grace_period(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    let ana = agent(s, ws, &new_agent("Ana", &[t], 5, Presence::Online)).await;
    let api_only = agent(s, ws, &new_agent("Api", &[], 5, Presence::Online)).await;
    const GRACE: i64 = 120_000;
    let status = |id: i64| async move { s.agent(ws, id, T0).await.unwrap().status };

    let link = s.link_opened(ws, ana, T0).await.unwrap();
    s.link_seen(link, T0 + 30_000).await.unwrap();
    assert!(
        s.sweep_presence(T0 + 60_000, 0).await.unwrap().is_empty(),
        "a live link keeps Ana, whatever the grace"
    );
    s.link_closed(link, T0 + 40_000).await.unwrap();
    assert!(
        s.sweep_presence(T0 + 40_000 + GRACE - 1, GRACE).await.unwrap().is_empty(),
        "within the grace period"
    );
    assert_eq!(status(ana).await, Presence::Online);
    assert_eq!(s.sweep_presence(T0 + 40_000 + GRACE, GRACE).await.unwrap(), vec![(ws, ana)]);
    assert_eq!(status(ana).await, Presence::Away);
    assert_eq!(status(api_only).await, Presence::Online, "never connected: never touched");
    let events = s.events(ws, 0, 1000).await.unwrap();
    let turned = events.iter().rfind(|e| e.kind == "agent.status_changed").unwrap();
    assert_eq!(turned.data, serde_json::json!({ "from": "online", "to": "away", "by": "connection" }));

    // Work arriving meanwhile waits instead of reaching a closed laptop; the return drains it.
    let waiting = open(s, ws, &new_conv(Some(t), "c1"), T0 + 200_000).await;
    assert_eq!(waiting.status, Status::Queued);
    let link = s.link_opened(ws, ana, T0 + 300_000).await.unwrap();
    assert_eq!(status(ana).await, Presence::Online, "given back");
    assert_eq!(conv(s, ws, waiting.id, T0 + 300_000).await.assignee, Some(ana), "the queue drained to Ana");
    audit_clean(s, ws).await;

    // A node that dies leaves its link; it goes stale and counts as gone since last seen.
    s.set_status(ws, ana, Presence::Busy, T0 + 300_000).await.unwrap();
    let stale_at = T0 + 300_000 + usher_store::presence::LINK_STALE_MILLIS;
    assert!(
        s.sweep_presence(stale_at, GRACE).await.unwrap().is_empty(),
        "stale, but the grace runs from last seen"
    );
    assert_eq!(s.sweep_presence(T0 + 300_000 + GRACE, GRACE).await.unwrap(), vec![(ws, ana)]);
    assert_eq!(status(ana).await, Presence::Away);
    s.link_closed(link, T0 + 500_000).await.unwrap(); // already gone: harmless
    let again = s.link_opened(ws, ana, T0 + 600_000).await.unwrap();
    assert_eq!(status(ana).await, Presence::Busy, "busy was taken, busy comes back");

    // By hand wins: set away, then the console comes and goes; nothing is undone.
    s.link_closed(again, T0 + 700_000).await.unwrap();
    s.set_status(ws, ana, Presence::Offline, T0 + 700_000).await.unwrap();
    assert!(s.sweep_presence(T0 + 700_000 + GRACE, GRACE).await.unwrap().is_empty());
    let l = s.link_opened(ws, ana, T0 + 800_000).await.unwrap();
    assert_eq!(status(ana).await, Presence::Offline, "the agent's own choice stays");
    // Turned away, then set away by hand: the agent took over, so a returning link leaves it.
    s.link_closed(l, T0 + 810_000).await.unwrap();
    s.set_status(ws, ana, Presence::Online, T0 + 810_000).await.unwrap();
    assert_eq!(s.sweep_presence(T0 + 810_000 + GRACE, GRACE).await.unwrap(), vec![(ws, ana)]);
    s.set_status(ws, ana, Presence::Away, T0 + 950_000).await.unwrap();
    s.link_opened(ws, ana, T0 + 960_000).await.unwrap();
    assert_eq!(status(ana).await, Presence::Away);
    assert!(matches!(s.link_opened(ws, 999_999, T0).await, Err(StoreError::NotFound { .. })));
}

/// Two first messages of one contact that race each other open one conversation, and a retry
/// of either stores nothing twice.
async fn inbound_messages_race_into_one_conversation(db: Db) {
    use usher_store::channels::{Inbound, NewChannel};
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("T", Strategy::RoundRobin, WhenNobody::Queue)).await;
    agent(s, ws, &new_agent("Ana", &[t], 50, Presence::Online)).await;
    let ch = s
        .create_channel(
            ws,
            &NewChannel {
                kind: Channel::Telegram,
                name: "Bot".into(),
                team: Some(t),
                outbound_url: None,
                reopen_minutes: None,
            },
            T0,
        )
        .await
        .unwrap();
    let msg = |id: &str| Inbound {
        contact: NewContact {
            external_id: "@mia".into(),
            name: Some("Mia".into()),
            language: None,
            tags: vec![],
        },
        message_id: id.into(),
        text: format!("message {id}"),
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = s.clone();
        let m = msg(&format!("m{}", i % 4));
        let channel = ch.id;
        tasks.push(tokio::spawn(async move { store.inbound(ws, channel, &m, T0 + 1_000).await }));
    }
    let mut conversations = BTreeSet::new();
    let mut messages = BTreeMap::new();
    for task in tasks {
        let r = task.await.unwrap().expect("inbound");
        conversations.insert(r.conversation.id);
        messages.entry(r.message.text.clone()).or_insert_with(BTreeSet::new).insert(r.message.id);
    }
    assert_eq!(conversations.len(), 1, "one conversation: {conversations:?}");
    assert_eq!(messages.len(), 4);
    assert!(messages.values().all(|ids| ids.len() == 1), "each message stored once: {messages:?}");
    let stored = db.count("SELECT COUNT(*) FROM messages").await;
    assert_eq!(stored, 4);
    audit_clean(s, ws).await;
}

/// A traffic trace holds every conversation of its period, oldest first, or is refused with
/// `trace_too_long`: it is never silently cut at the limit.
async fn a_trace_too_long_is_refused_not_cut(db: Db) {
    let s = &db.store;
    let ws = workspace(s, "W").await;
    let t = team(s, ws, &new_team("Support", Strategy::LeastOpen, WhenNobody::Queue)).await;
    for (i, contact) in ["a", "b", "c"].iter().enumerate() {
        open(s, ws, &new_conv(Some(t), contact), T0 + i as i64 * 1_000).await;
    }
    let period = Period::new(T0, T0 + 3_600_000, 60_000).expect("period");
    let rows = s.traffic_trace(ws, period, None, 3).await.expect("three fit in three");
    let arrived: Vec<&str> = rows.iter().map(|r| r.arrived_at.as_str()).collect();
    assert_eq!(arrived, [rfc3339(T0), rfc3339(T0 + 1_000), rfc3339(T0 + 2_000)]);
    assert!(rows.iter().all(|r| r.team.as_deref() == Some("Support")));
    expect_invalid(s.traffic_trace(ws, period, None, 2).await, "trace_too_long");
    let later = Period::new(T0 + 500, T0 + 3_600_000, 60_000).expect("period");
    assert_eq!(s.traffic_trace(ws, later, Some(t), 2).await.expect("two in the later period").len(), 2);
}

/// An agent at its daily limit takes the queue again at midnight in the workspace's time
/// zone, without waiting for another event; before midnight, and once done, nothing happens.
async fn a_new_day_drains_the_queues_daily_limits_held_back(db: Db) {
    let s = &db.store;
    // Tokyo: T0 (08:00 UTC) is 17:00 there; midnight comes at 15:00 UTC.
    let ws = s.create_workspace("W", "Asia/Tokyo", T0).await.expect("workspace").id;
    let t = team(s, ws, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    let mut limited = new_agent("A", &[t], 5, Presence::Online);
    limited.daily_limit = Some(1);
    let a = agent(s, ws, &limited).await;
    let other = workspace(s, "Other").await;
    let ot = team(s, other, &new_team("T", Strategy::LeastOpen, WhenNobody::Queue)).await;
    agent(s, other, &new_agent("B", &[ot], 5, Presence::Online)).await;
    assert_eq!(open(s, ws, &new_conv(Some(t), "c1"), T0).await.assignee, Some(a));
    let c2 = open(s, ws, &new_conv(Some(t), "c2"), T0 + 1_000).await;
    assert_eq!(c2.status, Status::Queued, "the daily limit holds");
    let hour = 3_600_000;
    assert_eq!(s.start_new_days(T0 + 6 * hour).await.expect("sweep"), vec![], "23:00 in Tokyo");
    assert_eq!(conv(s, ws, c2.id, T0 + 6 * hour).await.status, Status::Queued);
    let midnight = T0 + 7 * hour;
    assert_eq!(s.start_new_days(midnight + 1).await.expect("sweep"), vec![(ws, a)]);
    let c2 = conv(s, ws, c2.id, midnight + 1).await;
    assert_eq!((c2.status, c2.assignee), (Status::Assigned, Some(a)), "taken after midnight");
    assert!(all_events(s, ws)
        .await
        .iter()
        .any(|e| e.kind == "conversation.assigned" && e.conversation == Some(c2.id)));
    // The agent has received one today: at its limit again, but for today; nothing to do.
    assert_eq!(s.start_new_days(midnight + 60_000).await.expect("sweep"), vec![]);
    // Held back with an empty queue: started once, then left alone.
    let c3 = open(s, ws, &new_conv(Some(t), "c3"), midnight + 120_000).await;
    assert_eq!(c3.status, Status::Queued);
    s.close(ws, c3.id, midnight + 180_000).await.expect("close");
    let next = midnight + 24 * hour;
    assert_eq!(s.start_new_days(next).await.expect("sweep"), vec![(ws, a)]);
    assert_eq!(s.start_new_days(next + 1_000).await.expect("sweep"), vec![]);
    assert_eq!(s.agent(ws, a, next).await.expect("agent").received_today, 0);
    audit_clean(s, ws).await;
}
