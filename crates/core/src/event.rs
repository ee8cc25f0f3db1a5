//! Call events: what the CDR builder consumes.
//!
//! Both sources (LiveKit webhooks and application events) are converted into these types at the edge,
//! so the builder never sees a wire format. An event is either scoped to one SIP leg (`sip.callID`)
//! or to a room, in which case it applies to every leg of that room (METRICS.md §1, §9).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch, UTC. LiveKit's `createdAt` has one-second resolution and is
/// converted to a whole number of seconds times 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    /// Seconds from `earlier` to `self`, as a number of seconds with millisecond precision.
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }
}

/// Which call or room an event applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    /// One SIP leg, by LiveKit's `sip.callID` (`SCL_...`).
    Call { call_id: String },
    /// Every SIP leg of a room. `sid` is preferred for matching; events that only know the
    /// room's name (application events) match by name.
    Room {
        sid: Option<String>,
        name: Option<String>,
    },
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Livekit,
    App,
}

/// One event of a call, already decoded. `key` identifies it for deduplication (the LiveKit
/// event id, the application event id, or a body hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub key: String,
    pub source: Source,
    pub at: Timestamp,
    pub scope: Scope,
    pub body: EventBody,
    /// Enum names the decoder did not know (`participant.disconnectReason=NEW_REASON`); the event
    /// was kept with the unknown values treated as unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_enum_values: Vec<String>,
}

/// The SIP participant of a call as a webhook shows it (at join, or its final state at leave).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SipParticipant {
    pub sid: String,
    pub identity: String,
    pub joined_at: Option<Timestamp>,
    pub room_sid: Option<String>,
    pub room_name: Option<String>,
    /// The participant's attributes that matter to a CDR, by their LiveKit names
    /// (`sip.callID`, `sip.ruleID`, `sip.callStatus`, `lk.sip.inviteTime`, ...).
    pub attributes: BTreeMap<String, String>,
}

/// Well-known SIP attribute names (FACTS §3.2).
pub mod attr {
    pub const CALL_ID: &str = "sip.callID";
    pub const TRUNK_ID: &str = "sip.trunkID";
    pub const RULE_ID: &str = "sip.ruleID";
    pub const PHONE_NUMBER: &str = "sip.phoneNumber";
    pub const TRUNK_PHONE_NUMBER: &str = "sip.trunkPhoneNumber";
    pub const CALL_STATUS: &str = "sip.callStatus";
    pub const INVITE_TIME: &str = "lk.sip.inviteTime";
}

impl SipParticipant {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A non-SIP participant kind, as far as the CDR cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    Agent,
    Egress,
    Other,
}

/// LiveKit's `DisconnectReason`, by name. Unknown names are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectReason(pub String);

impl DisconnectReason {
    pub const UNKNOWN: &'static str = "UNKNOWN_REASON";
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a queue was left (application event `queue_left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueLeftReason {
    Answered,
    Abandoned,
    Transferred,
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferType {
    Cold,
    Warm,
}

impl TransferType {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferType::Cold => "cold",
            TransferType::Warm => "warm",
        }
    }
}

/// What happened. LiveKit-derived variants first, application-reported ones after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    RoomStarted,
    RoomFinished,
    SipJoined {
        participant: SipParticipant,
    },
    /// `participant_left` or `participant_connection_aborted` of the SIP participant.
    SipLeft {
        participant: SipParticipant,
        reason: DisconnectReason,
        aborted: bool,
    },
    ParticipantJoined {
        sid: String,
        identity: String,
        kind: ParticipantKind,
        /// `lk.agent.name` (or `lk.agent_name`) for agents, when not empty.
        agent_name: Option<String>,
    },
    TrackPublished {
        participant_sid: String,
        participant_identity: String,
    },
    EgressEnded {
        egress_id: String,
        /// `egressInfo.updatedAt` in nanoseconds; the last one wins.
        updated_at_ns: i64,
        location: Option<String>,
    },
    CallAnswered,
    QueueEntered {
        queue: String,
    },
    QueueLeft {
        queue: String,
        reason: QueueLeftReason,
    },
    AgentAssigned {
        agent_id: String,
    },
    Transfer {
        transfer_type: TransferType,
        target: String,
    },
    SipError {
        sip_status_code: u16,
        reason: Option<String>,
    },
    WrapUp {
        seconds: f64,
        agent_id: Option<String>,
    },
    CallMetadata {
        metadata: serde_json::Map<String, serde_json::Value>,
    },
}

impl EventBody {
    /// The event's type name as the API and the timeline show it.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::RoomStarted => "room_started",
            EventBody::RoomFinished => "room_finished",
            EventBody::SipJoined { .. } => "participant_joined",
            EventBody::SipLeft { aborted: false, .. } => "participant_left",
            EventBody::SipLeft { aborted: true, .. } => "participant_connection_aborted",
            EventBody::ParticipantJoined { .. } => "participant_joined",
            EventBody::TrackPublished { .. } => "track_published",
            EventBody::EgressEnded { .. } => "egress_ended",
            EventBody::CallAnswered => "call_answered",
            EventBody::QueueEntered { .. } => "queue_entered",
            EventBody::QueueLeft { .. } => "queue_left",
            EventBody::AgentAssigned { .. } => "agent_assigned",
            EventBody::Transfer { .. } => "transfer",
            EventBody::SipError { .. } => "sip_error",
            EventBody::WrapUp { .. } => "wrap_up",
            EventBody::CallMetadata { .. } => "call_metadata",
        }
    }
}

/// Agent availability reported by the application (`agent_state`); it belongs to no call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Available,
    Busy,
    Away,
    Offline,
}

impl AgentState {
    pub const ALL: [AgentState; 4] = [
        AgentState::Available,
        AgentState::Busy,
        AgentState::Away,
        AgentState::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Available => "available",
            AgentState::Busy => "busy",
            AgentState::Away => "away",
            AgentState::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<AgentState> {
        AgentState::ALL.into_iter().find(|a| a.as_str() == s)
    }
}
