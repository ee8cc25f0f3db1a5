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

use crate::store::{AgentReport, NewEvent, RawEvent};
use callpulse_core::live::ReportedState;
use callpulse_core::{CallEvent, Source, Timestamp};

/// The log entry of an authentic, decoded webhook.
pub fn webhook_entry(
    decoded: livekit::DecodedWebhook,
    body: Vec<u8>,
    received_at: Timestamp,
) -> NewEvent {
    NewEvent {
        source: Source::Livekit,
        event_id: decoded.event_id,
        event_type: decoded.event_name,
        received_at,
        body,
        call_event: decoded.call_event,
        agent_report: None,
        occurred_at: decoded.at,
        sent_at: decoded.sent_at,
    }
}

/// The log entries of a valid batch of application events, each kept as its own JSON body.
pub fn app_entries(
    events: Vec<(app_events::AppEvent, serde_json::Value)>,
    received_at: Timestamp,
) -> Vec<NewEvent> {
    events
        .into_iter()
        .map(|(event, raw)| {
            let event_id = event.id().to_owned();
            let occurred_at = match &event {
                app_events::AppEvent::Call(e) => e.at,
                app_events::AppEvent::AgentState { at, .. } => *at,
            };
            let (call_event, agent_report) = match event {
                app_events::AppEvent::Call(e) => (Some(*e), None),
                app_events::AppEvent::AgentState {
                    agent_id,
                    state,
                    at,
                    ..
                } => (
                    None,
                    Some(AgentReport {
                        agent_id,
                        reported: ReportedState { state, at },
                    }),
                ),
            };
            NewEvent {
                source: Source::App,
                event_id,
                event_type: raw["type"].as_str().unwrap_or_default().to_owned(),
                received_at,
                body: serde_json::to_vec(&raw).unwrap_or_default(),
                call_event,
                agent_report,
                occurred_at,
                sent_at: None,
            }
        })
        .collect()
}

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
