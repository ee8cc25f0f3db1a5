//! `GET /api/v1/metrics` (a window, optionally grouped) and `GET /api/v1/summary` (a day against
//! the same weekday a week earlier), shapes as METRICS.md §8.

use super::dto::{metrics_json, rfc3339_in};
use super::{ApiError, AppState, ErrorBody};
use crate::metrics::{self, GroupBy, GroupKey, MetricsQuery, QueryError, summary_windows};
use crate::pipeline::now;
use crate::store::MetricFilter;
use axum::Json;
use axum::extract::{Query, State};
use callpulse_core::metrics::judge::Goal;
use callpulse_core::{Direction, Timestamp};
use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub(super) fn bad(field: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{field}: {detail}"))
}

pub(super) fn reject_unknown(
    params: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(
            k,
            format!("unknown parameter (known: {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(super) fn parse_tz(params: &HashMap<String, String>, default: Tz) -> Result<Tz, ApiError> {
    params
        .get("tz")
        .map(|v| {
            v.parse::<Tz>()
                .map_err(|_| bad("tz", format!("`{v}` is not an IANA time zone")))
        })
        .transpose()
        .map(|tz| tz.unwrap_or(default))
}

/// An RFC 3339 time, or a date `YYYY-MM-DD` meaning local midnight in `tz`.
fn parse_instant(field: &str, raw: &str, tz: Tz) -> Result<Timestamp, ApiError> {
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Timestamp(
            metrics::start_of_day(date, tz).timestamp_millis(),
        ));
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| Timestamp(t.timestamp_millis()))
        .map_err(|e| bad(field, format!("not an RFC 3339 time or a date: {e}")))
}

fn group_key_json(key: &GroupKey) -> Value {
    match key {
        GroupKey::Time(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)),
        GroupKey::Value(v) => v.clone().map_or(Value::Null, Value::String),
    }
}

pub(super) fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::Store(e) => e.into(),
        QueryError::TooManyGroups => bad("group_by", QueryError::TooManyGroups),
    }
}

#[utoipa::path(get, path = "/api/v1/metrics", tag = "metrics",
    params(
        ("from" = Option<String>, Query, description = "RFC 3339 time, or a date YYYY-MM-DD (midnight in `tz`)"), ("to" = Option<String>, Query, description = "RFC 3339 time, or a date YYYY-MM-DD (midnight in `tz`)"),
        ("direction" = Option<String>, Query, description = "inbound or outbound"),
        ("trunk_id" = Option<String>, Query), ("agent_id" = Option<String>, Query), ("queue" = Option<String>, Query),
        ("group_by" = Option<String>, Query, description = "hour, day, trunk, agent, queue or direction"),
        ("tz" = Option<String>, Query, description = "IANA time zone of day and hour buckets"),
    ),
    responses((status = 200, description = "`{from, to, tz, totals, groups: [{key, metrics}]}` (METRICS.md §8)", body = Object), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn get_metrics(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const KNOWN: &[&str] = &[
        "from",
        "to",
        "direction",
        "trunk_id",
        "agent_id",
        "queue",
        "group_by",
        "tz",
    ];
    reject_unknown(&params, KNOWN)?;
    let tz = parse_tz(&params, state.metrics.tz)?;
    let now = now();
    let from = match params.get("from") {
        Some(v) => parse_instant("from", v, tz)?,
        None => summary_windows(None, tz, now).today.0,
    };
    let to = params
        .get("to")
        .map(|v| parse_instant("to", v, tz))
        .transpose()?
        .unwrap_or(now);
    if to < from {
        return Err(bad("to", "must not be before from"));
    }
    let text = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let filter = MetricFilter {
        direction: match params.get("direction").map(String::as_str) {
            None => None,
            Some("inbound") => Some(Direction::Inbound),
            Some("outbound") => Some(Direction::Outbound),
            Some(_) => return Err(bad("direction", "must be inbound or outbound")),
        },
        trunk_id: text("trunk_id"),
        agent_id: text("agent_id"),
        queue: text("queue"),
    };
    let group_by = params
        .get("group_by")
        .map(|v| {
            GroupBy::parse(v).ok_or_else(|| {
                bad(
                    "group_by",
                    "must be hour, day, trunk, agent, queue or direction",
                )
            })
        })
        .transpose()?;
    let q = MetricsQuery {
        from,
        to,
        filter,
        group_by,
        tz,
    };
    let answer = metrics::query(state.store.as_ref(), &q)
        .await
        .map_err(query_error)?;
    let groups: Vec<Value> = answer
        .groups
        .iter()
        .map(|(key, tally)| json!({"key": group_key_json(key), "metrics": metrics_json(&tally.metrics())}))
        .collect();
    Ok(Json(json!({
        "from": rfc3339_in(from, tz),
        "to": rfc3339_in(to, tz),
        "tz": tz.name(),
        "totals": metrics_json(&answer.totals.metrics()),
        "groups": groups,
    })))
}

#[utoipa::path(get, path = "/api/v1/summary", tag = "metrics",
    params(("date" = Option<String>, Query, description = "YYYY-MM-DD; default today"),
        ("tz" = Option<String>, Query, description = "IANA time zone")),
    responses((status = 200, description = "Today so far against the same weekday a week earlier, with targets and statuses (METRICS.md §6, §8)", body = Object), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn get_summary(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&params, &["date", "tz"])?;
    let tz = parse_tz(&params, state.metrics.tz)?;
    let date = params
        .get("date")
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| bad("date", "must be a date YYYY-MM-DD"))
        })
        .transpose()?;
    let now = now();
    let windows = summary_windows(date, tz, now);
    if tz
        .timestamp_millis_opt(windows.today.0.millis())
        .single()
        .is_none()
        || windows.today.0 > now
    {
        return Err(bad("date", "must not be in the future"));
    }
    let window = |(from, to): (Timestamp, Timestamp)| MetricsQuery {
        from,
        to,
        filter: MetricFilter::default(),
        group_by: None,
        tz,
    };
    let store = state.store.as_ref();
    let today = metrics::query(store, &window(windows.today))
        .await
        .map_err(query_error)?
        .totals
        .metrics();
    let last_week = metrics::query(store, &window(windows.last_week))
        .await
        .map_err(query_error)?
        .totals
        .metrics();
    let targets = &state.metrics.targets;
    let mut status = Map::new();
    let mut target_json = Map::new();
    for judged in targets.judged() {
        status.insert(
            judged.name.into(),
            targets.judge(&judged, &today, &last_week).as_str().into(),
        );
        match judged.goal {
            Goal::AtLeast(t) => target_json.insert(judged.name.into(), json!({"min": t})),
            Goal::AtMost(t) => target_json.insert(judged.name.into(), json!({"max": t})),
            _ => None,
        };
    }
    Ok(Json(json!({
        "date": windows.date.to_string(),
        "tz": tz.name(),
        "until": rfc3339_in(windows.today.1, tz),
        "today": metrics_json(&today),
        "last_week": metrics_json(&last_week),
        "status": status,
        "targets": target_json,
        "margins": {"points": targets.warn_margin_points, "ratio": targets.warn_margin_ratio, "min_calls": targets.min_calls},
    })))
}
