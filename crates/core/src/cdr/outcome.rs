//! The outcome of a call: METRICS.md §3, the first rule that applies wins.

use super::timeline::{Answer, Closing, Timeline};
use super::{Anomaly, Direction, EndedBy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Abandoned,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::InProgress,
        Outcome::Answered,
        Outcome::NoAnswer,
        Outcome::Busy,
        Outcome::Failed,
        Outcome::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Answered => "answered",
            Outcome::NoAnswer => "no_answer",
            Outcome::Busy => "busy",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Leave reasons that mean the call failed (rule 3).
const FAILURE_REASONS: &[&str] = &[
    "SIP_TRUNK_FAILURE",
    "MEDIA_FAILURE",
    "JOIN_FAILURE",
    "CONNECTION_TIMEOUT",
    "AGENT_ERROR",
    "SERVER_SHUTDOWN",
    "SIGNAL_CLOSE",
    "STATE_MISMATCH",
    "DUPLICATE_IDENTITY",
    "MIGRATION",
];
/// Leave reasons by which the application or the room ended the call (rule 7).
const SYSTEM_REASONS: &[&str] = &["PARTICIPANT_REMOVED", "ROOM_DELETED", "ROOM_CLOSED"];
/// Reasons LiveKit names that are neither failures nor system endings.
const KNOWN_NEUTRAL_REASONS: &[&str] = &[
    "CLIENT_INITIATED",
    "USER_REJECTED",
    "USER_UNAVAILABLE",
    "UNKNOWN_REASON",
];

fn is_failure_reason(reason: &str) -> bool {
    matches!(reason, "USER_REJECTED" | "USER_UNAVAILABLE") || FAILURE_REASONS.contains(&reason)
}

/// CLIENT_INITIATED, or a reason this version does not know (rules 5 and 6).
fn is_client_or_unknown(reason: Option<&str>) -> bool {
    match reason {
        None | Some("CLIENT_INITIATED") | Some("UNKNOWN_REASON") => true,
        Some(r) => {
            !FAILURE_REASONS.contains(&r)
                && !SYSTEM_REASONS.contains(&r)
                && !KNOWN_NEUTRAL_REASONS.contains(&r)
        }
    }
}

pub(super) struct Decided {
    pub outcome: Outcome,
    /// Whether the call counts as answered (its answer time may still be unknown).
    pub answered: bool,
    pub ended_by: Option<EndedBy>,
    pub anomalies: Vec<Anomaly>,
}

/// SIP status code of a reported INVITE failure → outcome (rule 2).
pub fn outcome_for_sip_code(code: u16) -> Option<Outcome> {
    match code {
        486 | 600..=699 => Some(Outcome::Busy),
        404 | 408 | 480 => Some(Outcome::NoAnswer),
        400..=599 => Some(Outcome::Failed),
        _ => None,
    }
}

pub(super) fn decide(
    t: &Timeline<'_>,
    answer: &Answer,
    closing: &Closing,
    queue_timed_out: bool,
) -> Decided {
    let status = t.final_status();
    let status = status.as_deref();
    let reason = t.leave_reason();
    let mut anomalies = vec![];
    let outbound_connected = t.direction == Direction::Outbound
        && t.has_leave()
        && matches!(status, Some("active" | "automation" | "hangup"))
        && !reason.is_some_and(is_failure_reason);
    if answer.observed
        && t.direction == Direction::Outbound
        && reason.is_some_and(is_failure_reason)
    {
        anomalies.push(Anomaly::AnswerWithFailureReason);
    }
    let answered = answer.observed || outbound_connected;
    if closing.end_time.is_none() {
        return Decided {
            outcome: Outcome::InProgress,
            answered,
            ended_by: None,
            anomalies,
        };
    }
    let phone_side = match t.direction {
        Direction::Inbound => EndedBy::Caller,
        Direction::Outbound => EndedBy::Callee,
    };
    let (outcome, ended_by) = if answered {
        let ended_by = if t.has_reported_transfer()
            || reason.is_some_and(|r| matches!(r, "ROOM_DELETED" | "PARTICIPANT_REMOVED"))
        {
            EndedBy::Agent
        } else if closing.without_leave || !is_client_or_unknown(reason) {
            EndedBy::System
        } else {
            phone_side
        };
        (Outcome::Answered, ended_by)
    } else {
        unanswered(t, reason, status, queue_timed_out, phone_side)
    };
    Decided {
        outcome,
        answered,
        ended_by: Some(ended_by),
        anomalies,
    }
}

/// Rules 2 to 7, for a finished call that was not answered.
fn unanswered(
    t: &Timeline<'_>,
    reason: Option<&str>,
    status: Option<&str>,
    queue_timed_out: bool,
    phone_side: EndedBy,
) -> (Outcome, EndedBy) {
    let inbound = t.direction == Direction::Inbound;
    let reported = t
        .sip_error()
        .and_then(|(code, _)| outcome_for_sip_code(code));
    if let (false, Some(outcome)) = (inbound, reported) {
        let by = if outcome == Outcome::Failed {
            EndedBy::System
        } else {
            phone_side
        };
        return (outcome, by);
    }
    match reason {
        Some("USER_REJECTED") => return (Outcome::Busy, phone_side),
        Some("USER_UNAVAILABLE") => return (Outcome::NoAnswer, phone_side),
        Some(r) if FAILURE_REASONS.contains(&r) => return (Outcome::Failed, EndedBy::System),
        _ => {}
    }
    let left = t.has_leave();
    if inbound && left && status == Some("hangup") {
        return (Outcome::Abandoned, EndedBy::Caller);
    }
    if inbound && ((left && is_client_or_unknown(reason)) || queue_timed_out) {
        return (Outcome::NoAnswer, EndedBy::System);
    }
    (Outcome::Failed, EndedBy::System)
}
