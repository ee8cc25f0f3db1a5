//! `GET /api/v1/charts/{metric}.svg?range=7d|30d&tz=&t=`: a trend chart of one metric, hourly over
//! the past 7 days or daily over the past 30, drawn from the same rollups as `/api/v1/metrics`.

use super::dto::metrics_json;
use super::metrics::{bad, parse_tz, query_error, reject_unknown};
use super::{ApiError, AppState, ErrorBody};
use crate::charts::{Series, Unit, line_chart};
use crate::metrics::{self, GroupBy, GroupKey, MetricsQuery, start_of_day, summary_windows};
use crate::pipeline::now;
use crate::store::MetricFilter;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use callpulse_core::Timestamp;
use callpulse_core::metrics::judge::Goal;
use chrono::Duration;
use std::collections::HashMap;

/// The metrics a chart can show, and how their values read.
const CHARTABLE: &[(&str, Unit)] = &[
    ("total_calls", Unit::Count),
    ("answer_rate", Unit::Ratio),
    ("avg_handle_time_seconds", Unit::Seconds),
    ("abandonment_rate", Unit::Ratio),
    ("avg_speed_of_answer_seconds", Unit::Seconds),
    ("service_level", Unit::Ratio),
    ("error_rate", Unit::Ratio),
    ("transfer_rate", Unit::Ratio),
    ("connect_rate", Unit::Ratio),
];

#[utoipa::path(get, path = "/api/v1/charts/{file}", tag = "metrics",
    params(("file" = String, Path, description = "`<metric>.svg`"),
        ("range" = Option<String>, Query, description = "7d (default, hourly) or 30d (daily)"),
        ("tz" = Option<String>, Query), ("t" = Option<String>, Query, description = "ignored (cache buster)")),
    responses((status = 200, description = "An SVG trend chart", content_type = "image/svg+xml", body = String),
        (status = 404, description = "No chart of that name", body = ErrorBody), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn get_chart(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // `t` is ignored: a page changes it to fetch a fresh chart past the browser's image cache.
    reject_unknown(&params, &["range", "tz", "t"])?;
    let name = file.strip_suffix(".svg").unwrap_or(&file);
    let unit = CHARTABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, unit)| *unit)
        .ok_or_else(|| {
            let names: Vec<&str> = CHARTABLE.iter().map(|(n, _)| *n).collect();
            ApiError::NotFound(format!(
                "metric: no chart `{name}` (charts: {})",
                names.join(", ")
            ))
        })?;
    let tz = parse_tz(&params, state.metrics.tz)?;
    let (days, group_by) = match params.get("range").map(String::as_str) {
        None | Some("7d") => (7, GroupBy::Hour),
        Some("30d") => (30, GroupBy::Day),
        Some(_) => return Err(bad("range", "must be 7d or 30d")),
    };
    let now = now();
    let today = summary_windows(None, tz, now).date;
    let from = start_of_day(today - Duration::days(days - 1), tz);
    let q = MetricsQuery {
        from: Timestamp(from.timestamp_millis()),
        to: now,
        filter: MetricFilter::default(),
        group_by: Some(group_by),
        tz,
    };
    let answer = metrics::query(state.store.as_ref(), &q)
        .await
        .map_err(query_error)?;
    let points = answer
        .groups
        .iter()
        .filter_map(|(key, tally)| match key {
            GroupKey::Time(t) => Some((
                t.timestamp_millis(),
                metrics_json(&tally.metrics())[name].as_f64(),
            )),
            GroupKey::Value(_) => None,
        })
        .collect();
    let target = state
        .metrics
        .targets
        .judged()
        .into_iter()
        .find(|j| j.name == name)
        .and_then(|j| match j.goal {
            Goal::AtLeast(t) | Goal::AtMost(t) => Some(t),
            Goal::HigherIsBetter | Goal::LowerIsBetter => None,
        });
    let svg = line_chart(&Series {
        unit,
        points,
        target,
        tz,
        weekday_labels: days <= 7,
    })
    .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg,
    )
        .into_response())
}
