//! `usher simulate`: the routing core in virtual time (see the `usher-sim` crate).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use usher_core::model::Strategy;
use usher_sim::model::{Dist, Setup};

/// Flags of `usher simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A setup file (JSON, or TOML when it ends in .toml) with every setting; flags given
    /// beside it override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Agents.
    #[arg(long)]
    agents: Option<u32>,
    /// Arrivals per hour.
    #[arg(long)]
    rate_per_hour: Option<f64>,
    /// Hours of traffic to simulate.
    #[arg(long)]
    hours: Option<f64>,
    /// Mean handling time, seconds (exponential; with --handle-sigma, the median of a log-normal).
    #[arg(long)]
    handle_seconds: Option<f64>,
    /// Shape of a log-normal handling time.
    #[arg(long)]
    handle_sigma: Option<f64>,
    /// Mean patience, seconds (exponential); none: nobody leaves.
    #[arg(long)]
    patience_seconds: Option<f64>,
    /// Conversations an agent holds at once.
    #[arg(long)]
    max_open: Option<u32>,
    /// Handling slows by this share per conversation held beyond the first.
    #[arg(long)]
    slowdown: Option<f64>,
    /// Service-level target, seconds.
    #[arg(long)]
    target_seconds: Option<f64>,
    /// The service level to reach for the staffing advice (0 to 1).
    #[arg(long)]
    goal: Option<f64>,
    /// The seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Strategies to compare, comma-separated.
    #[arg(long, default_value = "round_robin,least_open")]
    strategies: String,
    /// Also advise on staffing (Erlang C, confirmed by simulation).
    #[arg(long)]
    advise: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with SVG charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// The report as one HTML page: the table, and SVG charts drawn by `usher_server::charts`
/// (waiting-time distribution, queue length over the day, load per agent), nothing fetched.
pub fn html(r: &usher_sim::Report) -> String {
    use usher_server::charts::{bars, escape, lines};
    let seconds: Vec<String> = (1..=120).map(|s| format!("{s} s")).collect();
    let waits: Vec<(String, Vec<f64>)> = r
        .strategies
        .iter()
        .map(|s| {
            let total = s.outcome.answered.max(1) as f64;
            let share =
                s.outcome.histogram.iter().skip(1).take(120).map(|n| *n as f64 / total * 100.0).collect();
            (s.strategy.as_str().to_string(), share)
        })
        .collect();
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
    let queue: Vec<(String, Vec<f64>)> = r
        .strategies
        .iter()
        .map(|s| (s.strategy.as_str().to_string(), s.outcome.queue_by_hour.clone()))
        .collect();
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Usher simulation</title>\
         <style>body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#1f2328}\
         pre{background:#f6f8fa;padding:12px;overflow-x:auto}svg{max-width:100%;height:auto;margin:8px 0}</style></head><body>",
    );
    page.push_str("<h1>Usher simulation</h1><pre>");
    page.push_str(&escape(&usher_sim::table(r)));
    page.push_str("</pre><h2>Waiting time: the share of the answered (%) that waited each second, from 1 s to 2 min (the rest waited 0 s or longer)</h2>");
    page.push_str(&lines("Waiting time distribution", &seconds, &waits));
    page.push_str("<h2>Queue length over the day</h2>");
    page.push_str(&lines("Mean conversations waiting, by hour of the day", &hours, &queue));
    for s in &r.strategies {
        page.push_str(&format!("<h2>Load per agent: {}</h2>", escape(s.strategy.as_str())));
        let per: Vec<(String, f64)> = s
            .outcome
            .per_agent
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("agent {}", i + 1), f64::from(*n)))
            .collect();
        page.push_str(&bars("Conversations per agent", &per));
    }
    page.push_str("</body></html>\n");
    page
}

fn setup(args: &SimulateArgs) -> Result<Setup> {
    let mut s = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            if path.extension().is_some_and(|e| e == "toml") {
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            } else {
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
        }
        None => Setup {
            rate_per_hour: vec![120.0],
            hours: 1_000.0,
            handle: Dist::Exponential { mean_seconds: 300.0 },
            patience: None,
            agents: 12,
            max_open: 1,
            slowdown: 0.0,
            weights: vec![],
            target_seconds: 20.0,
            service_goal: 0.8,
            default_handle_seconds: 300,
            seed: 1,
        },
    };
    if let Some(v) = args.agents {
        s.agents = v;
    }
    if let Some(v) = args.rate_per_hour {
        s.rate_per_hour = vec![v];
    }
    if let Some(v) = args.hours {
        s.hours = v;
    }
    match (args.handle_seconds, args.handle_sigma) {
        (Some(m), None) => s.handle = Dist::Exponential { mean_seconds: m },
        (Some(m), Some(sigma)) => s.handle = Dist::LogNormal { median_seconds: m, sigma },
        (None, Some(_)) => bail!("--handle-sigma needs --handle-seconds"),
        (None, None) => {}
    }
    if let Some(v) = args.patience_seconds {
        s.patience = Some(Dist::Exponential { mean_seconds: v });
    }
    if let Some(v) = args.max_open {
        s.max_open = v;
    }
    if let Some(v) = args.slowdown {
        s.slowdown = v;
    }
    if let Some(v) = args.target_seconds {
        s.target_seconds = v;
    }
    if let Some(v) = args.goal {
        s.service_goal = v;
    }
    if let Some(v) = args.seed {
        s.seed = v;
    }
    s.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(s)
}

/// Runs the simulation and prints the report.
pub fn run(args: &SimulateArgs) -> Result<()> {
    let setup = setup(args)?;
    let strategies = args
        .strategies
        .split(',')
        .map(|s| serde_json::from_value::<Strategy>(serde_json::Value::String(s.trim().to_string())))
        .collect::<Result<Vec<_>, _>>()
        .context("strategies are round_robin, least_open, weighted")?;
    let mut shown = -1i64;
    let report = usher_sim::compare(&setup, &strategies, args.advise, |p| {
        let pct = (p * 100.0) as i64;
        if pct != shown {
            shown = pct;
            let bar = "#".repeat((pct / 4) as usize);
            eprint!("\r  simulating [{bar:<25}] {pct:>3} %");
            let _ = std::io::stderr().flush();
        }
    });
    eprintln!();
    if let Some(path) = &args.html {
        std::fs::write(path, html(&report)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("  report written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", usher_sim::table(&report));
    }
    Ok(())
}
