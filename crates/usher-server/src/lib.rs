//! # usher-server: the HTTP API
//!
//! [`app`] builds the whole router around an [`AppState`]; the `usher` binary serves it, and
//! tests drive it over real HTTP on a random port. Layers, outside in:
//!
//! 1. [`middleware::observe`]: a request id (taken from `X-Request-Id` or made), a `tracing`
//!    span carrying it, the request latency histogram.
//! 2. The body limit ([`limits::BODY_BYTES`]).
//! 3. Per route: [`auth::Caller`] (bearer token -> workspace, role, agent, rate limit), the
//!    typed JSON body ([`json::Body`], unknown fields refused), then the handler in
//!    [`routes`], which calls the store and maps its errors once through [`error::ApiError`].

pub mod auth;
pub mod channel_routes;
pub mod charts;
pub mod console_routes;
pub mod diagram;
pub mod error;
pub mod json;
pub mod middleware;
pub mod report_routes;
pub mod routes;
pub mod stream;
pub mod workflow_routes;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use usher_store::Store;

/// Limits the HTTP layer enforces.
pub mod limits {
    /// The largest request body accepted, in bytes.
    pub const BODY_BYTES: usize = 64 * 1024;
    /// Default sustained requests per second per token.
    pub const RATE_PER_SECOND: u32 = 200;
    /// Default burst per token.
    pub const RATE_BURST: u32 = 400;
    /// The longest idempotency key accepted.
    pub const IDEMPOTENCY_KEY_LEN: usize = 200;
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The per-token rate limiter.
    pub limiter: Arc<auth::RateLimiter>,
    /// How long an agent's console connections may all be gone before it is turned away, in
    /// milliseconds (shared with this node's worker).
    pub presence_grace: Arc<AtomicI64>,
}

impl AppState {
    /// State over a store with the default rate limit.
    pub fn new(store: Store) -> AppState {
        AppState::with_rate(store, limits::RATE_PER_SECOND, limits::RATE_BURST)
    }

    /// State with a chosen rate limit (requests per second and burst, per token). Starts the
    /// workflow-run worker of this node (it needs a Tokio runtime).
    pub fn with_rate(store: Store, per_second: u32, burst: u32) -> AppState {
        let presence_grace = Arc::new(AtomicI64::new(usher_store::presence::DEFAULT_GRACE_SECONDS * 1000));
        spawn_run_worker(store.clone(), presence_grace.clone());
        spawn_webhook_sender(store.clone());
        AppState { store, limiter: Arc::new(auth::RateLimiter::new(per_second, burst)), presence_grace }
    }

    /// Sets the presence grace period (see `usher_core::presence`), in seconds.
    pub fn with_presence_grace(self, seconds: u64) -> AppState {
        let millis = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.presence_grace.store(millis, Ordering::Relaxed);
        self
    }
}

/// Milliseconds since the epoch: the shell's one clock read, passed inward as a value.
#[allow(clippy::disallowed_methods)] // the one place that reads the clock
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How often a node looks for workflow runs that are due (a timer, or effects a crash left).
pub const RUN_WORKER_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// How often a node looks for agents whose console connections are all gone.
pub const PRESENCE_SWEEP_EVERY: u32 = 4;

/// Starts the task that steps due workflow runs (timers that fire, effects left pending by a
/// crash) and, every [`PRESENCE_SWEEP_EVERY`] rounds, turns away agents whose console has
/// been gone longer than the grace period and starts a new day for agents whose daily limit
/// held them back (their queues are drained after midnight). Several nodes may run one each;
/// a run is taken by one of them at a time.
pub fn spawn_run_worker(store: Store, presence_grace: Arc<AtomicI64>) {
    tokio::spawn(async move {
        let mut round = 0u32;
        loop {
            tokio::time::sleep(RUN_WORKER_EVERY).await;
            let now = now_millis();
            round = round.wrapping_add(1);
            if round % PRESENCE_SWEEP_EVERY == 0 {
                match store.sweep_presence(now, presence_grace.load(Ordering::Relaxed)).await {
                    Ok(turned) => {
                        for (ws, agent) in turned {
                            tracing::info!(
                                workspace = ws,
                                agent,
                                "presence: console gone past the grace period; agent turned away"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "presence sweep failed; it runs again shortly"),
                }
                match store.start_new_days(now).await {
                    Ok(started) => {
                        for (ws, agent) in started {
                            tracing::info!(workspace = ws, agent, "daily limit: a new day; queues drained");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "new-day drain failed; it runs again shortly"),
                }
            }
            match store.due_runs(now).await {
                Ok(due) => {
                    for (run, ws) in due {
                        if let Err(e) = store.process_due_run(ws, run, now).await {
                            tracing::warn!(error = %e, run, "run worker: step failed; it will be tried again");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "run worker: cannot read due runs"),
            }
        }
    });
}

/// How often a node moves new events into webhook deliveries and sends the due ones.
pub const WEBHOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a webhook receiver has to answer.
pub const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the task that delivers webhooks (see `usher_store::webhooks` for what a receiver
/// gets and how to verify it).
pub fn spawn_webhook_sender(store: Store) {
    tokio::spawn(async move {
        let http = match reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook sender: no HTTP client; webhooks stay pending");
                return;
            }
        };
        loop {
            tokio::time::sleep(WEBHOOK_EVERY).await;
            if let Err(e) = store.dispatch_webhooks(now_millis()).await {
                tracing::warn!(error = %e, "webhook sender: dispatch failed");
            }
            let due = match store.due_deliveries(now_millis()).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook sender: cannot read due deliveries");
                    continue;
                }
            };
            for d in due {
                let sent_at = now_millis();
                let signature = usher_store::webhooks::signature(&d.secret, sent_at / 1000, &d.body);
                let started = std::time::Instant::now();
                let answer = http
                    .post(&d.url)
                    .header("content-type", "application/json")
                    .header("usher-delivery", d.id.to_string())
                    .header("usher-event", &d.kind)
                    .header("usher-signature", signature)
                    .body(d.body.clone())
                    .send()
                    .await;
                let millis = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                let (status, error) = match answer {
                    Ok(r) => (Some(r.status().as_u16()), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                if let Err(e) =
                    store.record_attempt(d.id, status, error.as_deref(), millis, now_millis()).await
                {
                    tracing::warn!(error = %e, delivery = d.id, "webhook sender: attempt not recorded; it will be sent again");
                }
            }
        }
    });
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/openapi.json", get(routes::openapi))
        .route("/workflow-schema.json", get(workflow_routes::schema))
        .route("/workspace", get(routes::workspace))
        .route("/tokens", post(routes::create_token))
        .route("/teams", post(routes::create_team).get(routes::list_teams))
        .route("/teams/{id}", get(routes::get_team).patch(routes::update_team))
        .route("/teams/{id}/queue", get(routes::team_queue))
        .route("/teams/{id}/members", get(routes::team_members))
        .route("/agents", post(routes::create_agent).get(routes::list_agents))
        .route("/agents/{id}", get(routes::get_agent).patch(routes::update_agent))
        .route("/agents/{id}/status", put(routes::set_status))
        .route("/contacts", get(routes::list_contacts))
        .route("/contacts/{id}", get(routes::get_contact).patch(routes::update_contact))
        .route("/conversations", post(routes::open_conversation).get(routes::list_conversations))
        .route("/conversations/{id}", get(routes::get_conversation))
        .route("/conversations/{id}/claim", post(routes::claim))
        .route("/conversations/{id}/assign", post(routes::assign))
        .route("/conversations/{id}/transfer", post(routes::assign))
        .route("/conversations/{id}/unassign", post(routes::unassign))
        .route("/conversations/{id}/close", post(routes::close))
        .route("/conversations/{id}/reopen", post(routes::reopen))
        .route("/conversations/{id}/trace", get(routes::trace))
        .route("/conversations/{id}/messages", post(routes::post_message).get(routes::list_messages))
        .route(
            "/conversations/{id}/runs",
            get(workflow_routes::conversation_runs).post(workflow_routes::start_run),
        )
        .route("/runs/{id}", get(workflow_routes::get_run))
        .route("/webhooks", post(routes::create_webhook).get(routes::list_webhooks))
        .route("/webhooks/{id}", get(routes::get_webhook))
        .route("/webhooks/{id}/resume", post(routes::resume_webhook))
        .route("/webhooks/{id}/deliveries", get(routes::webhook_deliveries))
        .route("/channels", post(channel_routes::create_channel).get(channel_routes::list_channels))
        .route("/channels/{id}", get(channel_routes::get_channel).patch(channel_routes::update_channel))
        .route("/channels/{id}/inbound", post(channel_routes::inbound))
        .route("/webchat/{key}/visitors", post(channel_routes::new_visitor))
        .route(
            "/webchat/{key}/messages",
            post(channel_routes::visitor_post).get(channel_routes::visitor_messages),
        )
        .route("/webchat/{key}/stream", get(channel_routes::visitor_stream))
        .route(
            "/session",
            post(console_routes::sign_in).get(console_routes::whoami).delete(console_routes::sign_out),
        )
        .route("/logins", post(console_routes::create_login))
        .route("/reports", get(report_routes::report))
        .route("/reports/{file}", get(report_routes::export))
        .route("/events", get(routes::events))
        .route("/stream", get(stream::stream))
        .route("/calendars", post(workflow_routes::create_calendar).get(workflow_routes::list_calendars))
        .route("/calendars/{id}", get(workflow_routes::get_calendar).put(workflow_routes::update_calendar))
        .route("/workflow-templates", get(workflow_routes::templates))
        .route("/workflows/{id}/publish", post(workflow_routes::publish))
        .route("/workflows/{id}/rollback", post(workflow_routes::rollback))
        .route("/workflows/{id}/enable", post(workflow_routes::enable))
        .route("/workflows/{id}/disable", post(workflow_routes::disable))
        .route("/workflows/{id}/versions", get(workflow_routes::versions))
        .route("/workflows/{id}/dry-run", post(workflow_routes::dry_run))
        .route("/workflows/{id}/check", post(workflow_routes::check))
        .route("/workflows/{id}/diagram.svg", get(workflow_routes::diagram))
        .merge(
            // Workflow documents may be larger than other bodies.
            Router::new()
                .route("/workflows", post(workflow_routes::create).get(workflow_routes::list))
                .route("/workflows/{id}", get(workflow_routes::get).put(workflow_routes::update))
                .layer(DefaultBodyLimit::max(usher_workflow::DOCUMENT_LEN)),
        );
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/widget.js", get(channel_routes::widget))
        .route("/console", get(console_routes::page))
        .route("/console/app.js", get(console_routes::script))
        .route("/console/app.css", get(console_routes::style))
        .route("/chat/{key}", get(channel_routes::chat_page))
        .fallback(routes::fallback)
        .layer(DefaultBodyLimit::max(limits::BODY_BYTES))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}
