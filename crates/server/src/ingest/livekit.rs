//! LiveKit's webhook wire format: signature verification and decoding into core call events.
//!
//! The only place that knows it (FACTS.md §1, §8). The JWT is checked with `livekit-api`'s
//! `TokenVerifier`, chosen by the token's `iss` among the configured keys; the `sha256` claim is
//! compared with the hash of the exact body bytes. Decoding uses `livekit-protocol`'s types; an enum
//! name they do not know is neutralised and recorded, so a new LiveKit version never loses an event.

use super::IngestError;
use base64::Engine;
use callpulse_core::event::{
    CallEvent, DisconnectReason, EventBody, ParticipantKind, Scope, SipParticipant, Source,
    Timestamp, attr,
};
use livekit_api::access_token::{Claims, TokenVerifier};
use livekit_protocol as proto;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The configured LiveKit API keys, each with its verifier.
#[derive(Clone, Default)]
pub struct WebhookVerifier {
    verifiers: HashMap<String, TokenVerifier>,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&String> = self.verifiers.keys().collect();
        f.debug_struct("WebhookVerifier")
            .field("keys", &keys)
            .finish()
    }
}

impl WebhookVerifier {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let verifiers = pairs
            .into_iter()
            .map(|(k, s)| (k.to_owned(), TokenVerifier::with_api_key(k, s)))
            .collect();
        WebhookVerifier { verifiers }
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// Checks the `Authorization` header (raw JWT as LiveKit sends it, or `Bearer <jwt>`) against
    /// the body bytes. Returns the API key that signed it.
    pub fn verify(&self, authorization: Option<&str>, body: &[u8]) -> Result<String, IngestError> {
        let header = authorization
            .ok_or(IngestError::MissingAuthorization)?
            .trim();
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or(header)
            .trim();
        let unverified = Claims::from_unverified(token)
            .map_err(|_| IngestError::InvalidToken("not a JWT".into()))?;
        let verifier = self
            .verifiers
            .get(&unverified.iss)
            .ok_or(IngestError::UnknownApiKey)?;
        let claims = verifier
            .verify(token)
            .map_err(|e| IngestError::InvalidToken(e.to_string()))?;
        let claimed = base64::engine::general_purpose::STANDARD
            .decode(claims.sha256.as_bytes())
            .map_err(|_| IngestError::BodyHashMismatch)?;
        let actual = Sha256::digest(body);
        if claimed.len() != actual.len() || !bool::from(claimed.ct_eq(actual.as_slice())) {
            return Err(IngestError::BodyHashMismatch);
        }
        Ok(claims.iss)
    }
}

/// What a verified webhook body decodes to.
#[derive(Debug, Clone)]
pub struct DecodedWebhook {
    /// The LiveKit event id, or `sha256:<hex>` of the body when it has none (METRICS.md §9).
    pub event_id: String,
    pub event_name: String,
    /// When it happened: its `createdAt`, or when it arrived if that is missing or absurd.
    pub at: Timestamp,
    /// Its `createdAt` alone, when present and sane.
    pub sent_at: Option<Timestamp>,
    /// The call event it contributes, if it matters to a CDR.
    pub call_event: Option<CallEvent>,
}

/// Times past the year 3000 are broken clocks or hostile input; they are treated as absent.
const MAX_EPOCH_SECS: i64 = 32_503_680_000;

/// Enum-typed field names in LiveKit's webhook messages; only these are neutralised.
const ENUM_FIELDS: &[&str] = &[
    "kind",
    "kindDetails",
    "kind_details",
    "state",
    "disconnectReason",
    "disconnect_reason",
    "source",
    "type",
    "status",
    "sourceType",
    "source_type",
    "roomEndReason",
    "room_end_reason",
    "backupCodecPolicy",
    "backup_codec_policy",
    "encryption",
    "audioFeatures",
    "audio_features",
    "quality",
    "videoLayerMode",
    "requestType",
    "inputType",
    "agentType",
    "errorCode",
];

/// Decodes a verified body. `received_at` stands in for a missing `createdAt`.
pub fn decode(body: &[u8], received_at: Timestamp) -> Result<DecodedWebhook, IngestError> {
    let text = std::str::from_utf8(body).map_err(|_| IngestError::NotJson("not UTF-8".into()))?;
    let mut unknown = Vec::new();
    // Most bodies read straight into the message, without building a `Value` tree and copying
    // it; the path through a `Value` (which can neutralise enum values this build does not know)
    // runs only when that fails, and decides the error as it always has.
    let direct = text.trim_start().starts_with('{') && nesting_at_most(text, VALUE_DEPTH_LIMIT);
    let event = match direct.then(|| serde_json::from_str::<proto::WebhookEvent>(text)) {
        Some(Ok(event)) => event,
        _ => decode_through_value(text, &mut unknown)?,
    };
    if event.event.is_empty() {
        // Every LiveKit webhook names its event; without one it is not a webhook event.
        return Err(IngestError::Undecodable(
            "`event` is missing or empty: the body names no webhook event".into(),
        ));
    }
    let event_id = if event.id.is_empty() {
        format!("sha256:{:x}", Sha256::digest(body))
    } else {
        event.id.clone()
    };
    let sent_at = (1..=MAX_EPOCH_SECS)
        .contains(&event.created_at)
        .then(|| Timestamp::from_secs(event.created_at));
    let at = sent_at.unwrap_or(received_at);
    let call_event = to_body(&event, &unknown).map(|(scope, body)| CallEvent {
        key: event_id.clone(),
        source: Source::Livekit,
        at,
        scope,
        body,
        unknown_enum_values: unknown.clone(),
    });
    Ok(DecodedWebhook {
        event_id,
        event_name: event.event,
        at,
        sent_at,
        call_event,
    })
}

/// How deep `serde_json` parses a `Value` before it refuses the document. Read straight into the
/// message, unknown fields are skipped at any depth; checking the depth first keeps refusing what
/// the path through a `Value` refuses.
const VALUE_DEPTH_LIMIT: usize = 128;

/// Whether no array or object in `text` (JSON) nests deeper than `limit`.
fn nesting_at_most(text: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Decodes a body through a `serde_json::Value`, replacing each enum value this build of the
/// protocol does not know by the enum's unknown value and naming it in `unknown`.
fn decode_through_value(
    text: &str,
    unknown: &mut Vec<String>,
) -> Result<proto::WebhookEvent, IngestError> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| IngestError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(IngestError::NotJson("not a JSON object".into()));
    }
    loop {
        match serde_json::from_value::<proto::WebhookEvent>(value.clone()) {
            Ok(event) => return Ok(event),
            Err(e) => {
                let name = unknown_variant(&e.to_string())
                    .ok_or_else(|| IngestError::Undecodable(e.to_string()))?;
                let before = unknown.len();
                neutralise(&mut value, &name, "", unknown);
                if unknown.len() == before || unknown.len() > 32 {
                    return Err(IngestError::Undecodable(e.to_string()));
                }
            }
        }
    }
}

/// The name in serde's "unknown variant `X`, expected ..." message.
fn unknown_variant(message: &str) -> Option<String> {
    let rest = message.split("unknown variant `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

/// Replaces the string `name` under enum-typed keys by 0 (the enum's unknown value), recording
/// `path=name` for each replacement.
fn neutralise(value: &mut serde_json::Value, name: &str, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let is_enum = ENUM_FIELDS.contains(&key.as_str());
                match v {
                    serde_json::Value::String(s) if is_enum && s == name => {
                        out.push(format!("{child}={name}"));
                        *v = serde_json::Value::from(0);
                    }
                    serde_json::Value::Array(items) if is_enum => {
                        for item in items.iter_mut() {
                            if item.as_str() == Some(name) {
                                out.push(format!("{child}[]={name}"));
                                *item = serde_json::Value::from(0);
                            }
                        }
                    }
                    _ => neutralise(v, name, &child, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                neutralise(item, name, path, out);
            }
        }
        _ => {}
    }
}

fn room_scope(room: Option<&proto::Room>) -> Scope {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Scope::Room {
        sid: room.and_then(|r| non_empty(&r.sid)),
        name: room.and_then(|r| non_empty(&r.name)),
    }
}

fn sip_participant(p: &proto::ParticipantInfo, room: Option<&proto::Room>) -> SipParticipant {
    let joined_at = if (1..=MAX_EPOCH_SECS * 1000).contains(&p.joined_at_ms) {
        Some(Timestamp(p.joined_at_ms))
    } else if (1..=MAX_EPOCH_SECS).contains(&p.joined_at) {
        Some(Timestamp::from_secs(p.joined_at))
    } else {
        None
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    SipParticipant {
        sid: p.sid.clone(),
        identity: p.identity.clone(),
        joined_at,
        room_sid: room.and_then(|r| non_empty(&r.sid)),
        room_name: room.and_then(|r| non_empty(&r.name)),
        attributes: p
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with("sip.") || k.starts_with("lk.sip."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The disconnect reason by name; a neutralised unknown name is restored from `unknown`.
fn disconnect_reason(p: &proto::ParticipantInfo, unknown: &[String]) -> DisconnectReason {
    let restored = unknown.iter().find_map(|u| {
        u.strip_prefix("participant.disconnectReason=")
            .or_else(|| u.strip_prefix("participant.disconnect_reason="))
    });
    if let Some(name) = restored {
        return DisconnectReason(name.to_owned());
    }
    let name = proto::DisconnectReason::try_from(p.disconnect_reason)
        .map(|r| r.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("DISCONNECT_REASON_{}", p.disconnect_reason));
    DisconnectReason(name)
}

fn to_body(event: &proto::WebhookEvent, unknown: &[String]) -> Option<(Scope, EventBody)> {
    let room = event.room.as_ref();
    let participant = event.participant.as_ref();
    let sip_call_id = participant
        .and_then(|p| p.attributes.get(attr::CALL_ID))
        .filter(|id| !id.is_empty());
    match (event.event.as_str(), participant, sip_call_id) {
        ("room_started", _, _) => Some((room_scope(room), EventBody::RoomStarted)),
        ("room_finished", _, _) => Some((room_scope(room), EventBody::RoomFinished)),
        ("participant_joined", Some(p), Some(call_id)) => Some((
            Scope::Call {
                call_id: call_id.clone(),
            },
            EventBody::SipJoined {
                participant: sip_participant(p, room),
            },
        )),
        (
            name @ ("participant_left" | "participant_connection_aborted"),
            Some(p),
            Some(call_id),
        ) => Some((
            Scope::Call {
                call_id: call_id.clone(),
            },
            EventBody::SipLeft {
                participant: sip_participant(p, room),
                reason: disconnect_reason(p, unknown),
                aborted: name == "participant_connection_aborted",
            },
        )),
        ("participant_joined", Some(p), None) => {
            let kind = match proto::participant_info::Kind::try_from(p.kind) {
                Ok(proto::participant_info::Kind::Agent) => ParticipantKind::Agent,
                Ok(proto::participant_info::Kind::Egress) => ParticipantKind::Egress,
                _ => ParticipantKind::Other,
            };
            let agent_name = ["lk.agent.name", "lk.agent_name"]
                .iter()
                .filter_map(|k| p.attributes.get(*k))
                .find(|v| !v.is_empty())
                .cloned();
            Some((
                room_scope(room),
                EventBody::ParticipantJoined {
                    sid: p.sid.clone(),
                    identity: p.identity.clone(),
                    kind,
                    agent_name,
                },
            ))
        }
        ("track_published", Some(p), _) => Some((
            room_scope(room),
            EventBody::TrackPublished {
                participant_sid: p.sid.clone(),
                participant_identity: p.identity.clone(),
            },
        )),
        ("egress_ended", _, _) => {
            let info = event.egress_info.as_ref()?;
            let location = info
                .file_results
                .iter()
                .rev()
                .map(|f| f.location.as_str())
                .chain(
                    info.segment_results
                        .iter()
                        .rev()
                        .map(|s| s.playlist_location.as_str()),
                )
                .find(|l| !l.is_empty())
                .map(str::to_owned);
            let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let scope = Scope::Room {
                sid: non_empty(&info.room_id).or_else(|| room.and_then(|r| non_empty(&r.sid))),
                name: non_empty(&info.room_name).or_else(|| room.and_then(|r| non_empty(&r.name))),
            };
            Some((
                scope,
                EventBody::EgressEnded {
                    egress_id: info.egress_id.clone(),
                    updated_at_ns: info.updated_at,
                    location,
                },
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(nesting_at_most(r#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!nesting_at_most(r#"{"a":[1,{"b":2}]}"#, 2));
        // Brackets and escaped quotes inside strings do not count.
        assert!(nesting_at_most(r#"{"a":"[[[{{{\"[[["}"#, 1));
        assert!(!nesting_at_most(r#"{"a":"\\",  "b":[[]]}"#, 2));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(!nesting_at_most(&deep, VALUE_DEPTH_LIMIT));
        assert!(nesting_at_most(&deep[1..deep.len() - 1], VALUE_DEPTH_LIMIT));
    }

    /// Read straight into the message or through a `Value`, every sample payload decodes the same.
    #[test]
    fn both_decoding_paths_agree_on_every_sample() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/livekit");
        let mut compared = 0;
        for entry in std::fs::read_dir(dir).expect("the fixtures folder exists") {
            let path = entry.expect("a readable entry").path();
            let text = std::fs::read_to_string(&path).expect("a readable sample");
            let direct = serde_json::from_str::<proto::WebhookEvent>(&text);
            let mut unknown = Vec::new();
            let through_value = decode_through_value(&text, &mut unknown);
            if let Ok(direct) = direct {
                let through_value = through_value.unwrap_or_else(|e| panic!("{path:?}: {e}"));
                assert_eq!(direct, through_value, "{path:?}");
                assert!(unknown.is_empty(), "{path:?}");
                compared += 1;
            }
        }
        assert!(compared >= 10, "only {compared} samples compared");
    }
}
