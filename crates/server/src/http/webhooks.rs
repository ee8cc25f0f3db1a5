//! `POST /webhooks/livekit`: verify, append the raw body to the log, answer. Nothing slower than
//! one durable append stands between LiveKit and its 200 (LiveKit stalls a room's queue on a slow
//! receiver, FACTS.md §2.4).

use super::{ApiError, AppState, ErrorBody, IngestCounters, content_type, read_body};
use crate::ingest::{IngestError, livekit, webhook_entry};
use crate::pipeline::now;
use crate::store::{Appended, Quarantined};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use callpulse_core::Source;
use serde_json::{Value, json};

const ACCEPTED_TYPES: &[&str] = &["application/webhook+json", "application/json"];

#[utoipa::path(post, path = "/webhooks/livekit", tag = "ingest",
    request_body(content = Object, content_type = "application/webhook+json", description = "A LiveKit webhook event, signed in `Authorization`"),
    responses((status = 200, description = "`{\"status\": \"stored\" | \"duplicate\", \"id\"}`", body = Object),
        (status = 400, description = "Authentic but unparseable: quarantined", body = ErrorBody),
        (status = 401, description = "Missing or wrong LiveKit signature", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Overloaded or the store is unavailable; retry after `Retry-After`", body = ErrorBody)))]
pub async fn receive_livekit_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let received_at = now();
    let body = read_body(&headers, body, state.max_body_bytes).await?;
    let media_type = content_type(&headers);
    if let Some(t) = media_type
        .as_deref()
        .filter(|t| !ACCEPTED_TYPES.contains(t))
    {
        return Err(ApiError::UnsupportedMediaType(t.to_owned()));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = state.verifier.verify(authorization, &body) {
        IngestCounters::add(&state.counters.webhooks_rejected, 1);
        tracing::warn!(error = %e, "webhook signature rejected");
        return Err(ApiError::Unauthorized {
            code: "invalid_signature",
            detail: e.to_string(),
        });
    }
    state
        .counters
        .webhook_rate
        .record(received_at.millis().div_euclid(1000));
    // Verified as sent; stored (and decoded) as kept.
    let body = state.body_to_store(body);
    let decoded = match livekit::decode(&body, received_at) {
        Ok(decoded) => decoded,
        Err(e @ (IngestError::NotJson(_) | IngestError::Undecodable(_))) => {
            state
                .store
                .quarantine(&Quarantined {
                    source: Source::Livekit,
                    received_at,
                    reason: e.to_string(),
                    content_type: media_type,
                    body,
                })
                .await?;
            IngestCounters::add(&state.counters.webhooks_quarantined, 1);
            tracing::warn!(error = %e, "authentic webhook quarantined");
            return Err(ApiError::bad_request("unparseable_webhook", e.to_string()));
        }
        Err(e) => return Err(ApiError::Internal(e.into())),
    };
    let event_id = decoded.event_id.clone();
    let event = webhook_entry(decoded, body, received_at);
    let status = match state.appender.append(event).await {
        Ok(Appended::Stored { .. }) => {
            IngestCounters::add(&state.counters.webhooks_stored, 1);
            state.pipeline_wake.notify_one();
            "stored"
        }
        Ok(Appended::Duplicate) => {
            IngestCounters::add(&state.counters.webhooks_duplicate, 1);
            "duplicate"
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhook not stored");
            return Err(e.into());
        }
    };
    Ok(Json(json!({"status": status, "id": event_id})))
}
