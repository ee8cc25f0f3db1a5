//! The HTTP adapter: the one list of routes, the shared state, and helpers every handler uses.
//! Only this module knows the JSON shapes of the API.

mod alerts;
pub mod auth;
mod cdrs;
mod charts;
mod dashboard;
pub(crate) mod dto;
mod error;
mod events;
mod live;
mod metrics;
mod openapi;
pub mod serve;
mod webhooks;

use crate::ingest::livekit::WebhookVerifier;
use crate::store::Store;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

pub use error::{ApiError, ErrorBody};

/// Counters of what the ingest endpoints saw since start.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub webhooks_stored: AtomicU64,
    pub webhooks_duplicate: AtomicU64,
    pub webhooks_rejected: AtomicU64,
    pub webhooks_quarantined: AtomicU64,
    pub app_events_stored: AtomicU64,
    pub app_events_duplicate: AtomicU64,
    pub app_batches_rejected: AtomicU64,
    pub calls_closed_by_timeout: AtomicU64,
    /// Call events the CDR pipeline read back from the store, for calls whose event sets it did
    /// not hold (`pipeline::open_calls`).
    pub cdr_pipeline_events_loaded: AtomicU64,
    /// Authentic webhooks received per second over the last minute.
    pub webhook_rate: LastMinute,
}

/// A count per second over a sliding minute: what "webhooks per minute" shows.
#[derive(Debug)]
pub struct LastMinute {
    /// (second, count) slots indexed by second modulo 60; a slot from an older minute is stale.
    slots: std::sync::Mutex<[(i64, u64); 60]>,
}

impl Default for LastMinute {
    fn default() -> Self {
        LastMinute {
            slots: std::sync::Mutex::new([(i64::MIN, 0); 60]),
        }
    }
}

impl LastMinute {
    pub fn record(&self, now_s: i64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[now_s.rem_euclid(60) as usize];
        if slot.0 != now_s {
            *slot = (now_s, 0);
        }
        slot.1 += 1;
    }

    /// The count over the 60 seconds up to and including `now_s`.
    pub fn total(&self, now_s: i64) -> u64 {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .filter(|(s, _)| *s > now_s - 60 && *s <= now_s)
            .map(|(_, n)| n)
            .sum()
    }
}

impl IngestCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Webhook appends, committed in shared transactions.
    pub appender: crate::store::GroupCommit,
    pub verifier: Arc<WebhookVerifier>,
    pub events_tokens: Arc<Vec<String>>,
    /// Woken after every append so the CDR pipeline runs at once.
    pub pipeline_wake: Arc<Notify>,
    pub counters: Arc<IngestCounters>,
    pub max_body_bytes: usize,
    pub metrics: Arc<MetricSettings>,
    pub live: Arc<crate::live::LiveHub>,
    /// Who may read the API, the live socket, the dashboard and `/metrics`.
    pub read_access: auth::ReadAccess,
    /// How phone numbers are shown.
    pub numbers: crate::privacy::NumberDisplay,
    /// `--hash-numbers`: rewrites incoming bodies before they are stored.
    pub hasher: Option<crate::privacy::NumberHasher>,
    /// Seats for live sockets (`--max-live-clients`).
    pub live_clients: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The body as it is to be stored: with its phone numbers hashed under `--hash-numbers`.
    pub fn body_to_store(&self, body: Vec<u8>) -> Vec<u8> {
        match &self.hasher {
            Some(hasher) => hasher.rewrite(body),
            None => body,
        }
    }
}

/// How metrics are computed and judged.
#[derive(Debug, Clone)]
pub struct MetricSettings {
    /// Default time zone of day and hour buckets.
    pub tz: chrono_tz::Tz,
    pub params: callpulse_core::metrics::MetricParams,
    pub targets: callpulse_core::metrics::judge::Targets,
}

pub fn router(state: AppState) -> Router {
    // Reading needs an API token (unless none is configured); see `auth`.
    let read = Router::new()
        .route("/", get(dashboard::index))
        .route("/api/v1/cdrs", get(cdrs::list_cdrs))
        .route("/api/v1/cdrs/{call_id}", get(cdrs::get_cdr))
        .route("/api/v1/metrics", get(metrics::get_metrics))
        .route("/api/v1/summary", get(metrics::get_summary))
        .route("/api/v1/ingest", get(ingest_stats))
        .route("/api/v1/alerts", get(alerts::get_alerts))
        .route("/api/v1/charts/{file}", get(charts::get_chart))
        .route("/api/v1/live", get(live::get_live))
        .route("/api/v1/live/ws", get(live::live_socket))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_reader,
        ));
    // Webhooks and application events carry their own credentials; the rest is public.
    Router::new()
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/style.css", get(dashboard::style_css))
        .route("/favicon.svg", get(dashboard::icon))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/webhooks/livekit", post(webhooks::receive_livekit_webhook))
        .route("/api/v1/events", post(events::receive_app_events))
        .route("/healthz", get(healthz))
        .merge(read)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The ingest benchmark's ceiling (`serve --bench-noop`): the webhook route reads the body as
/// the real one does and answers the same shape, verifying and storing nothing.
pub fn noop_router(max_body_bytes: usize) -> Router {
    async fn accept(
        axum::extract::State(limit): axum::extract::State<usize>,
        headers: HeaderMap,
        body: Body,
    ) -> Result<axum::Json<serde_json::Value>, ApiError> {
        let body = read_body(&headers, body, limit).await?;
        Ok(axum::Json(
            serde_json::json!({"status": "stored", "bytes": body.len()}),
        ))
    }
    Router::new()
        .route("/webhooks/livekit", post(accept))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::disable())
        .with_state(max_body_bytes)
}

/// The Prometheus listener's routes: `/metrics` only.
pub fn metrics_router(state: AppState, max_trunks: usize) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                move |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    match crate::prometheus::render(&state, max_trunks).await {
                        Ok(text) => Ok((
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text,
                        )),
                        Err(e) => Err(ApiError::from(e)),
                    }
                },
            ),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_reader,
        ))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/api/v1/ingest", tag = "ingest",
    responses((status = 200, description = "Events in the log, quarantine, default-partition rows, counts since start", body = Object),
        (status = 401, description = "An API token is needed", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
async fn ingest_stats(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let c = &state.counters;
    // Rows caught by catch-all partitions (PostgreSQL): above zero, a time partition was missing.
    let stranded: serde_json::Map<String, serde_json::Value> = state
        .store
        .default_partition_rows()
        .await?
        .into_iter()
        .map(|d| (d.table, d.rows.into()))
        .collect();
    Ok(axum::Json(serde_json::json!({
        "events_in_log": state.store.event_count().await?,
        "default_partition_rows": stranded,
        "webhooks_last_minute": c.webhook_rate.total(crate::pipeline::now().millis().div_euclid(1000)),
        "quarantined_in_store": state.store.quarantine_count().await?,
        "since_start": {
            "webhooks_stored": IngestCounters::get(&c.webhooks_stored),
            "webhooks_duplicate": IngestCounters::get(&c.webhooks_duplicate),
            "webhooks_rejected": IngestCounters::get(&c.webhooks_rejected),
            "webhooks_quarantined": IngestCounters::get(&c.webhooks_quarantined),
            "app_events_stored": IngestCounters::get(&c.app_events_stored),
            "app_events_duplicate": IngestCounters::get(&c.app_events_duplicate),
            "app_batches_rejected": IngestCounters::get(&c.app_batches_rejected),
            "calls_closed_by_timeout": IngestCounters::get(&c.calls_closed_by_timeout),
        }
    })))
}

/// Reads a request body up to `limit` bytes; larger bodies (by header or by count) are refused
/// with 413 before they are read whole.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Err(ApiError::bad_request(
                    "unreadable_body",
                    format!("could not read the body: {e}"),
                ))
            }
        }
    }
}

/// The request's media type without parameters, lowercased.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

#[cfg(test)]
mod tests {
    use super::LastMinute;

    #[test]
    fn last_minute_forgets_what_is_older_than_sixty_seconds() {
        let rate = LastMinute::default();
        rate.record(1000);
        rate.record(1000);
        rate.record(1030);
        assert_eq!(rate.total(1030), 3);
        assert_eq!(rate.total(1059), 3);
        assert_eq!(rate.total(1060), 1, "second 1000 is out of the window");
        rate.record(1060);
        assert_eq!(rate.total(1060), 2, "its slot was reused, not added to");
        assert_eq!(rate.total(2000), 0);
    }
}
