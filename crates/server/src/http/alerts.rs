//! `GET /api/v1/alerts`: the alerts firing now and the latest notices with their delivery state.

use super::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// How many past notices the history shows.
const HISTORY: i64 = 100;

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
