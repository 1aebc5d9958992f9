//! The `usher` binary configured as an operator would: a TOML config file, JSON logs and
//! request ids, through a real process. (Bootstrap, signals, the crash test and two nodes are
//! in `processes.rs`.)

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // unique names for scratch folders, not routing time

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// `usher simulate` as a user runs it: the same seed prints the same JSON twice, the HTML
/// report holds its charts and fetches nothing, and a bad setup is refused with a reason.
#[test]
fn simulate_is_deterministic_writes_its_report_and_refuses_a_bad_setup() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/simulation/support.json");
    let html = std::env::temp_dir().join(format!("usher-sim-{}.html", std::process::id()));
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .arg("simulate")
            .arg("--config")
            .arg(&example)
            .args(["--hours", "200", "--json"])
            .args(extra)
            .output()
            .expect("usher simulate runs")
    };
    let first = run(&["--html", html.to_str().expect("path")]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = run(&[]);
    assert_eq!(first.stdout, second.stdout, "the same seed, the same report");
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(report["strategies"].as_array().map(Vec::len), Some(2));
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert_eq!(page.matches("<svg").count(), 4, "waits, queue, and load per agent for each strategy");
    assert_eq!(
        page.matches("http://").count(),
        page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "no address but the SVG namespace"
    );
    let _ = std::fs::remove_file(&html);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["simulate", "--agents", "0"])
        .output()
        .expect("usher simulate runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("agents must be"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `usher simulate` on the example desk with its recorded week, and on a running
/// workspace's own desk: imported from its database, it is run as configured (its teams,
/// agents, published workflow, time zone and calendars), by the names the API gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_replays_a_trace_and_imports_a_workspace() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/simulation");
    let simulate = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_usher")).arg("simulate").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let desk = examples.join("desk.json").display().to_string();
    let trace = examples.join("trace.csv").display().to_string();
    let (ok, out, err) = simulate(&["--config", &desk, "--trace", &trace, "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let rows = std::fs::read_to_string(&trace).unwrap().lines().count() as u64 - 1;
    assert_eq!(report["trace_arrivals"], rows);
    assert_eq!(report["strategies"][0]["name"], "configured", "a desk with teams runs as configured");
    assert_eq!(report["strategies"][0]["outcome"]["arrived"], rows);
    let teams: Vec<&str> = report["strategies"][0]["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["Support", "Soporte"]);
    // The office examples (business hours, a workflow that waits for them): the same three
    // agents over longer hours answer more, as the README's walk-through says.
    let answered = |file: &str| {
        let (ok, out, err) = simulate(&["--config", &examples.join(file).display().to_string(), "--json"]);
        assert!(ok, "{err}");
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["setup"]["time_zone"], "Europe/Berlin");
        r["strategies"][0]["outcome"]["answered"].as_u64().unwrap()
    };
    assert!(answered("office-late.json") > answered("office.json"));
    // A broken trace is refused with its line.
    let dir = temp_dir();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "arrived_at,channel\n0,whatsapp\n5,carrier-pigeon\n").unwrap();
    let (ok, _, err) = simulate(&["--config", &desk, "--trace", &bad.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("line 3") && err.contains("carrier-pigeon"), "{err}");

    // A workspace: the demo's two teams, its agents and its published workflow.
    let port = free_port();
    let data = dir.join("data");
    let child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args([
            "serve",
            "--demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            &data.display().to_string(),
        ])
        .env("USHER_BOOTSTRAP_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child: Some(child), base: format!("http://127.0.0.1:{port}") };
    ready(&s).await;
    let http = reqwest::Client::new();
    let answer = |r: reqwest::RequestBuilder| async move {
        r.bearer_auth(TOKEN).send().await.unwrap().json::<Value>().await.unwrap()
    };
    let agents = answer(http.get(format!("{}/v1/agents", s.base))).await;
    let mut names: Vec<String> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    // The workspace's business hours: a calendar of no team.
    let hours =
        json!({ "name": "Office", "time_zone": "Europe/Berlin", "weekly": { "mon": [["09:00", "17:00"]] } });
    let calendar = answer(http.post(format!("{}/v1/calendars", s.base)).json(&hours)).await;
    let calendar_id = calendar["id"].as_i64().expect("a calendar");
    let (ok, out, err) = simulate(&[
        "--data",
        &data.display().to_string(),
        "--rate-per-hour",
        "40",
        "--hours",
        "48",
        "--json",
    ]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let mut simulated: Vec<String> =
        report["agents"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    simulated.sort();
    assert_eq!(simulated, names, "the workspace's agents");
    assert!(!report["setup"]["workflows"].as_array().unwrap().is_empty(), "its published workflow routes");
    assert_eq!(report["setup"]["time_zone"], "UTC", "the workspace's time zone");
    assert_eq!(report["setup"]["business_hours"]["time_zone"], "Europe/Berlin", "its hours");
    assert_eq!(report["setup"]["calendars"][calendar_id.to_string()]["weekly"]["mon"][0][0], "09:00");
    let run = &report["strategies"][0];
    assert_eq!(run["name"], "configured");
    let teams: Vec<&str> =
        run["teams"].as_array().unwrap().iter().map(|t| t["team"].as_str().unwrap()).collect();
    assert_eq!(teams, ["Support", "Sales"]);
    assert!(run["outcome"]["arrived"].as_u64().unwrap() > 1000);
    assert!(run["outcome"]["answered"].as_u64().unwrap() > 0);
    let (ok, _, err) = simulate(&["--data", &data.display().to_string(), "--workspace", "99"]);
    assert!(!ok && err.contains("workspace 99"), "{err}");
}
