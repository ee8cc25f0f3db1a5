//! `POST /api/v1/events`: application events, authenticated by their own bearer token. A batch is
//! validated whole and appended in one transaction: accepted whole or not at all.

use super::{ApiError, AppState, ErrorBody, IngestCounters, content_type, read_body};
use crate::ingest::app_entries;
use crate::ingest::app_events::parse_batch;
use crate::pipeline::now;
use crate::store::{AgentReport, Appended, Quarantined};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use callpulse_core::Source;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

fn authorized(headers: &HeaderMap, tokens: &[String]) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return false;
    };
    tokens.iter().fold(false, |ok, t| {
        ok | bool::from(t.as_bytes().ct_eq(presented.as_bytes()))
    })
}

#[utoipa::path(post, path = "/api/v1/events", tag = "ingest",
    request_body(content = Object, description = "A JSON array of application events (METRICS.md §9)"),
    responses((status = 200, description = "`{\"accepted\", \"duplicates\"}`", body = Object),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong events token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "An event is invalid; `detail` names it and its field", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn receive_app_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if !authorized(&headers, &state.events_tokens) {
        let detail = if state.events_tokens.is_empty() {
            "application events are disabled: no events token is configured"
        } else {
            "missing or wrong bearer token"
        };
        return Err(ApiError::Unauthorized {
            code: "invalid_token",
            detail: detail.into(),
        });
    }
    let received_at = now();
    let body = state.body_to_store(read_body(&headers, body, state.max_body_bytes).await?);
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("body is not JSON: {e}")))
        .and_then(|value| {
            parse_batch(&value).map_err(|e| ApiError::Unprocessable {
                code: "invalid_event",
                detail: e.to_string(),
            })
        });
    let events = match parsed {
        Ok(events) => events,
        Err(refusal) => {
            // Authenticated but refused: kept for inspection, never silently dropped.
            IngestCounters::add(&state.counters.app_batches_rejected, 1);
            state
                .store
                .quarantine(&Quarantined {
                    source: Source::App,
                    received_at,
                    reason: refusal.to_string(),
                    content_type: content_type(&headers),
                    body,
                })
                .await?;
            return Err(refusal);
        }
    };
    let batch = app_entries(events, received_at);
    let appended = state.store.append(&batch).await?;
    let reports: Vec<&AgentReport> = batch
        .iter()
        .zip(&appended)
        .filter(|(_, a)| matches!(a, Appended::Stored { .. }))
        .filter_map(|(e, _)| e.agent_report.as_ref())
        .collect();
    state.live.apply_agent_reports(reports);
    let stored = appended
        .iter()
        .filter(|a| matches!(a, Appended::Stored { .. }))
        .count();
    let duplicates = appended.len() - stored;
    IngestCounters::add(&state.counters.app_events_stored, stored as u64);
    IngestCounters::add(&state.counters.app_events_duplicate, duplicates as u64);
    if stored > 0 {
        state.pipeline_wake.notify_one();
    }
    Ok(Json(json!({"accepted": stored, "duplicates": duplicates})))
}
