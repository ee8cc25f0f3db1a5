//! A call's events, deduplicated, sorted and indexed, with the field rules of METRICS.md §2 as
//! small queries. The sort is redone here on every build rather than trusted from the caller.

use super::{Anomaly, AnswerSource, BuildParams, Direction};
use crate::event::{
    CallEvent, EventBody, ParticipantKind, QueueLeftReason, Scope, SipParticipant, Source,
    Timestamp, TransferType, attr,
};
use std::collections::HashSet;

/// LiveKit's `createdAt` has one-second resolution.
const CREATED_AT_TOLERANCE_MS: i64 = 1000;

pub(super) struct Timeline<'a> {
    /// This call's events and its room's, sorted by time and deduplicated by key.
    events: Vec<&'a CallEvent>,
    /// SIP participant sids and identities of every leg in the room, this one included.
    sip_sids: HashSet<&'a str>,
    sip_identities: HashSet<&'a str>,
    join: Option<&'a SipParticipant>,
    leave: Option<(&'a CallEvent, &'a SipParticipant, &'a str)>,
    pub direction: Direction,
    pub start_time: Timestamp,
    pub room_name: Option<String>,
    pub room_sid: Option<String>,
    pub last_event_at: Timestamp,
    pub anomalies: Vec<Anomaly>,
}

pub(super) struct Closing {
    pub end_time: Option<Timestamp>,
    /// Ended by room_finished or the timeout instead of a leave.
    pub without_leave: bool,
    pub anomalies: Vec<Anomaly>,
}

pub(super) struct Answer {
    /// An answer was observed (reported, or inferred from a track for inbound calls).
    pub observed: bool,
    pub time: Option<Timestamp>,
    pub source: AnswerSource,
    pub anomalies: Vec<Anomaly>,
}

pub(super) struct Queue {
    pub name: Option<String>,
    entered: Option<Timestamp>,
    left: Option<Timestamp>,
    pub timed_out: bool,
}

impl Queue {
    /// Time between queue entry and exit (or answer, or end); 0 without queue events; unknown
    /// while a queued call is still in progress.
    pub fn wait_ms(&self, answer: Option<Timestamp>, end: Option<Timestamp>) -> Option<i64> {
        let Some(entered) = self.entered else {
            return Some(0);
        };
        let until = self.left.or(answer).or(end)?;
        Some(until.millis().saturating_sub(entered.millis()).max(0))
    }
}

/// How long after a leg's leave an application event naming only its room still applies to it:
/// after-call work and metadata arrive late; anything else belongs to the call in progress.
const LATE_ROOM_EVENT_GRACE_MS: i64 = 10 * 60 * 1000;
/// A start (`lk.sip.inviteTime`) more than this before the join is not believed.
const MAX_INVITE_BEFORE_JOIN_MS: i64 = 5 * 60 * 1000;

fn sort_key(e: &CallEvent) -> (Timestamp, Source, &str) {
    (e.at, e.source, e.key.as_str())
}

/// An event's full content, to order events that share a time and key.
fn content(e: &CallEvent) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

/// Whether an application event that names only a room falls inside the leg's time in that room
/// (room names can be reused by later calls, METRICS.md §9).
fn within_leg(e: &CallEvent, start: Timestamp, leave: Option<Timestamp>) -> bool {
    let grace = match e.body {
        EventBody::WrapUp { .. } | EventBody::CallMetadata { .. } => LATE_ROOM_EVENT_GRACE_MS,
        _ => CREATED_AT_TOLERANCE_MS,
    };
    e.at.millis() >= start.millis().saturating_sub(CREATED_AT_TOLERANCE_MS)
        && leave.is_none_or(|end| e.at.millis() <= end.millis().saturating_add(grace))
}

impl<'a> Timeline<'a> {
    pub fn new(call_id: &str, input: &'a [CallEvent]) -> Self {
        let mut all: Vec<&CallEvent> = input.iter().collect();
        // Two different bodies under one key (which the log never stores, but a caller could
        // pass) are ordered by content, so which one the dedup keeps never depends on input order.
        all.sort_by(|a, b| {
            sort_key(a).cmp(&sort_key(b)).then_with(|| {
                // Repeats of one event (the common tie) are equal without serialising.
                if a == b {
                    std::cmp::Ordering::Equal
                } else {
                    content(a).cmp(&content(b))
                }
            })
        });
        let mut seen = HashSet::new();
        all.retain(|e| seen.insert((e.source, e.key.as_str())));

        let is_own = |e: &CallEvent| matches!(&e.scope, Scope::Call { call_id: c } if c == call_id);
        let join = all.iter().find_map(|e| match &e.body {
            EventBody::SipJoined { participant } if is_own(e) => Some(participant),
            _ => None,
        });
        let leave = all.iter().find_map(|e| match &e.body {
            EventBody::SipLeft {
                participant,
                reason,
                ..
            } if is_own(e) => Some((*e, participant, reason.as_str())),
            _ => None,
        });
        let mut sip_sids = HashSet::new();
        let mut sip_identities = HashSet::new();
        for e in &all {
            if let EventBody::SipJoined { participant } | EventBody::SipLeft { participant, .. } =
                &e.body
            {
                sip_sids.insert(participant.sid.as_str());
                sip_identities.insert(participant.identity.as_str());
            }
        }

        let participant = leave.map(|(_, p, _)| p).or(join);
        let room_sid = participant.and_then(|p| p.room_sid.clone());
        let room_name = participant.and_then(|p| p.room_name.clone());
        let direction = match participant {
            Some(p) if p.attr(attr::RULE_ID).is_some() => Direction::Inbound,
            _ => Direction::Outbound,
        };
        let joined_at = participant.and_then(|p| p.joined_at);
        let invite_time = participant
            .and_then(|p| p.attr(attr::INVITE_TIME))
            .and_then(|v| v.parse::<i64>().ok())
            .map(Timestamp)
            .filter(|invite| {
                joined_at.is_some_and(|joined| {
                    (0..=MAX_INVITE_BEFORE_JOIN_MS)
                        .contains(&joined.millis().saturating_sub(invite.millis()))
                })
            });
        let sip_start = match direction {
            Direction::Inbound => invite_time.or(joined_at),
            Direction::Outbound => joined_at,
        };
        let leave_at = leave.map(|(e, _, _)| e.at);
        let in_room = |e: &CallEvent, sid: &Option<String>, name: &Option<String>| match (
            &room_sid, sid, &room_name, name,
        ) {
            (Some(ours), Some(theirs), _, _) => ours == theirs,
            (_, None, Some(ours), Some(theirs)) => {
                ours == theirs && within_leg(e, sip_start.unwrap_or(e.at), leave_at)
            }
            _ => participant.is_none(),
        };
        let events: Vec<&CallEvent> = all
            .into_iter()
            .filter(|e| match &e.scope {
                Scope::Call { call_id: c } => c == call_id,
                Scope::Room { sid, name } => in_room(e, sid, name),
            })
            .collect();

        let mut anomalies = Vec::new();
        if join.is_none() {
            anomalies.push(if participant.is_none() {
                Anomaly::MissingSipParticipant
            } else {
                Anomaly::MissingParticipantJoined
            });
        }
        if events.iter().any(|e| !e.unknown_enum_values.is_empty()) {
            anomalies.push(Anomaly::UnknownEnumValue);
        }
        let first_event_at = events.first().map_or(Timestamp(0), |e| e.at);
        let start_time = sip_start.unwrap_or(first_event_at);
        let last_event_at = events.last().map_or(start_time, |e| e.at).max(start_time);

        Timeline {
            events,
            sip_sids,
            sip_identities,
            join,
            leave,
            direction,
            start_time,
            room_name,
            room_sid,
            last_event_at,
            anomalies,
        }
    }

    pub fn into_events(self) -> Vec<&'a CallEvent> {
        self.events
    }

    fn participant(&self) -> Option<&'a SipParticipant> {
        self.leave.map(|(_, p, _)| p).or(self.join)
    }

    pub fn sip_attr(&self, name: &str) -> Option<String> {
        let from_leave = self.leave.and_then(|(_, p, _)| p.attr(name));
        from_leave
            .or_else(|| self.join.and_then(|p| p.attr(name)))
            .map(str::to_owned)
    }

    /// `sip.callStatus` at the leave, else at the join.
    pub fn final_status(&self) -> Option<String> {
        self.sip_attr(attr::CALL_STATUS)
    }

    pub fn leave_reason(&self) -> Option<&'a str> {
        self.leave.map(|(_, _, reason)| reason)
    }

    pub fn has_leave(&self) -> bool {
        self.leave.is_some()
    }

    pub fn numbers(&self) -> (Option<String>, Option<String>) {
        let phone = self.sip_attr(attr::PHONE_NUMBER);
        let trunk = self.sip_attr(attr::TRUNK_PHONE_NUMBER);
        match self.direction {
            Direction::Inbound => (phone, trunk),
            Direction::Outbound => (trunk, phone),
        }
    }

    fn bodies(&self) -> impl Iterator<Item = (&'a CallEvent, &'a EventBody)> + '_ {
        self.events.iter().map(|e| (*e, &e.body))
    }

    /// End by the leave; else by `room_finished`; else by the timeout (METRICS.md §2 end_time).
    pub fn closing(&self, params: &BuildParams) -> Closing {
        if let Some((e, _, _)) = self.leave {
            return Closing {
                end_time: Some(e.at.max(self.start_time)),
                without_leave: false,
                anomalies: vec![],
            };
        }
        let finished = self.bodies().find_map(|(e, b)| {
            (matches!(b, EventBody::RoomFinished)
                && e.at.millis().saturating_add(CREATED_AT_TOLERANCE_MS) > self.start_time.millis())
            .then_some(e.at)
        });
        let (end_time, why) = match finished {
            Some(at) if self.participant().is_some() => (Some(at), Anomaly::ClosedByRoomFinished),
            _ if params
                .now
                .millis()
                .saturating_sub(self.last_event_at.millis())
                >= params.call_timeout_ms =>
            {
                (Some(self.last_event_at), Anomaly::ClosedByTimeout)
            }
            _ => (None, Anomaly::MissingParticipantLeft),
        };
        let anomalies = match end_time {
            Some(_) => vec![Anomaly::MissingParticipantLeft, why],
            None => vec![],
        };
        Closing {
            end_time: end_time.map(|t| t.max(self.start_time)),
            without_leave: end_time.is_some(),
            anomalies,
        }
    }

    fn is_sip_participant(&self, sid: &str, identity: &str) -> bool {
        if self.sip_sids.contains(sid) {
            return true;
        }
        let joined_kind = self.bodies().find_map(|(_, b)| match b {
            EventBody::ParticipantJoined { sid: s, kind, .. } if s == sid => Some(*kind),
            _ => None,
        });
        joined_kind.is_none() && self.sip_identities.contains(identity)
    }

    /// The reported answer, else (inbound) the first non-SIP track while the caller is present.
    pub fn answer(&self, end_time: Option<Timestamp>) -> Answer {
        let reported = self
            .bodies()
            .find_map(|(e, b)| matches!(b, EventBody::CallAnswered).then_some(e.at));
        let in_call = |at: Timestamp| {
            at.millis()
                >= self
                    .start_time
                    .millis()
                    .saturating_sub(CREATED_AT_TOLERANCE_MS)
                && end_time.is_none_or(|end| {
                    at.millis() <= end.millis().saturating_add(CREATED_AT_TOLERANCE_MS)
                })
        };
        if let Some(at) = reported
            && in_call(at)
        {
            {
                return Answer {
                    observed: true,
                    time: Some(at.max(self.start_time)),
                    source: AnswerSource::Reported,
                    anomalies: vec![],
                };
            }
        }
        let anomalies = reported.map_or(vec![], |_| vec![Anomaly::AnswerOutsideCall]);
        let joined_at = self.participant().and_then(|p| p.joined_at);
        let inferred = match (self.direction, joined_at) {
            (Direction::Inbound, Some(joined)) => self.bodies().find_map(|(e, b)| match b {
                EventBody::TrackPublished {
                    participant_sid,
                    participant_identity,
                } if e.at.millis().saturating_add(CREATED_AT_TOLERANCE_MS) > joined.millis()
                    && end_time.is_none_or(|end| e.at <= end)
                    && !self.is_sip_participant(participant_sid, participant_identity) =>
                {
                    Some(e.at.max(joined).max(self.start_time))
                }
                _ => None,
            }),
            _ => None,
        };
        Answer {
            observed: inferred.is_some(),
            time: inferred,
            source: if inferred.is_some() {
                AnswerSource::Inferred
            } else {
                AnswerSource::None
            },
            anomalies,
        }
    }

    pub fn queue(&self) -> Queue {
        let mut q = Queue {
            name: None,
            entered: None,
            left: None,
            timed_out: false,
        };
        for (e, b) in self.bodies() {
            match b {
                EventBody::QueueEntered { queue } if q.entered.is_none() => {
                    q.entered = Some(e.at);
                    q.name = Some(queue.clone());
                }
                EventBody::QueueLeft { queue, reason } => {
                    q.left = Some(e.at);
                    q.timed_out = *reason == QueueLeftReason::Timeout;
                    q.name.get_or_insert_with(|| queue.clone());
                }
                _ => {}
            }
        }
        q
    }

    /// The last reported transfer.
    pub fn transfer(&self) -> Option<(TransferType, &'a str)> {
        self.bodies()
            .filter_map(|(_, b)| match b {
                EventBody::Transfer {
                    transfer_type,
                    target,
                } => Some((*transfer_type, target.as_str())),
                _ => None,
            })
            .last()
    }

    /// The last reported SIP error: code and reason.
    pub fn sip_error(&self) -> Option<(u16, Option<&'a str>)> {
        self.bodies()
            .filter_map(|(_, b)| match b {
                EventBody::SipError {
                    sip_status_code,
                    reason,
                } => Some((*sip_status_code, reason.as_deref())),
                _ => None,
            })
            .last()
    }

    /// The reported agent (first `agent_assigned`), else the first AGENT participant of the room.
    pub fn agent_id(&self) -> Option<String> {
        let reported = self.bodies().find_map(|(_, b)| match b {
            EventBody::AgentAssigned { agent_id } => Some(agent_id.clone()),
            _ => None,
        });
        reported.or_else(|| {
            self.bodies().find_map(|(_, b)| match b {
                EventBody::ParticipantJoined {
                    kind: ParticipantKind::Agent,
                    agent_name,
                    identity,
                    ..
                } => Some(agent_name.clone().unwrap_or_else(|| identity.clone())),
                _ => None,
            })
        })
    }

    /// The recording of the latest `egress_ended` (by `updatedAt`) that has a location.
    pub fn recording_url(&self) -> Option<String> {
        self.bodies()
            .filter_map(|(_, b)| match b {
                EventBody::EgressEnded {
                    updated_at_ns,
                    location: Some(location),
                    egress_id,
                } => Some((*updated_at_ns, egress_id.as_str(), location.as_str())),
                _ => None,
            })
            .max()
            .map(|(_, _, location)| location.to_owned())
    }

    pub fn wrap_up_seconds(&self) -> f64 {
        self.bodies()
            .map(|(_, b)| match b {
                EventBody::WrapUp { seconds, .. } => *seconds,
                _ => 0.0,
            })
            .sum()
    }

    /// `call_metadata` objects merged in time order; later keys win.
    pub fn metadata(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut merged: Option<serde_json::Map<String, serde_json::Value>> = None;
        for (_, b) in self.bodies() {
            if let EventBody::CallMetadata { metadata } = b {
                let m = merged.get_or_insert_with(Default::default);
                for (k, v) in metadata {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        merged
    }

    pub fn has_reported_transfer(&self) -> bool {
        self.transfer().is_some()
    }
}
