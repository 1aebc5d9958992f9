//! The workflow document's checks: the seeds' patterns pass; each kind of mistake is named
//! at its exact place with its code; arbitrary documents give clear problems, never a panic.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use usher_workflow::validate::{successors, waits};
use usher_workflow::{parse, validate, Directory, Problem};

fn directory() -> Directory {
    Directory {
        teams: [1, 2, 3].into(),
        agents: [10, 11].into(),
        calendars: [5].into(),
        contact_fields: ["plan".to_string()].into(),
    }
}

fn problems(doc: &Value) -> Vec<(String, &'static str)> {
    match parse(&doc.to_string()) {
        Ok(w) => validate(&w, &directory()).into_iter().map(|p| (p.path, p.code)).collect(),
        Err(p) => vec![(p.path, p.code)],
    }
}

/// The seeds' patterns, as a business would write them.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        (
            "round robin + online only (low cost)",
            json!({
                "name": "Round robin + online only", "trigger": { "kind": "conversation_opened" },
                "start": "welcome",
                "steps": {
                    "welcome": { "kind": "send_message", "text": "Hi {{contact.name}}, thanks for writing!", "next": "assign" },
                    "assign": { "kind": "assign", "team": 1, "strategy": "round_robin", "only_online": true }
                }
            }),
        ),
        (
            "menu question then team, with retries and a time-out",
            json!({
                "name": "Airline menu", "trigger": { "kind": "message_received", "keywords": ["help"] },
                "channels": ["whatsapp", "messenger"], "start": "ask",
                "steps": {
                    "ask": { "kind": "ask", "text": "What do you need?", "options": ["Refund", "Change", "Order inquiry"],
                             "save_to": "need", "retries": 2, "on_invalid": "fallback",
                             "answers": [{ "option": "Refund", "next": "refunds" }, { "option": "Change", "next": "changes" }],
                             "next": "orders", "timeout_minutes": 30, "on_timeout": "fallback" },
                    "refunds": { "kind": "assign", "team": 1, "when_nobody": "queue",
                                 "overflow": { "after_minutes": 10, "go_to": "fallback" } },
                    "changes": { "kind": "assign", "team": 2, "strategy": "least_open" },
                    "orders": { "kind": "assign", "team": 3, "skills": { "billing": 3 }, "match_language": true },
                    "fallback": { "kind": "assign", "team": 1, "when_nobody": "leave_unassigned" }
                }
            }),
        ),
        (
            "VIP to the dedicated agent, returning to the previous, away message by the hours",
            json!({
                "name": "VIP and hours", "trigger": { "kind": "conversation_opened" }, "start": "route",
                "steps": {
                    "route": { "kind": "branch", "branches": [
                        { "when": { "has_tag": "vip" }, "next": "vip" },
                        { "when": { "all": [{ "returning_contact": true }, { "not": { "field_equals": { "field": "plan", "value": "free" } } }] }, "next": "previous" },
                        { "when": { "within_hours": { "calendar": 5, "open": false } }, "next": "away" }
                    ], "otherwise": "team" },
                    "vip": { "kind": "assign", "agent": 10, "team": 1, "no_reply": { "after_minutes": 5, "then": "reassign" } },
                    "previous": { "kind": "assign", "team": 1, "prefer_previous_agent": true },
                    "away": { "kind": "send_message", "text": "We are closed; we open {{hours.next_opening}}.", "next": "wait_open" },
                    "wait_open": { "kind": "wait", "minutes": 60, "next": "route" },
                    "team": { "kind": "assign", "team": 2, "when_nobody": { "go_to": "busy" }, "next": "assigned" },
                    "busy": { "kind": "send_message", "text": "You are number {{queue.position}}, about {{queue.estimated_wait}}." },
                    "assigned": { "kind": "send_message", "text": "{{agent.name}} will reply shortly." }
                }
            }),
        ),
        (
            "unassign when a conversation closes, tag it, note it",
            json!({
                "name": "On close", "trigger": { "kind": "conversation_closed" }, "start": "tag",
                "steps": {
                    "tag": { "kind": "update_contact", "add_tags": ["served"], "fields": { "last_need": "{{field.plan}}" }, "priority": "low", "next": "note" },
                    "note": { "kind": "note", "text": "closed; plan {{field.plan}}", "next": "unassign" },
                    "unassign": { "kind": "unassign" }
                }
            }),
        ),
    ]
}

#[test]
fn the_seeds_patterns_are_valid() {
    for (what, doc) in seeds() {
        assert_eq!(problems(&doc), vec![], "{what}");
        // And they survive a round trip through the document types unchanged.
        let w = parse(&doc.to_string()).unwrap();
        assert_eq!(parse(&serde_json::to_string(&w).unwrap()).unwrap(), w, "{what}");
    }
}

/// Applies `edit` to the menu workflow and returns its problems.
fn menu_with(edit: impl FnOnce(&mut Value)) -> Vec<(String, &'static str)> {
    let mut doc = seeds()[1].1.clone();
    edit(&mut doc);
    problems(&doc)
}

#[test]
fn each_mistake_is_named_at_its_place() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, (&str, &str))> = vec![
        (
            "a step that does not exist",
            Box::new(|d: &mut Value| d["steps"]["ask"]["answers"][1]["next"] = json!("nowhere")),
            ("steps.ask.answers[1].next", "unknown_step"),
        ),
        (
            "a start that does not exist",
            Box::new(|d: &mut Value| d["start"] = json!("begin")),
            ("start", "unknown_step"),
        ),
        (
            "a team of another workspace",
            Box::new(|d: &mut Value| d["steps"]["changes"]["team"] = json!(99)),
            ("steps.changes.team", "unknown_team"),
        ),
        (
            "an option the question does not offer",
            Box::new(|d: &mut Value| d["steps"]["ask"]["answers"][0]["option"] = json!("Cancel")),
            ("steps.ask.answers[0].option", "unknown_option"),
        ),
        (
            "a time-out without its step",
            Box::new(|d: &mut Value| {
                d["steps"]["ask"].as_object_mut().unwrap().remove("on_timeout");
            }),
            ("steps.ask.on_timeout", "missing"),
        ),
        (
            "a skill level out of range",
            Box::new(|d: &mut Value| d["steps"]["orders"]["skills"]["billing"] = json!(7)),
            ("steps.orders.skills.billing", "out_of_range"),
        ),
        (
            "an overflow that cannot happen",
            Box::new(|d: &mut Value| d["steps"]["refunds"]["when_nobody"] = json!("leave_unassigned")),
            ("steps.refunds.overflow", "conflict"),
        ),
        (
            "an assign step without a target",
            Box::new(|d: &mut Value| {
                d["steps"]["changes"].as_object_mut().unwrap().remove("team");
            }),
            ("steps.changes", "no_target"),
        ),
        (
            "an unknown variable",
            Box::new(|d: &mut Value| d["steps"]["ask"]["text"] = json!("Hi {{contact.nickname}}")),
            ("steps.ask.text", "unknown_variable"),
        ),
        (
            "an unclosed variable",
            Box::new(|d: &mut Value| d["steps"]["ask"]["text"] = json!("Hi {{contact.name")),
            ("steps.ask.text", "bad_template"),
        ),
        (
            "a bad step name",
            Box::new(|d: &mut Value| {
                let s = d["steps"].as_object_mut().unwrap();
                let x = s.remove("fallback").unwrap();
                s.insert("Fall Back".into(), x);
                d["steps"]["ask"]["on_invalid"] = json!("Fall Back");
                d["steps"]["ask"]["on_timeout"] = json!("Fall Back");
                d["steps"]["refunds"]["overflow"]["go_to"] = json!("Fall Back");
            }),
            ("steps.Fall Back", "invalid_step_name"),
        ),
        (
            "a wait of zero minutes",
            Box::new(|d: &mut Value| {
                d["steps"]["pause"] = json!({ "kind": "wait", "minutes": 0, "next": "fallback" });
                d["steps"]["changes"]["next"] = json!("pause");
            }),
            ("steps.pause.minutes", "out_of_range"),
        ),
        (
            "a step nothing leads to",
            Box::new(|d: &mut Value| d["steps"]["lonely"] = json!({ "kind": "close" })),
            ("steps.lonely", "unreachable"),
        ),
        (
            "a loop that never waits",
            Box::new(|d: &mut Value| {
                d["steps"]["again"] = json!({ "kind": "jump", "to": "fallback" });
                d["steps"]["fallback"]["next"] = json!("again");
            }),
            ("steps.fallback.next", "endless_loop"),
        ),
        (
            "an unknown field",
            Box::new(|d: &mut Value| d["steps"]["changes"]["stratgy"] = json!("round_robin")),
            ("steps.changes", "malformed"),
        ),
        (
            "an unknown step kind",
            Box::new(|d: &mut Value| d["steps"]["changes"]["kind"] = json!("teleport")),
            ("steps.changes.kind", "malformed"),
        ),
        (
            "a wrong type",
            Box::new(|d: &mut Value| d["trigger"]["keywords"] = json!("help")),
            ("trigger", "malformed"),
        ),
        (
            "an unknown channel",
            Box::new(|d: &mut Value| d["channels"][0] = json!("pigeon")),
            ("channels[0]", "malformed"),
        ),
    ];
    for (what, edit, (path, code)) in cases {
        let got = menu_with(edit);
        assert!(
            got.iter().any(|(p, c)| p == path && *c == code),
            "{what}: expected {code} at {path}, got {got:?}"
        );
        assert!(got.iter().all(|(_, c)| !c.is_empty()), "{what}");
    }
}

#[test]
fn a_loop_through_a_question_or_a_wait_is_allowed() {
    // The away branch waits an hour and asks the hours again: a loop in time.
    assert_eq!(problems(&seeds()[2].1), vec![]);
    let looping = json!({
        "name": "Ask until answered", "trigger": { "kind": "manual" }, "start": "ask",
        "steps": {
            "ask": { "kind": "ask", "text": "Your order number?", "save_to": "order", "next": "check" },
            "check": { "kind": "branch", "branches": [{ "when": { "field_equals": { "field": "order", "value": "" } }, "next": "ask" }],
                       "otherwise": "done" },
            "done": { "kind": "close" }
        }
    });
    assert_eq!(problems(&looping), vec![]);
}

#[test]
fn malformed_json_and_oversized_documents_are_refused_clearly() {
    for bad in ["", "{", "[]", "null", "{\"name\": 1}", "{} trailing"] {
        let p: Problem = parse(bad).unwrap_err();
        assert_eq!(p.code, "malformed", "{bad:?}");
        assert!(!p.message.is_empty());
    }
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(usher_workflow::DOCUMENT_LEN));
    assert_eq!(parse(&huge).unwrap_err().code, "too_large");
}

// ------------------------------------------------------------------------------------------
// Properties: arbitrary documents give problems, never a panic; a clean document keeps the
// promises the engine will rely on.
// ------------------------------------------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "e", "Bad Name", ""]).prop_map(String::from)
}

fn step() -> impl Strategy<Value = Value> {
    let target = name();
    prop_oneof![
        (name(), any::<bool>()).prop_map(|(n, has)| if has {
            json!({ "kind": "send_message", "text": "hi {{contact.name}}", "next": n })
        } else {
            json!({ "kind": "send_message", "text": "bye" })
        }),
        (name(), name(), prop::sample::select(vec![0u32, 1, 5, 50_000])).prop_map(|(a, b, t)| json!({
            "kind": "ask", "text": "?", "options": ["x", "y"], "save_to": "f",
            "answers": [{ "option": "x", "next": a }], "next": b, "timeout_minutes": t, "on_timeout": b
        })),
        (name(), name()).prop_map(|(a, b)| json!({
            "kind": "branch", "branches": [{ "when": { "any": [{ "has_tag": "t" }, { "field_equals": { "field": "f", "value": "x" } }] }, "next": a }],
            "otherwise": b
        })),
        (prop::sample::select(vec![1i64, 2, 99]), name()).prop_map(|(t, n)| json!({ "kind": "assign", "team": t, "next": n })),
        (prop::sample::select(vec![0u32, 3]), target).prop_map(|(m, n)| json!({ "kind": "wait", "minutes": m, "next": n })),
        name().prop_map(|n| json!({ "kind": "jump", "to": n })),
        Just(json!({ "kind": "close" })),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    (name(), prop::collection::btree_map(name(), step(), 0..6)).prop_map(|(start, steps)| {
        json!({ "name": "w", "trigger": { "kind": "conversation_opened" }, "start": start, "steps": steps })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any text: parsed or refused with a problem, never a panic.
    #[test]
    fn any_text_is_parsed_or_refused(text in ".{0,200}") {
        let _ = parse(&text);
    }

    /// Any generated document: every problem has a place and a code; a document with none
    /// names only steps that exist and has no loop without a waiting step.
    #[test]
    fn clean_documents_keep_their_promises(doc in document()) {
        let Ok(w) = parse(&doc.to_string()) else { return Ok(()) };
        let found = validate(&w, &directory());
        for p in &found {
            prop_assert!(!p.code.is_empty() && !p.message.is_empty());
        }
        if found.is_empty() {
            prop_assert!(w.steps.contains_key(&w.start));
            for step in w.steps.values() {
                for (_, t) in successors(step) {
                    prop_assert!(w.steps.contains_key(t), "{t} does not exist");
                }
            }
            // From every step, following non-waiting steps alone ends within as many steps
            // as there are (no loop that never waits).
            for start in w.steps.keys() {
                let mut frontier = vec![(start.as_str(), 0usize)];
                while let Some((s, depth)) = frontier.pop() {
                    prop_assert!(depth <= w.steps.len(), "an endless loop through {s}");
                    let step = &w.steps[s];
                    if waits(step) { continue; }
                    for (_, t) in successors(step) {
                        frontier.push((t, depth + 1));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The published JSON Schema stays in step with the document types.
// ------------------------------------------------------------------------------------------

/// Checks `value` against the schema node `node` for what the documents use: objects with
/// closed property lists, `const` kinds, `oneOf` (exactly one branch fits), `$ref`, arrays,
/// enums and types. A failure names the place.
fn fits(schema: &Value, node: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return fits(schema, &schema["$defs"][name], value, path);
    }
    if let Some(branches) = node.get("oneOf").and_then(Value::as_array) {
        let ok = branches.iter().filter(|b| fits(schema, b, value, path).is_ok()).count();
        return if ok == 1 { Ok(()) } else { Err(format!("{path}: {ok} branches of oneOf fit {value}")) };
    }
    if let Some(c) = node.get("const") {
        return if c == value { Ok(()) } else { Err(format!("{path}: {value} is not {c}")) };
    }
    if let Some(e) = node.get("enum").and_then(Value::as_array) {
        return if e.contains(value) { Ok(()) } else { Err(format!("{path}: {value} is not one of {e:?}")) };
    }
    match node.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(obj) = value.as_object() else { return Err(format!("{path}: not an object")) };
            for req in node.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap_or("")) {
                    return Err(format!("{path}: lacks {req}"));
                }
            }
            for (k, v) in obj {
                let here = format!("{path}.{k}");
                match node.get("properties").and_then(|p| p.get(k)) {
                    Some(sub) => fits(schema, sub, v, &here)?,
                    None => match node.get("additionalProperties") {
                        Some(Value::Bool(false)) | None => return Err(format!("{here}: not in the schema")),
                        Some(Value::Bool(true)) => {}
                        Some(sub) => fits(schema, sub, v, &here)?,
                    },
                }
            }
            Ok(())
        }
        Some("array") => {
            let Some(items) = value.as_array() else { return Err(format!("{path}: not an array")) };
            for (i, v) in items.iter().enumerate() {
                if let Some(sub) = node.get("items") {
                    fits(schema, sub, v, &format!("{path}[{i}]"))?;
                }
            }
            Ok(())
        }
        Some("string") if !value.is_string() => Err(format!("{path}: not a string")),
        Some("integer") if !value.is_i64() => Err(format!("{path}: not an integer")),
        Some("boolean") if !value.is_boolean() => Err(format!("{path}: not a boolean")),
        _ => Ok(()),
    }
}

#[test]
fn the_published_schema_describes_every_template_and_seed_pattern() {
    let schema: Value = serde_json::from_str(usher_workflow::SCHEMA).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    let params = usher_workflow::templates::Params {
        team: Some(1),
        second_team: Some(2),
        agent: Some(10),
        calendar: Some(5),
    };
    let mut documents: Vec<(String, Value)> = usher_workflow::templates::TEMPLATES
        .iter()
        .map(|t| {
            (
                t.key.to_string(),
                serde_json::to_value(usher_workflow::templates::instantiate(t.key, &params).unwrap())
                    .unwrap(),
            )
        })
        .collect();
    documents.extend(seeds().into_iter().map(|(what, doc)| {
        (what.to_string(), serde_json::to_value(parse(&doc.to_string()).unwrap()).unwrap())
    }));
    for (what, doc) in documents {
        fits(&schema, &schema, &doc, "").unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // And it refuses what the parser refuses.
    let mut bad = seeds()[0].1.clone();
    bad["steps"]["welcome"]["txt"] = json!("typo");
    assert!(fits(&schema, &schema, &bad, "").is_err());
    bad = seeds()[0].1.clone();
    bad["steps"]["welcome"]["kind"] = json!("teleport");
    assert!(fits(&schema, &schema, &bad, "").is_err());
}
