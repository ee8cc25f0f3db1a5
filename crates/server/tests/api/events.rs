//! `POST /api/v1/events`: token, validation naming index and field, all-or-nothing batches.

use crate::helpers::*;
use serde_json::json;

fn answered(id: &str, call: &str) -> serde_json::Value {
    json!({"id": id, "type": "call_answered", "at": "2026-11-23T11:40:05.000Z", "call_id": call})
}

#[tokio::test]
async fn events_need_their_own_token() {
    let app = spawn_app().await;
    for auth in [
        None,
        Some(format!("Bearer {SECRET}")),
        Some("Bearer nope".to_string()),
    ] {
        let mut req = app
            .client
            .post(format!("{}/api/v1/events", app.base))
            .json(&json!([answered("a", "SCL_x")]));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let (status, json) = error_body(req.send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(json["error"], "invalid_token");
    }
    assert_eq!(app.ingest_stats().await["events_in_log"], 0);
}

#[tokio::test]
async fn invalid_event_is_named_by_index_and_field_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cases = [
        (
            json!([answered("a", "SCL_x"), {"id": "b", "type": "queue_entered", "at": "2026-11-23T11:40:05Z", "call_id": "SCL_x"}]),
            "events[1].queue: required",
        ),
        (
            json!([{"id": "c", "type": "sip_error", "at": "2026-11-23T11:40:05Z", "call_id": "SCL_x", "sip_status_code": 99}]),
            "events[0].sip_status_code",
        ),
        (
            json!([{"id": "d", "type": "queue_left", "at": "2026-11-23T11:40:05Z", "call_id": "SCL_x", "queue": "q", "reason": "bored"}]),
            "events[0].reason: `bored` is not one of",
        ),
        (
            json!([{"id": "e", "type": "call_answered", "at": "yesterday", "call_id": "SCL_x"}]),
            "events[0].at: not an RFC 3339 time",
        ),
        (
            json!([{"id": "f", "type": "teleport", "at": "2026-11-23T11:40:05Z", "call_id": "SCL_x"}]),
            "events[0].type: unknown event type",
        ),
        (
            json!([{"id": "g", "type": "call_answered", "at": "2026-11-23T11:40:05Z"}]),
            "events[0].call_id: required (or room_name)",
        ),
        (
            json!([{"id": "h", "type": "agent_state", "at": "2026-11-23T11:40:05Z", "agent_id": "alice", "state": "sleeping"}]),
            "events[0].state",
        ),
        (
            json!([{"id": "i", "type": "call_metadata", "at": "2026-11-23T11:40:05Z", "call_id": "SCL_x", "metadata": [1]}]),
            "events[0].metadata: must be a JSON object",
        ),
    ];
    for (batch, expected) in cases {
        let (status, json) = error_body(app.post_events(&batch).await).await;
        assert_eq!(status, 422, "{batch}");
        assert_eq!(json["error"], "invalid_event");
        let detail = json["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(expected),
            "{detail} should start with {expected}"
        );
    }
    assert_eq!(app.ingest_stats().await["events_in_log"], 0);
}

#[tokio::test]
async fn body_that_is_not_json_gets_400() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(format!("{}/api/v1/events", app.base))
        .bearer_auth(EVENTS_TOKEN)
        .body("{oops")
        .send()
        .await
        .unwrap();
    let (status, json) = error_body(r).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "invalid_json");
}

#[tokio::test]
async fn repeated_event_ids_are_idempotent() {
    let app = spawn_app().await;
    let batch = json!([answered("ev-1", "SCL_x"), answered("ev-2", "SCL_x")]);
    let first: serde_json::Value = app.post_events(&batch).await.json().await.unwrap();
    assert_eq!(first, json!({"accepted": 2, "duplicates": 0}));
    let again: serde_json::Value = app.post_events(&batch).await.json().await.unwrap();
    assert_eq!(again, json!({"accepted": 0, "duplicates": 2}));
    assert_eq!(app.ingest_stats().await["events_in_log"], 2);
}

#[tokio::test]
async fn application_events_complete_a_webhook_cdr() {
    let app = spawn_app().await;
    let call = "SCL_8piqEvbFWiyq";
    let batch = json!([
        {"id": "q1", "type": "sip_error", "at": "2026-11-23T12:20:02.500Z", "call_id": call, "sip_status_code": 486, "reason": "Busy Here"},
        {"id": "q2", "type": "call_metadata", "at": "2026-11-23T12:20:01.000Z", "call_id": call, "metadata": {"campaign": "renewals"}},
        {"id": "q3", "type": "agent_state", "at": "2026-11-23T12:20:01.000Z", "agent_id": "alice", "state": "available"}
    ]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    assert_eq!(app.post_webhook(&fixture("09")).await.status(), 200);
    let body = app
        .wait_for_cdr(call, |c| {
            c["sip_error_code"] == 486 && c["metadata"].is_object()
        })
        .await;
    assert_eq!(body["cdr"]["outcome"], "busy");
    assert_eq!(body["cdr"]["metadata"]["campaign"], "renewals");
}

#[tokio::test]
async fn room_name_event_applies_to_the_rooms_leg() {
    let app = spawn_app().await;
    assert_eq!(app.post_webhook(&fixture("12")).await.status(), 200);
    let batch = json!([{"id": "t1", "type": "transfer", "at": "2026-11-23T15:31:30.000Z",
        "room_name": "call-_+14085550176_24Fx4XV3StHA", "transfer_type": "cold", "target": "tel:+14155550199"}]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    let body = app
        .wait_for_cdr("SCL_b8eC8QRc3uCd", |c| c["transfer_type"] == "cold")
        .await;
    assert_eq!(body["cdr"]["transfer_target"], "tel:+14155550199");
}
