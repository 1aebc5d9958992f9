//! Reports over HTTP (managers and admins): `GET /v1/reports` as JSON, every table as CSV
//! (`/v1/reports/{table}.csv`) and the charts as SVG drawn here (`/v1/reports/{chart}.svg`).
//! The period is `from` and `to` (RFC 3339; the last 24 hours by default), the bucket
//! `bucket_minutes`, the team `team` (all by default). `/v1/reports/trace.csv` exports the
//! period's conversations as a trace `usher simulate --trace` replays.

use crate::auth::Caller;
use crate::charts;
use crate::error::{ApiError, ApiResult};
use crate::json::Params;
use crate::{now_millis, AppState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write;
use usher_store::reports::{Period, Report, TraceRow};

/// The report's query.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    team: Option<i64>,
    #[serde(default)]
    bucket_minutes: Option<i64>,
}

fn instant(field: &str, text: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|_| {
        ApiError::invalid(
            "invalid_period",
            format!("{field} must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
        )
    })
}

fn period(caller: &Caller, q: &ReportQuery, now: i64) -> ApiResult<Period> {
    caller.manage("read reports")?;
    let to = q.to.as_deref().map(|t| instant("to", t)).transpose()?.unwrap_or(now);
    let from = q.from.as_deref().map(|t| instant("from", t)).transpose()?.unwrap_or(to - 24 * 3_600_000);
    let bucket = q.bucket_minutes.unwrap_or(60);
    if !(1..=10_080).contains(&bucket) {
        return Err(ApiError::invalid("invalid_period", "bucket_minutes must be 1 to 10080 (a week)"));
    }
    Ok(Period::new(from, to, bucket * 60_000)?)
}

async fn build(s: &AppState, caller: &Caller, q: &ReportQuery) -> ApiResult<Report> {
    let now = now_millis();
    let period = period(caller, q, now)?;
    Ok(s.store.report(caller.ws(), period, q.team, now).await?)
}

/// The trace's CSV, in the columns `usher simulate --trace` reads (see `usher_sim::trace`).
pub fn trace_csv(rows: &[TraceRow]) -> String {
    let mut out = String::from(
        "arrived_at,channel,language,skills,priority,handle_seconds,team,patience_seconds,contact\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            r.arrived_at,
            csv_field(&r.channel),
            csv_field(r.language.as_deref().unwrap_or_default()),
            csv_field(&r.skills.join(";")),
            csv_field(&r.priority),
            opt(r.handle_seconds),
            csv_field(r.team.as_deref().unwrap_or_default()),
            opt(r.patience_seconds),
            r.contact
        );
    }
    out
}

/// `GET /v1/reports`: the report as JSON.
pub async fn report(
    State(s): State<AppState>,
    caller: Caller,
    Params(q): Params<ReportQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!(build(&s, &caller, &q).await?)))
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The CSV of one table of the report.
pub fn csv(r: &Report, table: &str) -> Option<String> {
    let mut out = String::new();
    match table {
        "counts" => {
            out.push_str("from,to,team,opened,assigned,waited,closed,longest_wait_seconds\n");
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                r.from,
                r.to,
                opt(r.team),
                r.counts.opened,
                r.counts.assigned,
                r.counts.waited,
                r.counts.closed,
                r.longest_wait_seconds
            );
        }
        "times" => {
            out.push_str("measure,count,median_seconds,p90_seconds\n");
            for t in &r.times {
                let _ = writeln!(
                    out,
                    "{},{},{},{}",
                    t.measure,
                    t.count,
                    opt(t.median_seconds),
                    opt(t.p90_seconds)
                );
            }
        }
        "agents" => {
            out.push_str("agent,name,assigned,share\n");
            for a in &r.agents {
                let _ = writeln!(out, "{},{},{},{:.4}", a.agent, csv_field(&a.name), a.assigned, a.share);
            }
        }
        "buckets" => {
            out.push_str("start,waiting,agent,assigned\n");
            for b in &r.buckets {
                if b.assigned.is_empty() {
                    let _ = writeln!(out, "{},{},,0", b.start, b.waiting);
                }
                for (agent, n) in &b.assigned {
                    let _ = writeln!(out, "{},{},{agent},{n}", b.start, b.waiting);
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// A chart of the report as SVG.
pub fn chart(r: &Report, name: &str) -> Option<String> {
    let labels: Vec<String> =
        r.buckets.iter().map(|b| b.start.get(5..16).unwrap_or(&b.start).replace('T', " ")).collect();
    Some(match name {
        "queue" => charts::lines(
            "Conversations waiting",
            &labels,
            &[("waiting".to_string(), r.buckets.iter().map(|b| f64::from(b.waiting)).collect())],
        ),
        "agents" => charts::bars(
            "Assignments per agent",
            &r.agents.iter().map(|a| (a.name.clone(), f64::from(a.assigned))).collect::<Vec<_>>(),
        ),
        "load" => {
            let series: Vec<(String, Vec<f64>)> = r
                .agents
                .iter()
                .map(|a| {
                    let per: Vec<f64> = r
                        .buckets
                        .iter()
                        .map(|b| f64::from(b.assigned.get(&a.agent).copied().unwrap_or(0)))
                        .collect();
                    (a.name.clone(), per)
                })
                .collect();
            charts::lines("Assignments per agent over time", &labels, &series)
        }
        "times" => {
            let longest = r.times.iter().filter_map(|t| t.p90_seconds).max().unwrap_or(0);
            let (unit, per) = if longest < 120 { ("seconds", 1.0) } else { ("minutes", 60.0) };
            let value = |v: Option<i64>| v.map_or(0.0, |s| s as f64 / per);
            let mut bars = Vec::new();
            for t in &r.times {
                let name = match t.measure {
                    "time_to_assignment" => "to assign",
                    "first_response" => "1st reply",
                    _ => "resolved",
                };
                bars.push((format!("{name} (median)"), value(t.median_seconds)));
                bars.push((format!("{name} (p90)"), value(t.p90_seconds)));
            }
            charts::bars(&format!("Times, in {unit}: median and 90th percentile"), &bars)
        }
        _ => return None,
    })
}

/// A CSV file to download as `usher-NAME.csv`.
fn csv_download(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"usher-{name}.csv\"")),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/reports/{table}.csv` and `GET /v1/reports/{chart}.svg`.
pub async fn export(
    State(s): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    Params(q): Params<ReportQuery>,
) -> ApiResult<Response> {
    let (name, kind) =
        file.rsplit_once('.').ok_or_else(|| ApiError::not_found(format!("report file {file}")))?;
    if !matches!(kind, "csv" | "svg") {
        return Err(ApiError::not_found(format!("report file {file}")));
    }
    if file == "trace.csv" {
        let period = period(&caller, &q, now_millis())?;
        let rows =
            s.store.traffic_trace(caller.ws(), period, q.team, usher_store::reports::MAX_TRACE).await?;
        return Ok(csv_download(name, trace_csv(&rows)));
    }
    let known = match kind {
        "csv" => ["counts", "times", "agents", "buckets"].contains(&name),
        _ => ["queue", "agents", "load", "times"].contains(&name),
    };
    if !known {
        return Err(ApiError::not_found(format!("report file {file}")));
    }
    let r = build(&s, &caller, &q).await?;
    let response = match kind {
        "csv" => csv_download(name, csv(&r, name).unwrap_or_default()),
        _ => ([(header::CONTENT_TYPE, "image/svg+xml".to_string())], chart(&r, name).unwrap_or_default())
            .into_response(),
    };
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use usher_store::reports::{compute, ConversationTimes, RoutingEvent};

    fn sample() -> Report {
        let period = Period::new(0, 7_200_000, 3_600_000).unwrap();
        let convs = [ConversationTimes {
            id: 1,
            opened_at: 0,
            assigned_at: Some(30_000),
            first_response_at: None,
            closed_at: None,
        }];
        let events = [RoutingEvent {
            at: 30_000,
            kind: "conversation.assigned".into(),
            conversation: 1,
            agent: Some(7),
            assigned: Some(7),
        }];
        compute(
            &convs,
            &events,
            &BTreeMap::from([(7, "Smith, \"Jo\"".to_string())]),
            period,
            Some(3),
            7_200_000,
        )
    }

    #[test]
    fn every_table_exports_with_a_header_and_quoted_names() {
        let r = sample();
        let agents = csv(&r, "agents").unwrap();
        assert_eq!(agents, "agent,name,assigned,share\n7,\"Smith, \"\"Jo\"\"\",1,1.0000\n");
        let counts = csv(&r, "counts").unwrap();
        assert!(counts.ends_with(",3,1,1,0,0,0\n"), "{counts}");
        assert_eq!(csv(&r, "times").unwrap().lines().nth(1), Some("time_to_assignment,1,30,30"));
        assert_eq!(csv(&r, "buckets").unwrap().lines().count(), 3);
        assert!(csv(&r, "nope").is_none());
    }

    #[test]
    fn every_chart_is_an_svg() {
        let r = sample();
        for name in ["queue", "agents", "load", "times"] {
            let svg = chart(&r, name).unwrap();
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{name}");
        }
        assert!(chart(&r, "pie").is_none());
    }
}
