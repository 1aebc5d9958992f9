//! The web console's people and sessions.
//!
//! A login is a person: an e-mail, a password kept as an Argon2id hash (the password-hashing
//! competition's winner and OWASP's first choice, through RustCrypto's `argon2`, with its
//! default cost: 19 MiB, two passes), one of the API's roles, and for an agent the agent it
//! is. Signing in makes a session: 32 random bytes handed to the browser in a cookie, kept
//! here only as a SHA-256 hash (like API tokens: nothing to brute-force), valid for
//! [`SESSION_HOURS`]. A session resolves to the same [`Principal`] a token does, so the
//! console goes through the very same API, roles and checks.

use crate::admin::{check_len, hash_token, new_secret};
use crate::db::{append_events, PendingEvent, Store};
use crate::error::StoreError;
use crate::sql::query;
use crate::types::{Millis, Principal, Role};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use serde::Serialize;
use serde_json::json;

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;
/// The shortest password accepted.
pub const PASSWORD_MIN: usize = 10;
/// The longest password accepted (hashing is linear in it).
pub const PASSWORD_MAX: usize = 200;
/// Rate-limit buckets of sessions are keyed apart from tokens' and channels'.
const SESSION_BUCKETS: i64 = -(1 << 40);

/// A login as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Login {
    /// Its id.
    pub id: i64,
    /// The e-mail it signs in with.
    pub email: String,
    /// Its role.
    pub role: Role,
    /// The agent it is, for agents.
    pub agent: Option<i64>,
}

/// A session just made: the cookie's value (shown once) and who it is.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The secret for the cookie.
    pub token: String,
    /// Who signed in.
    pub login: Login,
    /// The workspace.
    pub workspace: i64,
    /// When it ends.
    pub expires_at: Millis,
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Corrupt(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Corrupt(format!("password hash: {e}")))
}

fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash of a password nobody has, verified when the e-mail is unknown so that a wrong
/// e-mail takes as long as a wrong password.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_secret()).unwrap_or_default())
}

impl Store {
    /// Creates a console login. An agent login names its agent.
    pub async fn create_login(
        &self,
        ws: i64,
        email: &str,
        password: &str,
        role: Role,
        agent: Option<i64>,
        now: Millis,
    ) -> Result<Login, StoreError> {
        check_len("email", email)?;
        if !email.contains('@') {
            return Err(StoreError::invalid("invalid_email", "email must be an e-mail address"));
        }
        if password.chars().count() < PASSWORD_MIN || password.len() > PASSWORD_MAX {
            return Err(StoreError::invalid(
                "weak_password",
                format!("a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
            ));
        }
        match (role, agent) {
            (Role::Agent, None) => {
                return Err(StoreError::invalid("agent_required", "an agent login names its agent"))
            }
            (Role::Agent, Some(a)) => {
                self.row_in("agents", "agent", ws, a).await?;
            }
            (Role::Integration, _) => {
                return Err(StoreError::invalid("invalid_role", "integrations use API tokens, not logins"))
            }
            (_, Some(_)) => {
                return Err(StoreError::invalid("invalid_field", "only agent logins name an agent"))
            }
            _ => {}
        }
        let hash = hash_password(password)?;
        let email = email.trim().to_lowercase();
        let mut tx = self.begin().await?;
        let id = query(
            "INSERT INTO logins (workspace_id, email, password_hash, role, agent_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(ws)
        .bind(&email)
        .bind(&hash)
        .bind(role.as_str())
        .bind(agent)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(StoreError::conflict("email_taken", format!("{email} already has a login")));
        };
        let id: i64 = id.try_get(0)?;
        let event = PendingEvent::new("login.created")
            .agent(agent)
            .data(json!({ "login": id, "role": role.as_str() }));
        append_events(&mut tx, ws, now, &[event]).await?;
        tx.commit().await?;
        Ok(Login { id, email, role, agent })
    }

    /// Signs in: a new session when the password is right, `None` otherwise (the same answer,
    /// and about the same time, for an unknown e-mail).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        now: Millis,
    ) -> Result<Option<NewSession>, StoreError> {
        if email.len() > 320 || password.len() > PASSWORD_MAX {
            return Ok(None);
        }
        let row = query(
            "SELECT id, workspace_id, email, password_hash, role, agent_id FROM logins WHERE email = $1",
        )
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            let _ = password_matches(password, decoy());
            return Ok(None);
        };
        if !password_matches(password, &row.try_get::<String, _>("password_hash")?) {
            return Ok(None);
        }
        let login = Login {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role: Role::parse(&row.try_get::<String, _>("role")?)
                .ok_or_else(|| StoreError::Corrupt("unknown role".into()))?,
            agent: row.try_get("agent_id")?,
        };
        let workspace: i64 = row.try_get("workspace_id")?;
        let token = new_secret().replace("usher_", "uss_");
        let expires_at = now + SESSION_HOURS * 3_600_000;
        let mut tx = self.begin().await?;
        query(
            "INSERT INTO sessions (token_hash, login_id, workspace_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_token(&token))
        .bind(login.id)
        .bind(workspace)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        query("DELETE FROM sessions WHERE login_id = $1 AND expires_at < $2")
            .bind(login.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(NewSession { token, login, workspace, expires_at }))
    }

    /// Who a session cookie is, while it lasts.
    pub async fn session(&self, token: &str, now: Millis) -> Result<Option<(Principal, Login)>, StoreError> {
        let row = query(
            "SELECT s.id AS session_id, s.workspace_id, l.id, l.email, l.role, l.agent_id FROM sessions s \
             JOIN logins l ON l.id = s.login_id WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(hash_token(token))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role = Role::parse(&row.try_get::<String, _>("role")?)
            .ok_or_else(|| StoreError::Corrupt("unknown role".into()))?;
        let login = Login {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role,
            agent: row.try_get("agent_id")?,
        };
        let principal = Principal {
            workspace: row.try_get("workspace_id")?,
            role,
            agent: login.agent,
            token_id: SESSION_BUCKETS - row.try_get::<i64, _>("session_id")?,
        };
        Ok(Some((principal, login)))
    }

    /// Ends a session (signing out).
    pub async fn sign_out(&self, token: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        query("DELETE FROM sessions WHERE token_hash = $1").bind(hash_token(token)).execute(&mut *tx).await?;
        tx.commit().await
    }
}
