//! End-to-end tests through the HTTP API: the real app on a random port over a real SQLite
//! file (or PostgreSQL when `USHER_TEST_POSTGRES` is set, for the tests that say so), driven
//! with a real HTTP client.

#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use usher_server::{app, now_millis, AppState};
use usher_store::{Role, Store};

static NEXT: AtomicU64 = AtomicU64::new(0);

struct TestApp {
    base: String,
    http: reqwest::Client,
    store: Store,
    admin: String,
    ws: i64,
}

struct Reply {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database: a SQLite file in a temporary folder, or a new PostgreSQL database on the
/// server named by `USHER_TEST_POSTGRES` (None when that is unset: the test is skipped).
fn fresh_database(backend: Backend) -> Option<String> {
    let unique = format!("{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), now_millis());
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("usher-api-{unique}"));
            std::fs::create_dir_all(&dir).unwrap();
            Some(format!("sqlite://{}", dir.join("usher.db").display()))
        }
        Backend::Postgres => {
            let admin = std::env::var("USHER_TEST_POSTGRES").ok().filter(|u| !u.is_empty())?;
            let name = format!("usher_api_{unique}");
            let status = std::process::Command::new("psql")
                .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
                .status()
                .expect("psql runs");
            assert!(status.success(), "could not create database {name}");
            let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
            Some(format!("{base}/{name}"))
        }
    }
}

async fn spawn_on(backend: Backend, per_second: u32, burst: u32) -> Option<TestApp> {
    let url = fresh_database(backend)?;
    let store = Store::connect(&url).await.unwrap();
    let ws = store.create_workspace("Test", "UTC", now_millis()).await.unwrap();
    let admin = store.create_token(ws.id, Role::Admin, None, None, now_millis()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::with_rate(store.clone(), per_second, burst);
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    Some(TestApp { base, http: reqwest::Client::new(), store, admin: admin.token, ws: ws.id })
}

/// Declares a test body once and runs it on SQLite and, when `USHER_TEST_POSTGRES` is set, on
/// PostgreSQL.
macro_rules! both {
    ($name:ident, $rate:expr, $burst:expr, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                $body(spawn_on(Backend::Sqlite, $rate, $burst).await.unwrap()).await;
            }
            #[tokio::test]
            async fn postgres() {
                match spawn_on(Backend::Postgres, $rate, $burst).await {
                    Some(t) => $body(t).await,
                    None => eprintln!("USHER_TEST_POSTGRES is not set: PostgreSQL variant skipped"),
                }
            }
        }
    };
}

both!(core_flow, 0, 0, the_core_flow_assigns_queues_drains_and_explains);
both!(claims, 0, 0, claims_race_cleanly_and_manual_assignment_respects_caps_unless_forced);
both!(agent_visibility, 0, 0, an_agent_sees_its_own_and_its_teams_unheld_conversations_only);
both!(workflows, 0, 0, workflows_are_drafted_published_versioned_and_tried);
both!(calendars, 0, 0, calendars_are_checked_and_say_when_they_open);
both!(messages, 0, 0, messages_flow_both_ways_and_record_the_first_response);
both!(runs, 0, 0, a_published_menu_workflow_asks_then_routes_the_answer_to_its_team);
both!(triggers, 0, 0, closing_a_message_and_a_person_start_their_workflows);
both!(templates, 0, 0, every_template_does_what_it_says_through_the_api);
both!(webhooks, 0, 0, webhooks_arrive_signed_after_a_failure_and_report_their_attempts);
both!(streams, 0, 0, streams_show_each_agent_its_work_live_and_resume_without_loss);
both!(idempotency, 0, 0, idempotency_keys_make_retries_safe);
both!(bad_input, 0, 0, bad_input_gets_a_clear_4xx_and_changes_nothing);
both!(roles, 0, 0, every_route_against_every_role_and_a_foreign_workspace);
both!(rate_limit, 1, 3, a_token_over_its_rate_gets_429_with_retry_after);
both!(operations, 0, 0, operations_endpoints_and_openapi);
both!(contacts, 0, 0, contacts_are_found_and_updated);
both!(adapters, 0, 0, an_inbound_message_flows_through_workflow_agent_stream_and_back_to_the_adapter_signed);
both!(web_chat, 0, 0, a_web_chat_visitor_writes_and_reads_answers_live_with_its_own_token_only);
both!(presence, 0, 0, an_agent_whose_console_goes_is_turned_away_and_back_when_it_returns);
both!(console_sessions, 0, 0, console_logins_sign_in_with_a_cookie_that_acts_with_the_logins_role_only);
both!(reports, 0, 0, reports_count_time_and_spread_the_work_and_export_csv_and_svg);
both!(hand_on, 0, 0, agents_hand_on_what_they_hold_to_a_teammate_or_a_team_and_nothing_else);

async fn contacts_are_found_and_updated(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let body = json!({ "channel": "telegram", "team": team, "contact": { "external_id": "@mia", "name": "Mia", "tags": ["new"] } });
    let c = t.ok(Method::POST, "/v1/conversations", body.clone()).await;
    let contact = c["contact"]["id"].as_i64().unwrap();
    let found = t.get("/v1/contacts?channel=telegram&external_id=@mia").await;
    assert_eq!(found["contacts"][0]["id"], contact);
    assert_eq!(found["contacts"][0]["tags"], json!(["new"]));
    let path = format!("/v1/contacts/{contact}");
    let p = t
        .ok(
            Method::PATCH,
            &path,
            json!({ "attributes": { "plan": "gold", "order": "A-17" }, "tags": ["vip"] }),
        )
        .await;
    assert_eq!(p["attributes"], json!({ "order": "A-17", "plan": "gold" }));
    assert_eq!(p["tags"], json!(["vip"]));
    let p = t.ok(Method::PATCH, &path, json!({ "attributes": { "plan": "" } })).await;
    assert_eq!(p["attributes"], json!({ "order": "A-17" }));
    // The same person writing again is the same contact, and the conversation shows it.
    let c2 = t.ok(Method::POST, "/v1/conversations", body).await;
    assert_eq!(c2["contact"]["id"], contact);
    assert_eq!(c2["contact"]["attributes"]["order"], "A-17");
    // Bad input changes nothing.
    let before = t.get(&path).await;
    for (method, path, body, status, code) in [
        (
            Method::PATCH,
            path.clone(),
            Some(r#"{"colour":"red"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(r#"{"attributes":{"":"x"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::GET,
            "/v1/contacts?channel=telegram".to_string(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel_and_external_id",
        ),
        (Method::GET, "/v1/contacts/999".to_string(), None, StatusCode::NOT_FOUND, "not_found"),
        (
            Method::GET,
            "/v1/contacts?channel=sms&external_id=%00".to_string(),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ] {
        let r = t.raw(Some(&t.admin), method.clone(), &path, body.map(str::to_string)).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code);
    }
    assert_eq!(t.get(&path).await, before);
}

impl TestApp {
    async fn raw(&self, token: Option<&str>, method: Method, path: &str, body: Option<String>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body, headers }
    }

    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.raw(Some(token), method, path, body.map(|b| b.to_string())).await
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.call(&self.admin, method, path, Some(body)).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        r.body
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.call(&self.admin, Method::GET, path, None).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        r.body
    }

    async fn token(&self, role: &str, agent: Option<i64>) -> String {
        let b = self.ok(Method::POST, "/v1/tokens", json!({ "role": role, "agent": agent })).await;
        b["token"].as_str().unwrap().to_string()
    }

    async fn team(&self, name: &str, strategy: &str) -> i64 {
        let b = self
            .ok(
                Method::POST,
                "/v1/teams",
                json!({ "name": name, "strategy": strategy, "when_nobody": "queue" }),
            )
            .await;
        b["id"].as_i64().unwrap()
    }

    async fn agent(&self, name: &str, teams: &[i64], status: &str, max_open: u32) -> i64 {
        let b = self
            .ok(
                Method::POST,
                "/v1/agents",
                json!({ "name": name, "email": format!("{}@t.test", name.to_lowercase()), "teams": teams,
                        "status": status, "max_open": max_open }),
            )
            .await;
        b["id"].as_i64().unwrap()
    }

    async fn open(&self, team: i64, contact: &str) -> Value {
        self.ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "whatsapp", "team": team, "contact": { "external_id": contact }, "message": "hi" }),
        )
        .await
    }

    /// A fingerprint of everything a bad request must not change.
    async fn fingerprint(&self) -> Value {
        json!({
            "teams": self.get("/v1/teams").await,
            "agents": self.get("/v1/agents").await,
            "conversations": self.get("/v1/conversations?limit=500").await,
            "events": self.get("/v1/events?limit=1000").await,
        })
    }
}

async fn the_core_flow_assigns_queues_drains_and_explains(t: TestApp) {
    let support = t.team("Support", "least_open").await;
    let ana = t.agent("Ana", &[support], "online", 1).await;
    let bob = t.agent("Bob", &[support], "online", 1).await;
    let _ravi = t.agent("Ravi", &[support], "offline", 1).await;

    let c1 = t.open(support, "+100").await;
    assert_eq!(c1["status"], "assigned");
    assert_eq!(c1["assignee"], ana, "equal loads, never assigned: lowest id wins");
    let c2 = t.open(support, "+101").await;
    assert_eq!(c2["assignee"], bob);
    let c3 = t.open(support, "+102").await;
    assert_eq!(c3["status"], "queued");
    assert_eq!(c3["queue"]["position"], 1);
    // Cold start: 2 online slots (max_open 1 each), 300 s default handling: ceil(1*300/2).
    assert_eq!(c3["queue"]["estimated_wait_seconds"], 150);
    let c4 = t.open(support, "+103").await;
    assert_eq!(c4["queue"]["position"], 2);
    assert_eq!(c4["queue"]["estimated_wait_seconds"], 300);

    let queue = t.get(&format!("/v1/teams/{support}/queue")).await;
    let waiting: Vec<i64> =
        queue["waiting"].as_array().unwrap().iter().map(|w| w["conversation"].as_i64().unwrap()).collect();
    assert_eq!(waiting, vec![c3["id"].as_i64().unwrap(), c4["id"].as_i64().unwrap()]);

    // Ana closes: the head of the queue goes to her at once.
    let closed = t.ok(Method::POST, &format!("/v1/conversations/{}/close", c1["id"]), json!({})).await;
    assert_eq!(closed["status"], "closed");
    let c3_now = t.get(&format!("/v1/conversations/{}", c3["id"])).await;
    assert_eq!(c3_now["status"], "assigned");
    assert_eq!(c3_now["assignee"], ana);
    let c4_now = t.get(&format!("/v1/conversations/{}", c4["id"])).await;
    assert_eq!(c4_now["queue"]["position"], 1);

    // The trace says why Bob got c2.
    let trace = t.get(&format!("/v1/conversations/{}/trace", c2["id"])).await;
    let d = &trace["decisions"][0];
    assert_eq!(d["outcome"], "assigned");
    assert_eq!(d["agent"], bob);
    let explanation = d["explanation"].as_str().unwrap();
    assert!(explanation.contains("least open contacts"), "{explanation}");
    assert!(explanation.contains("at cap 1/1"), "{explanation}");
    assert!(explanation.contains("offline"), "{explanation}");

    // The event log tells the story in order with gap-free sequence numbers.
    let events = t.get("/v1/events?after=0&limit=1000").await;
    let seqs: Vec<i64> =
        events["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"conversation.queued"));
    let after = seqs[seqs.len() - 2];
    let tail = t.get(&format!("/v1/events?after={after}")).await;
    assert_eq!(tail["events"].as_array().unwrap().len(), 1);
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());
}

async fn claims_race_cleanly_and_manual_assignment_respects_caps_unless_forced(t: TestApp) {
    let sales = t.team("Sales", "round_robin").await;
    let ana = t.agent("Ana", &[sales], "offline", 1).await;
    let bob = t.agent("Bob", &[sales], "offline", 1).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let bob_token = t.token("agent", Some(bob)).await;
    // Nobody online and the team queues: open with leave_unassigned for pick-and-assign.
    let c = t
        .ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "web_chat", "team": sales, "contact": { "external_id": "v1" }, "when_nobody": "leave_unassigned" }),
        )
        .await;
    assert_eq!(c["status"], "unassigned");
    let id = c["id"].as_i64().unwrap();
    let path = format!("/v1/conversations/{id}/claim");
    let (a, b) = tokio::join!(
        t.call(&ana_token, Method::POST, &path, None),
        t.call(&bob_token, Method::POST, &path, None)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{} / {}", a.body, b.body);
    let loser = if a.status == StatusCode::CONFLICT { &a } else { &b };
    assert_eq!(loser.body["error"]["code"], "already_assigned");

    // Bob is now at cap 1 or free; put a second conversation on whoever holds the first.
    let holder = t.get(&format!("/v1/conversations/{id}")).await["assignee"].as_i64().unwrap();
    let c2 = t
        .ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "web_chat", "team": sales, "contact": { "external_id": "v2" }, "when_nobody": "leave_unassigned" }),
        )
        .await;
    let assign = format!("/v1/conversations/{}/assign", c2["id"]);
    let refused = t.call(&t.admin, Method::POST, &assign, Some(json!({ "agent": holder }))).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.body["error"]["code"], "agent_unavailable");
    let forced =
        t.call(&t.admin, Method::POST, &assign, Some(json!({ "agent": holder, "force": true }))).await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    assert_eq!(forced.body["assignee"], holder);

    // Unassign, close, reopen: back to the last agent when it can take it.
    let un = t.ok(Method::POST, &format!("/v1/conversations/{}/unassign", c2["id"]), json!({})).await;
    assert_eq!(un["status"], "unassigned");
    t.ok(Method::PUT, &format!("/v1/agents/{holder}/status"), json!({ "status": "online" })).await;
    t.ok(Method::POST, &format!("/v1/conversations/{id}/close"), json!({})).await;
    let closed_claim = t.call(&ana_token, Method::POST, &path, None).await;
    assert_eq!(closed_claim.status, StatusCode::CONFLICT);
    assert_eq!(closed_claim.body["error"]["code"], "conversation_closed");
    let reopened = t.ok(Method::POST, &format!("/v1/conversations/{id}/reopen"), json!({})).await;
    assert_eq!(reopened["status"], "assigned");
    assert_eq!(reopened["assignee"], holder, "reopened conversations go back to their last agent");
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());
}

async fn idempotency_keys_make_retries_safe(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    t.agent("Ana", &[team], "online", 5).await;
    let body = json!({ "channel": "sms", "team": team, "contact": { "external_id": "+1555" } }).to_string();
    let send = || {
        t.http
            .post(format!("{}/v1/conversations", t.base))
            .bearer_auth(&t.admin)
            .header("content-type", "application/json")
            .header("idempotency-key", "msg-42")
            .body(body.clone())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    // The same key with a different request is refused, not answered with the first one.
    let other = t
        .http
        .post(format!("{}/v1/conversations", t.base))
        .bearer_auth(&t.admin)
        .header("content-type", "application/json")
        .header("idempotency-key", "msg-42")
        .body(json!({ "channel": "sms", "team": team, "contact": { "external_id": "+1999" } }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency_key_reused");
    let all = t.get("/v1/conversations").await;
    assert_eq!(all["conversations"].as_array().unwrap().len(), 1);
}

async fn bad_input_gets_a_clear_4xx_and_changes_nothing(t: TestApp) {
    let team = t.team("Support", "least_open").await;
    let agent = t.agent("Ana", &[team], "online", 2).await;
    t.open(team, "known").await;
    let before = t.fingerprint().await;
    let cases: Vec<(Method, String, Option<&str>, StatusCode, &str)> = vec![
        (Method::POST, "/v1/teams".into(), Some("{not json"), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":"X","colour":"red"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":42}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":"X","strategy":"random"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":"X","time_zone":"Mars/Base"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_time_zone",
        ),
        (Method::POST, "/v1/teams".into(), Some(r#"{"name":"Support"}"#), StatusCode::CONFLICT, "name_taken"),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":"   "}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(r#"{"name":"B","email":"b@t.test","skills":{"billing":9}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_skill_level",
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(r#"{"name":"B","email":"ana@t.test"}"#),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(r#"{"name":"B","email":"b@t.test","teams":[999]}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(r#"{"name":"B","email":"b@t.test","max_open":-1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(r#"{"name":"B","email":"b@t.test","max_open":99999999999}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::PUT,
            format!("/v1/agents/{agent}/status"),
            Some(r#"{"status":"sleeping"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/v1/agents/999/status".into(),
            Some(r#"{"status":"online"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/agents/abc/status".into(),
            Some(r#"{"status":"online"}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"pigeon","contact":{"external_id":"x"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":""}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"a\u0000b"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"x"},"message":"\u0000"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/teams".into(),
            Some(r#"{"name":"T\u0000"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"x"},"team":999}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"x"},"priority":"asap"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"x"},"skills":{"a":0}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_skill_level",
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(r#"{"channel":"sms","contact":{"external_id":"x"},"match_language":true}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "language_required",
        ),
        (Method::POST, "/v1/conversations/999/close".into(), None, StatusCode::NOT_FOUND, "not_found"),
        (
            Method::POST,
            "/v1/conversations/1/assign".into(),
            Some(r#"{}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent_or_team",
        ),
        (
            Method::POST,
            "/v1/conversations/1/assign".into(),
            Some(r#"{"agent":999}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (Method::GET, "/v1/events?after=-1".into(), None, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
        (Method::GET, "/v1/events?after=abc".into(), None, StatusCode::BAD_REQUEST, "invalid_query"),
        (Method::GET, "/v1/conversations?status=lost".into(), None, StatusCode::BAD_REQUEST, "invalid_query"),
        (Method::GET, "/v1/nothing".into(), None, StatusCode::NOT_FOUND, "not_found"),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(r#"{"role":"agent"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent_required",
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(r#"{"role":"emperor"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = t.raw(Some(&t.admin), method.clone(), &path, body.map(str::to_string)).await;
        assert_eq!(r.status, status, "{method} {path} {body:?}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{method} {path} {body:?}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // An absurd body is refused by size before anything reads it.
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(200_000));
    let r = t.raw(Some(&t.admin), Method::POST, "/v1/teams", Some(huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "body_too_large");
    // No content type.
    let r = t
        .http
        .post(format!("{}/v1/teams", t.base))
        .bearer_auth(&t.admin)
        .body(r#"{"name":"Y"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(t.fingerprint().await, before, "bad requests changed nothing");
}

async fn every_route_against_every_role_and_a_foreign_workspace(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let me = t.agent("Ana", &[team], "online", 5).await;
    let other = t.agent("Bob", &[team], "online", 5).await;
    let tokens = [
        ("admin", t.admin.clone()),
        ("manager", t.token("manager", None).await),
        ("agent", t.token("agent", Some(me)).await),
        ("integration", t.token("integration", None).await),
    ];
    // Another workspace with its own admin, whose ids must be invisible here and vice versa.
    let foreign_ws = t.store.create_workspace("Other", "UTC", now_millis()).await.unwrap();
    let foreign =
        t.store.create_token(foreign_ws.id, Role::Admin, None, None, now_millis()).await.unwrap().token;

    // Fixtures: one conversation held by Bob, one held by Ana, one unassigned.
    let held_by_other = t.open(team, "c-other").await;
    assert_eq!(held_by_other["assignee"], me);
    let mine = held_by_other["id"].as_i64().unwrap();
    let contact = held_by_other["contact"]["id"].as_i64().unwrap();
    let theirs = t.open(team, "c-theirs").await;
    assert_eq!(theirs["assignee"], other);
    let theirs = theirs["id"].as_i64().unwrap();

    let wf = t
        .ok(Method::POST, "/v1/workflows", json!({ "template": "round_robin_online_only", "team": team }))
        .await["id"]
        .as_i64()
        .unwrap();

    let sms = t.ok(Method::POST, "/v1/channels", json!({ "kind": "sms", "name": "SMS" })).await["id"]
        .as_i64()
        .unwrap();

    // (method, path, body, roles allowed)
    let all = ["admin", "manager", "agent", "integration"];
    let routes: Vec<(Method, String, Option<Value>, Vec<&str>)> = vec![
        (Method::GET, "/v1/workspace".into(), None, all.to_vec()),
        (Method::POST, "/v1/tokens".into(), Some(json!({ "role": "integration" })), vec!["admin"]),
        (Method::POST, "/v1/teams".into(), Some(json!({ "name": "T-{n}" })), vec!["admin", "manager"]),
        (Method::GET, "/v1/teams".into(), None, vec!["admin", "manager", "agent"]),
        (Method::GET, format!("/v1/teams/{team}"), None, vec!["admin", "manager", "agent"]),
        (
            Method::PATCH,
            format!("/v1/teams/{team}"),
            Some(json!({ "only_online": true })),
            vec!["admin", "manager"],
        ),
        (Method::GET, format!("/v1/teams/{team}/queue"), None, vec!["admin", "manager", "agent"]),
        (
            Method::POST,
            "/v1/agents".into(),
            Some(json!({ "name": "N", "email": "n-{n}@t.test" })),
            vec!["admin", "manager"],
        ),
        (Method::GET, "/v1/agents".into(), None, vec!["admin", "manager"]),
        (Method::GET, format!("/v1/agents/{me}"), None, vec!["admin", "manager", "agent"]),
        (Method::GET, format!("/v1/agents/{other}"), None, vec!["admin", "manager"]),
        (
            Method::PATCH,
            format!("/v1/agents/{other}"),
            Some(json!({ "max_open": 5 })),
            vec!["admin", "manager"],
        ),
        (
            Method::PUT,
            format!("/v1/agents/{me}/status"),
            Some(json!({ "status": "online" })),
            vec!["admin", "manager", "agent"],
        ),
        (
            Method::PUT,
            format!("/v1/agents/{other}/status"),
            Some(json!({ "status": "online" })),
            vec!["admin", "manager"],
        ),
        (
            Method::POST,
            "/v1/conversations".into(),
            Some(json!({ "channel": "sms", "contact": { "external_id": "r-{n}" } })),
            vec!["admin", "manager", "integration"],
        ),
        (Method::GET, "/v1/conversations".into(), None, vec!["admin", "manager", "agent"]),
        (Method::GET, format!("/v1/conversations/{mine}"), None, all.to_vec()),
        (Method::GET, format!("/v1/conversations/{theirs}"), None, vec!["admin", "manager", "integration"]),
        (Method::GET, format!("/v1/conversations/{mine}/trace"), None, vec!["admin", "manager", "agent"]),
        (Method::GET, format!("/v1/conversations/{theirs}/trace"), None, vec!["admin", "manager"]),
        (
            Method::POST,
            format!("/v1/conversations/{theirs}/assign"),
            Some(json!({ "agent": other })),
            vec!["admin", "manager"],
        ),
        (
            Method::POST,
            format!("/v1/conversations/{theirs}/transfer"),
            Some(json!({ "agent": other })),
            vec!["admin", "manager"],
        ),
        (
            Method::POST,
            format!("/v1/conversations/{theirs}/claim"),
            Some(json!({ "agent": other })),
            vec!["admin", "manager"],
        ),
        (Method::GET, "/v1/events".into(), None, vec!["admin", "manager"]),
        (Method::GET, "/v1/contacts".into(), None, vec!["admin", "manager", "integration"]),
        (Method::GET, format!("/v1/contacts/{contact}"), None, all.to_vec()),
        (
            Method::PATCH,
            format!("/v1/contacts/{contact}"),
            Some(json!({ "tags": ["x"] })),
            vec!["admin", "manager", "integration"],
        ),
        (
            Method::POST,
            format!("/v1/conversations/{mine}/messages"),
            Some(json!({ "text": "hello" })),
            all.to_vec(),
        ),
        (Method::GET, format!("/v1/conversations/{mine}/messages"), None, all.to_vec()),
        (Method::GET, "/v1/workflow-templates".into(), None, vec!["admin", "manager"]),
        (
            Method::POST,
            "/v1/workflows".into(),
            Some(json!({ "template": "least_open_online_only", "team": team })),
            vec!["admin", "manager"],
        ),
        (Method::GET, "/v1/workflows".into(), None, vec!["admin", "manager"]),
        (Method::GET, format!("/v1/workflows/{wf}"), None, vec!["admin", "manager"]),
        (Method::POST, format!("/v1/workflows/{wf}/publish"), None, vec!["admin", "manager"]),
        (Method::GET, format!("/v1/workflows/{wf}/versions"), None, vec!["admin", "manager"]),
        (Method::POST, format!("/v1/workflows/{wf}/check"), None, vec!["admin", "manager"]),
        (Method::GET, format!("/v1/workflows/{wf}/diagram.svg"), None, vec!["admin", "manager"]),
        (Method::GET, "/v1/reports".into(), None, vec!["admin", "manager"]),
        (Method::GET, "/v1/reports/agents.csv".into(), None, vec!["admin", "manager"]),
        (Method::POST, format!("/v1/workflows/{wf}/dry-run"), Some(json!({})), vec!["admin", "manager"]),
        (
            Method::POST,
            "/v1/calendars".into(),
            Some(json!({ "name": "C-{n}", "time_zone": "UTC" })),
            vec!["admin", "manager"],
        ),
        (Method::GET, "/v1/calendars".into(), None, vec!["admin", "manager"]),
        (Method::POST, "/v1/channels".into(), Some(json!({ "kind": "sms", "name": "S-{n}" })), vec!["admin"]),
        (Method::GET, "/v1/channels".into(), None, vec!["admin", "manager"]),
        (Method::GET, format!("/v1/channels/{sms}"), None, vec!["admin", "manager", "integration"]),
        (Method::PATCH, format!("/v1/channels/{sms}"), Some(json!({ "name": "SMS {n}" })), vec!["admin"]),
        (
            Method::POST,
            format!("/v1/channels/{sms}/inbound"),
            Some(
                json!({ "contact": { "external_id": "i-{n}" }, "message": { "id": "m-{n}", "text": "hi" } }),
            ),
            vec!["admin", "integration"],
        ),
        (
            Method::POST,
            "/v1/logins".into(),
            Some(json!({ "email": "p-{n}@t.test", "password": "a long passphrase", "role": "manager" })),
            vec!["admin"],
        ),
    ];
    let mut n = 0;
    for (method, path, body, allowed) in &routes {
        for (role, token) in &tokens {
            n += 1;
            let body = body.as_ref().map(|b| {
                serde_json::from_str::<Value>(&b.to_string().replace("{n}", &n.to_string())).unwrap()
            });
            let r = t.call(token, method.clone(), path, body).await;
            if allowed.contains(role) {
                assert!(
                    r.status.is_success(),
                    "{role} {method} {path}: expected success, got {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{role} {method} {path}: {}", r.body);
                assert_eq!(r.body["error"]["code"], "forbidden");
            }
        }
        // No token, a made-up token: 401. A foreign workspace's admin: our ids do not exist.
        let r = t.raw(None, method.clone(), path, body.as_ref().map(|b| b.to_string())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
        let r = t.call("usher_not_a_real_token", method.clone(), path, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "bogus {method} {path}");
        if path.contains(&format!("/{team}"))
            || path.contains(&format!("/{me}"))
            || path.contains(&format!("/{theirs}"))
            || path.contains(&format!("/workflows/{wf}"))
        {
            let body = body
                .as_ref()
                .map(|b| serde_json::from_str::<Value>(&b.to_string().replace("{n}", "x")).unwrap());
            let r = t.call(&foreign, method.clone(), path, body).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "foreign {method} {path}: {}", r.body);
        }
    }
    // Agents act for themselves only, and agent actions on others' conversations are refused.
    let agent_token = &tokens[2].1;
    let r = t.call(agent_token, Method::POST, &format!("/v1/conversations/{theirs}/close"), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = t.call(agent_token, Method::POST, &format!("/v1/conversations/{mine}/close"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Agent lists show only the agent's own conversations.
    let list = t.call(agent_token, Method::GET, "/v1/conversations", None).await;
    assert!(list.body["conversations"].as_array().unwrap().iter().all(|c| c["assignee"] == me));
    // The pick list shows unassigned conversations of the agent's own teams only.
    let elsewhere = t.team("Elsewhere", "round_robin").await;
    for (tm, who) in [(team, "pick-here"), (elsewhere, "pick-elsewhere")] {
        let body = json!({ "channel": "sms", "team": tm, "contact": { "external_id": who }, "when_nobody": "leave_unassigned", "only_online": true, "cap": 0 });
        let c = t.ok(Method::POST, "/v1/conversations", body).await;
        assert_eq!(c["status"], "unassigned", "{c}");
    }
    let picks = t.call(agent_token, Method::GET, "/v1/conversations?status=unassigned", None).await;
    let picks: Vec<i64> = picks.body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["team"].as_i64().unwrap_or(0))
        .collect();
    // Teamless conversations (team 0 here) are everyone's to pick; another team's are not.
    assert!(picks.contains(&team) && !picks.contains(&elsewhere), "{picks:?}");
    assert!(picks.iter().all(|t| *t == team || *t == 0), "{picks:?}");
}

async fn a_token_over_its_rate_gets_429_with_retry_after(t: TestApp) {
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let r = t.call(&t.admin, Method::GET, "/v1/workspace", None).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.body["error"]["code"], "rate_limited");
            retry_after = r.headers.get("retry-after").map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
}

async fn operations_endpoints_and_openapi(t: TestApp) {
    let team = t.team("Support", "weighted").await;
    t.agent("Ana", &[team], "online", 5).await;
    t.open(team, "x").await;
    let health = t.raw(None, Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = t.raw(None, Method::GET, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    let metrics = t.raw(None, Method::GET, "/metrics", None).await;
    let text = metrics.body.as_str().unwrap().to_string();
    for needle in [
        "usher_decisions_total{strategy=\"weighted\",outcome=\"assigned\"}",
        "usher_decision_seconds_bucket",
        "usher_request_seconds_count",
        &format!("usher_queue_length{{workspace=\"{}\",team=\"{team}\"}} 0", t.ws),
        "usher_queue_oldest_wait_seconds",
        "usher_conversations{status=\"assigned\"} 1",
        "usher_agents{status=\"online\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    assert!(metrics.headers.get("x-request-id").is_some());
    let doc = t.raw(None, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    let schema = t.raw(None, Method::GET, "/v1/workflow-schema.json", None).await;
    assert_eq!(schema.status, StatusCode::OK);
    assert_eq!(schema.body["title"], "Usher workflow");
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/v1/teams",
        "/v1/teams/{id}",
        "/v1/teams/{id}/queue",
        "/v1/agents",
        "/v1/agents/{id}",
        "/v1/agents/{id}/status",
        "/v1/conversations",
        "/v1/conversations/{id}",
        "/v1/conversations/{id}/claim",
        "/v1/conversations/{id}/assign",
        "/v1/conversations/{id}/transfer",
        "/v1/conversations/{id}/unassign",
        "/v1/conversations/{id}/close",
        "/v1/conversations/{id}/reopen",
        "/v1/conversations/{id}/trace",
        "/v1/events",
        "/v1/tokens",
        "/v1/workspace",
        "/v1/contacts",
        "/v1/contacts/{id}",
        "/v1/workflow-templates",
        "/v1/workflows",
        "/v1/workflows/{id}",
        "/v1/workflows/{id}/publish",
        "/v1/workflows/{id}/rollback",
        "/v1/workflows/{id}/enable",
        "/v1/workflows/{id}/disable",
        "/v1/workflows/{id}/versions",
        "/v1/workflows/{id}/dry-run",
        "/v1/calendars",
        "/v1/calendars/{id}",
        "/v1/conversations/{id}/messages",
        "/v1/conversations/{id}/runs",
        "/v1/runs/{id}",
        "/v1/workflow-schema.json",
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/resume",
        "/v1/webhooks/{id}/deliveries",
        "/v1/stream",
        "/v1/channels",
        "/v1/channels/{id}",
        "/v1/channels/{id}/inbound",
        "/v1/webchat/{key}/visitors",
        "/v1/webchat/{key}/messages",
        "/v1/webchat/{key}/stream",
        "/v1/logins",
        "/v1/session",
        "/v1/reports",
        "/v1/reports/{file}",
        "/v1/workflows/{id}/check",
        "/v1/workflows/{id}/diagram.svg",
        "/v1/teams/{id}/members",
    ] {
        assert!(paths.contains_key(p), "OpenAPI lacks {p}");
    }
}

/// An agent token reads its own conversations and the unheld ones of its teams (its pick
/// list), not those of a team it is not in, nor another agent's.
async fn an_agent_sees_its_own_and_its_teams_unheld_conversations_only(t: TestApp) {
    let sales = t.team("Sales", "round_robin").await;
    let support = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[sales], "offline", 2).await;
    let bob = t.agent("Bob", &[support], "online", 2).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let open = |team: i64, who: &'static str| json!({ "channel": "web_chat", "team": team, "contact": { "external_id": who }, "when_nobody": "leave_unassigned" });
    let in_sales = t.ok(Method::POST, "/v1/conversations", open(sales, "s")).await["id"].as_i64().unwrap();
    let in_support = t.ok(Method::POST, "/v1/conversations", open(support, "p")).await;
    assert_eq!(in_support["assignee"], bob);
    let in_support = in_support["id"].as_i64().unwrap();
    t.ok(Method::PUT, &format!("/v1/agents/{bob}/status"), json!({ "status": "offline" })).await;
    let unheld_support =
        t.ok(Method::POST, "/v1/conversations", open(support, "q")).await["id"].as_i64().unwrap();
    let read = |id: i64| format!("/v1/conversations/{id}");
    assert_eq!(t.call(&ana_token, Method::GET, &read(in_sales), None).await.status, StatusCode::OK);
    for (id, why) in [(in_support, "held by Bob"), (unheld_support, "unheld, in a team Ana is not in")] {
        let r = t.call(&ana_token, Method::GET, &read(id), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "forbidden", "{why}");
        let r = t.call(&ana_token, Method::GET, &format!("/v1/conversations/{id}/trace"), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}: trace");
    }
}

/// A manager picks a template, publishes it, tries it on a contact, breaks and fixes the
/// draft, publishes again, rolls back, disables and enables; every refusal names its place.
async fn workflows_are_drafted_published_versioned_and_tried(t: TestApp) {
    let support = t.team("Support", "least_open").await;
    let ana = t.agent("Ana", &[support], "online", 5).await;
    t.agent("Ravi", &[support], "offline", 5).await;
    let templates = t.get("/v1/workflow-templates").await;
    assert_eq!(templates["templates"].as_array().unwrap().len(), 11);

    let w = t
        .ok(Method::POST, "/v1/workflows", json!({ "template": "least_open_online_only", "team": support }))
        .await;
    let id = w["id"].as_i64().unwrap();
    assert_eq!((w["enabled"].as_bool(), w["published_version"].as_i64()), (Some(false), None));
    assert_eq!(w["draft"]["steps"]["assign"]["team"], support);
    // Checked without publishing; drawn as SVG, a box per step and an arrow per way on.
    let check = t.ok(Method::POST, &format!("/v1/workflows/{id}/check"), json!({})).await;
    assert_eq!(check["problems"], json!([]));
    let svg = t
        .http
        .get(format!("{}/v1/workflows/{id}/diagram.svg", t.base))
        .bearer_auth(&t.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.unwrap();
    assert_eq!(svg.matches("<g data-step=").count(), 2);
    assert!(svg.contains("data-edge=\"welcome-assign\""), "{svg}");
    let none =
        t.call(&t.admin, Method::GET, &format!("/v1/workflows/{id}/diagram.svg?version=9"), None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let published = t.ok(Method::POST, &format!("/v1/workflows/{id}/publish"), json!({})).await;
    assert_eq!(
        (published["enabled"].as_bool(), published["published_version"].as_i64()),
        (Some(true), Some(1))
    );

    // The dry run: the greeting with the contact's name, then Ana by least open contacts
    // (Ravi is offline), and nothing changed.
    let before = t.get("/v1/events?limit=1000").await["events"].as_array().unwrap().len();
    let dry = t
        .ok(
            Method::POST,
            &format!("/v1/workflows/{id}/dry-run"),
            json!({ "contact": { "name": "Mia" }, "message": "hello" }),
        )
        .await;
    assert_eq!(dry["effects"][0]["effect"], "send_message");
    assert_eq!(
        dry["effects"][0]["text"],
        "Hi Mia, thanks for your message! Someone will be with you shortly."
    );
    assert_eq!(dry["effects"][1]["effect"], "assign");
    assert_eq!(dry["decisions"][0]["outcome"], "assigned");
    assert_eq!(dry["decisions"][0]["agent"], ana);
    let why = dry["decisions"][0]["explanation"].as_str().unwrap();
    assert!(why.contains("least open") && why.contains("Ravi offline"), "{why}");
    assert_eq!(dry["run"]["status"]["state"], "finished");
    assert!(!dry["trace"].as_array().unwrap().is_empty());
    assert_eq!(
        t.get("/v1/events?limit=1000").await["events"].as_array().unwrap().len(),
        before,
        "a dry run changes nothing"
    );
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());

    // A draft naming a team that does not exist is kept, but not published.
    let mut broken = w["draft"].clone();
    broken["steps"]["assign"]["team"] = json!(987_654);
    let saved = t.call(&t.admin, Method::PUT, &format!("/v1/workflows/{id}"), Some(broken)).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let refused = t.call(&t.admin, Method::POST, &format!("/v1/workflows/{id}/publish"), None).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"]["code"], "invalid_workflow");
    assert_eq!(refused.body["error"]["problems"][0]["path"], "steps.assign.team");
    assert_eq!(refused.body["error"]["problems"][0]["code"], "unknown_team");
    assert_eq!(t.get(&format!("/v1/workflows/{id}")).await["published_version"], 1, "nothing was published");
    let check = t.ok(Method::POST, &format!("/v1/workflows/{id}/check"), json!({})).await;
    assert_eq!(check["problems"], refused.body["error"]["problems"], "the check finds what publishing would");

    // Fixed and published again; then rolled back to the first version.
    let mut fixed = w["draft"].clone();
    fixed["steps"]["welcome"]["text"] = json!("Welcome {{contact.name}}!");
    t.ok(Method::PUT, &format!("/v1/workflows/{id}"), fixed).await;
    assert_eq!(
        t.ok(Method::POST, &format!("/v1/workflows/{id}/publish"), json!({})).await["published_version"],
        2
    );
    let versions = t.get(&format!("/v1/workflows/{id}/versions")).await;
    let texts: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["document"]["steps"]["welcome"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "Hi {{contact.name}}, thanks for your message! Someone will be with you shortly.",
            "Welcome {{contact.name}}!"
        ]
    );
    let back = t.ok(Method::POST, &format!("/v1/workflows/{id}/rollback"), json!({ "version": 1 })).await;
    assert_eq!(back["published_version"], 1);
    let dry = t
        .ok(
            Method::POST,
            &format!("/v1/workflows/{id}/dry-run"),
            json!({ "version": 2, "contact": { "name": "Mia" } }),
        )
        .await;
    assert_eq!(dry["effects"][0]["text"], "Welcome Mia!", "a version can be tried too");
    let missing = t
        .call(&t.admin, Method::POST, &format!("/v1/workflows/{id}/rollback"), Some(json!({ "version": 9 })))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(t.ok(Method::POST, &format!("/v1/workflows/{id}/disable"), json!({})).await["enabled"], false);
    assert_eq!(t.ok(Method::POST, &format!("/v1/workflows/{id}/enable"), json!({})).await["enabled"], true);

    // Malformed documents and templates are refused with their place; nothing is created.
    let count = t.get("/v1/workflows").await["workflows"].as_array().unwrap().len();
    let mut bad = w["draft"].clone();
    bad["steps"]["welcome"]["txt"] = json!("typo");
    let r = t.call(&t.admin, Method::POST, "/v1/workflows", Some(bad)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_workflow"))
    );
    assert_eq!(r.body["error"]["problems"][0]["path"], "steps.welcome", "{}", r.body);
    let r = t
        .call(
            &t.admin,
            Method::POST,
            "/v1/workflows",
            Some(json!({ "template": "business_hours_away", "team": support })),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "missing_parameter", "{}", r.body);
    let r = t.call(&t.admin, Method::POST, "/v1/workflows", Some(json!({ "template": "teleport" }))).await;
    assert_eq!(r.body["error"]["code"], "unknown_template");
    let r = t.raw(Some(&t.admin), Method::POST, "/v1/workflows", Some("{ not json".into())).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
    let r = t.call(&t.admin, Method::POST, "/v1/workflows/999999/publish", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(t.get("/v1/workflows").await["workflows"].as_array().unwrap().len(), count);

    // Publishes at once number their versions in turn.
    let path = format!("/v1/workflows/{id}/publish");
    let (a, b, c) = tokio::join!(
        t.call(&t.admin, Method::POST, &path, None),
        t.call(&t.admin, Method::POST, &path, None),
        t.call(&t.admin, Method::POST, &path, None)
    );
    let mut got: Vec<i64> = [a, b, c]
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["published_version"].as_i64().unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![3, 4, 5]);
}

/// Calendars: a bad schedule is refused with each mistake at its place; a good one says
/// whether it is open now and when it opens next.
async fn calendars_are_checked_and_say_when_they_open(t: TestApp) {
    let bad = json!({ "name": "Office", "time_zone": "Europe/Atlantis", "weekly": { "mon": [["09:00", "08:00"]] } });
    let r = t.call(&t.admin, Method::POST, "/v1/calendars", Some(bad)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_calendar"))
    );
    let places: Vec<&str> =
        r.body["error"]["problems"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(places, vec!["time_zone", "weekly.mon[0]"]);
    let every_day: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), json!([["00:00", "24:00"]])))
        .collect();
    let c = t
        .ok(
            Method::POST,
            "/v1/calendars",
            json!({ "name": "Always", "time_zone": "Europe/Paris", "weekly": every_day }),
        )
        .await;
    assert_eq!(c["open_now"], true);
    assert!(c["next_opening"].is_string());
    let id = c["id"].as_i64().unwrap();
    let closed = t
        .ok(Method::PUT, &format!("/v1/calendars/{id}"), json!({ "name": "Never", "time_zone": "UTC" }))
        .await;
    assert_eq!((closed["open_now"].as_bool(), closed["next_opening"].is_null()), (Some(false), true));
    assert_eq!(t.get("/v1/calendars").await["calendars"].as_array().unwrap().len(), 1);
    let r = t
        .call(
            &t.admin,
            Method::POST,
            "/v1/calendars",
            Some(json!({ "name": "T", "time_zone": "UTC", "team": 424_242 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

/// The contact writes through a channel adapter (an integration token), the agent who holds
/// the conversation answers, and the first answer after the assignment is the first response;
/// nobody else may answer for them.
async fn messages_flow_both_ways_and_record_the_first_response(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[team], "online", 5).await;
    let bob = t.agent("Bob", &[team], "offline", 5).await;
    let adapter = t.token("integration", None).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let bob_token = t.token("agent", Some(bob)).await;
    let c = t.open(team, "m1").await;
    assert_eq!(c["assignee"], ana);
    assert!(c["first_response_at"].is_null());
    let id = c["id"].as_i64().unwrap();
    let path = format!("/v1/conversations/{id}/messages");
    let write = |token: &str, body: Value| {
        let token = token.to_string();
        let path = path.clone();
        let t = &t;
        async move { t.call(&token, Method::POST, &path, Some(body)).await }
    };
    let m = write(&adapter, json!({ "text": "Where is my parcel?" })).await;
    assert_eq!(m.status, StatusCode::CREATED, "{}", m.body);
    assert_eq!((m.body["direction"].as_str(), m.body["author"].as_str()), (Some("inbound"), Some("contact")));
    assert!(
        t.get(&format!("/v1/conversations/{id}")).await["first_response_at"].is_null(),
        "the contact's message is no response"
    );
    let r = write(&ana_token, json!({ "text": "Let me check." })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.body["direction"].as_str(), r.body["agent"].as_i64()), (Some("outbound"), Some(ana)));
    let first = t.get(&format!("/v1/conversations/{id}")).await["first_response_at"].clone();
    assert!(first.is_string());
    t.ok(Method::POST, &path, json!({ "text": "It ships tomorrow." })).await;
    assert_eq!(
        t.get(&format!("/v1/conversations/{id}")).await["first_response_at"],
        first,
        "only the first counts"
    );

    // Nobody answers for the holder; nobody writes as someone else.
    let r = write(&bob_token, json!({ "text": "me too" })).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_assignee")));
    let r = write(&adapter, json!({ "text": "x", "author": "agent" })).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = write(&ana_token, json!({ "text": "x", "author": "contact" })).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = write(&t.admin, json!({ "text": "x", "agent": bob })).await;
    assert_eq!(r.body["error"]["code"], "not_assignee");
    for (body, code) in [
        (json!({ "text": "" }), "invalid_field"),
        (json!({ "text": "a\u{0}b" }), "invalid_field"),
        (json!({ "text": "x".repeat(20_000) }), "too_long"),
        (json!({ "txt": "typo" }), "invalid_field"),
    ] {
        let r = write(&adapter, body).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{}",
            r.body
        );
    }
    let r = t
        .call(&adapter, Method::POST, "/v1/conversations/999999/messages", Some(json!({ "text": "x" })))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // In order, paged; Bob may not read Ana's conversation; a closed one takes no messages.
    let all = t.get(&path).await;
    let texts: Vec<&str> =
        all["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    // The opening message comes first: it is the history's start.
    assert_eq!(texts, vec!["hi", "Where is my parcel?", "Let me check.", "It ships tomorrow."]);
    let first_id = all["messages"][1]["id"].as_i64().unwrap();
    let page = t.get(&format!("{path}?after={first_id}&limit=1")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["text"], "Let me check.");
    assert_eq!(t.call(&bob_token, Method::GET, &path, None).await.status, StatusCode::FORBIDDEN);
    t.ok(Method::POST, &format!("/v1/conversations/{id}/close"), json!({})).await;
    let r = write(&adapter, json!({ "text": "hello?" })).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conversation_closed"))
    );
    let kinds: Vec<String> = t.get("/v1/events?limit=1000").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .filter(|k| k.starts_with("message."))
        .collect();
    assert_eq!(kinds, vec!["message.received", "message.sent", "message.sent"]);
}

/// The seeds' airline menu, end to end: published, it replaces the default assignment; the
/// contact is asked, answers through the channel adapter, the answer is saved and the
/// conversation goes to the Refunds team; the run's history says every step. A request that
/// names its own routing is routed as it asks.
async fn a_published_menu_workflow_asks_then_routes_the_answer_to_its_team(t: TestApp) {
    let general = t.team("General", "round_robin").await;
    let refunds = t.team("Refunds", "round_robin").await;
    t.agent("Gil", &[general], "online", 5).await;
    let rita = t.agent("Rita", &[refunds], "online", 5).await;
    let adapter = t.token("integration", None).await;
    let w = t
        .ok(
            Method::POST,
            "/v1/workflows",
            json!({ "template": "menu_then_team", "team": general, "second_team": refunds }),
        )
        .await;
    t.ok(Method::POST, &format!("/v1/workflows/{}/publish", w["id"]), json!({})).await;

    let c = t
        .ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "whatsapp", "team": general, "contact": { "external_id": "+331", "name": "Mia" }, "message": "hello" }),
        )
        .await;
    let id = c["id"].as_i64().unwrap();
    assert_eq!(c["status"], "unassigned", "waiting for the answer, not assigned by default: {c}");
    let messages = t.get(&format!("/v1/conversations/{id}/messages")).await;
    assert_eq!(
        (messages["messages"][0]["author"].as_str(), messages["messages"][0]["text"].as_str()),
        (Some("contact"), Some("hello"))
    );
    assert_eq!(messages["messages"][1]["author"], "workflow");
    assert_eq!(messages["messages"][1]["text"], "Hi Mia! What can we help you with?");
    let runs = t.get(&format!("/v1/conversations/{id}/runs")).await;
    assert_eq!(runs["runs"][0]["status"], "active");
    assert_eq!(runs["runs"][0]["state"]["status"]["step"], "ask");

    let r = t
        .call(
            &adapter,
            Method::POST,
            &format!("/v1/conversations/{id}/messages"),
            Some(json!({ "text": "refund" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let c = t.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(
        (c["status"].as_str(), c["assignee"].as_i64(), c["team"].as_i64()),
        (Some("assigned"), Some(rita), Some(refunds)),
        "{c}"
    );
    assert_eq!(c["contact"]["attributes"]["need"], "Refund");
    let run_id = runs["runs"][0]["id"].as_i64().unwrap();
    let run = t.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "finished", "{run}");
    assert!(run["pending"].as_array().unwrap().is_empty());
    let inputs: Vec<&str> =
        run["steps"].as_array().unwrap().iter().map(|s| s["input"]["input"].as_str().unwrap()).collect();
    assert_eq!(inputs, vec!["start", "message", "assigned"]);
    let trace = t.get(&format!("/v1/conversations/{id}/trace")).await;
    assert!(trace["decisions"][0]["explanation"].as_str().unwrap().contains("Rita"), "{trace}");
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());

    // Explicit routing in the request wins over the workflow.
    let direct = t
        .ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "whatsapp", "team": general, "contact": { "external_id": "+332" }, "when_nobody": "queue" }),
        )
        .await;
    assert_eq!(direct["status"], "assigned", "{direct}");
    assert!(t.get(&format!("/v1/conversations/{}/runs", direct["id"])).await["runs"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The other triggers: a close starts the "unassign when a conversation closes" template, a
/// contact's message with a keyword starts its workflow (one that answers no question), and a
/// manager starts a manual workflow for one conversation.
async fn closing_a_message_and_a_person_start_their_workflows(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    t.agent("Ana", &[team], "online", 5).await;
    let adapter = t.token("integration", None).await;
    let publish = |doc: Value| async {
        let w = t.ok(Method::POST, "/v1/workflows", doc).await;
        t.ok(Method::POST, &format!("/v1/workflows/{}/publish", w["id"]), json!({})).await;
        w["id"].as_i64().unwrap()
    };
    publish(json!({ "template": "unassign_on_close" })).await;
    publish(json!({
        "name": "Refund keyword", "trigger": { "kind": "message_received", "keywords": ["refund"] }, "start": "tag",
        "steps": { "tag": { "kind": "update_contact", "add_tags": ["refund_request"], "priority": "high" } }
    }))
    .await;
    let manual = publish(json!({
        "name": "Escalate", "trigger": { "kind": "manual" }, "start": "note",
        "steps": { "note": { "kind": "note", "text": "escalated for {{contact.name}}" } }
    }))
    .await;

    // No "conversation opened" workflow: the default assignment runs.
    let c = t
        .ok(
            Method::POST,
            "/v1/conversations",
            json!({ "channel": "sms", "team": team, "contact": { "external_id": "k1", "name": "Kim" } }),
        )
        .await;
    assert_eq!(c["status"], "assigned");
    let id = c["id"].as_i64().unwrap();

    let path = format!("/v1/conversations/{id}/messages");
    t.call(&adapter, Method::POST, &path, Some(json!({ "text": "hello" }))).await;
    assert_eq!(
        t.get(&format!("/v1/conversations/{id}/runs")).await["runs"].as_array().unwrap().len(),
        0,
        "no keyword"
    );
    t.call(&adapter, Method::POST, &path, Some(json!({ "text": "I want a REFUND please" }))).await;
    let c = t.get(&format!("/v1/conversations/{id}")).await;
    assert_eq!(c["contact"]["tags"], json!(["refund_request"]));
    assert_eq!(c["priority"], "high");

    let run =
        t.ok(Method::POST, &format!("/v1/conversations/{id}/runs"), json!({ "workflow": manual })).await;
    assert_eq!(run["status"], "finished");
    let notes: Vec<Value> = t.get(&path).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "internal")
        .cloned()
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["text"], "escalated for Kim");
    let r = t
        .call(&t.admin, Method::POST, &format!("/v1/conversations/{id}/runs"), Some(json!({ "workflow": 1 })))
        .await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_manual")));

    // A tag changed by hand starts the contact-changed workflow that watches it.
    publish(json!({
        "name": "VIP flagged", "trigger": { "kind": "contact_changed", "tags": ["vip"] }, "start": "note",
        "steps": { "note": { "kind": "note", "text": "now a VIP" } }
    }))
    .await;
    let contact = c["contact"]["id"].as_i64().unwrap();
    t.ok(Method::PATCH, &format!("/v1/contacts/{contact}"), json!({ "attributes": { "plan": "gold" } }))
        .await;
    t.ok(Method::PATCH, &format!("/v1/contacts/{contact}"), json!({ "tags": ["refund_request", "vip"] }))
        .await;
    let notes = t.get(&path).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == "now a VIP")
        .count();
    assert_eq!(notes, 1, "started once: by the vip tag, not by the plan field");
    t.ok(Method::POST, &format!("/v1/conversations/{id}/close"), json!({})).await;
    let c = t.get(&format!("/v1/conversations/{id}")).await;
    assert!(c["contact"]["tags"].as_array().unwrap().contains(&json!("served")), "{c}");
    let runs = t.get(&format!("/v1/conversations/{id}/runs")).await;
    let statuses: Vec<&str> =
        runs["runs"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["finished", "finished", "finished", "finished"]);
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());
}

/// Each ready-made workflow, published in turn, on a real opening: the messages the contact
/// gets, the team and agent chosen, and the queue.
async fn every_template_does_what_it_says_through_the_api(t: TestApp) {
    let support = t.team("Support", "round_robin").await;
    let sales = t.team("Sales", "weighted").await;
    let french = t.team("French", "round_robin").await;
    let full = t.team("Full", "round_robin").await;
    let ana = t.agent("Ana", &[support], "online", 50).await;
    let bob = t.agent("Bob", &[support], "online", 50).await;
    let dmitri = t.agent("Dmitri", &[sales], "online", 50).await;
    let vera = t.agent("Vera", &[], "online", 50).await;
    let fr = t.ok(
        Method::POST,
        "/v1/agents",
        json!({ "name": "Flo", "email": "flo@x.test", "teams": [french], "max_open": 50, "languages": ["fr"], "status": "online" }),
    )
    .await["id"]
    .as_i64()
    .unwrap();
    let busy = t.agent("Zed", &[full], "online", 1).await;
    let never = t.ok(Method::POST, "/v1/calendars", json!({ "name": "Closed", "time_zone": "UTC" })).await
        ["id"]
        .clone();
    // Zed is at capacity: the Full team queues.
    let z = t.ok(Method::POST, "/v1/conversations", json!({ "channel": "sms", "team": full, "contact": { "external_id": "z" }, "when_nobody": "queue" })).await;
    assert_eq!(z["assignee"], busy);

    let mut n = 0;
    let mut run_template = |params: Value, contact: Value, team: i64| {
        n += 1;
        let external = format!("contact-{n}");
        let t = &t;
        async move {
            let w = t.ok(Method::POST, "/v1/workflows", params).await;
            let id = w["id"].as_i64().unwrap();
            t.ok(Method::POST, &format!("/v1/workflows/{id}/publish"), json!({})).await;
            let mut contact = contact;
            if contact.get("external_id").is_none() {
                contact["external_id"] = json!(external);
            }
            let c = t
                .ok(
                    Method::POST,
                    "/v1/conversations",
                    json!({ "channel": "web_chat", "team": team, "contact": contact, "message": "hi" }),
                )
                .await;
            let cid = c["id"].as_i64().unwrap();
            let texts: Vec<String> = t.get(&format!("/v1/conversations/{cid}/messages")).await["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["author"] == "workflow")
                .map(|m| m["text"].as_str().unwrap().to_string())
                .collect();
            let runs = t.get(&format!("/v1/conversations/{cid}/runs")).await["runs"].clone();
            t.ok(Method::POST, &format!("/v1/workflows/{id}/disable"), json!({})).await;
            (t.get(&format!("/v1/conversations/{cid}")).await, texts, runs)
        }
    };
    let greeting = "Hi Mia, thanks for your message! Someone will be with you shortly.";
    let mia = json!({ "name": "Mia" });

    let (c, texts, _) =
        run_template(json!({ "template": "round_robin_online_only", "team": support }), mia.clone(), support)
            .await;
    assert_eq!(texts, vec![greeting]);
    assert!(c["assignee"] == ana || c["assignee"] == bob, "{c}");
    let (c, texts, _) =
        run_template(json!({ "template": "least_open_online_only", "team": support }), mia.clone(), support)
            .await;
    assert_eq!((texts, c["status"].as_str()), (vec![greeting.to_string()], Some("assigned")));
    let (c, texts, _) =
        run_template(json!({ "template": "sales_lead_rotation", "team": sales }), mia.clone(), sales).await;
    assert_eq!(
        (c["assignee"].as_i64(), texts),
        (Some(dmitri), vec!["Thanks! Dmitri from Sales will get back to you.".to_string()])
    );
    let (c, _, _) = run_template(
        json!({ "template": "vip_dedicated_agent", "team": support, "agent": vera }),
        json!({ "name": "Mia", "tags": ["vip"] }),
        support,
    )
    .await;
    assert_eq!(c["assignee"], vera, "the VIP goes to their dedicated agent");
    // Returning: the same contact as the VIP conversation, whose agent was Vera... who is not
    // in Support, so the previous agent cannot take it and the team does; a contact whose
    // previous agent is in the team goes back to them.
    let earlier = t.ok(Method::POST, "/v1/conversations", json!({ "channel": "web_chat", "team": support, "contact": { "external_id": "back" }, "when_nobody": "queue" })).await;
    let previous = earlier["assignee"].clone();
    let (c, _, _) = run_template(
        json!({ "template": "returning_previous_agent", "team": support }),
        json!({ "external_id": "back" }),
        support,
    )
    .await;
    assert_eq!(c["assignee"], previous, "back to the previous agent");
    let (c, texts, runs) = run_template(
        json!({ "template": "business_hours_away", "team": support, "calendar": never }),
        mia.clone(),
        support,
    )
    .await;
    assert_eq!(
        texts,
        vec!["Thanks for your message! We are closed now and open later; we will answer then."]
    );
    assert_eq!(c["status"], "unassigned", "it waits for the opening instead of going to nobody");
    assert!(runs[0]["wake_at"].is_string(), "{runs}");
    let (c, texts, _) = run_template(
        json!({ "template": "overcapacity_message", "team": full, "second_team": support }),
        mia.clone(),
        full,
    )
    .await;
    assert_eq!(c["status"], "queued");
    assert_eq!(c["queue"]["position"], 1);
    assert_eq!(texts.len(), 1);
    assert!(texts[0].starts_with("All our agents are busy. You are number 1 in line"), "{texts:?}");
    let (c, texts, runs) =
        run_template(json!({ "template": "assigned_agent_message", "team": support }), mia.clone(), support)
            .await;
    let name = if c["assignee"] == ana { "Ana" } else { "Bob" };
    assert_eq!(
        texts,
        vec![format!("{name} is taking care of your conversation and usually replies within a few minutes.")]
    );
    assert_eq!(runs[0]["status"], "active", "watching for a reply");
    let (c, _, _) = run_template(
        json!({ "template": "route_by_language", "team": support, "second_team": french }),
        json!({ "language": "fr" }),
        support,
    )
    .await;
    assert_eq!((c["assignee"].as_i64(), c["team"].as_i64()), (Some(fr), Some(french)));
    let (c, texts, _) = run_template(
        json!({ "template": "menu_then_team", "team": support, "second_team": french }),
        json!({}),
        support,
    )
    .await;
    assert_eq!(
        (c["status"].as_str(), texts),
        (Some("unassigned"), vec!["Hi there! What can we help you with?".to_string()])
    );
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());
}

/// What a webhook receiver in a test saw: (headers, body) per request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(std::collections::BTreeMap<String, String>, String)>>>;

/// A real HTTP receiver on a free port that answers 500 to its first `fail` requests, then 200.
async fn receiver(fail: usize) -> (String, Seen) {
    use axum::http::HeaderMap;
    let seen: Seen = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut seen = state.lock().unwrap();
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                seen.push((h, body));
                if seen.len() <= fail {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The documented scheme, computed here independently: HMAC-SHA256 of "t.body".
fn verify(secret: &str, header: &str, body: &str) -> bool {
    use hmac::Mac;
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

/// A subscription to assignments: the receiver fails once, the delivery is retried and
/// arrives signed as documented, with a delivery id for de-duplication; the attempts show.
async fn webhooks_arrive_signed_after_a_failure_and_report_their_attempts(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    t.agent("Ana", &[team], "online", 5).await;
    let (url, seen) = receiver(1).await;
    let w =
        t.ok(Method::POST, "/v1/webhooks", json!({ "url": url, "events": ["conversation.assigned"] })).await;
    let secret = w["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = w["id"].as_i64().unwrap();
    assert!(t.get(&format!("/v1/webhooks/{id}")).await.get("secret").is_none(), "the secret is shown once");
    let bad = t.call(&t.admin, Method::POST, "/v1/webhooks", Some(json!({ "url": "ftp://x" }))).await;
    assert_eq!(bad.body["error"]["code"], "invalid_url");
    let tls = t
        .call(&t.admin, Method::POST, "/v1/webhooks", Some(json!({ "url": "https://example.test/h" })))
        .await;
    assert_eq!(
        (tls.status, tls.body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("https_not_supported"))
    );
    let manager = t.token("manager", None).await;
    assert_eq!(t.call(&manager, Method::GET, "/v1/webhooks", None).await.status, StatusCode::FORBIDDEN);

    let c = t.open(team, "w1").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "not delivered: {:?}", seen.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failure, one success, nothing else (only assignments were asked for)");
    for (headers, body) in &seen {
        assert!(verify(&secret, &headers["usher-signature"], body), "signature of {body}");
        assert_eq!(headers["usher-event"], "conversation.assigned");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"]["conversation"], c["id"]);
        assert_eq!(v["event"]["kind"], "conversation.assigned");
        assert!(v["event"]["data"]["explanation"].is_string());
        assert_eq!(v["id"].to_string(), headers["usher-delivery"], "the same delivery id on the retry");
    }
    assert_eq!(seen[0].0["usher-delivery"], seen[1].0["usher-delivery"]);
    let deliveries = t.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    let d = &deliveries["deliveries"][0];
    assert_eq!(
        (d["status"].as_str(), d["attempts"].as_i64(), d["last_status"].as_i64()),
        (Some("delivered"), Some(2), Some(200)),
        "{d}"
    );
}

/// Events a test's SSE client received, as the JSON of their `data`.
type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// Opens `GET /v1/stream` (resuming after `last`, if given) and collects its events in the
/// background until the returned task is aborted.
async fn listen(t: &TestApp, token: &str, last: Option<i64>) -> (Received, tokio::task::JoinHandle<()>) {
    let mut req = t.http.get(format!("{}/v1/stream", t.base)).bearer_auth(token);
    if let Some(id) = last {
        req = req.header("Last-Event-ID", id.to_string());
    }
    collect(req.send().await.unwrap())
}

/// Collects the `data` of a server-sent event stream's events in the background until the
/// returned task is aborted.
fn collect(resp: reqwest::Response) -> (Received, tokio::task::JoinHandle<()>) {
    use futures_util::StreamExt;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let got: Received = Default::default();
    let sink = got.clone();
    let task = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        sink.lock().unwrap().push(serde_json::from_str(data).unwrap());
                    }
                }
            }
        }
    });
    (got, task)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// An agent's stream shows its assignments and what happens in its conversations, not other
/// agents' work; after a dropped connection, resuming from the last event id loses nothing.
/// The workspace's stream shows everything, in order, without gaps.
async fn streams_show_each_agent_its_work_live_and_resume_without_loss(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[team], "online", 10).await;
    let bob = t.agent("Bob", &[team], "online", 10).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let adapter = t.token("integration", None).await;
    let (all, all_task) = listen(&t, &t.admin, None).await;
    let (seen, task) = listen(&t, &ana_token, None).await;
    let first = t.open(team, "s1").await;
    let second = t.open(team, "s2").await;
    let (mine, theirs) = if first["assignee"] == ana { (first, second) } else { (second, first) };
    assert_eq!(theirs["assignee"], bob);
    let mine_id = mine["id"].as_i64().unwrap();
    t.call(
        &adapter,
        Method::POST,
        &format!("/v1/conversations/{mine_id}/messages"),
        Some(json!({ "text": "hi Ana" })),
    )
    .await;
    until("Ana's assignment and message", || {
        let s = seen.lock().unwrap();
        s.iter().any(|e| e["kind"] == "conversation.assigned" && e["conversation"] == mine_id)
            && s.iter().any(|e| e["kind"] == "message.received" && e["conversation"] == mine_id)
    })
    .await;
    assert!(
        !seen.lock().unwrap().iter().any(|e| e["conversation"] == theirs["id"]),
        "Bob's work is not on Ana's stream: {:?}",
        seen.lock().unwrap()
    );
    // The connection drops; work arrives meanwhile; resuming from the last id loses nothing.
    task.abort();
    let last = seen.lock().unwrap().last().unwrap()["seq"].as_i64().unwrap();
    t.ok(Method::PUT, &format!("/v1/agents/{bob}/status"), json!({ "status": "offline" })).await;
    let missed = t.open(team, "s3").await;
    assert_eq!(missed["assignee"], ana);
    let (resumed, task) = listen(&t, &ana_token, Some(last)).await;
    until("the missed assignment", || {
        resumed
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "conversation.assigned" && e["conversation"] == missed["id"])
    })
    .await;
    assert!(resumed.lock().unwrap().iter().all(|e| e["seq"].as_i64().unwrap() > last), "nothing seen twice");
    task.abort();
    // The workspace stream: every event, in order, gap-free.
    let newest = t.get("/v1/events?limit=1000").await["events"].as_array().unwrap().last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    until("the workspace stream to catch up", || {
        all.lock().unwrap().last().is_some_and(|e| e["seq"].as_i64() == Some(newest))
    })
    .await;
    let seqs: Vec<i64> = all.lock().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    all_task.abort();
    let r = t.call(&adapter, Method::GET, "/v1/stream", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Waits until `seen` holds `n` requests (a webhook receiver's), at most `secs` seconds.
async fn received(
    seen: &Seen,
    n: usize,
    secs: u64,
) -> Vec<(std::collections::BTreeMap<String, String>, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while seen.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "only {:?}", seen.lock().unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    seen.lock().unwrap().clone()
}

/// The whole path of a message: an adapter posts it (a retry stores nothing twice), the
/// published workflow greets and assigns, the agent's stream hears of it, the agent answers,
/// and the adapter's receiver gets both answers signed with the channel's secret, after
/// failing three times. A later message joins the conversation; one after a close reopens it;
/// one after the reopen window opens a new one. Response and resolution times are recorded.
async fn an_inbound_message_flows_through_workflow_agent_stream_and_back_to_the_adapter_signed(t: TestApp) {
    let team = t.team("Support", "least_open").await;
    let ana = t.agent("Ana", &[team], "online", 5).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let adapter = t.token("integration", None).await;
    let w = t
        .ok(Method::POST, "/v1/workflows", json!({ "template": "least_open_online_only", "team": team }))
        .await;
    t.ok(Method::POST, &format!("/v1/workflows/{}/publish", w["id"]), json!({})).await;
    let (url, seen) = receiver(3).await;
    let ch = t
        .ok(
            Method::POST,
            "/v1/channels",
            json!({ "kind": "whatsapp", "name": "WhatsApp +49", "outbound_url": url }),
        )
        .await;
    let secret = ch["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("chsec_"), "{ch}");
    let channel = ch["id"].as_i64().unwrap();
    let hook = ch["webhook"].as_i64().unwrap();
    assert!(t.get(&format!("/v1/channels/{channel}")).await.get("secret").is_none(), "shown once");
    let (stream, stream_task) = listen(&t, &ana_token, None).await;

    let inbound = format!("/v1/channels/{channel}/inbound");
    let hello = json!({ "contact": { "external_id": "+4915100001", "name": "Mia" },
                        "message": { "id": "wamid.1", "text": "Hello, my parcel is late" } });
    let first = t.call(&adapter, Method::POST, &inbound, Some(hello.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(
        (first.body["outcome"].as_str(), first.body["replayed"].as_bool()),
        (Some("opened"), Some(false))
    );
    let c = &first.body["conversation"];
    let cid = c["id"].as_i64().unwrap();
    assert_eq!((c["assignee"].as_i64(), c["channel_id"].as_i64()), (Some(ana), Some(channel)), "{c}");
    // The adapter retries (it did not see the answer): nothing new.
    let before = t.fingerprint().await;
    let again = t.call(&adapter, Method::POST, &inbound, Some(hello.clone())).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(
        (again.body["replayed"].as_bool(), again.body["outcome"].as_str()),
        (Some(true), Some("opened"))
    );
    assert_eq!(
        (again.body["conversation"]["id"].as_i64(), &again.body["message"]),
        (Some(cid), &first.body["message"])
    );
    assert_eq!(t.fingerprint().await, before, "a retry changes nothing");
    until("Ana's stream to hear of the assignment", || {
        stream
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "conversation.assigned" && e["conversation"] == cid)
    })
    .await;
    let reply = t
        .call(
            &ana_token,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({ "text": "On its way!" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    until("Ana's stream to show her answer", || {
        stream
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "message.sent" && e["data"]["message"] == reply.body["id"])
    })
    .await;

    // Three failures, then both answers (the greeting, Ana's) arrive signed, with what an
    // adapter needs to hand them on.
    let got = received(&seen, 5, 30).await;
    let mut texts = std::collections::BTreeMap::new();
    for (headers, body) in &got {
        assert!(verify(&secret, &headers["usher-signature"], body), "signature of {body}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["usher-event"], "message.sent");
        assert_eq!(v["contact"]["external_id"], "+4915100001");
        assert_eq!(
            (v["channel"]["id"].as_i64(), v["channel"]["kind"].as_str()),
            (Some(channel), Some("whatsapp"))
        );
        texts.insert(headers["usher-delivery"].clone(), v["message"]["text"].as_str().unwrap().to_string());
    }
    let texts: std::collections::BTreeSet<_> = texts.into_values().collect();
    assert!(texts.contains("On its way!") && texts.iter().any(|t| t.starts_with("Hi Mia")), "{texts:?}");
    let deliveries = t.get(&format!("/v1/webhooks/{hook}/deliveries")).await;
    let delivered: Vec<_> =
        deliveries["deliveries"].as_array().unwrap().iter().filter(|d| d["status"] == "delivered").collect();
    assert_eq!(delivered.len(), 2, "{deliveries}");
    assert_eq!(delivered.iter().map(|d| d["attempts"].as_i64().unwrap()).sum::<i64>(), 5, "{deliveries}");

    // A second message joins the conversation; the first response time is recorded.
    let more = json!({ "contact": { "external_id": "+4915100001" }, "message": { "id": "wamid.2", "text": "Thanks" } });
    let r = t.call(&adapter, Method::POST, &inbound, Some(more)).await;
    assert_eq!(
        (r.body["outcome"].as_str(), r.body["conversation"]["id"].as_i64()),
        (Some("appended"), Some(cid))
    );
    assert!(r.body["conversation"]["first_response_seconds"].as_i64().is_some(), "{}", r.body);
    assert!(r.body["conversation"]["resolution_seconds"].is_null());
    let closed = t.ok(Method::POST, &format!("/v1/conversations/{cid}/close"), json!({})).await;
    assert!(closed["resolution_seconds"].as_i64().is_some(), "{closed}");
    // Within the reopen window: the same conversation, back to Ana.
    let back = json!({ "contact": { "external_id": "+4915100001" }, "message": { "id": "wamid.3", "text": "One more thing" } });
    let r = t.call(&adapter, Method::POST, &inbound, Some(back)).await;
    assert_eq!(
        (r.body["outcome"].as_str(), r.body["conversation"]["id"].as_i64()),
        (Some("reopened"), Some(cid)),
        "{}",
        r.body
    );
    assert_eq!(r.body["conversation"]["assignee"], ana);
    assert!(r.body["conversation"]["resolution_seconds"].is_null(), "reopened: not resolved");
    t.ok(Method::POST, &format!("/v1/conversations/{cid}/close"), json!({})).await;
    t.ok(Method::PATCH, &format!("/v1/channels/{channel}"), json!({ "reopen_minutes": 0 })).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let later = json!({ "contact": { "external_id": "+4915100001" }, "message": { "id": "wamid.4", "text": "New question" } });
    let r = t.call(&adapter, Method::POST, &inbound, Some(later)).await;
    assert_eq!(r.body["outcome"], "opened", "{}", r.body);
    assert_ne!(r.body["conversation"]["id"].as_i64(), Some(cid));
    assert_eq!(
        r.body["conversation"]["contact"]["id"], first.body["conversation"]["contact"]["id"],
        "the same contact"
    );
    let history = t.get(&format!("/v1/conversations/{cid}/messages")).await;
    let inbound_texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(inbound_texts, ["Hello, my parcel is late", "Thanks", "One more thing"]);

    // Bad input: a clear 4xx, nothing changed.
    let before = t.fingerprint().await;
    for (token, path, body, status, code) in [
        (
            &adapter,
            format!("/v1/channels/{channel}/inbound"),
            json!({ "contact": { "external_id": "x" }, "message": { "text": "no id" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            &adapter,
            format!("/v1/channels/{channel}/inbound"),
            json!({ "contact": { "external_id": "x" }, "message": { "id": "m", "text": " " } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            &adapter,
            format!("/v1/channels/{channel}/inbound"),
            json!({ "contact": { "external_id": "" }, "message": { "id": "m", "text": "x" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            &adapter,
            format!("/v1/channels/{channel}/inbound"),
            json!({ "contact": { "external_id": "x" }, "message": { "id": "m".repeat(201), "text": "x" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_long",
        ),
        (
            &adapter,
            "/v1/channels/999999/inbound".to_string(),
            json!({ "contact": { "external_id": "x" }, "message": { "id": "m", "text": "x" } }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &ana_token,
            format!("/v1/channels/{channel}/inbound"),
            json!({ "contact": { "external_id": "x" }, "message": { "id": "m", "text": "x" } }),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            &t.admin,
            "/v1/channels".to_string(),
            json!({ "kind": "pigeon", "name": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            &t.admin,
            "/v1/channels".to_string(),
            json!({ "kind": "sms", "name": "x", "outbound_url": "https://x.test/" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "https_not_supported",
        ),
        (
            &t.admin,
            "/v1/channels".to_string(),
            json!({ "kind": "sms", "name": "x", "team": 999999 }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            &t.admin,
            "/v1/channels".to_string(),
            json!({ "kind": "sms", "name": "x", "reopen_minutes": -1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_reopen_minutes",
        ),
        (
            &adapter,
            "/v1/channels".to_string(),
            json!({ "kind": "sms", "name": "x" }),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        let r = t.call(token, Method::POST, &path, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {}",
            r.body
        );
    }
    assert_eq!(t.fingerprint().await, before, "refused calls change nothing");
    stream_task.abort();
}

/// The widget's public API: a visitor gets an id and a token, writes, sees the greeting and
/// the agent's answer on its stream (never internal notes), and nobody without the token can
/// read or write as that visitor.
async fn a_web_chat_visitor_writes_and_reads_answers_live_with_its_own_token_only(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[team], "online", 5).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let ch =
        t.ok(Method::POST, "/v1/channels", json!({ "kind": "web_chat", "name": "Site", "team": team })).await;
    let key = ch["public_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("wc_"), "{ch}");
    let base = format!("/v1/webchat/{key}");
    let v = t.raw(None, Method::POST, &format!("{base}/visitors"), None).await;
    assert_eq!(v.status, StatusCode::CREATED, "{}", v.body);
    let (visitor, token) =
        (v.body["visitor"].as_str().unwrap().to_string(), v.body["token"].as_str().unwrap().to_string());
    let other = t.raw(None, Method::POST, &format!("{base}/visitors"), None).await.body;
    let q = format!("visitor={visitor}&token={token}");
    let post = |body: Value| {
        let path = format!("{base}/messages");
        let t = &t;
        async move { t.raw(None, Method::POST, &path, Some(body.to_string())).await }
    };
    let m =
        post(json!({ "visitor": visitor, "token": token, "id": "c1", "text": "Hi, is anyone there?" })).await;
    assert_eq!(m.status, StatusCode::CREATED, "{}", m.body);
    assert_eq!(m.body["conversation"]["status"], "assigned");
    assert!(m.body["conversation"].get("assignee").is_none(), "the visitor sees no agent ids");
    let cid = m.body["conversation"]["id"].as_i64().unwrap();
    assert_eq!(
        post(json!({ "visitor": visitor, "token": token, "id": "c1", "text": "Hi, is anyone there?" }))
            .await
            .status,
        StatusCode::OK
    );

    // The visitor's stream, read over real HTTP.
    let (got, task) = collect(t.http.get(format!("{}{base}/stream?{q}", t.base)).send().await.unwrap());
    let note = t
        .call(
            &t.admin,
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            Some(json!({ "text": "Answer", "agent": ana })),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);
    t.call(
        &ana_token,
        Method::POST,
        &format!("/v1/conversations/{cid}/messages"),
        Some(json!({ "text": "Yes! How can I help?" })),
    )
    .await;
    until("the agent's answer on the visitor's stream", || {
        got.lock()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "Yes! How can I help?" && m["direction"] == "outbound")
    })
    .await;
    let texts: Vec<String> =
        got.lock().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        texts.first().map(String::as_str),
        Some("Hi, is anyone there?"),
        "the history first: {texts:?}"
    );
    task.abort();
    let history = t.raw(None, Method::GET, &format!("{base}/messages?{q}"), None).await;
    assert_eq!(history.status, StatusCode::OK);
    assert!(history.body["messages"].as_array().unwrap().iter().all(|m| m.get("agent").is_none()));

    // Someone else's token, a made-up visitor, a wrong key: refused, nothing changed.
    let before = t.fingerprint().await;
    let wrong = other["token"].as_str().unwrap();
    for (method, path, body, status, code) in [
        (
            Method::GET,
            format!("{base}/messages?visitor={visitor}&token={wrong}"),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_visitor",
        ),
        (
            Method::GET,
            format!("{base}/stream?visitor={visitor}&token={wrong}"),
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_visitor",
        ),
        (
            Method::POST,
            format!("{base}/messages"),
            Some(json!({ "visitor": visitor, "token": wrong, "id": "c2", "text": "x" })),
            StatusCode::UNAUTHORIZED,
            "invalid_visitor",
        ),
        (
            Method::POST,
            format!("{base}/messages"),
            Some(json!({ "visitor": visitor, "token": token, "id": "c3", "text": "" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            format!("{base}/messages"),
            Some(json!({ "visitor": visitor, "token": token, "text": "no id" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (Method::POST, "/v1/webchat/wc_nope/visitors".to_string(), None, StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, format!("{base}/messages"), None, StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        let r = t.raw(None, method, &path, body.map(|b| b.to_string())).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{path}: {}", r.body);
    }
    assert_eq!(t.fingerprint().await, before);
    // The page and the widget are served by the server itself.
    let page = t.http.get(format!("{}/chat/{key}", t.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(&format!("data-channel=\"{key}\"")));
    let js = t.http.get(format!("{}/widget.js", t.base)).send().await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
}

/// Presence over real connections: a node with a zero grace period turns an agent away once
/// its only stream drops (work then waits in the queue), and back online when a stream
/// returns (the queue drains to it). A watching tool's stream (`presence=false`) counts for
/// nothing.
async fn an_agent_whose_console_goes_is_turned_away_and_back_when_it_returns(t: TestApp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::with_rate(t.store.clone(), 0, 0).with_presence_grace(0);
    tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let node =
        TestApp { base, http: t.http.clone(), store: t.store.clone(), admin: t.admin.clone(), ws: t.ws };
    let team = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[team], "online", 5).await;
    let token = t.token("agent", Some(ana)).await;
    let status =
        || async { t.get(&format!("/v1/agents/{ana}")).await["status"].as_str().unwrap().to_string() };
    let (_, console) = listen(&node, &token, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(status().await, "online", "a live console keeps the agent online");
    console.abort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while status().await != "away" {
        assert!(std::time::Instant::now() < deadline, "not turned away after the console went");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let events = t.get("/v1/events?limit=1000").await;
    let change = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["kind"] == "agent.status_changed")
        .unwrap()
        .clone();
    assert_eq!(change["data"]["by"], "connection", "{change}");
    let waiting = t.open(team, "p1").await;
    assert_eq!(waiting["status"], "queued", "nobody is handed work while the laptop is closed");
    // A watching tool does not bring the agent back; the console does.
    let watch = node
        .http
        .get(format!("{}/v1/stream?presence=false", node.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(status().await, "away");
    drop(watch);
    let (_, console) = listen(&node, &token, None).await;
    assert_eq!(status().await, "online", "back at once");
    let c = t.get(&format!("/v1/conversations/{}", waiting["id"])).await;
    assert_eq!(c["assignee"], ana, "the queue drained to the returning agent: {c}");
    console.abort();
}

/// Console logins: passwords are checked (a wrong one and an unknown e-mail get the same 401),
/// the session cookie is HttpOnly and SameSite=Strict and acts with the login's role (an agent
/// only as its agent), a change with the cookie needs the console header (no cross-site form
/// can send it), signing out ends the session, and bad logins are refused without a change.
async fn console_logins_sign_in_with_a_cookie_that_acts_with_the_logins_role_only(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let ana = t.agent("Ana", &[team], "offline", 5).await;
    let bob = t.agent("Bob", &[team], "offline", 5).await;
    let l = t.ok(Method::POST, "/v1/logins", json!({ "email": "Ana@Shop.test", "password": "a long passphrase", "role": "agent", "agent": ana })).await;
    assert_eq!((l["email"].as_str(), l["role"].as_str()), (Some("ana@shop.test"), Some("agent")));
    assert!(l.get("password_hash").is_none() && l.get("password").is_none());
    let manager = t.token("manager", None).await;
    let before = t.fingerprint().await;
    for (body, status, code) in [
        (
            json!({ "email": "ana@shop.test", "password": "another long one", "role": "agent", "agent": ana }),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (
            json!({ "email": "x@shop.test", "password": "short", "role": "manager" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
        (
            json!({ "email": "x@shop.test", "password": "a long passphrase", "role": "agent" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent_required",
        ),
        (
            json!({ "email": "x@shop.test", "password": "a long passphrase", "role": "integration" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_role",
        ),
        (
            json!({ "email": "x@shop.test", "password": "a long passphrase", "role": "agent", "agent": 999_999 }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "email": "no-at-sign", "password": "a long passphrase", "role": "manager" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        ),
    ] {
        let r = t.call(&t.admin, Method::POST, "/v1/logins", Some(body.clone())).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{body}: {}", r.body);
    }
    let r = t
        .call(
            &manager,
            Method::POST,
            "/v1/logins",
            Some(json!({ "email": "m@shop.test", "password": "a long passphrase", "role": "manager" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(t.fingerprint().await, before, "refused logins change nothing");

    let sign_in = |email: &str, password: &str| {
        let body = json!({ "email": email, "password": password }).to_string();
        let t = &t;
        async move {
            t.http
                .post(format!("{}/v1/session", t.base))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for (email, password) in
        [("ana@shop.test", "a wrong passphrase"), ("nobody@shop.test", "a long passphrase")]
    {
        let r = sign_in(email, password).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get("set-cookie").is_none());
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["error"]["code"], "invalid_login",
            "the same answer for a wrong password and an unknown e-mail"
        );
    }
    let r = sign_in("ANA@shop.test", "a long passphrase").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["usher_session=uss_", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "on this machine over plain HTTP the cookie is not Secure-only: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let with_cookie = |method: Method, path: &str, body: Option<Value>, console: bool| {
        let mut req = t.http.request(method, format!("{}{path}", t.base)).header("cookie", cookie.clone());
        if console {
            req = req.header("x-usher-console", "1");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, me) = with_cookie(Method::GET, "/v1/session", None, false).await;
    assert_eq!(
        (status, me["agent"]["id"].as_i64(), me["login"]["role"].as_str()),
        (StatusCode::OK, Some(ana), Some("agent"))
    );
    // Acting as Ana: her own status, yes; Bob's, no; a change without the header, no.
    let (status, body) = with_cookie(
        Method::PUT,
        &format!("/v1/agents/{ana}/status"),
        Some(json!({ "status": "online" })),
        false,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("console_header_required"))
    );
    assert_eq!(t.get(&format!("/v1/agents/{ana}")).await["status"], "offline");
    let (status, _) = with_cookie(
        Method::PUT,
        &format!("/v1/agents/{ana}/status"),
        Some(json!({ "status": "online" })),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = with_cookie(
        Method::PUT,
        &format!("/v1/agents/{bob}/status"),
        Some(json!({ "status": "online" })),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = with_cookie(Method::GET, "/v1/agents", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an agent's session is an agent");
    // Signing out ends it.
    let (status, _) = with_cookie(Method::DELETE, "/v1/session", None, true).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = with_cookie(Method::GET, "/v1/session", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = with_cookie(Method::GET, "/v1/teams", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The console is served by the server itself, with a policy that allows no other host.
    let page = t.http.get(format!("{}/console", t.base)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from another host");
    for asset in ["/console/app.js", "/console/app.css"] {
        let r = t.http.get(format!("{}{asset}", t.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!r.text().await.unwrap().contains("https://"), "{asset} loads nothing from elsewhere");
    }
}

/// Reports through HTTP: counts, times and shares of real traffic; every table as CSV and
/// every chart as SVG; managers only; a bad period is refused.
async fn reports_count_time_and_spread_the_work_and_export_csv_and_svg(t: TestApp) {
    let team = t.team("Support", "round_robin").await;
    let other = t.team("Sales", "round_robin").await;
    let ana = t.agent("Ana", &[team], "online", 1).await;
    t.agent("Vic", &[other], "online", 5).await;
    let first = t.open(team, "r1").await;
    assert_eq!(first["assignee"], ana);
    let second = t.open(team, "r2").await;
    assert_eq!(second["status"], "queued", "Ana is at her cap");
    t.open(other, "r3").await;
    t.ok(Method::POST, &format!("/v1/conversations/{}/close", first["id"]), json!({})).await;
    let r = t.get(&format!("/v1/reports?team={team}")).await;
    assert_eq!(r["counts"], json!({ "opened": 2, "assigned": 2, "waited": 1, "closed": 1 }), "{r}");
    assert_eq!(r["agents"][0]["name"], "Ana");
    assert_eq!(r["agents"][0]["assigned"], 2, "the first, then the second from the queue");
    assert_eq!(r["times"][0]["measure"], "time_to_assignment");
    assert_eq!(r["times"][0]["count"], 2);
    assert_eq!(r["times"][2]["count"], 1, "one resolved");
    let all = t.get("/v1/reports").await;
    assert_eq!(all["counts"]["opened"], 3, "all teams");
    for table in ["counts", "times", "agents", "buckets"] {
        let resp = t
            .http
            .get(format!("{}/v1/reports/{table}.csv?team={team}", t.base))
            .bearer_auth(&t.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{table}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let text = resp.text().await.unwrap();
        assert!(text.lines().count() >= 2, "{table}: {text}");
    }
    for chart in ["queue", "agents", "load", "times"] {
        let resp = t
            .http
            .get(format!("{}/v1/reports/{chart}.svg", t.base))
            .bearer_auth(&t.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "image/svg+xml");
        let svg = resp.text().await.unwrap();
        assert!(svg.starts_with("<svg") && !svg.contains("<script"), "{chart}");
    }
    // The period's conversations as a trace the simulator replays: a customer who left
    // before anyone answered shows how long they waited.
    let night = t.team("Night", "round_robin").await;
    let gone = t.open(night, "r4").await;
    assert_eq!(gone["status"], "queued", "nobody in the night team");
    t.ok(Method::POST, &format!("/v1/conversations/{}/close", gone["id"]), json!({})).await;
    let again = t.open(night, "r4").await;
    assert_ne!(again["id"], gone["id"], "the same contact writes again");
    let export = |query: String| {
        let t = &t;
        async move {
            let resp = t
                .http
                .get(format!("{}/v1/reports/trace.csv{query}", t.base))
                .bearer_auth(&t.admin)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
            usher_sim::trace::parse(&resp.text().await.unwrap()).unwrap()
        }
    };
    let trace = export(String::new()).await;
    let teams: Vec<Option<&str>> = trace.arrivals.iter().map(|a| a.team.as_deref()).collect();
    assert_eq!(teams, [Some("Support"), Some("Support"), Some("Sales"), Some("Night"), Some("Night")]);
    // The contact is on every row: the one who wrote twice is returning when replayed.
    let contacts: Vec<u64> = trace.arrivals.iter().map(|a| a.contact.unwrap()).collect();
    assert_eq!(contacts[3], contacts[4]);
    assert_eq!(contacts.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
    assert!(trace.arrivals[0].handle_millis.is_some(), "closed after its assignment");
    assert_eq!(trace.arrivals[1].handle_millis, None, "still open");
    assert_eq!(trace.arrivals[3].handle_millis, None);
    assert!(trace.arrivals[3].patience_millis.is_some(), "left unanswered");
    assert_eq!(trace.arrivals[0].patience_millis, None);
    assert_eq!(export(format!("?team={team}")).await.arrivals.len(), 2);
    let agent = t.token("agent", Some(ana)).await;
    for (token, path, status, code) in [
        (&agent, "/v1/reports".to_string(), StatusCode::FORBIDDEN, "forbidden"),
        (&agent, "/v1/reports/trace.csv".to_string(), StatusCode::FORBIDDEN, "forbidden"),
        (
            &t.admin,
            "/v1/reports/trace.csv?from=tuesday".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_period",
        ),
        (
            &t.admin,
            "/v1/reports?from=yesterday".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_period",
        ),
        (
            &t.admin,
            "/v1/reports?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_period",
        ),
        (
            &t.admin,
            "/v1/reports?bucket_minutes=0".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_period",
        ),
        (&t.admin, "/v1/reports?team=999999".to_string(), StatusCode::NOT_FOUND, "not_found"),
        (&t.admin, "/v1/reports?colour=red".to_string(), StatusCode::BAD_REQUEST, "invalid_query"),
        (&t.admin, "/v1/reports/pie.svg".to_string(), StatusCode::NOT_FOUND, "not_found"),
        (&t.admin, "/v1/reports/agents.xls".to_string(), StatusCode::NOT_FOUND, "not_found"),
    ] {
        let r = t.call(token, Method::GET, &path, None).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{path}: {}", r.body);
    }
}

/// An agent transfers a conversation it holds to a teammate (caps apply, no forcing) or to a
/// team, and sees its teams' members to choose from; nothing it does not hold, no team it is
/// not in.
async fn agents_hand_on_what_they_hold_to_a_teammate_or_a_team_and_nothing_else(t: TestApp) {
    let support = t.team("Support", "round_robin").await;
    let billing = t.team("Billing", "round_robin").await;
    let ana = t.agent("Ana", &[support], "online", 5).await;
    let bob = t.agent("Bob", &[support], "online", 1).await;
    let bea = t.agent("Bea", &[billing], "online", 5).await;
    let ana_token = t.token("agent", Some(ana)).await;
    let mut mine = Vec::new();
    for i in 0..4 {
        let c = t.open(support, &format!("h{i}")).await;
        if c["assignee"] == ana {
            mine.push(c["id"].as_i64().unwrap());
        }
    }
    assert!(mine.len() >= 2, "{mine:?}");
    let members = t.call(&ana_token, Method::GET, &format!("/v1/teams/{support}/members"), None).await;
    assert_eq!(members.status, StatusCode::OK);
    let names: Vec<&str> =
        members.body["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Ana", "Bob"]);
    let other = t.call(&ana_token, Method::GET, &format!("/v1/teams/{billing}/members"), None).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    // Bob is at his cap (one conversation): the transfer is refused and may not be forced.
    let path = format!("/v1/conversations/{}/transfer", mine[0]);
    let full = t.call(&ana_token, Method::POST, &path, Some(json!({ "agent": bob }))).await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{}", full.body);
    let forced = t.call(&ana_token, Method::POST, &path, Some(json!({ "agent": bob, "force": true }))).await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN);
    // To a team: routed there.
    let moved = t.call(&ana_token, Method::POST, &path, Some(json!({ "team": billing }))).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!((moved.body["team"].as_i64(), moved.body["assignee"].as_i64()), (Some(billing), Some(bea)));
    // No longer hers: she cannot move it again.
    let again = t.call(&ana_token, Method::POST, &path, Some(json!({ "team": support }))).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    // Bob freed: the next goes to him.
    t.ok(Method::PATCH, &format!("/v1/agents/{bob}"), json!({ "max_open": 5 })).await;
    let to_bob = t
        .call(
            &ana_token,
            Method::POST,
            &format!("/v1/conversations/{}/transfer", mine[1]),
            Some(json!({ "agent": bob })),
        )
        .await;
    assert_eq!(
        (to_bob.status, to_bob.body["assignee"].as_i64()),
        (StatusCode::OK, Some(bob)),
        "{}",
        to_bob.body
    );
    assert!(t.store.audit_counters(t.ws).await.unwrap().is_empty());
}
