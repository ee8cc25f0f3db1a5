//! Live state: `GET /api/v1/live` and the WebSocket at `/api/v1/live/ws`, against the real server.

use crate::helpers::{TestApp, fixture_recent as fixture, spawn_app};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const CALL: &str = "SCL_9piNuUTbRzfj";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp) -> Socket {
    let url = format!("{}/api/v1/live/ws", app.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("socket open")
            .expect("readable");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("messages are JSON");
        }
    }
}

/// Reads deltas until one satisfies `wanted`; every delta must follow the previous one.
async fn delta_where(socket: &mut Socket, seq: &mut u64, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = next_message(socket).await;
        assert_eq!(m["type"], "delta", "{m}");
        let this = m["seq"].as_u64().expect("seq");
        assert_eq!(this, *seq + 1, "deltas are numbered without gaps");
        *seq = this;
        if wanted(&m) {
            return m;
        }
    }
}

fn call_in<'a>(m: &'a Value, call_id: &str) -> Option<&'a Value> {
    m["calls"]
        .as_array()?
        .iter()
        .find(|c| c["call_id"] == call_id)
}

#[tokio::test]
async fn a_socket_gets_a_snapshot_then_a_delta_for_each_change() {
    let app = spawn_app().await;
    let mut socket = connect(&app).await;
    let snapshot = next_message(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["summary"]["active_calls"], 0);
    let mut seq = snapshot["seq"].as_u64().unwrap();

    assert_eq!(app.post_webhook(&fixture("02")).await.status(), 200);
    let ringing = delta_where(&mut socket, &mut seq, |m| call_in(m, CALL).is_some()).await;
    assert_eq!(call_in(&ringing, CALL).unwrap()["phase"], "ringing");
    assert_eq!(call_in(&ringing, CALL).unwrap()["direction"], "inbound");
    assert_eq!(ringing["summary"]["active_calls"], 1);
    assert_eq!(ringing["summary"]["callers_in_queue"], 1);

    for name in ["03", "04"] {
        assert_eq!(app.post_webhook(&fixture(name)).await.status(), 200);
    }
    let talking = delta_where(&mut socket, &mut seq, |m| {
        call_in(m, CALL).is_some_and(|c| c["phase"] == "talking")
    })
    .await;
    assert_eq!(talking["summary"]["callers_in_queue"], 0);
    assert!(call_in(&talking, CALL).unwrap()["answer_time"].is_string());

    assert_eq!(app.post_webhook(&fixture("05")).await.status(), 200);
    let ended = delta_where(&mut socket, &mut seq, |m| m["ended"] == json!([CALL])).await;
    assert_eq!(ended["summary"]["active_calls"], 0);
    assert_eq!(ended["recent_calls"][0]["call_id"], CALL);
    assert_eq!(ended["recent_calls"][0]["outcome"], "answered");

    let report = json!([{"id": "a1", "type": "agent_state", "at": "2026-11-23T12:00:00Z",
                         "agent_id": "alice", "state": "available"}]);
    assert_eq!(app.post_events(&report).await.status(), 200);
    let agents = delta_where(&mut socket, &mut seq, |m| {
        m["agents"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(agents["agents"][0]["agent_id"], "alice");
    assert_eq!(agents["agents"][0]["state"], "available");
    assert_eq!(agents["summary"]["agents"]["available"], 1);

    let (status, live) = app.get_json("/api/v1/live").await;
    assert_eq!(status, 200);
    assert_eq!(
        live["seq"].as_u64(),
        Some(seq),
        "the snapshot is as new as the last delta"
    );
    // The longest wait moves with the clock; every other figure must agree.
    let figures = |v: &Value| {
        let mut v = v["summary"].clone();
        v["longest_wait_seconds"] = Value::Null;
        v
    };
    assert_eq!(figures(&live), figures(&agents));
    assert_eq!(live["recent_calls"][0]["call_id"], CALL);
}

#[tokio::test]
async fn a_repeated_webhook_sends_no_delta() {
    let app = spawn_app().await;
    assert_eq!(app.post_webhook(&fixture("02")).await.status(), 200);
    app.settle().await;
    let mut socket = connect(&app).await;
    let snapshot = next_message(&mut socket).await;
    assert!(call_in(&snapshot, CALL).is_some(), "{snapshot}");
    assert_eq!(app.post_webhook(&fixture("02")).await.status(), 200);
    assert_eq!(app.post_webhook(&fixture("08")).await.status(), 200);
    let mut seq = snapshot["seq"].as_u64().unwrap();
    let next = delta_where(&mut socket, &mut seq, |_| true).await;
    // The first delta is about the abandoned call, which never was in progress here.
    assert_eq!(next["calls"], json!([]), "{next}");
    assert_eq!(next["ended"], json!([]), "{next}");
    assert_eq!(next["recent_calls"][0]["call_id"], "SCL_sUdeADeKCykW");
}

#[tokio::test]
async fn live_state_is_reloaded_after_a_restart() {
    let app = spawn_app().await;
    assert_eq!(app.post_webhook(&fixture("02")).await.status(), 200);
    assert_eq!(app.post_webhook(&fixture("08")).await.status(), 200);
    let report = json!([{"id": "b1", "type": "agent_state", "at": "2026-11-23T12:00:00Z",
                         "agent_id": "bob", "state": "away"}]);
    assert_eq!(app.post_events(&report).await.status(), 200);
    app.settle().await;
    let (again, _dir) = app.restart().await;
    let live: Value = reqwest::get(format!("http://{}/api/v1/live", again.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(call_in(&live, CALL).is_some(), "{live}");
    assert_eq!(live["summary"]["active_calls"], 1);
    assert_eq!(live["recent_calls"][0]["call_id"], "SCL_sUdeADeKCykW");
    assert_eq!(live["recent_calls"][0]["outcome"], "abandoned");
    assert_eq!(
        live["agents"],
        json!([{"agent_id": "bob", "state": "away", "reported_at": "2026-11-23T12:00:00.000Z"}])
    );
}
