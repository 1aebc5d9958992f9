//! `usher bench`: a load generator that talks HTTP to a running server on loopback. It sets
//! up a team of online agents, then `concurrency` workers each open a conversation (routed
//! and assigned durably) and close it, as fast as the server answers, and prints throughput
//! and latency percentiles. `--baseline URL` also measures the raw database: the same
//! transaction pattern without HTTP or routing, so the ratio to that limit is visible.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Options of `usher bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server's base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token of the server.
    #[arg(long, env = "USHER_TOKEN")]
    token: String,
    /// How many conversations to open (and close).
    #[arg(long, default_value_t = 5_000)]
    conversations: usize,
    /// Concurrent clients, each with its own manager token.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Agents in each benchmark team.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Benchmark teams; conversation i goes to team i mod N. One team serializes every
    /// decision on that team's lock; several show how the store scales across teams.
    #[arg(long, default_value_t = 1)]
    teams: usize,
    /// Strategy of the benchmark team.
    #[arg(long, default_value = "least_open")]
    strategy: String,
    /// Open through a channel's inbound call (`POST /v1/channels/{id}/inbound`), as adapters do.
    #[arg(long)]
    inbound: bool,
    /// Also measure raw transactions of the same shape on this database URL (a scratch
    /// database: tables named bench_* are created there).
    #[arg(long)]
    baseline: Option<String>,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {path}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path} answered {status}: {value}");
        }
        Ok(value)
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(name: &str, mut micros: Vec<u64>, elapsed: Duration) {
    micros.sort_unstable();
    let n = micros.len();
    println!(
        "{name:<8} {n:>7} requests  {:>8.0}/s   p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&micros, 0.50),
        percentile(&micros, 0.90),
        percentile(&micros, 0.99),
        percentile(&micros, 1.0),
    );
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> Result<()> {
    if !(args.url.starts_with("http://127.")
        || args.url.starts_with("http://localhost")
        || args.url.starts_with("http://[::1]"))
    {
        bail!("usher bench only targets loopback addresses");
    }
    let client = Arc::new(Client {
        http: reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?,
        base: args.url.trim_end_matches('/').to_string(),
    });
    let stamp = usher_server::now_millis();
    let mut team_ids = Vec::new();
    for t in 0..args.teams.max(1) {
        let team = client
            .call(
                &args.token,
                reqwest::Method::POST,
                "/v1/teams",
                Some(json!({
                    "name": format!("bench-{stamp}-{t}"), "strategy": args.strategy, "when_nobody": "queue"
                })),
            )
            .await?;
        let team_id = team["id"].as_i64().context("team id")?;
        team_ids.push(team_id);
        for i in 0..args.agents {
            client
                .call(
                    &args.token,
                    reqwest::Method::POST,
                    "/v1/agents",
                    Some(json!({
                        "name": format!("bench agent {t}.{i}"),
                        "email": format!("bench-{stamp}-{t}-{i}@bench.usher"),
                        "teams": [team_id], "max_open": 10_000, "status": "online"
                    })),
                )
                .await?;
        }
    }
    // With --inbound, each team gets a channel and conversations come in through the adapters'
    // call, as real traffic does.
    let mut channels = Vec::new();
    if args.inbound {
        for (t, team) in team_ids.iter().enumerate() {
            let c = client
                .call(
                    &args.token,
                    reqwest::Method::POST,
                    "/v1/channels",
                    Some(json!({ "kind": "sms", "name": format!("bench-{stamp}-{t}"), "team": team })),
                )
                .await?;
            channels.push(c["id"].as_i64().context("channel id")?);
        }
    }
    let channels = Arc::new(channels);
    let team_ids = Arc::new(team_ids);
    let mut tokens = Vec::new();
    for _ in 0..args.concurrency {
        let t = client
            .call(
                &args.token,
                reqwest::Method::POST,
                "/v1/tokens",
                Some(json!({ "role": if args.inbound { "admin" } else { "manager" } })),
            )
            .await?;
        tokens.push(t["token"].as_str().context("token")?.to_string());
    }
    println!(
        "usher bench: {} conversations, {} clients, {} team(s) of {} agents ({}), server {}",
        args.conversations,
        args.concurrency,
        team_ids.len(),
        args.agents,
        args.strategy,
        args.url
    );
    let next = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut workers = Vec::new();
    for token in tokens {
        let client = client.clone();
        let next = next.clone();
        let team_ids = team_ids.clone();
        let channels = channels.clone();
        let total = args.conversations;
        workers.push(tokio::spawn(async move {
            let mut opens = Vec::new();
            let mut closes = Vec::new();
            let mut assigned = 0usize;
            loop {
                let i = {
                    let mut n = next.lock().await;
                    if *n >= total {
                        break;
                    }
                    *n += 1;
                    *n
                };
                let team_id = team_ids[i % team_ids.len()];
                let t0 = Instant::now();
                let contact = format!("bench-{stamp}-{i}");
                let conv = if channels.is_empty() {
                    client
                        .call(
                            &token,
                            reqwest::Method::POST,
                            "/v1/conversations",
                            Some(json!({
                                "channel": "web_chat", "team": team_id,
                                "contact": { "external_id": contact }, "message": "hi"
                            })),
                        )
                        .await?
                } else {
                    let channel = channels[i % channels.len()];
                    let r = client
                        .call(
                            &token,
                            reqwest::Method::POST,
                            &format!("/v1/channels/{channel}/inbound"),
                            Some(json!({ "contact": { "external_id": contact }, "message": { "id": format!("m-{i}"), "text": "hi" } })),
                        )
                        .await?;
                    r["conversation"].clone()
                };
                opens.push(t0.elapsed().as_micros() as u64);
                if conv["status"] == "assigned" {
                    assigned += 1;
                }
                let id = conv["id"].as_i64().context("conversation id")?;
                let t1 = Instant::now();
                client
                    .call(&token, reqwest::Method::POST, &format!("/v1/conversations/{id}/close"), None)
                    .await?;
                closes.push(t1.elapsed().as_micros() as u64);
            }
            Ok::<_, anyhow::Error>((opens, closes, assigned))
        }));
    }
    let (mut opens, mut closes, mut assigned) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        let (o, c, a) = w.await??;
        opens.extend(o);
        closes.extend(c);
        assigned += a;
    }
    let elapsed = started.elapsed();
    println!(
        "elapsed  {:.2} s, {assigned} of {} opened conversations assigned at once",
        elapsed.as_secs_f64(),
        opens.len()
    );
    report("open", opens, elapsed);
    report("close", closes, elapsed);
    if let Some(url) = args.baseline {
        let n = args.conversations;
        let rate = usher_store::bench::raw_transactions(&url, n, args.concurrency).await?;
        println!("baseline {n:>7} raw transactions of the same shape on {url}: {rate:>8.0}/s");
    }
    Ok(())
}
