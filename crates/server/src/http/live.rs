//! `GET /api/v1/live` (a snapshot) and `GET /api/v1/live/ws` (a snapshot, then deltas).

use super::AppState;
use crate::live;
use crate::pipeline::now;
use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{SinkExt, StreamExt};

pub async fn get_live(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.live.snapshot_value(now()))
}

pub async fn live_socket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_client(state, socket))
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
