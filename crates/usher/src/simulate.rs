//! `usher simulate`: the routing core in virtual time (see the `usher-sim` crate).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use usher_core::model::Strategy;
use usher_sim::model::{Dist, Setup, StaffGroup, TeamSetup};
use usher_sim::trace::Trace;
use usher_store::Store;

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
    /// A recorded trace (CSV: arrived_at, channel, language, skills, priority,
    /// handle_seconds, team, patience_seconds) to replay instead of drawn arrivals.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Import the desk from a workspace's database (a URL, as `usher serve --database`
    /// takes): its teams, agents (caps, daily limits, weights, skills, languages) and
    /// enabled, published workflows replace the setup's.
    #[arg(long)]
    database: Option<String>,
    /// Import the desk from the embedded database in this folder (as `usher serve --data`).
    #[arg(long, conflicts_with = "database")]
    data: Option<PathBuf>,
    /// The workspace to import.
    #[arg(long, default_value_t = 1)]
    workspace: i64,
    /// Strategies to compare, comma-separated; `configured` runs the desk as its teams and
    /// workflows say [default: configured when the setup has teams or workflows, else
    /// round_robin,least_open].
    #[arg(long)]
    strategies: Option<String>,
    /// Also advise on staffing (Erlang C, confirmed by simulation).
    #[arg(long)]
    advise: bool,
    /// The staff group whose count the advice varies [default: the largest].
    #[arg(long)]
    staffing_group: Option<String>,
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
            (s.name.clone(), share)
        })
        .collect();
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
    let queue: Vec<(String, Vec<f64>)> =
        r.strategies.iter().map(|s| (s.name.clone(), s.outcome.queue_by_hour.clone())).collect();
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
        page.push_str(&format!("<h2>Load per agent: {}</h2>", escape(&s.name)));
        let per: Vec<(String, f64)> = s
            .outcome
            .per_agent
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (r.agents.get(i).cloned().unwrap_or_else(|| format!("agent {}", i + 1)), f64::from(*n))
            })
            .collect();
        page.push_str(&bars("Conversations per agent", &per));
    }
    page.push_str("</body></html>\n");
    page
}

/// The setup from the file and flags, with the trace it names, read.
fn setup(args: &SimulateArgs) -> Result<(Setup, Option<Trace>)> {
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
        None => Setup::default(),
    };
    if let Some(v) = args.agents {
        if !s.staff.is_empty() {
            bail!("--agents sets a number of agents alike; this setup describes staff groups (change their counts, or use --advise with --staffing-group)");
        }
        s.agents = v;
    }
    if let Some(v) = args.rate_per_hour {
        s.rate_per_hour = vec![v];
    }
    if let Some(v) = args.hours {
        s.hours = v;
    } else if args.trace.is_some() {
        // A trace given here covers its own days, whatever the setup's hours.
        s.hours = 0.0;
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
    if let Some(v) = &args.staffing_group {
        s.staffing_group = Some(v.clone());
    }
    let trace_path = match (&args.trace, &s.trace) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) => {
            let dir = args.config.as_deref().and_then(Path::parent).unwrap_or(Path::new("."));
            Some(dir.join(p))
        }
        (None, None) => None,
    };
    let trace = match trace_path {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let t = usher_sim::trace::parse(&text).with_context(|| format!("reading {}", path.display()))?;
            s.trace = Some(path.display().to_string());
            Some(t)
        }
    };
    if let Some(t) = &trace {
        usher_sim::fill_from_trace(&mut s, t);
    }
    Ok((s, trace))
}

/// Replaces the setup's desk with a workspace's: teams, agents, the enabled, published
/// workflows, the time zone and the calendars, as the server would route with them.
async fn import(args: &SimulateArgs, s: &mut Setup) -> Result<()> {
    let url = match (&args.database, &args.data) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => crate::embedded_url(dir),
        (None, None) => return Ok(()),
    };
    let store = Store::connect(&url).await.context("connecting to the database")?;
    let ws = args.workspace;
    let workspace = store.workspace(ws).await.with_context(|| format!("reading workspace {ws}"))?;
    let now = usher_server::now_millis();
    let teams = store.teams(ws).await?;
    let agents = store.agents(ws, now).await?;
    if teams.is_empty() || agents.is_empty() {
        bail!("workspace {ws} has no teams or no agents to simulate");
    }
    s.teams = teams
        .iter()
        .map(|t| TeamSetup {
            name: t.name.clone(),
            id: Some(t.id),
            strategy: t.strategy,
            only_online: t.only_online,
            match_language: false,
            channels: vec![],
            prefer_previous_agent: false,
        })
        .collect();
    s.staff = agents
        .iter()
        .map(|a| StaffGroup {
            name: a.name.clone(),
            id: Some(a.id),
            count: 1,
            teams: teams.iter().filter(|t| a.teams.contains(&t.id)).map(|t| t.name.clone()).collect(),
            max_open: a.max_open.max(1),
            channel_caps: a.channel_caps.clone(),
            daily_limit: a.daily_limit,
            weight: a.weight.max(1),
            skills: a.skills.clone(),
            languages: a.languages.clone(),
            shifts: vec![],
            breaks: vec![],
            stagger_minutes: 0,
            slowdown: None,
        })
        .collect();
    s.workflows = store.published_workflows(ws).await?;
    // The workspace's clock and calendars, as the run worker reads them: its hours are the
    // first calendar (by id) that belongs to no team.
    s.time_zone = Some(workspace.time_zone);
    let calendars = store.calendars(ws, now).await?;
    s.business_hours = calendars.iter().find(|c| c.team.is_none()).map(|c| c.spec.clone());
    s.calendars = calendars.into_iter().map(|c| (c.id, c.spec)).collect();
    if let Some(t) = teams.first() {
        s.default_handle_seconds = t.default_handle_seconds;
    }
    store.shutdown().await;
    Ok(())
}

/// Runs the simulation and prints the report.
pub async fn run(args: &SimulateArgs) -> Result<()> {
    let (mut setup, trace) = setup(args)?;
    import(args, &mut setup).await?;
    let strategies = match &args.strategies {
        Some(list) => list.clone(),
        None if !setup.teams.is_empty() || !setup.workflows.is_empty() => "configured".into(),
        None => "round_robin,least_open".into(),
    };
    let plans = strategies
        .split(',')
        .map(|s| match s.trim() {
            "configured" => Ok(None),
            other => {
                serde_json::from_value::<Strategy>(serde_json::Value::String(other.to_string())).map(Some)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .context("strategies are configured, round_robin, least_open, weighted")?;
    let mut shown = -1i64;
    let report = usher_sim::compare(&setup, trace.as_ref(), &plans, args.advise, |p| {
        let pct = (p * 100.0) as i64;
        if pct != shown {
            shown = pct;
            let bar = "#".repeat((pct / 4) as usize);
            eprint!("\r  simulating [{bar:<25}] {pct:>3} %");
            let _ = std::io::stderr().flush();
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
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
