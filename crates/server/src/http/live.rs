//! `GET /api/v1/live` (a snapshot) and `GET /api/v1/live/ws` (a snapshot, then deltas).

use super::{ApiError, AppState, ErrorBody};
use crate::live;
use crate::pipeline::now;
use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    responses((status = 200, description = "The live board: calls in progress, agents, recent calls, alerts (docs/live.md)", body = Object),
        (status = 401, description = "An API token is needed", body = ErrorBody)))]
pub async fn get_live(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.live.snapshot_value(now()))
}

pub async fn live_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Browsers send cookies with a cross-site WebSocket handshake too; only this origin's pages
    // may open one (clients that are not browsers send no Origin).
    if !same_origin(&headers) {
        return ApiError::Forbidden {
            code: "cross_origin",
            detail: "the live socket opens only from this server's own pages".into(),
        }
        .into_response();
    }
    // Upgraded sockets leave the connection cap of the listener: they have their own.
    let Ok(seat) = state.live_clients.clone().try_acquire_owned() else {
        return ApiError::TooManyClients.into_response();
    };
    upgrade.on_upgrade(move |socket| async move {
        serve_client(state, socket).await;
        drop(seat);
    })
}

/// Whether the request has no `Origin`, or one whose host is the `Host` it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Pushes the board to one client until it closes or a write fails; what the client sends is
/// read (so pings are answered and a close is seen) and otherwise ignored.
async fn serve_client(state: AppState, socket: WebSocket) {
    let (sink, mut incoming) = socket.split();
    let mut sink = sink.with(|text| futures::future::ok::<_, axum::Error>(Message::Text(text)));
    let reader = async {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    tokio::select! {
        result = live::forward(&state.live, &mut sink) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "live client dropped");
            }
        }
        _ = reader => {}
    }
    let _ = sink.close().await;
}
