//! Live updates as server-sent events: `GET /v1/stream`.
//!
//! An agent token gets its own stream: assignments to it and what happens to its
//! conversations (messages included), its own status, and the queue changes of its teams. A
//! manager or admin gets the whole workspace's, for dashboards. Each event's SSE `id` is its
//! sequence number in the log, so a client that reconnects with `Last-Event-ID` (or
//! `?after=SEQ`) resumes right after the last event it saw and misses nothing. The stream reads
//! the log itself, which every node shares, so an event committed on one node reaches streams
//! on every node.
//!
//! An agent's stream is also its console's *link* for presence (`usher_store::presence`):
//! when all of an agent's streams have been gone for the grace period, the agent is turned
//! away, and back when one returns. `?presence=false` opts a watching tool out.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Params;
use crate::{now_millis, AppState};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;
use usher_store::{ConversationFilter, Event, Role, Store};

/// How often an idle stream looks for new events.
pub const POLL: Duration = Duration::from_millis(200);
/// How many events a stream reads from the log at a time.
const PAGE: i64 = 200;

/// `?after=SEQ`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default)]
    after: Option<i64>,
    /// For an agent token: whether this connection counts as the agent's console for
    /// presence (default yes; a tool that only watches says `false`).
    #[serde(default)]
    presence: Option<bool>,
}

/// An agent's console link while its stream lives: refreshed as the stream runs, closed
/// (from a task, since dropping cannot wait) when the stream is dropped, which is when the
/// client goes.
struct Link {
    store: Store,
    id: i64,
    refreshed: i64,
}

impl Link {
    async fn refresh(&mut self) {
        let now = now_millis();
        if now - self.refreshed >= usher_store::presence::LINK_REFRESH_MILLIS {
            self.refreshed = now;
            if let Err(e) = self.store.link_seen(self.id, now).await {
                tracing::warn!(error = %e, link = self.id, "presence: link not refreshed");
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let (store, id) = (self.store.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.link_closed(id, now_millis()).await {
                    tracing::warn!(error = %e, link = id, "presence: link not closed; it goes stale instead");
                }
            });
        }
    }
}

/// What one agent's stream lets through.
#[derive(Debug, Clone)]
struct AgentView {
    agent: i64,
    teams: BTreeSet<i64>,
    /// The conversations it holds, kept up to date from the events themselves.
    mine: BTreeSet<i64>,
}

impl AgentView {
    /// Whether the agent's stream shows `e`, updating which conversations it holds.
    fn shows(&mut self, e: &Event) -> bool {
        let me = e.agent == Some(self.agent);
        if let Some(c) = e.conversation {
            // A transfer's `agent` is the one it went to, or, to a team, the one it left: the
            // data's `assigned` says which.
            let to_me = match e.kind.as_str() {
                "conversation.assigned" | "conversation.claimed" => me,
                "conversation.transferred" => {
                    e.data.get("assigned").and_then(|a| a.as_i64()) == Some(self.agent)
                }
                _ => false,
            };
            match e.kind.as_str() {
                "conversation.assigned" | "conversation.claimed" | "conversation.transferred" if to_me => {
                    self.mine.insert(c);
                }
                // Someone else took it (a transfer away from this agent): shown, then no longer its.
                "conversation.assigned" | "conversation.claimed" | "conversation.transferred"
                    if self.mine.remove(&c) =>
                {
                    return true;
                }
                _ => {}
            }
        }
        let held = e.conversation.is_some_and(|c| self.mine.contains(&c));
        // The queue changes of its teams: conversations that start waiting or become free to
        // pick (other agents' assignments are theirs).
        let queue_change = matches!(
            e.kind.as_str(),
            "conversation.queued" | "conversation.left_unassigned" | "conversation.unassigned"
        ) && e.team.is_some_and(|t| self.teams.contains(&t));
        let shown = me || held || queue_change;
        if let (Some(c), "conversation.closed" | "conversation.unassigned") =
            (e.conversation, e.kind.as_str())
        {
            self.mine.remove(&c);
        }
        shown
    }
}

struct Cursor {
    store: Store,
    ws: i64,
    after: i64,
    view: Option<AgentView>,
    ready: VecDeque<Event>,
    link: Option<Link>,
}

fn sse(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default().id(e.seq.to_string()).event(e.kind.clone()).data(data)
}

/// `GET /v1/stream`: the caller's live events (see the module doc).
pub async fn stream(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Params(q): Params<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim);
    let after = match (resume, q.after) {
        (Some(id), _) => id.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID is a sequence number")
        })?,
        (None, Some(a)) => a,
        // From now on.
        (None, None) => s.store.last_seq(caller.ws()).await?,
    };
    let view = match caller.0.role {
        Role::Admin | Role::Manager => None,
        Role::Agent => {
            let agent = caller.0.agent.ok_or_else(|| ApiError::forbidden("stream without an agent"))?;
            let teams = s.store.agent(caller.ws(), agent, now_millis()).await?.teams.into_iter().collect();
            let filter = ConversationFilter {
                assignee: Some(agent),
                limit: Some(500),
                ..ConversationFilter::default()
            };
            let mine = s
                .store
                .conversations(caller.ws(), &filter, now_millis())
                .await?
                .into_iter()
                .filter(|c| c.status == usher_core::manual::Status::Assigned)
                .map(|c| c.id)
                .collect();
            Some(AgentView { agent, teams, mine })
        }
        Role::Integration => return Err(ApiError::forbidden("stream events")),
    };
    let link = match (&view, q.presence.unwrap_or(true)) {
        (Some(v), true) => {
            let now = now_millis();
            let id = s.store.link_opened(caller.ws(), v.agent, now).await?;
            Some(Link { store: s.store.clone(), id, refreshed: now })
        }
        _ => None,
    };
    let cursor =
        Cursor { store: s.store.clone(), ws: caller.ws(), after, view, ready: VecDeque::new(), link };
    let events = stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.ready.pop_front() {
                return Some((Ok(sse(&e)), c));
            }
            match c.store.events(c.ws, c.after, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    for e in page {
                        c.after = e.seq;
                        let shown = match c.view.as_mut() {
                            None => true,
                            Some(v) => v.shows(&e),
                        };
                        if shown {
                            c.ready.push_back(e);
                        }
                    }
                }
                Ok(_) => {
                    if let Some(l) = c.link.as_mut() {
                        l.refresh().await;
                    }
                    tokio::time::sleep(POLL).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream: cannot read the log; retrying");
                    tokio::time::sleep(POLL * 5).await;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, agent: Option<i64>, data: serde_json::Value) -> Event {
        Event {
            seq: 1,
            kind: kind.into(),
            at: String::new(),
            conversation: Some(7),
            agent,
            team: Some(1),
            data,
        }
    }

    #[test]
    fn a_conversation_transferred_away_to_a_team_is_no_longer_the_agents() {
        let mut v = AgentView { agent: 3, teams: BTreeSet::from([1]), mine: BTreeSet::new() };
        assert!(v.shows(&event("conversation.assigned", Some(3), json!({}))));
        assert!(v.mine.contains(&7));
        // To a team: the event names the agent it left.
        assert!(v.shows(&event(
            "conversation.transferred",
            Some(3),
            json!({ "from_team": 1, "to_team": 2 })
        )));
        assert!(!v.mine.contains(&7), "it left the agent");
        // To this agent by hand: the data names it.
        assert!(v.shows(&event("conversation.transferred", Some(3), json!({ "assigned": 3 }))));
        assert!(v.mine.contains(&7));
        // Then to another agent: shown once more, then not its.
        assert!(v.shows(&event("conversation.transferred", Some(5), json!({ "assigned": 5 }))));
        assert!(!v.mine.contains(&7));
    }
}
