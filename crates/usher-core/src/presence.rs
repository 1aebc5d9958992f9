//! Presence that follows the agent console's connection.
//!
//! An agent who closes the laptop should not be handed work. Every console connection (an
//! agent's event stream) is a *link*; when an agent's links have all been gone for longer
//! than a grace period, Usher turns the agent away, remembering the presence it took away;
//! when a link comes back while the agent is still away for that reason, the agent gets that
//! presence back. An agent who sets a presence by hand takes over: nothing is remembered, and
//! an agent that never connected (driven through the API only) is never touched.
//!
//! [`follow`] is the whole rule, over values (time is an argument), so that the grace period
//! is tested with a fake clock.

use crate::model::{Presence, Timestamp};

/// What is known of an agent's console links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    /// Connections alive now.
    pub live: u32,
    /// When the last one went, if the agent has had any and none is alive.
    pub gone_since: Option<Timestamp>,
    /// The presence Usher took away when it turned the agent away (none: not turned away).
    pub taken: Option<Presence>,
}

/// What to do with an agent's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Nothing.
    Stay,
    /// Turn away, remembering this presence.
    TurnAway {
        /// The presence taken away.
        from: Presence,
    },
    /// Give this presence back.
    Return {
        /// The presence given back.
        to: Presence,
    },
}

/// The rule (see the module doc). `grace_millis` is how long all links may be gone before the
/// agent is turned away; a negative grace is taken as none.
pub fn follow(presence: Presence, links: &Links, now: Timestamp, grace_millis: i64) -> Follow {
    if links.live > 0 {
        return match (presence, links.taken) {
            (Presence::Away, Some(to)) => Follow::Return { to },
            _ => Follow::Stay,
        };
    }
    match (presence, links.gone_since) {
        (Presence::Online | Presence::Busy, Some(gone)) if now.0 - gone.0 >= grace_millis.max(0) => {
            Follow::TurnAway { from: presence }
        }
        _ => Follow::Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 60_000;

    fn gone(at: i64) -> Links {
        Links { live: 0, gone_since: Some(Timestamp(at)), taken: None }
    }

    #[test]
    fn within_the_grace_period_nothing_changes_and_after_it_the_agent_turns_away() {
        let l = gone(1_000);
        assert_eq!(follow(Presence::Online, &l, Timestamp(1_000), GRACE), Follow::Stay);
        assert_eq!(follow(Presence::Online, &l, Timestamp(60_999), GRACE), Follow::Stay);
        assert_eq!(
            follow(Presence::Online, &l, Timestamp(61_000), GRACE),
            Follow::TurnAway { from: Presence::Online }
        );
        assert_eq!(
            follow(Presence::Busy, &l, Timestamp(90_000), GRACE),
            Follow::TurnAway { from: Presence::Busy }
        );
    }

    #[test]
    fn away_and_offline_agents_and_agents_that_never_connected_stay() {
        for p in [Presence::Away, Presence::Offline] {
            assert_eq!(follow(p, &gone(0), Timestamp(1_000_000), GRACE), Follow::Stay);
        }
        let never = Links { live: 0, gone_since: None, taken: None };
        assert_eq!(follow(Presence::Online, &never, Timestamp(1_000_000), GRACE), Follow::Stay);
    }

    #[test]
    fn a_live_link_keeps_the_agent_and_gives_back_what_was_taken() {
        let live = Links { live: 1, gone_since: None, taken: None };
        assert_eq!(follow(Presence::Online, &live, Timestamp(1_000_000), GRACE), Follow::Stay);
        let back = Links { live: 2, gone_since: None, taken: Some(Presence::Busy) };
        assert_eq!(follow(Presence::Away, &back, Timestamp(0), GRACE), Follow::Return { to: Presence::Busy });
        // Set to offline by hand meanwhile: not given back.
        assert_eq!(follow(Presence::Offline, &back, Timestamp(0), GRACE), Follow::Stay);
    }

    #[test]
    fn a_zero_or_negative_grace_turns_away_at_once() {
        for g in [0, -5] {
            assert_eq!(
                follow(Presence::Online, &gone(10), Timestamp(10), g),
                Follow::TurnAway { from: Presence::Online }
            );
        }
    }
}
