//! Process-level tests of the `usher` binary: real `usher serve` processes on free ports, real
//! HTTP, real signals. First start and its admin token (from `USHER_BOOTSTRAP_TOKEN` or saved
//! beside the database) and `usher token create`; a clean stop on SIGTERM under load; a SIGKILL in
//! the middle of a stream of openings (nothing acknowledged lost, nothing half done, retries
//! with the same `Idempotency-Key` never duplicate); and two nodes sharing one PostgreSQL
//! (only when `USHER_TEST_POSTGRES` names a server, e.g. `postgres://postgres@127.0.0.1:5432/test`).

#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin token the bootstrapped servers share: 32 characters.
const TOKEN: &str = "proc-test-bootstrap-0123456789ab";
const READY_WITHIN: Duration = Duration::from_secs(30);
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Settings a developer's shell might carry that would change what the servers do.
const USHER_ENV: [&str; 9] = [
    "USHER_BOOTSTRAP_TOKEN",
    "USHER_DATA",
    "USHER_DATABASE_URL",
    "USHER_CONFIG",
    "USHER_LISTEN",
    "USHER_LOG_FORMAT",
    "USHER_RATE_PER_SECOND",
    "USHER_RATE_BURST",
    "USHER_TIME_ZONE",
];

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique() -> String {
    format!("{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), usher_server::now_millis())
}

// ---------------------------------------------------------------- scratch space

/// A scratch folder, removed at the end unless the test failed (then kept for a look).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("usher-proc-{tag}-{}", unique()));
        std::fs::create_dir_all(&dir).expect("create scratch folder");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn data_args(&self) -> Vec<String> {
        vec!["--data".into(), self.0.join("data").display().to_string()]
    }

    fn log(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.log"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: scratch folder kept at {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------- a server process

/// A running `usher serve`; killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// no process behind.
struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    /// Where this process's output starts in the (shared, appended) log file.
    log_from: u64,
}

impl Server {
    /// Starts `usher serve` on a free port with `db` (`--data DIR` or `--database URL`) and
    /// waits for `/readyz`. Output goes to `log`. Retries on another port if the chosen one was
    /// taken between picking and binding.
    async fn start(db: &[String], bootstrap: Option<&str>, log: &Path) -> Server {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open log file");
            let log_from = out.metadata().expect("log metadata").len();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
            cmd.arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}"), "--rate-per-second", "0"])
                .args(db);
            for var in USHER_ENV {
                cmd.env_remove(var);
            }
            if let Some(t) = bootstrap {
                cmd.env("USHER_BOOTSTRAP_TOKEN", t);
            }
            cmd.env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("clone log handle"))
                .stderr(out);
            let child = cmd.spawn().expect("spawn usher serve");
            let mut s = Server {
                child: Some(child),
                base: format!("http://127.0.0.1:{port}"),
                log: log.to_path_buf(),
                log_from,
            };
            match s.wait_ready().await {
                Ok(()) => return s,
                Err(exited) if exited && attempt < 3 && s.log_text().contains("binding") => continue,
                Err(exited) => panic!(
                    "usher serve on {} {} within {READY_WITHIN:?}; its output:\n{}",
                    s.base,
                    if exited { "exited before it was ready" } else { "was not ready" },
                    s.log_text()
                ),
            }
        }
    }

    /// Polls `/readyz` until it answers 200 (Ok) or the deadline passes (Err(false)) or the
    /// process exits (Err(true)).
    async fn wait_ready(&mut self) -> Result<(), bool> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.child_mut().try_wait().expect("try_wait").is_some() {
                return Err(true);
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(false)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process is running")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server process is running").id()
    }

    /// This process's output so far.
    fn log_text(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.seek(SeekFrom::Start(self.log_from));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL: the process gets no chance to finish anything.
    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("the server process is running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Waits for the process to exit on its own, at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "usher serve (pid {}) still runs {within:?} after SIGTERM; its output:\n{}",
                self.pid(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the process must exit with status 0 within [`STOP_WITHIN`].
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.sigterm();
        let status = self.wait_exit(STOP_WITHIN).await;
        assert_eq!(
            status.code(),
            Some(0),
            "usher serve exited with {status:?}; its output:\n{}",
            self.log_text()
        );
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `usher token create ARGS` and returns what it printed (the token) or, on failure,
/// what it said on stderr.
fn token_create(args: &[String]) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usher"));
    cmd.args(["token", "create"]).args(args);
    for var in USHER_ENV {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run usher token create");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("UTF-8 token"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------- an HTTP client

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str, token: &str) -> Api {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        Api { http, base: base.to_string(), token: token.to_string() }
    }

    fn with_token(&self, token: &str) -> Api {
        Api { token: token.to_string(), ..self.clone() }
    }

    /// One request; Err when no complete answer came back (connection refused or cut).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{e:?}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let what = format!("{method} {}{path}", self.base);
        self.send(method, path, body.as_ref(), None)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), path, Some(body)).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    async fn get(&self, path: &str) -> Value {
        let (status, answer) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {answer}");
        answer
    }

    /// Every conversation matching `filter` (e.g. `&status=assigned`), paged with `after`.
    async fn conversations(&self, filter: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!("/v1/conversations?after={after}&limit=500{filter}")).await;
            let list = page["conversations"].as_array().expect("conversations").clone();
            let Some(last) = list.last() else { return out };
            let last = last["id"].as_i64().expect("id");
            assert!(last > after, "paging went backwards: after={after}, last={last}");
            assert_eq!(page["next_after"], last);
            after = last;
            out.extend(list);
        }
    }

    /// The whole event log, checking that its sequence numbers are exactly 1..=N.
    async fn gap_free_events(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!("/v1/events?after={after}&limit=1000")).await;
            let list = page["events"].as_array().expect("events").clone();
            if list.is_empty() {
                break;
            }
            for e in &list {
                let seq = e["seq"].as_i64().expect("seq");
                assert_eq!(seq, after + 1, "the event log has a gap or a repeat after seq {after}: {e}");
                after = seq;
            }
            out.extend(list);
        }
        assert!(!out.is_empty(), "the event log is empty");
        out
    }

    async fn team(&self, name: &str, strategy: &str) -> i64 {
        let t = self
            .ok(
                Method::POST,
                "/v1/teams",
                json!({ "name": name, "strategy": strategy, "when_nobody": "queue" }),
            )
            .await;
        assert_eq!(t["when_nobody"], "queue", "{t}");
        t["id"].as_i64().expect("team id")
    }

    async fn online_agent(&self, name: &str, team: i64, max_open: u32) -> i64 {
        let a = self
            .ok(
                Method::POST,
                "/v1/agents",
                json!({ "name": name, "email": format!("{name}@proc.test"), "teams": [team],
                        "status": "online", "max_open": max_open }),
            )
            .await;
        assert_eq!(a["status"], "online", "{a}");
        a["id"].as_i64().expect("agent id")
    }
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

fn ids(list: &[Value]) -> BTreeSet<i64> {
    list.iter().map(id_of).collect()
}

// ---------------------------------------------------------------- 1. first start and tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_makes_one_admin_token_and_token_create_adds_more() {
    assert_eq!(TOKEN.len(), 32);
    // With USHER_BOOTSTRAP_TOKEN on an empty data folder, that value is the admin token.
    let boot = Scratch::new("boot");
    let mut s = Server::start(&boot.data_args(), Some(TOKEN), &boot.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let (status, me) = api.call(Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["role"], "admin", "{me}");
    assert_eq!(me["agent"], Value::Null);
    let ws = me["workspace"]["id"].as_i64().expect("workspace id");
    let (status, _) = api.with_token(&"x".repeat(32)).call(Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a made-up token is refused");
    assert!(
        !boot.path().join("data").join("admin-token").exists(),
        "with USHER_BOOTSTRAP_TOKEN set no token file is written"
    );
    s.stop().await;
    // A restart on the now non-empty database with another bootstrap value changes nothing.
    let other = "another-bootstrap-value-abcdefgh";
    let s = Server::start(&boot.data_args(), Some(other), &boot.log("serve")).await;
    let (status, _) = Api::new(&s.base, other).call(Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a second start must not add a bootstrap token");
    let again = Api::new(&s.base, TOKEN).get("/v1/workspace").await;
    assert_eq!(again["workspace"]["id"], ws);
    drop(s);

    // Without it, on a fresh folder, a random admin token is made, printed and saved.
    let fresh = Scratch::new("saved");
    let data = fresh.path().join("data");
    let mut s = Server::start(&fresh.data_args(), None, &fresh.log("serve")).await;
    let saved = std::fs::read_to_string(data.join("admin-token")).expect("admin-token is written");
    let saved = saved.trim().to_string();
    assert!(saved.starts_with("usher_") && saved.len() == 6 + 64, "odd token {saved:?}");
    assert!(s.log_text().contains(&saved), "the printed token differs from the saved one:\n{}", s.log_text());
    let admin = Api::new(&s.base, &saved);
    let me = admin.get("/v1/workspace").await;
    assert_eq!(me["role"], "admin");
    let (status, _) = admin.with_token(TOKEN).call(Method::GET, "/v1/workspace", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.stop().await;

    // `usher token create` with the server stopped...
    let mut args = fresh.data_args();
    args.extend(["--role".into(), "manager".into()]);
    let manager = token_create(&args).unwrap_or_else(|e| panic!("token create failed: {e}"));
    assert_eq!(manager.lines().count(), 1, "token create prints the token alone: {manager:?}");
    let manager = manager.trim().to_string();
    // ...and with it running (SQLite in WAL mode allows both).
    let s = Server::start(&fresh.data_args(), None, &fresh.log("serve")).await;
    let admin = Api::new(&s.base, &saved);
    assert_eq!(
        std::fs::read_to_string(data.join("admin-token")).expect("admin-token").trim(),
        saved,
        "a restart must not replace the saved admin token"
    );
    let mut args = fresh.data_args();
    args.extend(["--role".into(), "integration".into()]);
    let integration = token_create(&args).unwrap_or_else(|e| panic!("token create failed: {e}"));
    let integration = integration.trim().to_string();
    assert_ne!(manager, integration);
    for (token, role) in [(&manager, "manager"), (&integration, "integration"), (&saved, "admin")] {
        let me = admin.with_token(token).get("/v1/workspace").await;
        assert_eq!(me["role"], role, "{me}");
    }
    // The roles are real: a manager may create a team, an integration may not.
    let (status, body) =
        admin.with_token(&manager).call(Method::POST, "/v1/teams", Some(json!({ "name": "Ops" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        admin.with_token(&integration).call(Method::POST, "/v1/teams", Some(json!({ "name": "Ops2" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Impossible requests fail with a non-zero exit and say why.
    for (role, expect) in [("emperor", "unknown role"), ("agent", "agent")] {
        let mut args = fresh.data_args();
        args.extend(["--role".into(), role.into()]);
        let err = token_create(&args).expect_err("token create must refuse");
        assert!(err.contains(expect), "token create --role {role}: {err}");
    }
    drop(s);
}

// ---------------------------------------------------------------- 2. SIGTERM under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_requests_flowing_exits_zero_and_keeps_what_it_acknowledged() {
    let scratch = Scratch::new("term");
    let mut s = Server::start(&scratch.data_args(), Some(TOKEN), &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let team = api.team("Support", "least_open").await;
    api.online_agent("ana", team, 1000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (api, stop, answered) = (api.clone(), stop.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({ "channel": "sms", "team": team, "contact": { "external_id": format!("t{c}-{i}") } });
                let opened = match api.send(Method::POST, "/v1/conversations", Some(&body), None).await {
                    Err(_) => break, // the server has gone away
                    Ok((st, v)) if st.is_success() => v,
                    Ok((st, v)) => {
                        failures.push(format!("open: {st} {v}"));
                        continue;
                    }
                };
                acked.push(id_of(&opened));
                answered.fetch_add(1, Ordering::Relaxed);
                match api.send(Method::GET, &format!("/v1/conversations/{}", id_of(&opened)), None, None).await {
                    Err(_) => break,
                    Ok((st, _)) if st.is_success() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((st, v)) => failures.push(format!("read: {st} {v}")),
                }
            }
            (acked, failures)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "requests are not flowing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_signal = answered.load(Ordering::Relaxed);
    let took = s.stop().await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        let (a, failures) = t.await.expect("load task");
        assert!(failures.is_empty(), "error answers while stopping: {failures:?}");
        acked.extend(a);
    }
    let refused = reqwest::Client::new().get(format!("{}/healthz", s.base)).send().await;
    assert!(refused.is_err(), "something still answers on {} after the exit", s.base);
    eprintln!(
        "sigterm: {before_signal} answers before the signal, {} openings acknowledged, exit 0 after {took:?}",
        acked.len()
    );

    // Everything acknowledged before the stop is there after a restart.
    let s = Server::start(&scratch.data_args(), None, &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let all = ids(&api.conversations("").await);
    let missing: Vec<_> = acked.iter().filter(|id| !all.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged before SIGTERM, gone after: {missing:?}");
    api.gap_free_events().await;
}

// ---------------------------------------------------------------- 3. SIGKILL mid-load (SQLite)

/// What became of one opening sent during the crash test.
#[derive(Debug)]
enum Outcome {
    /// A 2xx answer: the conversation and its status and assignee in the answer.
    Acked { id: i64, status: String, assignee: Option<i64> },
    /// An answer that was not 2xx (a bug before the kill).
    Refused(StatusCode, Value),
    /// No complete answer: the kill landed while it was in flight (maybe committed, maybe not).
    Unanswered(String),
}

fn opening(team: i64, key: &str) -> Value {
    json!({ "channel": "whatsapp", "team": team, "contact": { "external_id": key }, "message": "hello" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_load_loses_nothing_acknowledged_and_leaves_nothing_half_done() {
    let scratch = Scratch::new("crash");
    let mut s = Server::start(&scratch.data_args(), Some(TOKEN), &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let team = api.team("Support", "round_robin").await;
    let mut agents = BTreeSet::new();
    for name in ["ana", "bob", "cid"] {
        agents.insert(api.online_agent(name, team, 2).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (api, stop) = (api.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut attempts: Vec<(String, Outcome)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("crash-{c}-{i}");
                let body = opening(team, &key);
                let outcome = match api.send(Method::POST, "/v1/conversations", Some(&body), Some(&key)).await
                {
                    Ok((st, v)) if st.is_success() => Outcome::Acked {
                        id: id_of(&v),
                        status: v["status"].as_str().unwrap_or_default().to_string(),
                        assignee: v["assignee"].as_i64(),
                    },
                    Ok((st, v)) => Outcome::Refused(st, v),
                    Err(e) => Outcome::Unanswered(e),
                };
                let gone = matches!(outcome, Outcome::Unanswered(_));
                attempts.push((key, outcome));
                if gone {
                    break;
                }
            }
            attempts
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.sigkill();
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<(String, i64, String, Option<i64>)> = Vec::new();
    let mut unanswered: Vec<(String, String)> = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        for (key, outcome) in t.await.expect("load task") {
            match outcome {
                Outcome::Acked { id, status, assignee } => acked.push((key, id, status, assignee)),
                Outcome::Refused(st, v) => refused.push(format!("{key}: {st} {v}")),
                Outcome::Unanswered(e) => unanswered.push((key, e)),
            }
        }
    }
    assert!(refused.is_empty(), "error answers before the kill: {refused:?}");
    assert!(acked.len() >= 10, "only {} openings acknowledged before the kill", acked.len());
    let acked_ids: BTreeSet<i64> = acked.iter().map(|a| a.1).collect();
    assert_eq!(acked_ids.len(), acked.len(), "two acknowledged openings share an id");

    // Restart on the same data folder.
    let s = Server::start(&scratch.data_args(), None, &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);

    // Nothing acknowledged is lost, and nothing changed since (no capacity moved).
    for (key, id, status, assignee) in &acked {
        assert!(["assigned", "queued"].contains(&status.as_str()), "{key} acknowledged as {status}");
        let (st, c) = api.call(Method::GET, &format!("/v1/conversations/{id}"), None).await;
        assert_eq!(st, StatusCode::OK, "acknowledged opening {key} (conversation {id}) is lost: {c}");
        assert_eq!(c["contact"]["external_id"], key.as_str(), "conversation {id} is someone else's: {c}");
        assert_eq!(c["status"], status.as_str(), "conversation {id} changed status across the crash: {c}");
        assert_eq!(c["assignee"].as_i64(), *assignee, "conversation {id} changed hands: {c}");
    }

    // Every conversation is whole and coherent; the queue drained into all free capacity.
    let all = api.conversations("").await;
    let all_ids = ids(&all);
    assert_eq!(all_ids.len(), all.len(), "the list repeats a conversation");
    assert!(all.len() >= acked.len(), "{} listed < {} acknowledged", all.len(), acked.len());
    assert!(acked_ids.is_subset(&all_ids), "the list lacks acknowledged conversations");
    let mut held: BTreeMap<i64, i64> = BTreeMap::new();
    let mut positions = Vec::new();
    for c in &all {
        match c["status"].as_str() {
            Some("assigned") => {
                let a = c["assignee"].as_i64().unwrap_or_else(|| panic!("assigned without an assignee: {c}"));
                assert!(agents.contains(&a), "assigned to a stranger: {c}");
                *held.entry(a).or_default() += 1;
            }
            Some("queued") => {
                assert_eq!(c["assignee"], Value::Null, "queued but held: {c}");
                let p =
                    c["queue"]["position"].as_i64().unwrap_or_else(|| panic!("queued without a place: {c}"));
                positions.push(p);
            }
            _ => panic!("incoherent conversation (the team queues, nothing was closed): {c}"),
        }
        assert_eq!(c["team"], team, "{c}");
    }
    let assigned: i64 = held.values().sum();
    assert!(assigned <= 6, "{assigned} assigned > 3 agents x cap 2");
    assert_eq!(assigned as usize, all.len().min(6), "queued work while capacity was free: {held:?}");
    positions.sort_unstable();
    assert_eq!(positions, (1..=positions.len() as i64).collect::<Vec<_>>(), "queue places are not 1..n");
    let queue = api.get(&format!("/v1/teams/{team}/queue")).await;
    assert_eq!(queue["waiting"].as_array().expect("waiting").len(), positions.len().min(1000));
    let listed_agents = api.get("/v1/agents").await;
    for a in listed_agents["agents"].as_array().expect("agents") {
        let id = id_of(a);
        let open = a["open"].as_i64().expect("open");
        assert_eq!(open, held.get(&id).copied().unwrap_or(0), "agent {id}'s counter disagrees: {a}");
        assert!(open <= 2, "agent {id} over its cap: {a}");
    }

    // The event log is gap-free, and each conversation's opening was logged exactly once.
    let events = api.gap_free_events().await;
    let mut opened: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &events {
        if e["kind"] == "conversation.opened" {
            *opened.entry(e["conversation"].as_i64().expect("conversation")).or_default() += 1;
        }
    }
    assert_eq!(opened.keys().copied().collect::<BTreeSet<_>>(), all_ids, "opened events vs conversations");
    assert!(opened.values().all(|n| *n == 1), "a conversation was opened twice in the log");

    // Retries with the same Idempotency-Key never duplicate. For requests cut off by the kill,
    // the contact (one per key) tells whether the opening committed before the crash.
    let by_contact: BTreeMap<String, i64> = all
        .iter()
        .map(|c| (c["contact"]["external_id"].as_str().expect("external id").to_string(), id_of(c)))
        .collect();
    let mut created = 0;
    let mut committed_unanswered = 0;
    for (key, _) in &unanswered {
        let earlier = by_contact.get(key).copied();
        let body = opening(team, key);
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (st, v) = api
                .send(Method::POST, "/v1/conversations", Some(&body), Some(key))
                .await
                .unwrap_or_else(|e| panic!("retry of {key}: {e}"));
            assert!(st.is_success(), "retry of {key}: {st} {v}");
            answers.push((st, id_of(&v)));
        }
        assert_eq!(answers[0].1, answers[1].1, "the same key twice gave two conversations: {key}");
        assert_eq!(answers[1].0, StatusCode::OK, "the second retry of {key} must be a replay");
        match earlier {
            Some(id) => {
                committed_unanswered += 1;
                assert_eq!(answers[0], (StatusCode::OK, id), "{key} committed before the crash as {id}");
            }
            None => {
                created += 1;
                assert_eq!(answers[0].0, StatusCode::CREATED, "{key} never committed, so the retry opens it");
                assert!(!all_ids.contains(&answers[0].1), "{key}: a new opening reused id {}", answers[0].1);
            }
        }
    }
    let (key, id, _, _) = &acked[acked.len() / 2];
    let (st, v) = api
        .send(Method::POST, "/v1/conversations", Some(&opening(team, key)), Some(key))
        .await
        .unwrap_or_else(|e| panic!("retry of {key}: {e}"));
    assert_eq!((st, id_of(&v)), (StatusCode::OK, *id), "retrying acknowledged {key}: {v}");
    assert_eq!(api.conversations("").await.len(), all.len() + created, "retries created duplicates");
    eprintln!(
        "crash: {} acknowledged ({} assigned, {} queued), {} listed after restart, {} cut off by the kill \
         ({committed_unanswered} had committed)",
        acked.len(),
        acked.iter().filter(|a| a.2 == "assigned").count(),
        acked.iter().filter(|a| a.2 == "queued").count(),
        all.len(),
        unanswered.len(),
    );
}

// ---------------------------------------------------------------- 4. two nodes, one PostgreSQL

/// A fresh PostgreSQL database, dropped at the end unless the test failed.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl PgDatabase {
    fn create(admin_url: &str) -> PgDatabase {
        let name = format!("usher_nodes_{}", unique());
        psql(admin_url, &format!("CREATE DATABASE {name}"));
        let (main, query) = match admin_url.split_once('?') {
            Some((m, q)) => (m, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let base = main.rsplit_once('/').map_or(main, |(b, _)| b);
        PgDatabase { admin_url: admin_url.to_string(), url: format!("{base}/{name}{query}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: database {} kept", self.name);
            return;
        }
        let _ = Command::new("psql")
            .args([&self.admin_url, "-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// Answers counted by (action, HTTP status, error code).
type Tally = BTreeMap<(&'static str, u16, String), u64>;

/// A small deterministic random number generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_postgres_keep_caps_counters_and_queue_honest() {
    let Some(admin_url) = std::env::var("USHER_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
        eprintln!("USHER_TEST_POSTGRES is not set: two-node PostgreSQL test skipped");
        return;
    };
    let db = PgDatabase::create(&admin_url);
    let scratch = Scratch::new("nodes");
    let database = vec!["--database".to_string(), db.url.clone()];
    let mut a = Server::start(&database, Some(TOKEN), &scratch.log("node-a")).await;
    let mut b = Server::start(&database, None, &scratch.log("node-b")).await;
    // The second node found the workspace and made none of its own.
    assert_eq!(psql(&db.url, "SELECT COUNT(*) FROM workspaces"), "1");
    assert_eq!(psql(&db.url, "SELECT COUNT(*) FROM tokens"), "1");
    assert!(!b.log_text().contains("Created workspace"), "node b bootstrapped again:\n{}", b.log_text());
    let (api_a, api_b) = (Api::new(&a.base, TOKEN), Api::new(&b.base, TOKEN));
    assert_eq!(api_a.get("/v1/workspace").await, api_b.get("/v1/workspace").await);

    let team = api_a.team("Support", "round_robin").await;
    let mut agents = Vec::new();
    let mut agent_tokens = Vec::new();
    for (i, name) in ["ana", "bob", "cid", "dee"].into_iter().enumerate() {
        let node = if i % 2 == 0 { &api_a } else { &api_b };
        let id = node.online_agent(name, team, 3).await;
        let t = api_b.ok(Method::POST, "/v1/tokens", json!({ "role": "agent", "agent": id })).await;
        agents.push(id);
        agent_tokens.push(t["token"].as_str().expect("token").to_string());
    }

    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for c in 0..16usize {
        let admin = if c % 2 == 0 { api_a.clone() } else { api_b.clone() };
        let agent = admin.with_token(&agent_tokens[c % 4]);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64);
            let mut known: Vec<i64> = Vec::new();
            let mut tally: Tally = BTreeMap::new();
            let mut failures: Vec<String> = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                let (what, result) = match rng.below(10) {
                    // Open, queueing or left for agents to pick when nobody has room.
                    0..=2 => {
                        let when = if rng.below(2) == 0 { "leave_unassigned" } else { "queue" };
                        let body = json!({ "channel": "sms", "team": team, "when_nobody": when,
                                           "contact": { "external_id": format!("n{c}-{i}") } });
                        let r = admin.send(Method::POST, "/v1/conversations", Some(&body), None).await;
                        if let Ok((st, v)) = &r {
                            if st.is_success() {
                                known.push(id_of(v));
                            }
                        }
                        ("open", r)
                    }
                    // Claim: one from the agent's pick list, or any conversation this client saw.
                    3..=5 => {
                        let mut target = known.get(rng.below(known.len().max(1))).copied();
                        if rng.below(4) != 0 {
                            let picks = agent
                                .send(Method::GET, "/v1/conversations?status=unassigned&limit=50", None, None)
                                .await;
                            if let Ok((st, v)) = picks {
                                let picks = v["conversations"].as_array().cloned().unwrap_or_default();
                                if st.is_success() && !picks.is_empty() {
                                    target = Some(id_of(&picks[rng.below(picks.len())]));
                                }
                            }
                        }
                        let Some(id) = target else { continue };
                        let path = format!("/v1/conversations/{id}/claim");
                        ("claim", agent.send(Method::POST, &path, None, None).await)
                    }
                    // The agent finishes one of its own conversations.
                    6..=8 => {
                        let mine =
                            agent.send(Method::GET, "/v1/conversations?status=assigned", None, None).await;
                        let mine = match mine {
                            Ok((st, v)) if st.is_success() => {
                                v["conversations"].as_array().cloned().unwrap_or_default()
                            }
                            other => {
                                failures.push(format!("list own: {other:?}"));
                                continue;
                            }
                        };
                        if mine.is_empty() {
                            continue;
                        }
                        let path = format!("/v1/conversations/{}/close", id_of(&mine[rng.below(mine.len())]));
                        ("close own", agent.send(Method::POST, &path, None, None).await)
                    }
                    // Anyone's, closed by the admin or (refused unless it holds it) by the agent.
                    _ => {
                        let Some(&id) = known.get(rng.below(known.len().max(1))) else { continue };
                        let closer = if rng.below(2) == 0 { &admin } else { &agent };
                        let path = format!("/v1/conversations/{id}/close");
                        ("close any", closer.send(Method::POST, &path, None, None).await)
                    }
                };
                let key = match &result {
                    Ok((st, v)) => (what, st.as_u16(), v["error"]["code"].as_str().unwrap_or("").to_string()),
                    Err(_) => (what, 0, "no answer".to_string()),
                };
                *tally.entry(key).or_default() += 1;
                match result {
                    Err(e) => failures.push(format!("{what}: no answer: {e}")),
                    Ok((st, v)) if st.is_server_error() => failures.push(format!("{what}: {st} {v}")),
                    _ => {}
                }
            }
            (tally, failures)
        }));
    }
    let mut tally: Tally = BTreeMap::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (part, f) = t.await.expect("client task");
        for (k, n) in part {
            *tally.entry(k).or_default() += n;
        }
        failures.extend(f);
    }
    eprintln!("two nodes: answers by (action, status): {tally:?}");
    assert!(
        failures.is_empty(),
        "{} failures, first ones: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Random claims mostly meet full agents (409 agent_unavailable); the race below is the
    // deterministic claim check, so here claims only need to have been tried.
    assert!(tally.keys().any(|(w, _, _)| *w == "claim"), "no claim was tried: {tally:?}");
    for action in ["open", "close own"] {
        let ok: u64 = tally
            .iter()
            .filter(|((w, st, _), _)| *w == action && (200..300).contains(st))
            .map(|(_, n)| n)
            .sum();
        assert!(ok > 0, "no {action} succeeded: {tally:?}");
    }

    let after_load = check_nodes(&api_a, &api_b, team, &agents).await;
    eprintln!("two nodes after the random load: {after_load:?}");

    // Then a deterministic squeeze: enough concurrent openings, split over both nodes, to
    // fill every free place and queue 4 more...
    let free = 4 * 3 - after_load.assigned;
    let extra = free + 4;
    let mut openings = Vec::new();
    for k in 0..extra {
        let node = if k % 2 == 0 { api_a.clone() } else { api_b.clone() };
        openings.push(tokio::spawn(async move {
            let body = json!({ "channel": "sms", "team": team, "contact": { "external_id": format!("squeeze-{k}") } });
            node.ok(Method::POST, "/v1/conversations", body).await
        }));
    }
    let mut outcomes = BTreeMap::new();
    for o in openings {
        let c = o.await.expect("opening");
        *outcomes.entry(c["status"].as_str().expect("status").to_string()).or_insert(0usize) += 1;
    }
    assert_eq!(outcomes.get("assigned").copied().unwrap_or(0), free, "openings assigned: {outcomes:?}");
    assert_eq!(outcomes.get("queued").copied().unwrap_or(0), 4, "openings queued: {outcomes:?}");
    let full = check_nodes(&api_a, &api_b, team, &agents).await;
    assert_eq!((full.assigned, full.at_cap), (12, 4), "{full:?}");
    assert_eq!(full.queued, after_load.queued + 4, "{full:?}");
    // ...then 4 concurrent closes, 2 through each node: each hands its place to the queue's head.
    let held = api_a.conversations("&status=assigned").await;
    let mut closes = Vec::new();
    for (k, c) in held.iter().take(4).enumerate() {
        let node = if k % 2 == 0 { api_a.clone() } else { api_b.clone() };
        let path = format!("/v1/conversations/{}/close", id_of(c));
        closes.push(tokio::spawn(async move { node.ok(Method::POST, &path, json!({})).await }));
    }
    for c in closes {
        assert_eq!(c.await.expect("close")["status"], "closed");
    }
    let drained = check_nodes(&api_a, &api_b, team, &agents).await;
    assert_eq!((drained.assigned, drained.at_cap), (12, 4), "the queue did not refill: {drained:?}");
    assert_eq!(drained.queued, full.queued - 4, "{drained:?}");

    // A claim race across the nodes: empty the queue, give two agents room, and let both claim
    // one unassigned conversation at once, each through another node. Exactly one wins.
    for c in api_a.conversations("&status=queued").await {
        api_b.ok(Method::POST, &format!("/v1/conversations/{}/close", id_of(&c)), json!({})).await;
    }
    let (x, y) = (agents[0], agents[1]);
    for who in [x, y] {
        let mine = api_a.conversations(&format!("&assignee={who}&status=assigned")).await;
        api_a.ok(Method::POST, &format!("/v1/conversations/{}/close", id_of(&mine[0])), json!({})).await;
    }
    let roomy = check_nodes(&api_a, &api_b, team, &agents).await;
    assert_eq!((roomy.assigned, roomy.queued, roomy.at_cap), (10, 0, 2), "{roomy:?}");
    let body = json!({ "channel": "sms", "team": team, "contact": { "external_id": "race" },
                       "when_nobody": "leave_unassigned", "cap": 0 });
    let race = api_a.ok(Method::POST, "/v1/conversations", body).await;
    assert_eq!(race["status"], "unassigned", "{race}");
    let path = format!("/v1/conversations/{}/claim", id_of(&race));
    let (as_x, as_y) = (api_a.with_token(&agent_tokens[0]), api_b.with_token(&agent_tokens[1]));
    let (rx, ry) = tokio::join!(as_x.call(Method::POST, &path, None), as_y.call(Method::POST, &path, None));
    let (winner, loser, won_by) = match (rx.0, ry.0) {
        (StatusCode::OK, StatusCode::CONFLICT) => (rx, ry, x),
        (StatusCode::CONFLICT, StatusCode::OK) => (ry, rx, y),
        _ => panic!("claim race: expected one 200 and one 409, got {rx:?} and {ry:?}"),
    };
    assert_eq!(winner.1["assignee"], won_by, "{winner:?}");
    assert_eq!(loser.1["error"]["code"], "already_assigned", "{loser:?}");
    assert_eq!(api_b.get(&path.replace("/claim", "")).await["assignee"], won_by);
    let raced = check_nodes(&api_a, &api_b, team, &agents).await;
    assert_eq!((raced.assigned, raced.at_cap), (11, 3), "{raced:?}");

    let events = api_a.gap_free_events().await;
    eprintln!(
        "two nodes: squeezed {full:?}, drained {drained:?}, claim race won by {won_by}, {} events",
        events.len()
    );
    let (ta, tb) = (a.stop().await, b.stop().await);
    eprintln!("two nodes: stopped in {ta:?} and {tb:?}");
}

/// What [`check_nodes`] found.
#[derive(Debug, Clone, Copy)]
struct Totals {
    assigned: usize,
    queued: usize,
    at_cap: usize,
}

/// Both nodes tell the same story, and it holds together: every agent's `open` counter equals
/// the conversations it holds and stays within cap 3, every assigned conversation has one of
/// the agents, and the queue holds work only while every agent is at cap.
async fn check_nodes(api_a: &Api, api_b: &Api, team: i64, agents: &[i64]) -> Totals {
    let listed = api_a.get("/v1/agents").await;
    assert_eq!(listed, api_b.get("/v1/agents").await, "the two nodes disagree about the agents");
    let listed = listed["agents"].as_array().expect("agents").clone();
    assert_eq!(listed.iter().map(id_of).collect::<Vec<_>>(), agents);
    let mut at_cap = 0;
    let mut open_total = 0;
    for (k, ag) in listed.iter().enumerate() {
        let id = id_of(ag);
        let open = ag["open"].as_i64().expect("open");
        assert!(open <= 3, "agent {id} holds {open} > cap 3: {ag}");
        let node = if k % 2 == 0 { api_a } else { api_b };
        let held = node.conversations(&format!("&assignee={id}&status=assigned")).await;
        assert_eq!(held.len() as i64, open, "agent {id}: counter {open} but holds {}", held.len());
        assert!(held.iter().all(|c| c["assignee"] == id && c["status"] == "assigned"));
        at_cap += usize::from(open == 3);
        open_total += open as usize;
    }
    let all = api_b.conversations("").await;
    let (mut assigned, mut queued) = (0, 0);
    for c in &all {
        match c["status"].as_str() {
            Some("assigned") => {
                assigned += 1;
                let who = c["assignee"].as_i64().unwrap_or_else(|| panic!("assigned without assignee: {c}"));
                assert!(agents.contains(&who), "{c}");
            }
            Some("queued") => {
                queued += 1;
                assert!(c["assignee"].is_null() && c["queue"]["position"].is_i64(), "{c}");
            }
            Some("unassigned" | "closed") => assert!(c["assignee"].is_null(), "{c}"),
            _ => panic!("unknown status: {c}"),
        }
    }
    assert_eq!(assigned, open_total, "assigned conversations vs the agents' open counters");
    let queue = api_a.get(&format!("/v1/teams/{team}/queue")).await;
    assert_eq!(queue["waiting"].as_array().expect("waiting").len(), queued.min(1000), "{queue}");
    if queued > 0 {
        assert_eq!(at_cap, agents.len(), "{queued} conversations queue while someone has room: {listed:?}");
    }
    Totals { assigned, queued, at_cap }
}

/// Minutes since UTC midnight, now (the test's calendar is built around it).
#[allow(clippy::disallowed_methods)] // a real server's timers are real time
fn utc_minute_now() -> (u32, u64) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    (u32::try_from((secs / 60) % 1440).unwrap(), secs % 60)
}

/// Runs waiting on a question's time-out, a delay and business hours survive a SIGKILL: the
/// restarted server's worker resumes each when it falls due, exactly once (one decision and
/// no message sent twice). Real time: about two minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_runs_resume_exactly_once_after_a_sigkill() {
    // A calendar that opens at the start of the minute after next (UTC); keep clear of
    // midnight, where "the minute after next" would be tomorrow's.
    let (mut minute, mut second) = utc_minute_now();
    if minute >= 1436 {
        tokio::time::sleep(Duration::from_secs(u64::from(1440 - minute) * 60 - second + 2)).await;
        (minute, second) = utc_minute_now();
    }
    let _ = second;
    let opening = minute + 2;
    let hhmm = format!("{:02}:{:02}", opening / 60, opening % 60);
    let week: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), json!([[hhmm, "24:00"]])))
        .collect();

    let scratch = Scratch::new("runs");
    let mut s = Server::start(&scratch.data_args(), Some(TOKEN), &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let team = api.team("Support", "round_robin").await;
    let ana = api.online_agent("ana", team, 100).await;
    let calendar = api
        .ok(
            Method::POST,
            "/v1/calendars",
            json!({ "name": "Opens soon", "time_zone": "UTC", "weekly": week }),
        )
        .await;
    let docs = [
        json!({ "name": "Question", "trigger": { "kind": "conversation_opened" }, "channels": ["sms"], "start": "ask", "steps": {
            "ask": { "kind": "ask", "text": "Order number?", "save_to": "order", "next": "assign", "timeout_minutes": 1, "on_timeout": "assign" },
            "assign": { "kind": "assign", "team": team } } }),
        json!({ "name": "Delay", "trigger": { "kind": "conversation_opened" }, "channels": ["email"], "start": "hold", "steps": {
            "hold": { "kind": "send_message", "text": "Hold on.", "next": "pause" },
            "pause": { "kind": "wait", "minutes": 1, "next": "assign" },
            "assign": { "kind": "assign", "team": team } } }),
        json!({ "name": "Hours", "trigger": { "kind": "conversation_opened" }, "channels": ["web_chat"], "start": "hours", "steps": {
            "hours": { "kind": "branch", "branches": [{ "when": { "within_hours": { "calendar": calendar["id"], "open": true } }, "next": "assign" }], "otherwise": "away" },
            "away": { "kind": "send_message", "text": "We open at {{hours.next_opening}}.", "next": "wait" },
            "wait": { "kind": "wait", "minutes": 1, "next": "check" },
            "check": { "kind": "branch", "branches": [{ "when": { "within_hours": { "calendar": calendar["id"], "open": true } }, "next": "assign" }], "otherwise": "wait" },
            "assign": { "kind": "assign", "team": team } } }),
    ];
    for doc in docs {
        let w = api.ok(Method::POST, "/v1/workflows", doc).await;
        api.ok(Method::POST, &format!("/v1/workflows/{}/publish", id_of(&w)), json!({})).await;
    }
    let mut opened = Vec::new();
    for channel in ["sms", "email", "web_chat"] {
        let c = api
            .ok(
                Method::POST,
                "/v1/conversations",
                json!({ "channel": channel, "team": team, "contact": { "external_id": channel } }),
            )
            .await;
        assert_eq!(c["status"], "unassigned", "{channel} waits: {c}");
        opened.push(id_of(&c));
    }

    s.sigkill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s2 = Server::start(&scratch.data_args(), None, &scratch.log("serve")).await;
    let api = Api::new(&s2.base, TOKEN);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut done = 0;
        for id in &opened {
            if api.get(&format!("/v1/conversations/{id}")).await["status"] == "assigned" {
                done += 1;
            }
        }
        if done == opened.len() {
            break;
        }
        assert!(Instant::now() < deadline, "not every run resumed; the server said:\n{}", s2.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (id, expected) in opened.iter().zip([vec!["Order number?"], vec!["Hold on."], vec!["We open at "]]) {
        let c = api.get(&format!("/v1/conversations/{id}")).await;
        assert_eq!(c["assignee"], ana);
        let trace = api.get(&format!("/v1/conversations/{id}/trace")).await;
        assert_eq!(trace["decisions"].as_array().unwrap().len(), 1, "decided once: {trace}");
        let texts: Vec<String> = api.get(&format!("/v1/conversations/{id}/messages")).await["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(texts.len(), expected.len(), "no message sent twice: {texts:?}");
        assert!(texts[0].starts_with(expected[0]), "{texts:?}");
        let runs = api.get(&format!("/v1/conversations/{id}/runs")).await;
        assert_eq!(runs["runs"][0]["status"], "finished", "{runs}");
    }
}

// ---------------------------------------------------------------- channels and deliveries

/// What a test receiver saw: (headers, body) per request.
type Seen = Arc<std::sync::Mutex<Vec<(BTreeMap<String, String>, String)>>>;

/// A real HTTP receiver in this process at `path` on a free port: answers 500 while `failing`
/// is set, 200 otherwise, and keeps what it was sent.
async fn receiver(path: &'static str, failing: Arc<AtomicBool>) -> (String, Seen) {
    use axum::http::{HeaderMap, StatusCode as Http};
    let seen: Seen = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let url = format!("http://{}{path}", listener.local_addr().expect("address"));
    let sink = seen.clone();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (sink, failing) = (sink.clone(), failing.clone());
            async move {
                let h = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                sink.lock().expect("lock").push((h, body));
                if failing.load(Ordering::SeqCst) {
                    Http::INTERNAL_SERVER_ERROR
                } else {
                    Http::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver runs") });
    (url, seen)
}

/// Deliveries pending when the server is SIGKILLed (its receiver was failing them) all arrive
/// after a restart, once the receiver recovers: the event log is the outbox, so nothing
/// committed is lost between the commit and the send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_at_a_sigkill_all_arrive_after_the_restart() {
    let scratch = Scratch::new("deliveries");
    let mut s = Server::start(&scratch.data_args(), Some(TOKEN), &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let failing = Arc::new(AtomicBool::new(true));
    let (url, seen) = receiver("/hook", failing.clone()).await;
    let team = api.team("Support", "round_robin").await;
    api.online_agent("ana", team, 100).await;
    let hook =
        api.ok(Method::POST, "/v1/webhooks", json!({ "url": url, "events": ["conversation.opened"] })).await;
    let hook = id_of(&hook);
    let mut opened = BTreeSet::new();
    for i in 0..20 {
        let c = api.ok(Method::POST, "/v1/conversations", opening(team, &format!("k{i}"))).await;
        opened.insert(id_of(&c));
    }
    // The receiver has failed some attempts: deliveries are pending, with attempts behind them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("lock").len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the first attempts did not come: {}",
            seen.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = api.get(&format!("/v1/webhooks/{hook}/deliveries")).await;
    assert!(
        pending["deliveries"].as_array().expect("list").iter().all(|d| d["status"] == "pending"),
        "{pending}"
    );
    s.sigkill();
    failing.store(false, Ordering::SeqCst);
    let s2 = Server::start(&scratch.data_args(), None, &scratch.log("serve")).await;
    let api = Api::new(&s2.base, TOKEN);
    // Every opening arrives, answered 200, at least once (deduplicated by Usher-Delivery).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered: BTreeSet<i64> = seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .filter_map(|v| v["event"]["conversation"].as_i64())
            .collect();
        let d = api.get(&format!("/v1/webhooks/{hook}/deliveries")).await;
        let done =
            d["deliveries"].as_array().expect("list").iter().filter(|d| d["status"] == "delivered").count();
        if done == opened.len() {
            assert_eq!(delivered, opened, "every opening reached the receiver");
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {} delivered: {d}\n{}", opened.len(), s2.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let d = api.get(&format!("/v1/webhooks/{hook}/deliveries")).await;
    assert!(
        d["deliveries"].as_array().expect("list").iter().all(|d| d["attempts"].as_i64() >= Some(2)),
        "{d}"
    );
}

/// The example adapter (examples/generic-adapter/adapter.py, a separate process in another
/// language) carries a provider's message into Usher and the agent's answer back out to the
/// provider, checking Usher's signature on the way; a provider's retry opens nothing twice and
/// a forged delivery is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_adapter_carries_messages_both_ways() {
    let scratch = Scratch::new("adapter");
    let s = Server::start(&scratch.data_args(), Some(TOKEN), &scratch.log("serve")).await;
    let api = Api::new(&s.base, TOKEN);
    let team = api.team("Support", "round_robin").await;
    let ana = api.online_agent("ana", team, 10).await;
    let integration = api.ok(Method::POST, "/v1/tokens", json!({ "role": "integration" })).await;
    let ana_token = api.ok(Method::POST, "/v1/tokens", json!({ "role": "agent", "agent": ana })).await;
    let adapter_port = free_port();
    let channel = api
        .ok(
            Method::POST,
            "/v1/channels",
            json!({ "kind": "sms", "name": "SMS", "team": team, "outbound_url": format!("http://127.0.0.1:{adapter_port}/outbound") }),
        )
        .await;
    let (provider, sent) = receiver("/send", Arc::new(AtomicBool::new(false))).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/generic-adapter/adapter.py");
    let log = std::fs::File::create(scratch.log("adapter")).expect("adapter log");
    let child = Command::new("python3")
        .arg(&script)
        .env("USHER_URL", &s.base)
        .env("USHER_TOKEN", integration["token"].as_str().expect("token"))
        .env("USHER_CHANNEL", id_of(&channel).to_string())
        .env("USHER_CHANNEL_SECRET", channel["secret"].as_str().expect("secret"))
        .env("PROVIDER_SEND_URL", &provider)
        .env("LISTEN", format!("127.0.0.1:{adapter_port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("python3 runs the example adapter");
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _adapter = Reap(child);
    let adapter = format!("http://127.0.0.1:{adapter_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + READY_WITHIN;
    while http.get(format!("{adapter}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the adapter did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from_provider =
        json!({ "from": "+15550001", "name": "Mia", "message_id": "sms-1", "text": "Is my order shipped?" });
    let first: Value = http
        .post(format!("{adapter}/inbound"))
        .json(&from_provider)
        .send()
        .await
        .expect("adapter answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (first["outcome"].as_str(), first["status"].as_str(), first["replayed"].as_bool()),
        (Some("opened"), Some("assigned"), Some(false)),
        "{first}"
    );
    let again: Value = http
        .post(format!("{adapter}/inbound"))
        .json(&from_provider)
        .send()
        .await
        .expect("adapter answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (again["conversation"].clone(), again["replayed"].as_bool()),
        (first["conversation"].clone(), Some(true))
    );
    let cid = first["conversation"].as_i64().expect("id");
    let conv = api.get(&format!("/v1/conversations/{cid}")).await;
    assert_eq!((conv["assignee"].as_i64(), conv["contact"]["name"].as_str()), (Some(ana), Some("Mia")));
    let ana_api = api.with_token(ana_token["token"].as_str().expect("token"));
    ana_api
        .ok(
            Method::POST,
            &format!("/v1/conversations/{cid}/messages"),
            json!({ "text": "Yes, it left today." }),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = sent.lock().expect("lock").clone();
        if let Some((_, body)) = got.first() {
            let v: Value = serde_json::from_str(body).expect("json");
            assert_eq!(
                (v["to"].as_str(), v["text"].as_str()),
                (Some("+15550001"), Some("Yes, it left today.")),
                "{v}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the provider got nothing; adapter log:\n{}",
            std::fs::read_to_string(scratch.log("adapter")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forged = http
        .post(format!("{adapter}/outbound"))
        .header("usher-signature", "t=1,v1=00")
        .body(r#"{"id":1,"event":{"kind":"message.sent"}}"#)
        .send()
        .await
        .expect("adapter answers");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sent.lock().expect("lock").len(), 1, "one answer, handed on once");
}
