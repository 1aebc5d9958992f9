//! The web console: signing in and out, console logins, and the console itself (one page of
//! plain JavaScript and CSS compiled into the binary, `web/console.*`, that speaks the same
//! `/v1` API with the session cookie; nothing is fetched from any other host).

use crate::auth::{session_cookie, Caller, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::json::Body;
use crate::{now_millis, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use usher_store::console::SESSION_HOURS;
use usher_store::Role;

/// Body of `POST /v1/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: String,
    password: String,
}

/// Whether the request was made to this machine itself (plain HTTP is then fine for the
/// cookie; anywhere else it is marked `Secure`, for HTTPS only).
fn loopback(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name =
        host.rsplit_once(':')
            .map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host });
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

fn cookie(value: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cookie"))
}

/// `POST /v1/session`: signs in with e-mail and password; 201 with who signed in and the
/// session cookie (HttpOnly, SameSite=Strict; Secure unless on this machine). A wrong e-mail
/// or password gets 401 `invalid_login`, the same for both.
pub async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(b): Body<SignIn>,
) -> ApiResult<Response> {
    let Some(session) = s.store.sign_in(&b.email, &b.password, now_millis()).await? else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_login", "wrong e-mail or password"));
    };
    let set = cookie(&session.token, SESSION_HOURS * 3600, !loopback(&headers))?;
    let body = json!({ "login": session.login, "workspace": session.workspace, "expires_at": usher_store::rfc3339(session.expires_at) });
    Ok((StatusCode::CREATED, [(header::SET_COOKIE, set)], Json(body)).into_response())
}

/// `GET /v1/session`: who the session cookie is.
pub async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let token = session_cookie(&headers).ok_or_else(ApiError::unauthorized)?;
    let (principal, login) =
        s.store.session(token, now_millis()).await?.ok_or_else(ApiError::unauthorized)?;
    let agent = match login.agent {
        Some(a) => Some(s.store.agent(principal.workspace, a, now_millis()).await?),
        None => None,
    };
    Ok(Json(json!({ "login": login, "workspace": principal.workspace, "agent": agent })))
}

/// `DELETE /v1/session`: signs out (the session ends everywhere it was used).
pub async fn sign_out(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session_cookie(&headers) {
        s.store.sign_out(token).await?;
    }
    let clear = cookie("", 0, !loopback(&headers))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// Body of `POST /v1/logins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    password: String,
    role: Role,
    #[serde(default)]
    agent: Option<i64>,
}

/// `POST /v1/logins`: a console login for a person (admins). 201.
pub async fn create_login(
    State(s): State<AppState>,
    caller: Caller,
    Body(b): Body<LoginBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(&[Role::Admin], "create console logins")?;
    let l = s.store.create_login(caller.ws(), &b.email, &b.password, b.role, b.agent, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(json!(l))))
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// `GET /console`: the console's page.
pub async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)],
        include_str!("../web/console.html"),
    )
        .into_response()
}

/// `GET /console/app.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../web/console.js"))
        .into_response()
}

/// `GET /console/app.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../web/console.css")).into_response()
}
