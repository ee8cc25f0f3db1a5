//! LiveKit webhook bodies and application events as a real deployment would send them: the
//! webhooks are `livekit-protocol` messages serialised by its protojson-compatible serde, signed
//! exactly as LiveKit signs them (FACTS.md §1, §9).

use base64::Engine;
use livekit_api::access_token::AccessToken;
use livekit_protocol as proto;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const BASE57: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// A LiveKit-style id: prefix plus 12 base57 characters.
pub fn guid(rng: &mut impl Rng, prefix: &str) -> String {
    let tail: String = (0..12)
        .map(|_| char::from(BASE57[rng.gen_range(0..BASE57.len())]))
        .collect();
    format!("{prefix}{tail}")
}

/// `Authorization` value for a body: a raw JWT with the body's SHA-256, valid 5 minutes.
pub fn sign(body: &[u8], api_key: &str, api_secret: &str) -> anyhow::Result<String> {
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    Ok(AccessToken::with_api_key(api_key, api_secret)
        .with_ttl(std::time::Duration::from_secs(300))
        .with_sha256(&sha)
        .to_jwt()?)
}

#[derive(Debug, Clone)]
pub struct Room {
    pub sid: String,
    pub name: String,
    pub created_ms: i64,
}

impl Room {
    fn full(&self) -> proto::Room {
        proto::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            empty_timeout: 300,
            departure_timeout: 20,
            creation_time: self.created_ms / 1000,
            creation_time_ms: self.created_ms,
            ..Default::default()
        }
    }
    fn minimal(&self) -> proto::Room {
        proto::Room {
            sid: self.sid.clone(),
            name: self.name.clone(),
            ..Default::default()
        }
    }
}

/// A participant as the webhooks show it.
#[derive(Debug, Clone)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub kind: proto::participant_info::Kind,
    pub joined_ms: i64,
    pub attributes: HashMap<String, String>,
}

impl Participant {
    /// LiveKit still sets the deprecated `permission.agent` for agents (sample 03).
    #[allow(deprecated)]
    fn info(&self, state: proto::participant_info::State) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            state: state as i32,
            joined_at: self.joined_ms / 1000,
            joined_at_ms: self.joined_ms,
            kind: self.kind as i32,
            attributes: self.attributes.clone(),
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                can_update_metadata: true,
                agent: self.kind == proto::participant_info::Kind::Agent,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn event(rng: &mut impl Rng, name: &str, at_ms: i64) -> proto::WebhookEvent {
    proto::WebhookEvent {
        event: name.into(),
        id: guid(rng, "EV_"),
        created_at: at_ms / 1000,
        ..Default::default()
    }
}

fn body(e: &proto::WebhookEvent) -> Vec<u8> {
    serde_json::to_vec(e).expect("protocol messages always serialise")
}

pub fn room_event(rng: &mut impl Rng, name: &str, room: &Room, at_ms: i64) -> Vec<u8> {
    let mut e = event(rng, name, at_ms);
    e.room = Some(room.full());
    body(&e)
}

pub fn participant_joined(rng: &mut impl Rng, room: &Room, p: &Participant) -> Vec<u8> {
    let mut e = event(rng, "participant_joined", p.joined_ms);
    e.room = Some(room.full());
    e.participant = Some(p.info(proto::participant_info::State::Active));
    body(&e)
}

/// `participant_left` (or `participant_connection_aborted`) with the final `sip.callStatus`.
pub fn participant_left(
    rng: &mut impl Rng,
    room: &Room,
    p: &Participant,
    at_ms: i64,
    final_status: Option<&str>,
    reason: proto::DisconnectReason,
    aborted: bool,
) -> Vec<u8> {
    let name = if aborted {
        "participant_connection_aborted"
    } else {
        "participant_left"
    };
    let mut e = event(rng, name, at_ms);
    e.room = Some(room.full());
    let mut info = p.info(proto::participant_info::State::Disconnected);
    if let Some(status) = final_status {
        info.attributes
            .insert("sip.callStatus".into(), status.into());
    }
    info.disconnect_reason = reason as i32;
    info.is_publisher = true;
    e.participant = Some(info);
    body(&e)
}

pub fn track_published(rng: &mut impl Rng, room: &Room, p: &Participant, at_ms: i64) -> Vec<u8> {
    let mut e = event(rng, "track_published", at_ms);
    e.room = Some(room.minimal());
    e.participant = Some(proto::ParticipantInfo {
        sid: p.sid.clone(),
        identity: p.identity.clone(),
        ..Default::default()
    });
    e.track = Some(proto::TrackInfo {
        sid: guid(rng, "TR_AM"),
        name: "roomio_audio".into(),
        source: proto::TrackSource::Microphone as i32,
        mime_type: "audio/opus".into(),
        mid: "0".into(),
        ..Default::default()
    });
    body(&e)
}

pub fn egress_ended(
    rng: &mut impl Rng,
    room: &Room,
    call_id: &str,
    started_ms: i64,
    ended_ms: i64,
    at_ms: i64,
) -> Vec<u8> {
    let mut e = event(rng, "egress_ended", at_ms);
    e.room = Some(room.minimal());
    let filename = format!("recordings/{call_id}.ogg");
    let ns = |ms: i64| ms * 1_000_000;
    let file = proto::FileInfo {
        filename: filename.clone(),
        started_at: ns(started_ms),
        ended_at: ns(ended_ms),
        duration: ns(ended_ms - started_ms),
        size: (ended_ms - started_ms) * 7,
        location: format!("https://call-recordings.s3.amazonaws.com/{filename}"),
    };
    e.egress_info = Some(proto::EgressInfo {
        egress_id: guid(rng, "EG_"),
        room_id: room.sid.clone(),
        room_name: room.name.clone(),
        source_type: proto::EgressSourceType::Sdk as i32,
        status: proto::EgressStatus::EgressComplete as i32,
        started_at: ns(started_ms),
        ended_at: ns(ended_ms),
        updated_at: ns(at_ms),
        file_results: vec![file],
        details: "End reason: Source closed".into(),
        ..Default::default()
    });
    body(&e)
}
