//! The Call Detail Record and its builder.
//!
//! `build` is a pure function of the *set* of events known for a call (METRICS.md §1): it sorts and
//! deduplicates its input itself, so late, repeated or reordered events give the same CDR on any
//! instance. It never fails; what it could not make sense of is reported as anomalies on the CDR.

mod outcome;
#[cfg(test)]
mod tests;
mod timeline;

use crate::event::{CallEvent, Timestamp, TransferType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use outcome::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Callee,
    Agent,
    System,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Caller => "caller",
            EndedBy::Callee => "callee",
            EndedBy::Agent => "agent",
            EndedBy::System => "system",
        }
    }
}

/// Where the answer time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// A `call_answered` application event.
    Reported,
    /// The first track published by a non-SIP participant while the caller was present.
    Inferred,
    /// Not answered, or answered at a time nobody observed (outbound without `call_answered`).
    None,
}

impl AnswerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Reported => "reported",
            AnswerSource::Inferred => "inferred",
            AnswerSource::None => "none",
        }
    }
}

/// Something the builder noticed about a call's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// No `participant_joined` for the SIP participant (its leave still carries the join time).
    MissingParticipantJoined,
    /// No SIP participant event at all: only application or room events are known.
    MissingSipParticipant,
    /// The call ended without a leave of its SIP participant.
    MissingParticipantLeft,
    /// Closed by the room's `room_finished`.
    ClosedByRoomFinished,
    /// Closed because no event arrived for longer than the call timeout.
    ClosedByTimeout,
    /// An event carried an enum name this version does not know.
    UnknownEnumValue,
    /// A `call_answered` event lies before the start or after the end of the call; it was not
    /// counted.
    AnswerOutsideCall,
    /// An outbound call reported answered by the application but ended with a failure reason.
    AnswerWithFailureReason,
}

impl Anomaly {
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::MissingParticipantJoined => "missing_participant_joined",
            Anomaly::MissingSipParticipant => "missing_sip_participant",
            Anomaly::MissingParticipantLeft => "missing_participant_left",
            Anomaly::ClosedByRoomFinished => "closed_by_room_finished",
            Anomaly::ClosedByTimeout => "closed_by_timeout",
            Anomaly::UnknownEnumValue => "unknown_enum_value",
            Anomaly::AnswerOutsideCall => "answer_outside_call",
            Anomaly::AnswerWithFailureReason => "answer_with_failure_reason",
        }
    }
}

/// One SIP leg, as METRICS.md §2 defines its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cdr {
    pub call_id: String,
    pub direction: Direction,
    pub caller_number: Option<String>,
    pub callee_number: Option<String>,
    pub trunk_id: Option<String>,
    pub room_name: Option<String>,
    pub room_sid: Option<String>,
    pub start_time: Timestamp,
    pub answer_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub duration_seconds: Option<f64>,
    pub ring_duration_seconds: Option<f64>,
    pub queue_wait_seconds: Option<f64>,
    pub outcome: Outcome,
    pub transfer_type: Option<TransferType>,
    pub transfer_target: Option<String>,
    pub recording_url: Option<String>,
    pub sip_error_code: Option<u16>,
    pub agent_id: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub queue: Option<String>,
    pub disconnect_reason: Option<String>,
    pub ended_by: Option<EndedBy>,
    pub answer_source: AnswerSource,
    pub anomalies: Vec<Anomaly>,
    pub short_abandon: bool,
    /// Reported after-call work, summed; added to handle time by the metrics.
    pub wrap_up_seconds: f64,
    /// The latest event time of the call; the timeout counts from here.
    pub last_event_at: Timestamp,
}

/// Settings the builder needs that are not in the events.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildParams {
    /// The current time, to close calls whose events stopped arriving.
    pub now: Timestamp,
    /// A call with no event for this long is closed by timeout (default 6 h).
    pub call_timeout_ms: i64,
    /// Abandons shorter than this are short abandons (default 5 s).
    pub short_abandon_ms: i64,
    /// Per-queue overrides of `short_abandon_ms`.
    pub short_abandon_ms_by_queue: BTreeMap<String, i64>,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            now: Timestamp(0),
            call_timeout_ms: 6 * 3600 * 1000,
            short_abandon_ms: 5_000,
            short_abandon_ms_by_queue: BTreeMap::new(),
        }
    }
}

impl BuildParams {
    fn short_abandon_ms_for(&self, queue: Option<&str>) -> i64 {
        queue
            .and_then(|q| self.short_abandon_ms_by_queue.get(q).copied())
            .unwrap_or(self.short_abandon_ms)
    }
}

/// Milliseconds to seconds; negative spans (clock skew between sources) count as 0.
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// The events `build` uses for `call_id` out of `events` (its own and its room's during its
/// time), deduplicated, in time order: the call's timeline.
pub fn call_timeline<'a>(call_id: &str, events: &'a [CallEvent]) -> Vec<&'a CallEvent> {
    timeline::Timeline::new(call_id, events).into_events()
}

/// Builds the CDR of `call_id` from the events known for it: its own events, the events of its
/// room, and (to tell SIP participants apart) the SIP events of other legs in the same room.
pub fn build(call_id: &str, events: &[CallEvent], params: &BuildParams) -> Cdr {
    let t = timeline::Timeline::new(call_id, events);
    let closing = t.closing(params);
    let answer = t.answer(closing.end_time);
    let queue = t.queue();
    let decided = outcome::decide(&t, &answer, &closing, queue.timed_out);

    let end_time = closing.end_time;
    let answer_time = decided.answered.then_some(answer.time).flatten();
    let queue_wait_ms = queue.wait_ms(answer_time, end_time);
    let duration_ms = match (end_time, decided.outcome) {
        (None, _) => None,
        (Some(end), Outcome::Answered) => Some(
            end.millis()
                .saturating_sub(answer_time.unwrap_or(t.start_time).millis()),
        ),
        (Some(_), _) => Some(0),
    };
    let ring_ms = match (answer_time, end_time, decided.outcome) {
        (Some(a), _, _) => Some(a.millis().saturating_sub(t.start_time.millis())),
        (None, _, Outcome::Answered) | (None, None, _) => None,
        (None, Some(e), _) => Some(e.millis().saturating_sub(t.start_time.millis())),
    }
    .zip(queue_wait_ms)
    .map(|(ring, q)| ring.saturating_sub(q));
    let short_abandon = decided.outcome == Outcome::Abandoned
        && end_time.is_some_and(|e| {
            e.millis().saturating_sub(t.start_time.millis())
                < params.short_abandon_ms_for(queue.name.as_deref())
        });

    let mut anomalies = t.anomalies.clone();
    anomalies.extend(closing.anomalies);
    anomalies.extend(answer.anomalies);
    anomalies.extend(decided.anomalies);
    anomalies.sort();
    anomalies.dedup();

    let (caller_number, callee_number) = t.numbers();
    let transfer = t.transfer();
    Cdr {
        call_id: call_id.to_owned(),
        direction: t.direction,
        caller_number,
        callee_number,
        trunk_id: t.sip_attr(crate::event::attr::TRUNK_ID),
        room_name: t.room_name.clone(),
        room_sid: t.room_sid.clone(),
        start_time: t.start_time,
        answer_time,
        end_time,
        duration_seconds: duration_ms.map(seconds),
        ring_duration_seconds: ring_ms.map(seconds),
        queue_wait_seconds: queue_wait_ms.map(seconds),
        outcome: decided.outcome,
        transfer_type: transfer.map(|(kind, _)| kind),
        transfer_target: transfer.map(|(_, target)| target.to_owned()),
        recording_url: t.recording_url(),
        sip_error_code: t.sip_error().map(|(code, _)| code),
        agent_id: t.agent_id(),
        metadata: t.metadata(),
        queue: queue.name,
        disconnect_reason: t.leave_reason().map(str::to_owned),
        ended_by: decided.ended_by,
        answer_source: if answer_time.is_some() {
            answer.source
        } else {
            AnswerSource::None
        },
        anomalies,
        short_abandon,
        wrap_up_seconds: t.wrap_up_seconds(),
        last_event_at: t.last_event_at,
    }
}

/// A finished-looking CDR with every optional field empty, for tests to adjust.
#[cfg(test)]
pub(crate) fn sample(call_id: &str, direction: Direction, outcome: Outcome) -> Cdr {
    Cdr {
        call_id: call_id.into(),
        direction,
        caller_number: None,
        callee_number: None,
        trunk_id: None,
        room_name: None,
        room_sid: None,
        start_time: Timestamp(0),
        answer_time: None,
        end_time: (outcome != Outcome::InProgress).then_some(Timestamp(60_000)),
        duration_seconds: None,
        ring_duration_seconds: None,
        queue_wait_seconds: Some(0.0),
        outcome,
        transfer_type: None,
        transfer_target: None,
        recording_url: None,
        sip_error_code: None,
        agent_id: None,
        metadata: None,
        queue: None,
        disconnect_reason: None,
        ended_by: None,
        answer_source: AnswerSource::None,
        anomalies: vec![],
        short_abandon: false,
        wrap_up_seconds: 0.0,
        last_event_at: Timestamp(60_000),
    }
}
