//! # usher-core: who gets this conversation now, or where does it wait, and why
//!
//! The routing core of Usher. It has no I/O of any kind: no network, no database, no clock.
//! The caller (the store inside a transaction, the simulator in virtual time, a test) hands
//! it a [`Snapshot`] of the facts that matter, a [`request::AssignRequest`] and a
//! [`Context`] (now, and today in the workspace's time zone), and gets back a
//! [`decide::Decision`]: the outcome, a [`trace::Trace`] that explains it, and the rotation
//! state to persist.
//!
//! Start reading at [`decide::decide`]. Then:
//! - [`model`]: agents, teams, strategies, presence, priorities, channels.
//! - [`request`]: what can be asked (team or dedicated agent, previous agent, skills and
//!   language, eligibility switches, queue or leave unassigned).
//! - [`queue`]: queue order, positions, the wait estimate and the drain.
//! - [`manual`]: claim, assign, unassign, transfer, close, reopen.
//! - [`memory`]: an in-memory workspace that applies all of the above; the reference model
//!   the store is tested against and the engine the simulator drives.
//! - [`clock`]: days in a workspace's time zone, for daily limits.
//! - [`calendar`]: business hours (weekly schedules, holidays, exceptions), open now and
//!   the next opening, daylight saving included.
//! - [`presence`]: presence that follows the console's connection, with a grace period.

pub mod calendar;
pub mod clock;
pub mod decide;
pub mod manual;
pub mod memory;
pub mod model;
pub mod presence;
pub mod queue;
pub mod request;
pub mod snapshot;
pub mod trace;

pub use decide::{decide, Decision, Outcome};
pub use snapshot::{Context, Snapshot};
