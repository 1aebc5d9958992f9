//! The `usher` binary as an operator runs it: real processes, real HTTP, real signals.
//! Bootstrap tokens, a clean SIGTERM, a SIGKILL in the middle of a load of openings (nothing
//! acknowledged is lost, nothing is half done), and two nodes sharing one PostgreSQL.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // unique names for scratch databases, not routing time

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static NEXT: AtomicU64 = AtomicU64::new(0);
const TOKEN: &str = "lifecycle-bootstrap-token-0123456789";

fn unique() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    format!("{}_{}_{ms}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("usher-life-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `usher serve`, killed when dropped.
struct Server {
    child: Option<Child>,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn serve(db: &[&str], bootstrap: Option<&str>) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--rate-per-second").arg("0");
    cmd.args(db).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    cmd.env_remove("USHER_BOOTSTRAP_TOKEN");
    if let Some(t) = bootstrap {
        cmd.env("USHER_BOOTSTRAP_TOKEN", t);
    }
    let child = cmd.spawn().unwrap();
    Server { child: Some(child), base: format!("http://127.0.0.1:{port}") }
}

async fn ready(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{}/readyz", s.base)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server at {} never became ready", s.base);
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn data_args(dir: &Path) -> Vec<String> {
    vec!["--data".into(), dir.display().to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_and_token_create() {
    let http = reqwest::Client::new();
    // With USHER_BOOTSTRAP_TOKEN on an empty database, that value is the admin token.
    let dir = temp_dir();
    let args = data_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = serve(&args, Some(TOKEN));
    ready(&s).await;
    let (status, body) = call(&http, &s.base, TOKEN, reqwest::Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "admin");
    drop(s);

    // Without it, a random token is made and saved beside the database.
    let dir = temp_dir();
    let args = data_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = serve(&args, None);
    ready(&s).await;
    let saved = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    let (status, _) = call(&http, &s.base, saved.trim(), reqwest::Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&http, &s.base, TOKEN, reqwest::Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, 401);
    // `usher token create` makes another, usable at once (SQLite in WAL mode allows both).
    let out = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["token", "create", "--role", "manager", "--data", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manager = String::from_utf8(out.stdout).unwrap();
    let (status, body) =
        call(&http, &s.base, manager.trim(), reqwest::Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["role"], "manager");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_and_exits_cleanly() {
    let dir = temp_dir();
    let args = data_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = serve(&args, Some(TOKEN));
    ready(&s).await;
    let http = reqwest::Client::new();
    let (status, team) =
        call(&http, &s.base, TOKEN, reqwest::Method::POST, "/v1/teams", Some(json!({ "name": "T" }))).await;
    assert_eq!(status, 201);
    // Requests in flight while the signal arrives.
    let base = s.base.clone();
    let load = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for i in 0..200 {
            let body = json!({ "channel": "sms", "team": team["id"], "contact": { "external_id": format!("t{i}") } });
            if call(&http, &base, TOKEN, reqwest::Method::POST, "/v1/conversations", Some(body)).await.0 == 0
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = s.child.take().unwrap();
    sigterm(&child);
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "server did not stop within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    load.await.unwrap();
}

/// Opens conversations from `clients` tasks until stopped; returns every acknowledged
/// opening: (idempotency key, conversation id, status in the answer).
async fn opening_load(
    base: String,
    team: i64,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(String, i64, String)> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("k-{c}-{i}");
                let r = http
                    .post(format!("{base}/v1/conversations"))
                    .bearer_auth(TOKEN)
                    .header("idempotency-key", &key)
                    .json(&json!({ "channel": "whatsapp", "team": team, "contact": { "external_id": key } }))
                    .send()
                    .await;
                let Ok(r) = r else { break };
                if r.status().is_success() {
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    acked.push((
                        key,
                        body["id"].as_i64().unwrap_or(0),
                        body["status"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn all_conversations(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = call(
            http,
            base,
            TOKEN,
            reqwest::Method::GET,
            &format!("/v1/conversations?after={after}&limit=500"),
            None,
        )
        .await;
        assert_eq!(status, 200);
        let list = page["conversations"].as_array().unwrap().clone();
        if list.is_empty() {
            return out;
        }
        after = list.last().unwrap()["id"].as_i64().unwrap();
        out.extend(list);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_acknowledged() {
    let dir = temp_dir();
    let args = data_args(&dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = serve(&args, Some(TOKEN));
    ready(&s).await;
    let http = reqwest::Client::new();
    let (_, team) = call(
        &http,
        &s.base,
        TOKEN,
        reqwest::Method::POST,
        "/v1/teams",
        Some(json!({ "name": "Support", "strategy": "least_open", "when_nobody": "queue" })),
    )
    .await;
    let team = team["id"].as_i64().unwrap();
    for name in ["Ana", "Bob", "Cid"] {
        let body = json!({ "name": name, "email": format!("{name}@x.test"), "teams": [team], "status": "online", "max_open": 2 });
        assert_eq!(call(&http, &s.base, TOKEN, reqwest::Method::POST, "/v1/agents", Some(body)).await.0, 201);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(opening_load(s.base.clone(), team, 8, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no chance to finish anything.
    let mut child = s.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked.len() > 10, "too few openings acknowledged before the kill: {}", acked.len());

    let s = serve(&args, None);
    ready(&s).await;
    let all = all_conversations(&http, &s.base).await;
    let by_id: BTreeMap<i64, &Value> = all.iter().map(|c| (c["id"].as_i64().unwrap(), c)).collect();
    for (key, id, status) in &acked {
        let c =
            by_id.get(id).unwrap_or_else(|| panic!("acknowledged opening {key} (conversation {id}) is lost"));
        assert!(["assigned", "queued"].contains(&status.as_str()), "acknowledged as {status}");
        assert!(["assigned", "queued"].contains(&c["status"].as_str().unwrap()), "{c}");
    }
    assert!(all.len() >= acked.len());
    // Nothing half done: every conversation is coherent, the queue drained into free capacity.
    let assigned = all.iter().filter(|c| c["status"] == "assigned").count();
    for c in &all {
        match c["status"].as_str().unwrap() {
            "assigned" => assert!(c["assignee"].as_i64().is_some(), "{c}"),
            "queued" => assert!(c["queue"]["position"].as_i64().is_some(), "{c}"),
            other => panic!("unexpected status {other}: {c}"),
        }
    }
    assert_eq!(assigned, all.len().min(6), "3 agents with cap 2");
    let (_, agents) = call(&http, &s.base, TOKEN, reqwest::Method::GET, "/v1/agents", None).await;
    let open: i64 = agents["agents"].as_array().unwrap().iter().map(|a| a["open"].as_i64().unwrap()).sum();
    assert_eq!(open as usize, assigned, "counters equal the truth after the crash");
    // The event log has no gap.
    let mut after = 0;
    let mut expected = 1;
    loop {
        let (_, page) = call(
            &http,
            &s.base,
            TOKEN,
            reqwest::Method::GET,
            &format!("/v1/events?after={after}&limit=1000"),
            None,
        )
        .await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            assert_eq!(e["seq"].as_i64().unwrap(), expected);
            expected += 1;
        }
        after = expected - 1;
    }
    // Retrying an acknowledged opening with its key returns the same conversation.
    let (key, id, _) = &acked[acked.len() / 2];
    let r = http
        .post(format!("{}/v1/conversations", s.base))
        .bearer_auth(TOKEN)
        .header("idempotency-key", key)
        .json(&json!({ "channel": "whatsapp", "team": team, "contact": { "external_id": key } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"].as_i64().unwrap(), *id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_never_double_assign_or_exceed_caps() {
    let Some(admin) = std::env::var("USHER_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        eprintln!("USHER_TEST_POSTGRES is not set: two-node test skipped");
        return;
    };
    let name = format!("usher_nodes_{}", unique());
    let ok = Command::new("psql")
        .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .unwrap();
    assert!(ok.success());
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let a = serve(&["--database", &url], Some(TOKEN));
    ready(&a).await;
    let b = serve(&["--database", &url], None);
    ready(&b).await;
    let http = reqwest::Client::new();
    let (_, team) = call(
        &http,
        &a.base,
        TOKEN,
        reqwest::Method::POST,
        "/v1/teams",
        Some(json!({ "name": "Support", "strategy": "round_robin", "when_nobody": "queue" })),
    )
    .await;
    let team = team["id"].as_i64().unwrap();
    let mut agent_tokens = Vec::new();
    for name in ["Ana", "Bob", "Cid", "Dee"] {
        let (_, ag) = call(&http, &a.base, TOKEN, reqwest::Method::POST, "/v1/agents", Some(json!({ "name": name, "email": format!("{name}@x.test"), "teams": [team], "status": "online", "max_open": 3 }))).await;
        let (_, t) = call(
            &http,
            &b.base,
            TOKEN,
            reqwest::Method::POST,
            "/v1/tokens",
            Some(json!({ "role": "agent", "agent": ag["id"] })),
        )
        .await;
        agent_tokens.push(t["token"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let base = if c % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let agent_token = agent_tokens[c % 4].clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body = json!({ "channel": "sms", "team": team, "when_nobody": if i % 3 == 0 { "leave_unassigned" } else { "queue" }, "contact": { "external_id": format!("n{c}-{i}") } });
                let (_, conv) = call(&http, &base, TOKEN, reqwest::Method::POST, "/v1/conversations", Some(body)).await;
                let Some(id) = conv["id"].as_i64() else { continue };
                match i % 4 {
                    0 => {
                        call(&http, &base, &agent_token, reqwest::Method::POST, &format!("/v1/conversations/{id}/claim"), None).await;
                    }
                    1 | 2 => {
                        call(&http, &base, TOKEN, reqwest::Method::POST, &format!("/v1/conversations/{id}/close"), None).await;
                    }
                    _ => {}
                }
                if i % 5 == 0 {
                    // Close someone else's too, from the other node's point of view.
                    call(&http, &base, TOKEN, reqwest::Method::POST, &format!("/v1/conversations/{}/close", id.saturating_sub(3).max(1)), None).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, agents) = call(&http, &a.base, TOKEN, reqwest::Method::GET, "/v1/agents", None).await;
    let mut at_cap = 0;
    for ag in agents["agents"].as_array().unwrap() {
        let id = ag["id"].as_i64().unwrap();
        let open = ag["open"].as_i64().unwrap();
        assert!(open <= 3, "agent {id} holds {open} > cap 3");
        let (_, held) = call(
            &http,
            &b.base,
            TOKEN,
            reqwest::Method::GET,
            &format!("/v1/conversations?assignee={id}&status=assigned&limit=500"),
            None,
        )
        .await;
        assert_eq!(
            held["conversations"].as_array().unwrap().len() as i64,
            open,
            "agent {id}: counter against the truth"
        );
        if open == 3 {
            at_cap += 1;
        }
    }
    let (_, queue) =
        call(&http, &a.base, TOKEN, reqwest::Method::GET, &format!("/v1/teams/{team}/queue"), None).await;
    if !queue["waiting"].as_array().unwrap().is_empty() {
        assert_eq!(at_cap, 4, "work waits while someone has room");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_json_logs_with_request_ids() {
    let dir = temp_dir();
    let port = free_port();
    let config = dir.join("usher.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata = \"{}\"\nlog_format = \"json\"\nrate_per_second = 0\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--config", &config.display().to_string()])
        .env("USHER_BOOTSTRAP_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let s = Server { child: Some(child), base: format!("http://127.0.0.1:{port}") };
    ready(&s).await;
    assert!(dir.join("data").join("usher.db").exists(), "the data folder comes from the config file");
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v1/workspace", s.base))
        .bearer_auth(TOKEN)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    let json_lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!json_lines.is_empty(), "no JSON log lines in:\n{text}");
    assert!(
        json_lines.iter().any(|l| l.to_string().contains("trace-me-42")),
        "no log line carries the request id:\n{text}"
    );
}
