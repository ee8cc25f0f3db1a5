//! Inputs for tests: a CDR to store without building it from events, and the LiveKit samples.

use callpulse_core::{AnswerSource, Cdr, Direction, Outcome, Timestamp};

/// An inbound call on trunk `ST_a` answered by `alice` after `seconds` of ringing.
#[allow(dead_code)]
pub fn answered_after(seconds: i64) -> Cdr {
    Cdr {
        call_id: "SCL_sl".into(),
        direction: Direction::Inbound,
        caller_number: None,
        callee_number: None,
        trunk_id: Some("ST_a".into()),
        room_name: None,
        room_sid: None,
        start_time: Timestamp(1_795_442_400_000),
        answer_time: Some(Timestamp(1_795_442_400_000 + seconds * 1000)),
        end_time: Some(Timestamp(1_795_442_500_000)),
        duration_seconds: Some(75.0),
        ring_duration_seconds: Some(seconds as f64),
        queue_wait_seconds: Some(0.0),
        outcome: Outcome::Answered,
        transfer_type: None,
        transfer_target: None,
        recording_url: None,
        sip_error_code: None,
        agent_id: Some("alice".into()),
        metadata: None,
        queue: None,
        disconnect_reason: Some("CLIENT_INITIATED".into()),
        ended_by: None,
        answer_source: AnswerSource::Inferred,
        anomalies: vec![],
        short_abandon: false,
        wrap_up_seconds: 0.0,
        last_event_at: Timestamp(1_795_442_500_000),
    }
}

/// The LiveKit sample whose file name starts with `name` (`tests/fixtures/livekit`).
#[allow(dead_code)]
pub fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/livekit");
    let path = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
        .unwrap_or_else(|| panic!("no fixture {name}"));
    std::fs::read(path).unwrap()
}
