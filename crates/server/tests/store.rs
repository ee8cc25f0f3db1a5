//! Store behaviour that no HTTP request shows directly.

use callpulse_core::metrics::{MetricParams, tally_cdrs};
use callpulse_core::{AnswerSource, Cdr, Direction, Outcome, Timestamp};
use callpulse_server::store::{self, MetricFilter};

fn answered_after(seconds: i64) -> Cdr {
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

/// A rewrite subtracts what the old version added, even when the service-level threshold changed
/// in between (no counter drifts or goes negative).
#[tokio::test]
async fn rewrite_after_a_threshold_change_subtracts_the_stored_contribution() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let strict = MetricParams {
        service_level_seconds: 20.0,
    };
    let lenient = MetricParams {
        service_level_seconds: 30.0,
    };
    let cdr = answered_after(25);
    store::open(&url, strict)
        .await
        .unwrap()
        .upsert_cdrs(std::slice::from_ref(&cdr), Timestamp(0))
        .await
        .unwrap();
    let reopened = store::open(&url, lenient).await.unwrap();
    let mut later = cdr.clone();
    later.recording_url = Some("s3://rec".into());
    reopened
        .upsert_cdrs(&[later.clone()], Timestamp(0))
        .await
        .unwrap();
    let rows = reopened
        .rollup_rows(
            Timestamp(0),
            Timestamp(i64::MAX / 2),
            &MetricFilter::default(),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].tally, tally_cdrs([&later], &lenient));
    assert_eq!(rows[0].tally.answered_within_threshold, 1);
}
