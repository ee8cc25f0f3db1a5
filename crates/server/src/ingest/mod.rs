//! Decoding what arrives from outside into core call events: LiveKit webhooks and application
//! events. Nothing else in the server knows either wire format.

pub mod app_events;
pub mod livekit;

/// Why a webhook was refused or could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token's issuer is not a configured LiveKit API key")]
    UnknownApiKey,
    #[error("the token's sha256 claim does not match the body")]
    BodyHashMismatch,
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("body is JSON but not a LiveKit webhook event: {0}")]
    Undecodable(String),
}

use crate::store::RawEvent;
use callpulse_core::{CallEvent, Source};

/// Decodes a logged event again (for rebuilds): the call event it contributes, if any.
/// Bodies were verified when they arrived; tokens expire, so they are not verified again.
pub fn decode_logged(raw: &RawEvent) -> Option<CallEvent> {
    match raw.source {
        Source::Livekit => livekit::decode(&raw.body, raw.received_at)
            .ok()
            .and_then(|d| d.call_event),
        Source::App => {
            let value: serde_json::Value = serde_json::from_slice(&raw.body).ok()?;
            match app_events::parse_batch(&value).ok()?.pop()?.0 {
                app_events::AppEvent::Call(e) => Some(*e),
                app_events::AppEvent::AgentState { .. } => None,
            }
        }
    }
}
