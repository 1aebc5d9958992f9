//! A workflow's graph drawn as SVG on the server: steps in layers by their distance from the
//! start (breadth first), arrows for every way a step leads on (labelled with the key that
//! names it, `next` left unlabelled), arrows back up drawn beside the boxes, and steps nothing
//! reaches in a last layer, dashed.

use crate::charts::escape;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use usher_workflow::validate::successors;
use usher_workflow::{Step, Workflow};

const BOX_W: f64 = 170.0;
const BOX_H: f64 = 46.0;
const GAP_X: f64 = 40.0;
const GAP_Y: f64 = 56.0;
const MARGIN: f64 = 24.0;

fn kind(step: &Step) -> String {
    serde_json::to_value(step)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k.replace('_', " ")))
        .unwrap_or_default()
}

/// The layers (the start first, then each step at its shortest distance, steps nothing
/// reaches last) and the steps the start reaches.
fn layers(w: &Workflow) -> (Vec<Vec<&str>>, BTreeSet<&str>) {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    let mut queue = VecDeque::new();
    if w.steps.contains_key(&w.start) {
        depth.insert(w.start.as_str(), 0);
        queue.push_back(w.start.as_str());
    }
    while let Some(name) = queue.pop_front() {
        let d = depth[name];
        if let Some(step) = w.steps.get(name) {
            for (_, next) in successors(step) {
                if w.steps.contains_key(next) && !depth.contains_key(next) {
                    depth.insert(next, d + 1);
                    queue.push_back(next);
                }
            }
        }
    }
    let deepest = depth.values().copied().max().map_or(0, |d| d + 1);
    let mut out: Vec<Vec<&str>> = vec![Vec::new(); deepest];
    let mut unreachable = Vec::new();
    for name in w.steps.keys() {
        match depth.get(name.as_str()) {
            Some(d) => out[*d].push(name.as_str()),
            None => unreachable.push(name.as_str()),
        }
    }
    if !unreachable.is_empty() {
        out.push(unreachable);
    }
    (out, depth.into_keys().collect())
}

/// The SVG of workflow `w`.
pub fn diagram(w: &Workflow) -> String {
    let (layers, reachable) = layers(w);
    let widest = layers.iter().map(Vec::len).max().unwrap_or(1).max(1) as f64;
    let width = MARGIN * 2.0 + widest * BOX_W + (widest - 1.0) * GAP_X + 60.0;
    let height = MARGIN * 2.0 + 24.0 + layers.len().max(1) as f64 * (BOX_H + GAP_Y);
    let mut at: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (d, layer) in layers.iter().enumerate() {
        let row_w = layer.len() as f64 * BOX_W + (layer.len().saturating_sub(1)) as f64 * GAP_X;
        let x0 = (width - 60.0 - row_w) / 2.0;
        for (i, name) in layer.iter().enumerate() {
            at.insert(name, (x0 + i as f64 * (BOX_W + GAP_X), MARGIN + 24.0 + d as f64 * (BOX_H + GAP_Y)));
        }
    }
    let mut svg = String::new();
    let title = format!("Workflow {}", w.name);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" role="img" aria-label="{t}" font-family="system-ui, sans-serif" font-size="12"><title>{t}</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs><rect width="100%" height="100%" fill="#fff"/><text x="{MARGIN}" y="{:.0}" font-size="13" fill="#57606a">{trigger}</text>"##,
        MARGIN + 6.0,
        t = escape(&title),
        trigger = escape(&format!("when {}", trigger(w))),
    );
    for (name, step) in &w.steps {
        let Some(&(x, y)) = at.get(name.as_str()) else { continue };
        for (key, next) in successors(step) {
            let Some(&(nx, ny)) = at.get(next) else { continue };
            let label = if key == "next" { String::new() } else { key.to_string() };
            if ny > y {
                let (x1, y1, x2, y2) = (x + BOX_W / 2.0, y + BOX_H, nx + BOX_W / 2.0, ny);
                let _ = write!(
                    svg,
                    r##"<path d="M{x1:.1},{y1:.1} C{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{y2:.1}" fill="none" stroke="#57606a" marker-end="url(#arrow)" data-edge="{}-{}"/>"##,
                    y1 + GAP_Y / 2.0,
                    y2 - GAP_Y / 2.0,
                    escape(name),
                    escape(next)
                );
                if !label.is_empty() {
                    let _ = write!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#57606a">{}</text>"##,
                        (x1 + x2) / 2.0 + 4.0,
                        (y1 + y2) / 2.0,
                        escape(&label)
                    );
                }
            } else {
                // Back (or sideways) to an earlier step: around the right of both boxes.
                let (x1, y1, x2, y2) = (x + BOX_W, y + BOX_H / 2.0, nx + BOX_W, ny + BOX_H / 2.0);
                let side = x1.max(x2) + 40.0;
                let _ = write!(
                    svg,
                    r##"<path d="M{x1:.1},{y1:.1} C{side:.1},{y1:.1} {side:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#8250df" stroke-dasharray="4 3" marker-end="url(#arrow)" data-edge="{}-{}"/>"##,
                    escape(name),
                    escape(next)
                );
                if !label.is_empty() {
                    let _ = write!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#8250df">{}</text>"##,
                        side - 30.0,
                        (y1 + y2) / 2.0,
                        escape(&label)
                    );
                }
            }
        }
    }
    for (name, step) in &w.steps {
        let Some(&(x, y)) = at.get(name.as_str()) else { continue };
        let start = *name == w.start;
        let unreachable = !reachable.contains(name.as_str());
        let _ = write!(
            svg,
            r##"<g data-step="{n}"><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{}" stroke="{}" stroke-width="{}"{}/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="600">{n}</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a">{k}</text></g>"##,
            if start { "#ddf4ff" } else { "#f6f8fa" },
            if start { "#0969da" } else { "#8c959f" },
            if start { 2 } else { 1 },
            if unreachable { r#" stroke-dasharray="5 4""# } else { "" },
            x + BOX_W / 2.0,
            y + 19.0,
            x + BOX_W / 2.0,
            y + 36.0,
            n = escape(name),
            k = escape(&kind(step)),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn trigger(w: &Workflow) -> String {
    serde_json::to_value(&w.trigger)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k.replace('_', " ")))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn menu() -> Workflow {
        usher_workflow::parse(
            r#"{ "name": "Menu", "trigger": { "kind": "conversation_opened" }, "start": "ask", "steps": {
                "ask": { "kind": "ask", "text": "Sales or support?", "save_to": "need", "answers": [
                    { "option": "Sales", "next": "sales" } ], "next": "support" },
                "sales": { "kind": "assign", "team": 1 },
                "support": { "kind": "assign", "team": 2, "next": "bye" },
                "bye": { "kind": "send_message", "text": "Bye", "next": "ask" },
                "orphan": { "kind": "close" } } }"#,
        )
        .unwrap()
    }

    #[test]
    fn steps_are_layered_by_distance_from_the_start() {
        let w = menu();
        let (layers, reachable) = layers(&w);
        assert_eq!(layers, vec![vec!["ask"], vec!["sales", "support"], vec!["bye"], vec!["orphan"]]);
        assert!(!reachable.contains("orphan") && reachable.contains("bye"));
    }

    #[test]
    fn every_step_is_a_box_and_every_way_on_an_arrow() {
        let svg = diagram(&menu());
        assert_eq!(svg.matches("<g data-step=").count(), 5);
        for edge in ["ask-sales", "ask-support", "support-bye", "bye-ask"] {
            assert!(svg.contains(&format!("data-edge=\"{edge}\"")), "{edge}");
        }
        assert!(svg.contains(">answers<"), "a non-`next` way is labelled");
        // The way back up is drawn dashed beside the boxes; the orphan is dashed too.
        assert!(svg.contains(r#"stroke-dasharray="4 3" marker-end="url(#arrow)" data-edge="bye-ask""#));
        let orphan = svg.split("<g data-step=\"orphan\">").nth(1).unwrap();
        assert!(orphan.split("</g>").next().unwrap().contains("stroke-dasharray=\"5 4\""));
        let ask = svg.split("<g data-step=\"ask\">").nth(1).unwrap();
        assert!(!ask.split("</g>").next().unwrap().contains("stroke-dasharray"));
        assert!(svg.contains("when conversation opened"));
    }
}
