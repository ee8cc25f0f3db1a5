//! CDR builder tests: one compact scenario builder, scenario checks per outcome rule, and
//! property tests for order and duplicate independence.

use super::*;
use crate::event::*;
use proptest::prelude::*;

const T0: i64 = 1_795_442_530_000;
const CALL: &str = "SCL_test0000001";
const ROOM_SID: &str = "RM_test";
const ROOM: &str = "call-test";

/// Builds a call's events tersely: times are seconds after `T0`.
#[derive(Default, Clone)]
struct Script {
    events: Vec<CallEvent>,
    inbound: bool,
    joined_s: f64,
}

fn sip(status: &str, inbound: bool, joined_s: f64) -> SipParticipant {
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(attr::CALL_ID.into(), CALL.into());
    attributes.insert(attr::CALL_STATUS.into(), status.into());
    attributes.insert(attr::TRUNK_ID.into(), "ST_trunk".into());
    attributes.insert(attr::PHONE_NUMBER.into(), "+15550001".into());
    attributes.insert(attr::TRUNK_PHONE_NUMBER.into(), "+15559999".into());
    if inbound {
        attributes.insert(attr::RULE_ID.into(), "SDR_rule".into());
    }
    SipParticipant {
        sid: "PA_sip".into(),
        identity: "sip_+15550001".into(),
        joined_at: Some(Timestamp(T0 + (joined_s * 1000.0) as i64)),
        room_sid: Some(ROOM_SID.into()),
        room_name: Some(ROOM.into()),
        attributes,
    }
}

impl Script {
    fn inbound() -> Self {
        Script {
            inbound: true,
            ..Default::default()
        }
    }
    fn outbound() -> Self {
        Script::default()
    }
    fn push(mut self, secs: f64, call_scoped: bool, body: EventBody) -> Self {
        let scope = if call_scoped {
            Scope::Call {
                call_id: CALL.into(),
            }
        } else {
            Scope::Room {
                sid: Some(ROOM_SID.into()),
                name: Some(ROOM.into()),
            }
        };
        let key = format!("EV_{}", self.events.len());
        self.events.push(CallEvent {
            key,
            source: Source::Livekit,
            at: Timestamp(T0 + (secs * 1000.0) as i64),
            scope,
            body,
            unknown_enum_values: vec![],
        });
        self
    }
    fn join(mut self, secs: f64) -> Self {
        self.joined_s = secs;
        let status = if self.inbound { "ringing" } else { "dialing" };
        let participant = sip(status, self.inbound, secs);
        self.push(secs.floor(), true, EventBody::SipJoined { participant })
    }
    fn leave(self, secs: f64, status: &str, reason: &str) -> Self {
        let participant = sip(status, self.inbound, self.joined_s);
        let reason = DisconnectReason(reason.into());
        let aborted = false;
        self.push(
            secs,
            true,
            EventBody::SipLeft {
                participant,
                reason,
                aborted,
            },
        )
    }
    fn agent(self, secs: f64) -> Self {
        self.push(
            secs,
            false,
            EventBody::ParticipantJoined {
                sid: "PA_agent".into(),
                identity: "agent-AJ_1".into(),
                kind: ParticipantKind::Agent,
                agent_name: Some("receptionist".into()),
            },
        )
    }
    fn track(self, secs: f64, sid: &str) -> Self {
        let body = EventBody::TrackPublished {
            participant_sid: sid.into(),
            participant_identity: "x".into(),
        };
        self.push(secs, false, body)
    }
    fn app(self, secs: f64, body: EventBody) -> Self {
        self.push(secs, true, body)
    }
    fn build_at(&self, now_s: f64) -> Cdr {
        let params = BuildParams {
            now: Timestamp(T0 + (now_s * 1000.0) as i64),
            ..BuildParams::default()
        };
        build(CALL, &self.events, &params)
    }
    fn build(&self) -> Cdr {
        self.build_at(60.0)
    }
}

#[test]
fn inbound_answered_by_agent_track() {
    let cdr = Script::inbound()
        .join(0.3)
        .agent(1.0)
        .track(2.0, "PA_agent")
        .leave(180.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Answered);
    assert_eq!(cdr.direction, Direction::Inbound);
    assert_eq!(cdr.answer_source, AnswerSource::Inferred);
    assert_eq!(cdr.answer_time, Some(Timestamp(T0 + 2000)));
    assert_eq!(cdr.duration_seconds, Some(178.0));
    assert_eq!(cdr.ring_duration_seconds, Some(1.7));
    assert_eq!(cdr.agent_id.as_deref(), Some("receptionist"));
    assert_eq!(cdr.ended_by, Some(EndedBy::Caller));
    assert_eq!(cdr.caller_number.as_deref(), Some("+15550001"));
    assert_eq!(cdr.callee_number.as_deref(), Some("+15559999"));
    assert!(cdr.anomalies.is_empty(), "{:?}", cdr.anomalies);
}

#[test]
fn sip_participants_own_track_is_not_an_answer() {
    let cdr = Script::inbound()
        .join(0.3)
        .track(0.0, "PA_sip")
        .leave(24.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Abandoned);
    assert!(!cdr.short_abandon);
    assert_eq!(cdr.ended_by, Some(EndedBy::Caller));
    assert_eq!(cdr.duration_seconds, Some(0.0));
    assert_eq!(cdr.ring_duration_seconds, Some(23.7));
}

#[test]
fn abandon_under_threshold_is_short() {
    let cdr = Script::inbound()
        .join(0.3)
        .leave(4.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Abandoned);
    assert!(cdr.short_abandon);
}

#[test]
fn inbound_ring_timeout_is_no_answer() {
    let cdr = Script::inbound()
        .join(0.3)
        .leave(180.0, "ringing", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::NoAnswer);
}

#[test]
fn queue_timeout_is_no_answer_and_wait_is_measured() {
    let cdr = Script::inbound()
        .join(0.3)
        .app(
            2.0,
            EventBody::QueueEntered {
                queue: "sales".into(),
            },
        )
        .app(
            62.0,
            EventBody::QueueLeft {
                queue: "sales".into(),
                reason: QueueLeftReason::Timeout,
            },
        )
        .leave(63.0, "ringing", "PARTICIPANT_REMOVED")
        .build_at(100.0);
    assert_eq!(cdr.outcome, Outcome::NoAnswer);
    assert_eq!(cdr.queue.as_deref(), Some("sales"));
    assert_eq!(cdr.queue_wait_seconds, Some(60.0));
    assert_eq!(cdr.ring_duration_seconds, Some(2.7));
}

#[test]
fn outbound_disconnect_reasons_map_to_outcomes() {
    let cases = [
        ("dialing", "USER_REJECTED", Outcome::Busy),
        ("ringing", "USER_UNAVAILABLE", Outcome::NoAnswer),
        ("dialing", "CLIENT_INITIATED", Outcome::Failed),
        ("dialing", "SIP_TRUNK_FAILURE", Outcome::Failed),
        ("active", "CLIENT_INITIATED", Outcome::Answered),
        ("hangup", "CLIENT_INITIATED", Outcome::Answered),
        ("active", "ROOM_DELETED", Outcome::Answered),
        ("dialing", "ROOM_DELETED", Outcome::Failed),
        ("ringing", "SOME_FUTURE_REASON", Outcome::Failed),
    ];
    for (status, reason, expected) in cases {
        let cdr = Script::outbound()
            .join(0.9)
            .leave(30.0, status, reason)
            .build();
        assert_eq!(cdr.outcome, expected, "{status} {reason}");
    }
}

#[test]
fn outbound_answer_without_report_has_no_answer_time() {
    let cdr = Script::outbound()
        .join(0.9)
        .leave(30.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Answered);
    assert_eq!(cdr.answer_source, AnswerSource::None);
    assert_eq!(cdr.answer_time, None);
    assert_eq!(cdr.duration_seconds, Some(29.1));
    assert_eq!(cdr.ring_duration_seconds, None);
    assert_eq!(cdr.ended_by, Some(EndedBy::Callee));
}

#[test]
fn reported_sip_error_decides_outbound_outcome() {
    for (code, expected) in [
        (486, Outcome::Busy),
        (603, Outcome::Busy),
        (480, Outcome::NoAnswer),
        (503, Outcome::Failed),
    ] {
        let cdr = Script::outbound()
            .join(0.9)
            .app(
                2.0,
                EventBody::SipError {
                    sip_status_code: code,
                    reason: None,
                },
            )
            .leave(2.5, "dialing", "CLIENT_INITIATED")
            .build();
        assert_eq!(cdr.outcome, expected, "{code}");
        assert_eq!(cdr.sip_error_code, Some(code));
    }
}

#[test]
fn reported_answer_outranks_later_error() {
    let cdr = Script::outbound()
        .join(0.9)
        .app(5.0, EventBody::CallAnswered)
        .app(
            9.0,
            EventBody::SipError {
                sip_status_code: 503,
                reason: None,
            },
        )
        .leave(20.0, "active", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Answered);
    assert_eq!(cdr.answer_source, AnswerSource::Reported);
    assert_eq!(cdr.duration_seconds, Some(15.0));
    assert_eq!(cdr.ring_duration_seconds, Some(4.1));
}

#[test]
fn cold_transfer_turns_a_hangup_into_an_answered_transfer() {
    let cdr = Script::inbound()
        .join(0.3)
        .agent(1.0)
        .track(2.0, "PA_agent")
        .app(
            90.0,
            EventBody::Transfer {
                transfer_type: TransferType::Cold,
                target: "tel:+15551234".into(),
            },
        )
        .leave(96.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Answered);
    assert_eq!(cdr.transfer_type, Some(TransferType::Cold));
    assert_eq!(cdr.transfer_target.as_deref(), Some("tel:+15551234"));
    assert_eq!(cdr.ended_by, Some(EndedBy::Agent));
}

#[test]
fn room_finished_closes_a_call_without_leave() {
    let cdr = Script::inbound()
        .join(0.3)
        .push(40.0, false, EventBody::RoomFinished)
        .build();
    assert_eq!(cdr.outcome, Outcome::Failed);
    assert_eq!(cdr.end_time, Some(Timestamp(T0 + 40_000)));
    assert!(cdr.anomalies.contains(&Anomaly::MissingParticipantLeft));
    assert!(cdr.anomalies.contains(&Anomaly::ClosedByRoomFinished));
}

#[test]
fn silent_call_stays_open_until_the_timeout() {
    let script = Script::inbound()
        .join(0.3)
        .agent(1.0)
        .track(2.0, "PA_agent");
    let open = script.build_at(3600.0);
    assert_eq!(open.outcome, Outcome::InProgress);
    assert_eq!(open.end_time, None);
    assert_eq!(open.duration_seconds, None);
    let closed = script.build_at(6.0 * 3600.0 + 2.0);
    assert_eq!(closed.outcome, Outcome::Answered);
    assert_eq!(closed.end_time, Some(Timestamp(T0 + 2000)));
    assert!(closed.anomalies.contains(&Anomaly::ClosedByTimeout));
}

#[test]
fn recording_is_the_last_egress_by_updated_at() {
    let egress = |ns: i64, loc: &str| EventBody::EgressEnded {
        egress_id: "EG_1".into(),
        updated_at_ns: ns,
        location: Some(loc.into()),
    };
    let cdr = Script::inbound()
        .join(0.3)
        .push(200.0, false, egress(20, "s3://late"))
        .push(100.0, false, egress(10, "s3://early"))
        .leave(150.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.recording_url.as_deref(), Some("s3://late"));
}

#[test]
fn wrap_up_sums_and_metadata_merges() {
    let meta = |k: &str, v: i64| {
        let mut m = serde_json::Map::new();
        m.insert(k.into(), v.into());
        m.insert("shared".into(), v.into());
        EventBody::CallMetadata { metadata: m }
    };
    let wrap = |s: f64| EventBody::WrapUp {
        seconds: s,
        agent_id: None,
    };
    let cdr = Script::inbound()
        .join(0.3)
        .app(1.0, meta("a", 1))
        .app(2.0, meta("b", 2))
        .app(3.0, wrap(10.0))
        .app(4.0, wrap(5.5))
        .build();
    let m = cdr.metadata.expect("metadata merged");
    assert_eq!(m["a"], 1);
    assert_eq!(m["b"], 2);
    assert_eq!(m["shared"], 2);
    assert_eq!(cdr.wrap_up_seconds, 15.5);
}

#[test]
fn another_legs_track_is_not_an_answer() {
    let mut other = sip("dialing", false, 5.0);
    other.sid = "PA_other".into();
    other
        .attributes
        .insert(attr::CALL_ID.into(), "SCL_other".into());
    let mut script = Script::inbound().join(0.3);
    script.events.push(CallEvent {
        key: "EV_other".into(),
        source: Source::Livekit,
        at: Timestamp(T0 + 5000),
        scope: Scope::Call {
            call_id: "SCL_other".into(),
        },
        body: EventBody::SipJoined { participant: other },
        unknown_enum_values: vec![],
    });
    let cdr = script
        .track(6.0, "PA_other")
        .leave(20.0, "hangup", "CLIENT_INITIATED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Abandoned);
}

fn answered_inbound_script() -> Script {
    Script::inbound()
        .join(0.3)
        .agent(1.0)
        .track(2.0, "PA_agent")
        .app(1.5, EventBody::QueueEntered { queue: "q".into() })
        .app(
            2.0,
            EventBody::QueueLeft {
                queue: "q".into(),
                reason: QueueLeftReason::Answered,
            },
        )
        .app(
            3.0,
            EventBody::AgentAssigned {
                agent_id: "alice".into(),
            },
        )
        .leave(60.0, "hangup", "CLIENT_INITIATED")
        .push(80.0, false, EventBody::RoomFinished)
}

proptest! {
    #[test]
    fn any_permutation_and_duplication_gives_the_same_cdr(
        order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..8usize, 0..6),
    ) {
        let script = answered_inbound_script();
        let reference = script.build();
        let mut events: Vec<CallEvent> = order.iter().map(|&i| script.events[i].clone()).collect();
        for d in dups {
            events.push(script.events[d].clone());
        }
        let shuffled = build(CALL, &events, &BuildParams { now: Timestamp(T0 + 60_000), ..BuildParams::default() });
        prop_assert_eq!(shuffled, reference);
    }

    #[test]
    fn any_subset_builds_without_panic_and_with_sane_durations(
        mask in proptest::collection::vec(any::<bool>(), 8),
        now_s in 0.0f64..100_000.0,
    ) {
        let script = answered_inbound_script();
        let events: Vec<CallEvent> = script.events.iter().zip(&mask).filter(|(_, m)| **m).map(|(e, _)| e.clone()).collect();
        let cdr = build(CALL, &events, &BuildParams { now: Timestamp(T0 + (now_s * 1000.0) as i64), ..BuildParams::default() });
        for d in [cdr.duration_seconds, cdr.ring_duration_seconds, cdr.queue_wait_seconds].into_iter().flatten() {
            prop_assert!(d >= 0.0);
        }
        prop_assert_eq!(cdr.end_time.is_none(), cdr.outcome == Outcome::InProgress);
    }
}

fn room_event(key: &str, secs: f64, name_only: bool, body: EventBody) -> CallEvent {
    CallEvent {
        key: key.into(),
        source: Source::App,
        at: Timestamp(T0 + (secs * 1000.0) as i64),
        scope: Scope::Room {
            sid: (!name_only).then(|| ROOM_SID.into()),
            name: Some(ROOM.into()),
        },
        body,
        unknown_enum_values: vec![],
    }
}

#[test]
fn room_name_events_of_an_earlier_call_in_a_reused_room_do_not_leak() {
    let mut script = Script::inbound()
        .join(3600.3)
        .leave(3620.0, "hangup", "CLIENT_INITIATED");
    // Another call used the same room name an hour earlier and was answered then.
    script.events.push(room_event(
        "AE_q",
        1.0,
        true,
        EventBody::QueueEntered { queue: "q".into() },
    ));
    script
        .events
        .push(room_event("AE_a", 5.0, true, EventBody::CallAnswered));
    let cdr = script.build_at(4000.0);
    assert_eq!(cdr.outcome, Outcome::Abandoned);
    assert_eq!(cdr.queue, None);
    // The same events during this call do apply.
    let mut during = Script::inbound()
        .join(0.3)
        .leave(20.0, "hangup", "CLIENT_INITIATED");
    during
        .events
        .push(room_event("AE_a", 5.0, true, EventBody::CallAnswered));
    assert_eq!(during.build().outcome, Outcome::Answered);
}

#[test]
fn a_reported_answer_before_the_start_is_not_counted() {
    let cdr = Script::outbound()
        .app(-30.0, EventBody::CallAnswered)
        .join(0.9)
        .leave(30.0, "dialing", "USER_REJECTED")
        .build();
    assert_eq!(cdr.outcome, Outcome::Busy);
    assert!(cdr.anomalies.contains(&Anomaly::AnswerOutsideCall));
}

#[test]
fn an_implausible_invite_time_falls_back_to_the_join() {
    for invite in ["0", "-9223372036854775808", "not a number"] {
        let mut script = Script::inbound().join(0.3);
        if let EventBody::SipJoined { participant } = &mut script.events[0].body {
            participant
                .attributes
                .insert(attr::INVITE_TIME.into(), invite.into());
        }
        let cdr = script.leave(20.0, "hangup", "CLIENT_INITIATED").build();
        assert_eq!(cdr.start_time, Timestamp(T0 + 300), "{invite}");
    }
    let mut script = Script::inbound().join(0.3);
    if let EventBody::SipJoined { participant } = &mut script.events[0].body {
        participant
            .attributes
            .insert(attr::INVITE_TIME.into(), (T0 - 700).to_string());
    }
    // The leave carries the final attributes and wins; give it the invite time too.
    let mut cdr_script = script.leave(20.0, "hangup", "CLIENT_INITIATED");
    if let EventBody::SipLeft { participant, .. } = &mut cdr_script.events[1].body {
        participant
            .attributes
            .insert(attr::INVITE_TIME.into(), (T0 - 700).to_string());
    }
    assert_eq!(cdr_script.build().start_time, Timestamp(T0 - 700));
}

#[test]
fn events_with_the_same_id_from_different_sources_are_both_kept() {
    let mut script = Script::inbound()
        .join(0.3)
        .leave(20.0, "hangup", "CLIENT_INITIATED");
    let mut answered = room_event("EV_1", 5.0, false, EventBody::CallAnswered);
    answered.key = script.events[0].key.clone();
    script.events.push(answered);
    assert_eq!(script.build().outcome, Outcome::Answered);
}

/// Found by fuzzing: two different bodies under one key and time. Whichever comes first in the
/// input, the same one is kept, so the CDR does not depend on the order.
#[test]
fn two_bodies_under_one_key_build_the_same_cdr_in_either_order() {
    let script = answered_inbound_script();
    let mut altered = script
        .events
        .iter()
        .find(|e| matches!(e.body, EventBody::SipLeft { .. }))
        .expect("the script has the SIP leave")
        .clone();
    if let EventBody::SipLeft { participant, .. } = &mut altered.body {
        participant.room_name = None;
        participant.room_sid = None;
    }
    let params = BuildParams {
        now: Timestamp(T0 + 60_000),
        ..BuildParams::default()
    };
    let mut first = script.events.clone();
    first.push(altered.clone());
    let mut second = vec![altered];
    second.extend(script.events.iter().cloned());
    assert_eq!(build(CALL, &first, &params), build(CALL, &second, &params));
}
