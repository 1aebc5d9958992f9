//! # usher-workflow: what happens to a conversation, as a business sets it up
//!
//! A workflow is a document: a trigger (a conversation opened, a message received, …),
//! optional filters (the channels it applies to) and a graph of steps (send a message, ask a
//! question, branch, assign, wait, …). This crate owns the document and its checks; like
//! `usher-core` it has no I/O and reads no clock.
//!
//! - [`document`]: the types, parsed strictly from JSON ([`parse`] names the exact place of a
//!   malformed value).
//! - [`validate`]: everything a document must satisfy before it is published, each problem
//!   with its place (`steps.route.branches[2].next`) and a stable code.
//!
//! - [`engine`]: running a workflow as a pure state machine: a run's state, an input (the
//!   trigger, the contact's answer, a due timer, the routing outcome) and the facts in; the
//!   next state, the effects to carry out and a trace out.
//!
//! - [`templates`]: ready-made workflows for each pattern of the seeds, filled in with a
//!   workspace's teams, agent and calendar.
//!
//! Storing runs durably, their timers and the HTTP API come with the rest of issue 4 (see
//! ARCHITECTURE.md).

pub mod document;
pub mod engine;
pub mod templates;
pub mod validate;

pub use document::{Step, Trigger, Workflow};
pub use validate::{validate, Directory, Problem};

/// The published JSON Schema of a workflow document (JSON Schema 2020-12), served at
/// `/v1/workflow-schema.json`. Publishing checks more than a schema can (references,
/// reachability, loops): see [`validate`].
pub const SCHEMA: &str = include_str!("../schema/workflow.schema.json");

/// The largest document accepted, in bytes.
pub const DOCUMENT_LEN: usize = 256 * 1024;

/// Parses a workflow document. A malformed one (bad JSON, an unknown field, a wrong type, a
/// missing field) is one [`Problem`] naming where: `steps.welcome.text`, `trigger.kind`, …
pub fn parse(json: &str) -> Result<Workflow, Problem> {
    if json.len() > DOCUMENT_LEN {
        return Err(Problem {
            path: String::new(),
            code: "too_large",
            message: format!("a workflow document is at most {DOCUMENT_LEN} bytes"),
        });
    }
    let malformed = |path: String, message: String| Problem {
        path: if path == "." { String::new() } else { path },
        code: "malformed",
        message,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let w: Workflow = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| malformed(e.path().to_string(), e.into_inner().to_string()))?;
    de.end().map_err(|e| malformed(String::new(), e.to_string()))?;
    Ok(w)
}
