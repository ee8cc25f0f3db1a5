//! `GET /api/v1/alerts`: the alerts firing now and the latest notices with their delivery state.

use super::{ApiError, AppState, ErrorBody};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// How many past notices the history shows.
const HISTORY: i64 = 100;

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    responses((status = 200, description = "Active alerts and recent notices", body = Object), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn get_alerts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let active: Vec<Value> = state
        .store
        .firing_alerts()
        .await?
        .into_iter()
        .map(|a| a.notice)
        .collect();
    let recent: Vec<Value> = state
        .store
        .recent_notices(HISTORY)
        .await?
        .into_iter()
        .map(|(mut notice, pending)| {
            notice["pending_deliveries"] = pending.into();
            notice
        })
        .collect();
    Ok(Json(json!({"active": active, "recent": recent})))
}
