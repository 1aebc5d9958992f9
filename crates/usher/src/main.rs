//! `usher`: the one binary. `serve` runs the HTTP API (with `--demo`, a small live demo),
//! `migrate` brings a database up to date, `token create` makes API tokens, `bench` is the
//! HTTP load generator.

mod bench;
mod demo;
mod simulate;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use usher_server::{app, now_millis, AppState};
use usher_store::{Role, Store};

/// Usher routes customer conversations to the right agent: round robin, least open contacts,
/// weighted ratios, dedicated and previous agents, skills and language, caps and queues.
#[derive(Debug, Parser)]
#[command(name = "usher", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the HTTP server (creates the database, the first workspace and an admin token on
    /// first start).
    Serve(ServeArgs),
    /// Run the database migrations and exit.
    Migrate(DbArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Load-test a running server over HTTP and print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Simulate traffic against the routing core in virtual time: compare strategies and
    /// staffing (Erlang C) before going live.
    Simulate(simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown once).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// admin, manager, agent or integration.
        #[arg(long, default_value = "admin")]
        role: String,
        /// The agent id, for agent tokens.
        #[arg(long)]
        agent: Option<i64>,
        /// The workspace id.
        #[arg(long, default_value_t = 1)]
        workspace: i64,
    },
}

/// Where the database is. Precedence: flag, then environment, then config file, then default.
#[derive(Debug, Args, Clone)]
struct DbArgs {
    /// Folder of the embedded SQLite database [default: ./usher-data].
    #[arg(long, env = "USHER_DATA")]
    data: Option<PathBuf>,
    /// A database URL instead of the embedded file: postgres://user@host/db (or sqlite://path).
    #[arg(long, env = "USHER_DATABASE_URL")]
    database: Option<String>,
    /// A TOML config file with any of: listen, data, database, log_format, rate_per_second,
    /// rate_burst, time_zone, presence_grace.
    #[arg(long, env = "USHER_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "USHER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "USHER_LOG_FORMAT")]
    log_format: Option<String>,
    /// Requests per second allowed per token (0 disables the limit) [default: 200].
    #[arg(long, env = "USHER_RATE_PER_SECOND")]
    rate_per_second: Option<u32>,
    /// Burst allowed per token [default: 400].
    #[arg(long, env = "USHER_RATE_BURST")]
    rate_burst: Option<u32>,
    /// Time zone of the first workspace (daily limits reset at its midnight) [default: UTC].
    #[arg(long, env = "USHER_TIME_ZONE")]
    time_zone: Option<String>,
    /// Seconds an agent's console connections may all be gone before the agent is turned
    /// away (and back when it reconnects) [default: 120].
    #[arg(long, env = "USHER_PRESENCE_GRACE")]
    presence_grace: Option<u64>,
    /// On an empty database, create a demo workspace (two teams, agents with mixed presence and
    /// skills) and keep a trickle of demo conversations flowing, printing each decision.
    #[arg(long)]
    demo: bool,
}

/// The config file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    database: Option<String>,
    log_format: Option<String>,
    rate_per_second: Option<u32>,
    rate_burst: Option<u32>,
    time_zone: Option<String>,
    presence_grace: Option<u64>,
}

fn read_config(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The database URL and, for SQLite, the data folder.
fn database_url(db: &DbArgs, file: &FileConfig) -> Result<(String, Option<PathBuf>)> {
    if let Some(url) = db.database.clone().or_else(|| file.database.clone()) {
        return Ok((url, None));
    }
    let dir = db.data.clone().or_else(|| file.data.clone()).unwrap_or_else(|| PathBuf::from("usher-data"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((embedded_url(&dir), Some(dir)))
}

/// The URL of the embedded database in a data folder.
pub(crate) fn embedded_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("usher.db").display())
}

fn init_logs(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("unknown log format {other:?}: use text or json"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(db) => {
            let file = read_config(db.config.as_deref())?;
            let (url, _) = database_url(&db, &file)?;
            Store::connect(&url).await.context("connecting to the database")?;
            println!("database at {url} is migrated");
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { db, role, agent, workspace } } => {
            let file = read_config(db.config.as_deref())?;
            let (url, _) = database_url(&db, &file)?;
            let store = Store::connect(&url).await.context("connecting to the database")?;
            let Some(role) = Role::parse(&role) else {
                bail!("unknown role {role:?}: admin, manager, agent or integration")
            };
            let token = store.create_token(workspace, role, agent, None, now_millis()).await?;
            println!("{}", token.token);
            Ok(())
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Simulate(args) => simulate::run(&args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let file = read_config(args.db.config.as_deref())?;
    init_logs(args.log_format.as_deref().or(file.log_format.as_deref()).unwrap_or("text"))?;
    let (url, data_dir) = database_url(&args.db, &file)?;
    let listen = args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let store = Store::connect(&url).await.context("connecting to the database")?;
    let time_zone = args.time_zone.or(file.time_zone).unwrap_or_else(|| "UTC".into());
    let bootstrap = std::env::var("USHER_BOOTSTRAP_TOKEN").ok().filter(|t| !t.is_empty());
    let name = if args.demo { "Demo" } else { "Default" };
    // One transaction under a lock: nodes starting together on one database create exactly
    // one workspace.
    if let Some((ws, token)) = store.bootstrap(name, &time_zone, bootstrap.as_deref(), now_millis()).await? {
        if bootstrap.is_some() {
            tracing::info!(
                workspace = ws.id,
                "created the first workspace with USHER_BOOTSTRAP_TOKEN as its admin token"
            );
        } else {
            let saved = match &data_dir {
                Some(dir) => {
                    let path = dir.join("admin-token");
                    std::fs::write(&path, format!("{}\n", token.token))
                        .with_context(|| format!("writing {}", path.display()))?;
                    format!(" (also saved in {})", path.display())
                }
                None => String::new(),
            };
            eprintln!("\n  Created workspace {} with an admin token{saved}:\n\n    {}\n", ws.id, token.token);
        }
        if args.demo {
            demo::seed(&store, ws.id).await?;
        }
    }
    if args.demo {
        let store = store.clone();
        tokio::spawn(async move { demo::traffic(store, 1).await });
    }
    let state = AppState::with_rate(
        store.clone(),
        args.rate_per_second.or(file.rate_per_second).unwrap_or(usher_server::limits::RATE_PER_SECOND),
        args.rate_burst.or(file.rate_burst).unwrap_or(usher_server::limits::RATE_BURST),
    );
    let grace = args.presence_grace.or(file.presence_grace);
    let state = match grace {
        Some(g) => state.with_presence_grace(g),
        None => state,
    };
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, database = %redact(&url), "usher is listening");
    eprintln!("  Usher is listening on http://{bound}  (API under /v1, OpenAPI at /v1/openapi.json)");
    if args.demo {
        if let Some(url) = demo::chat_url(&store, 1, &format!("http://{bound}")).await {
            eprintln!("  Chat as a customer: {url}");
        }
        eprintln!(
            "  The console: http://{bound}/console (admin@demo.usher, or an agent: ana@demo.usher; password {})",
            demo::DEMO_PASSWORD
        );
    }
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await?;
    store.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Hides a password in a database URL for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Resolves on SIGTERM or Ctrl-C: the server stops accepting, finishes what is in flight,
/// and exits.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
