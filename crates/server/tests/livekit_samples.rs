//! Every LiveKit sample payload decodes, and each scenario builds the CDR that METRICS.md and
//! FACTS.md say it must. The samples are copies of `shared/livekit/samples`.

use callpulse_core::event::{EventBody, ParticipantKind, Scope};
use callpulse_core::{
    Anomaly, AnswerSource, BuildParams, CallEvent, Cdr, Direction, EndedBy, Outcome, Timestamp,
    build,
};
use callpulse_server::ingest::livekit::{DecodedWebhook, decode};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/livekit");

fn sample(name: &str) -> Vec<u8> {
    let path = std::fs::read_dir(FIXTURES)
        .expect("fixtures folder exists")
        .map(|e| e.expect("readable entry").path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap_or_else(|| panic!("no sample {name}"));
    std::fs::read(path).expect("sample readable")
}

fn decoded(name: &str) -> DecodedWebhook {
    decode(&sample(name), Timestamp(0)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn events(names: &[&str]) -> Vec<CallEvent> {
    names.iter().filter_map(|n| decoded(n).call_event).collect()
}

fn cdr(call_id: &str, events: &[CallEvent]) -> Cdr {
    let params = BuildParams {
        now: Timestamp(1_795_450_000_000),
        ..BuildParams::default()
    };
    build(call_id, events, &params)
}

#[test]
fn every_sample_decodes_with_its_id_and_name() {
    let mut count = 0;
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let d = decode(&body, Timestamp(0)).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(d.event_id.starts_with("EV_"), "{path:?}");
        assert!(d.call_event.is_some(), "{path:?} matters to a CDR");
        assert!(d.call_event.unwrap().unknown_enum_values.is_empty());
        count += 1;
    }
    assert_eq!(count, 12);
}

const ANSWERED: &[&str] = &["01", "02", "03", "04", "05", "06", "07"];

#[test]
fn inbound_answered_scenario_builds_the_expected_cdr() {
    let c = cdr("SCL_9piNuUTbRzfj", &events(ANSWERED));
    assert_eq!(c.outcome, Outcome::Answered);
    assert_eq!(c.direction, Direction::Inbound);
    assert_eq!(c.caller_number.as_deref(), Some("+15105550123"));
    assert_eq!(c.callee_number.as_deref(), Some("+14155550100"));
    assert_eq!(c.trunk_id.as_deref(), Some("ST_zUTp5cawibJM"));
    assert_eq!(
        c.room_name.as_deref(),
        Some("call-_+15105550123_SqD3j68VjKp9")
    );
    assert_eq!(c.start_time, Timestamp(1_795_442_530_687));
    assert_eq!(c.answer_time, Some(Timestamp(1_795_442_532_000)));
    assert_eq!(c.end_time, Some(Timestamp(1_795_442_718_000)));
    assert_eq!(c.duration_seconds, Some(186.0));
    assert_eq!(c.ring_duration_seconds, Some(1.313));
    assert_eq!(c.queue_wait_seconds, Some(0.0));
    assert_eq!(c.agent_id.as_deref(), Some("inbound-receptionist"));
    assert_eq!(
        c.recording_url.as_deref(),
        Some("https://acme-call-recordings.s3.amazonaws.com/recordings/SCL_9piNuUTbRzfj.ogg")
    );
    assert_eq!(c.answer_source, AnswerSource::Inferred);
    assert_eq!(c.ended_by, Some(EndedBy::Caller));
    assert_eq!(c.disconnect_reason.as_deref(), Some("CLIENT_INITIATED"));
    assert!(c.anomalies.is_empty(), "{:?}", c.anomalies);
}

#[test]
fn answered_scenario_is_the_same_in_every_rotation_and_reversed() {
    let base = events(ANSWERED);
    let reference = cdr("SCL_9piNuUTbRzfj", &base);
    for shift in 0..base.len() {
        let mut rotated = base.clone();
        rotated.rotate_left(shift);
        assert_eq!(
            cdr("SCL_9piNuUTbRzfj", &rotated),
            reference,
            "rotation {shift}"
        );
        rotated.reverse();
        rotated.extend(base.iter().take(shift).cloned());
        assert_eq!(
            cdr("SCL_9piNuUTbRzfj", &rotated),
            reference,
            "reversed {shift}"
        );
    }
}

#[test]
fn single_leave_samples_build_their_outcomes() {
    let cases = [
        (
            "08",
            "SCL_sUdeADeKCykW",
            Direction::Inbound,
            Outcome::Abandoned,
        ),
        ("09", "SCL_8piqEvbFWiyq", Direction::Outbound, Outcome::Busy),
        (
            "10",
            "SCL_cPcexQZkLqZi",
            Direction::Outbound,
            Outcome::NoAnswer,
        ),
        (
            "11",
            "SCL_N8wSHegi6wgk",
            Direction::Outbound,
            Outcome::Failed,
        ),
        (
            "12",
            "SCL_b8eC8QRc3uCd",
            Direction::Inbound,
            Outcome::Abandoned,
        ),
    ];
    for (name, call_id, direction, outcome) in cases {
        let c = cdr(call_id, &events(&[name]));
        assert_eq!(c.direction, direction, "{name}");
        assert_eq!(c.outcome, outcome, "{name}");
        assert_eq!(
            c.anomalies,
            vec![Anomaly::MissingParticipantJoined],
            "{name}"
        );
        assert!(!c.short_abandon, "{name}");
    }
    let abandoned = cdr("SCL_sUdeADeKCykW", &events(&["08"]));
    assert_eq!(abandoned.start_time, Timestamp(1_795_443_912_388));
    assert_eq!(abandoned.ring_duration_seconds, Some(23.612));
    assert_eq!(abandoned.ended_by, Some(EndedBy::Caller));
    let outbound = cdr("SCL_8piqEvbFWiyq", &events(&["09"]));
    assert_eq!(outbound.caller_number.as_deref(), Some("+14155550100"));
    assert_eq!(outbound.callee_number.as_deref(), Some("+16465550199"));
}

/// METRICS.md §9: sample 12 with its agent's events and a transfer event builds an answered
/// call with a cold transfer.
#[test]
fn sample_12_with_agent_and_transfer_is_an_answered_cold_transfer() {
    let mut evs = events(&["12"]);
    let room = Scope::Room {
        sid: Some("RM_C344MgZSrX8e".into()),
        name: Some("call-_+14085550176_24Fx4XV3StHA".into()),
    };
    let at = |s: i64| Timestamp::from_secs(s);
    let push = |evs: &mut Vec<CallEvent>, key: &str, t: Timestamp, scope: Scope, body| {
        evs.push(CallEvent {
            key: key.into(),
            source: callpulse_core::Source::Livekit,
            at: t,
            scope,
            body,
            unknown_enum_values: vec![],
        })
    };
    push(
        &mut evs,
        "EV_agent",
        at(1_795_447_801),
        room.clone(),
        EventBody::ParticipantJoined {
            sid: "PA_agent".into(),
            identity: "agent-AJ_x".into(),
            kind: ParticipantKind::Agent,
            agent_name: Some("receptionist".into()),
        },
    );
    push(
        &mut evs,
        "EV_track",
        at(1_795_447_802),
        room,
        EventBody::TrackPublished {
            participant_sid: "PA_agent".into(),
            participant_identity: "agent-AJ_x".into(),
        },
    );
    push(
        &mut evs,
        "AE_transfer",
        at(1_795_447_895),
        Scope::Call {
            call_id: "SCL_b8eC8QRc3uCd".into(),
        },
        EventBody::Transfer {
            transfer_type: callpulse_core::event::TransferType::Cold,
            target: "tel:+14155550199".into(),
        },
    );
    let c = cdr("SCL_b8eC8QRc3uCd", &evs);
    assert_eq!(c.outcome, Outcome::Answered);
    assert_eq!(
        c.transfer_type,
        Some(callpulse_core::event::TransferType::Cold)
    );
    assert_eq!(c.transfer_target.as_deref(), Some("tel:+14155550199"));
    assert_eq!(c.agent_id.as_deref(), Some("receptionist"));
    assert_eq!(c.ended_by, Some(EndedBy::Agent));
}

#[test]
fn unknown_disconnect_reason_keeps_the_event_and_flags_it() {
    let body = String::from_utf8(sample("09"))
        .unwrap()
        .replace("\"USER_REJECTED\"", "\"SOME_FUTURE_REASON\"");
    let d =
        decode(body.as_bytes(), Timestamp(0)).expect("unknown enum names do not lose the event");
    let event = d.call_event.expect("still a SIP leave");
    assert_eq!(
        event.unknown_enum_values,
        vec!["participant.disconnectReason=SOME_FUTURE_REASON".to_string()]
    );
    let c = cdr("SCL_8piqEvbFWiyq", &[event]);
    assert_eq!(c.disconnect_reason.as_deref(), Some("SOME_FUTURE_REASON"));
    assert_eq!(c.outcome, Outcome::Failed);
    assert!(c.anomalies.contains(&Anomaly::UnknownEnumValue));
}

#[test]
fn unknown_participant_kind_is_not_an_error() {
    let body = String::from_utf8(sample("03"))
        .unwrap()
        .replace("\"kind\":\"AGENT\"", "\"kind\":\"FUTURE_KIND\"");
    let d = decode(body.as_bytes(), Timestamp(0)).expect("decoded");
    let event = d.call_event.expect("a participant join");
    assert_eq!(
        event.unknown_enum_values,
        vec!["participant.kind=FUTURE_KIND".to_string()]
    );
    assert!(matches!(
        event.body,
        EventBody::ParticipantJoined {
            kind: ParticipantKind::Other,
            ..
        }
    ));
}

#[test]
fn json_that_is_not_a_webhook_is_refused_not_panicked_on() {
    for body in [
        &b"[1,2,3]"[..],
        b"\"text\"",
        b"not json",
        b"{\"createdAt\": true}",
        b"\xff\xfe",
    ] {
        assert!(decode(body, Timestamp(0)).is_err(), "{body:?}");
    }
}

#[test]
fn body_without_id_is_keyed_by_its_hash() {
    let body = String::from_utf8(sample("06"))
        .unwrap()
        .replace("\"id\":\"EV_7NA9zPENagae\",", "");
    let d = decode(body.as_bytes(), Timestamp(0)).unwrap();
    assert!(d.event_id.starts_with("sha256:"), "{}", d.event_id);
    assert_eq!(d.event_id.len(), "sha256:".len() + 64);
}
