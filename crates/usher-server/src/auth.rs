//! Authentication, roles and the per-token rate limit.
//!
//! Every `/v1` route except the OpenAPI document takes `Authorization: Bearer TOKEN`, or, from
//! the web console, the `usher_session` cookie of a signed-in login (`usher_store::console`);
//! a console request that changes something must also carry `X-Usher-Console: 1`. The
//! token names a workspace (the caller sees nothing else: ids of another workspace are "not
//! found"), a role and, for agent tokens, the agent.
//!
//! | role | may |
//! |---|---|
//! | admin | everything in its workspace |
//! | manager | teams, agents, routing, assignment of anyone, events |
//! | agent | its own status, claims for itself, its own conversations (and hands them on to a teammate or a team) and the unassigned ones of its teams, teams, their members and queues (read) |
//! | integration | open conversations, read them |

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use usher_store::{Principal, Role};

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Principal);

impl Caller {
    /// The caller's workspace.
    pub fn ws(&self) -> i64 {
        self.0.workspace
    }

    /// Refuses unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(what))
        }
    }

    /// Admin or manager.
    pub fn manage(&self, what: &str) -> Result<(), ApiError> {
        self.require(&[Role::Admin, Role::Manager], what)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty());
        let principal = match (token, session_cookie(&parts.headers)) {
            (Some(token), _) => {
                if token.len() > 512 {
                    return Err(ApiError::unauthorized());
                }
                state.store.authenticate(token).await?.ok_or_else(ApiError::unauthorized)?
            }
            // The console: a session cookie. A cookie travels with any request the browser
            // makes, so a change must also carry a header no cross-site form can set.
            (None, Some(cookie)) => {
                let safe = matches!(parts.method, Method::GET | Method::HEAD);
                if !safe && !parts.headers.contains_key(CONSOLE_HEADER) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "console_header_required",
                        "a change made with a session cookie must carry the X-Usher-Console header",
                    ));
                }
                let found = state.store.session(cookie, crate::now_millis()).await?;
                found.map(|(p, _)| p).ok_or_else(ApiError::unauthorized)?
            }
            (None, None) => return Err(ApiError::unauthorized()),
        };
        if let Err(wait) = state.limiter.take(principal.token_id) {
            return Err(ApiError::rate_limited(wait, "token"));
        }
        Ok(Caller(principal))
    }
}

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "usher_session";
/// The header a console request that changes something carries (CSRF protection).
pub const CONSOLE_HEADER: &str = "x-usher-console";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == SESSION_COOKIE && !v.is_empty() && v.len() <= 512)
        .map(|(_, v)| v)
}

/// A token bucket per API token: `per_second` sustained, `burst` at once. Kept in memory per
/// node (it protects the node; it is not data).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter; `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from a token's bucket, or says how many seconds to wait.
    pub fn take(&self, token: i64) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, last) = buckets.entry(token).or_insert((self.burst, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let l = RateLimiter::new(1, 3);
        assert!(l.take(1).is_ok());
        assert!(l.take(1).is_ok());
        assert!(l.take(1).is_ok());
        assert_eq!(l.take(1), Err(1));
        // Another token has its own bucket.
        assert!(l.take(2).is_ok());
    }

    #[test]
    fn zero_rate_disables() {
        let l = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert!(l.take(1).is_ok());
        }
    }
}
