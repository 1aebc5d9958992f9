//! Request ids, spans and the request latency histogram.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tracing::Instrument;
use usher_store::stats::Histogram;

/// How long HTTP requests take, all routes together.
pub static REQUEST_LATENCY: Histogram = Histogram::new();

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Gives each request an id (the caller's `X-Request-Id` when it sends a sane one), runs it
/// inside a span carrying that id, logs its end, and records its latency.
pub async fn observe(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!("req-{:x}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
        });
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %path.unwrap_or_else(|| req.uri().path().to_string())
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    REQUEST_LATENCY.observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
