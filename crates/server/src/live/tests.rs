//! The fan-out logic against in-memory sinks: a snapshot first, deltas in order, and a snapshot
//! instead of a backlog for a client that stopped reading.

use super::*;
use callpulse_core::{Direction, Outcome};
use futures::StreamExt;
use futures::channel::mpsc;
use serde_json::Value;
use std::time::Duration;

fn call(id: &str, outcome: Outcome) -> Cdr {
    let json = serde_json::json!({
        "call_id": id, "direction": "inbound", "caller_number": null, "callee_number": null,
        "trunk_id": "ST_1", "room_name": null, "room_sid": null, "start_time": 1000,
        "answer_time": null,
        "end_time": if outcome == Outcome::InProgress { Value::Null } else { Value::from(9000) },
        "duration_seconds": null, "ring_duration_seconds": null, "queue_wait_seconds": null,
        "outcome": outcome, "transfer_type": null, "transfer_target": null,
        "recording_url": null, "sip_error_code": null, "agent_id": null, "metadata": null,
        "queue": null, "disconnect_reason": null, "ended_by": null, "answer_source": "none",
        "anomalies": [], "short_abandon": false, "wrap_up_seconds": 0.0, "last_event_at": 9000
    });
    let cdr: Cdr = serde_json::from_value(json).unwrap();
    assert_eq!(cdr.direction, Direction::Inbound);
    cdr
}

async fn next(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Value {
    let text = tokio::time::timeout(Duration::from_secs(5), rx.next())
        .await
        .expect("a message within 5 s")
        .expect("the forwarder is still running");
    serde_json::from_str(text.as_str()).unwrap()
}

#[tokio::test]
async fn a_client_gets_a_snapshot_then_each_delta_in_order() {
    let hub = Arc::new(LiveHub::new(16));
    hub.apply_cdrs(&[call("before", Outcome::InProgress)]);
    let (mut tx, mut rx) = mpsc::channel(64);
    let forwarding = {
        let hub = hub.clone();
        tokio::spawn(async move { forward(&hub, &mut tx).await })
    };
    let snapshot = next(&mut rx).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["seq"], 1);
    assert_eq!(snapshot["summary"]["active_calls"], 1);
    assert_eq!(snapshot["calls"][0]["call_id"], "before");

    hub.apply_cdrs(&[call("new", Outcome::InProgress)]);
    hub.apply_cdrs(&[call("before", Outcome::Answered)]);
    let first = next(&mut rx).await;
    assert_eq!(
        (first["type"].as_str(), first["seq"].as_u64()),
        (Some("delta"), Some(2))
    );
    assert_eq!(first["calls"][0]["call_id"], "new");
    assert_eq!(first["summary"]["active_calls"], 2);
    let second = next(&mut rx).await;
    assert_eq!(second["seq"], 3);
    assert_eq!(second["ended"], serde_json::json!(["before"]));
    assert_eq!(second["recent_calls"][0]["call_id"], "before");
    assert_eq!(second["summary"]["active_calls"], 1);
    forwarding.abort();
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_a_snapshot_not_the_backlog() {
    let hub = Arc::new(LiveHub::new(4));
    // A sink that holds one message and then blocks until the reader reads.
    let (mut tx, mut rx) = mpsc::channel(0);
    let forwarding = {
        let hub = hub.clone();
        tokio::spawn(async move { forward(&hub, &mut tx).await })
    };
    assert_eq!(next(&mut rx).await["type"], "snapshot");
    for i in 0..40 {
        hub.apply_cdrs(&[call(&format!("c{i}"), Outcome::InProgress)]);
        tokio::task::yield_now().await;
    }
    let mut received = Vec::new();
    loop {
        let message = next(&mut rx).await;
        let done = message["seq"] == 40;
        received.push(message);
        if done {
            break;
        }
    }
    assert!(
        received.len() < 40,
        "the backlog was not replayed: {} messages",
        received.len()
    );
    let snapshot = received
        .iter()
        .find(|m| m["type"] == "snapshot")
        .expect("a fresh snapshot after falling behind");
    let seqs: Vec<u64> = received
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "never a message twice or out of order: {seqs:?}"
    );
    assert!(snapshot["calls"].as_array().unwrap().len() >= 30);
    assert_eq!(received.last().unwrap()["summary"]["active_calls"], 40);
    forwarding.abort();
}
