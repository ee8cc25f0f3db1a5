//! Alerting through the real server: rules from a config file, notices delivered to a local
//! receiver standing in for Slack, PagerDuty and a generic webhook (with a 500 first), resolution,
//! and delivery exactly once across a restart.

use crate::helpers::{Service, TestApp, serve_process, spawn_app_with_config, start_service};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use callpulse_server::simulate::wire::{self, Participant, Room};
use livekit_protocol::DisconnectReason;
use livekit_protocol::participant_info::Kind;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got: its path, headers and body.
type Seen = (String, HeaderMap, Vec<u8>);

/// What the receiver saw, per path.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answer 500 to this many requests per path before accepting.
    failures: Arc<Mutex<HashMap<String, usize>>>,
}

impl Receiver {
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }

    async fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bodies = self.bodies(path);
            if bodies.len() >= n {
                return bodies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {} of {n} requests: {bodies:?}",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.seen
        .lock()
        .unwrap()
        .push((path.clone(), headers, body.to_vec()));
    let mut failures = r.failures.lock().unwrap();
    match failures.get_mut(&path) {
        Some(n) if *n > 0 => {
            *n -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::ACCEPTED,
    }
}

async fn start_receiver(receiver: Receiver) -> String {
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Alerts evaluated every second; `failing_calls` fires above 50 % errors with 3 calls or more.
const FAST_FAILING_CALLS: &str = r#"
[alerts]
defaults = false
interval_seconds = 1
dashboard_url = "http://callpulse.test/"

[[alerts.rules]]
name = "failing_calls"
metric = "error_rate"
op = ">"
threshold = 0.5
clear = 0.4
window = "30m"
min_sample = 3
severity = "critical"
labels = { team = "voice" }
"#;

fn config(receiver: &str) -> String {
    format!(
        r#"{FAST_FAILING_CALLS}
[[alerts.channels]]
name = "chat"
type = "slack"
url = "{receiver}/slack"

[[alerts.channels]]
name = "pager"
type = "pagerduty"
url = "{receiver}/pagerduty"
routing_key = "ROUTING-KEY"

[[alerts.channels]]
name = "hook"
type = "webhook"
url = "{receiver}/hook"
secret = "hook-secret"
"#
    )
}

/// An outbound call that ended a minute ago: failed at the trunk, or answered.
async fn post_outbound_call(app: &impl PostWebhook, n: usize, failed: bool) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = now - 60_000;
    let room = Room {
        sid: format!("RM_alert{n}"),
        name: format!("outbound-alert-{n}"),
        created_ms: t0,
    };
    let callee = Participant {
        sid: format!("PA_alert{n}"),
        identity: format!("sip_+1555000{n:04}"),
        name: String::new(),
        kind: Kind::Sip,
        joined_ms: t0,
        attributes: HashMap::from([
            ("sip.callID".to_string(), format!("SCL_alert{n:04}")),
            ("sip.callStatus".to_string(), "dialing".to_string()),
            ("sip.trunkID".to_string(), "ST_alerting".to_string()),
        ]),
    };
    let (status, reason) = if failed {
        ("dialing", DisconnectReason::SipTrunkFailure)
    } else {
        ("hangup", DisconnectReason::ClientInitiated)
    };
    for body in [
        wire::participant_joined(&mut rng, &room, &callee),
        wire::participant_left(
            &mut rng,
            &room,
            &callee,
            t0 + 20_000,
            Some(status),
            reason,
            false,
        ),
    ] {
        assert_eq!(app.post_signed(&body).await, 200);
    }
}

/// Anything that can post a signed webhook: an in-process app or a server process.
trait PostWebhook {
    async fn post_signed(&self, body: &[u8]) -> u16;
}

impl PostWebhook for TestApp {
    async fn post_signed(&self, body: &[u8]) -> u16 {
        self.post_webhook(body).await.status().as_u16()
    }
}

impl PostWebhook for crate::helpers::RemoteApp {
    async fn post_signed(&self, body: &[u8]) -> u16 {
        self.post_webhook(body).await.status().as_u16()
    }
}

#[tokio::test]
async fn an_alert_fires_and_resolves_on_every_channel_with_retries_and_a_signature() {
    let receiver = Receiver::default();
    receiver.failures.lock().unwrap().insert("hook".into(), 1);
    let url = start_receiver(receiver.clone()).await;
    let app = spawn_app_with_config(&config(&url)).await;

    for n in 0..4 {
        post_outbound_call(&app, n, true).await;
    }
    let slack = receiver.wait_for("slack", 1).await;
    assert!(
        slack[0]["text"].as_str().unwrap().contains("FIRING"),
        "{slack:?}"
    );
    let pager = receiver.wait_for("pagerduty", 1).await;
    assert_eq!(pager[0]["event_action"], "trigger");
    assert_eq!(pager[0]["routing_key"], "ROUTING-KEY");
    assert_eq!(pager[0]["payload"]["severity"], "critical");
    assert_eq!(pager[0]["payload"]["custom_details"]["sample"], 4);

    // The webhook answered 500 once: the same notice came again and was accepted.
    let hooks = receiver.wait_for("hook", 2).await;
    assert_eq!(hooks[0], hooks[1], "the retry carries the same notice");
    assert_eq!(hooks[0]["status"], "firing");
    assert_eq!(hooks[0]["value"], 1.0);
    assert_eq!(hooks[0]["threshold"], 0.5);
    assert_eq!(hooks[0]["window_seconds"], 1800);
    assert_eq!(hooks[0]["labels"]["team"], "voice");
    assert_eq!(hooks[0]["dashboard_url"], "http://callpulse.test/");
    {
        let seen = receiver.seen.lock().unwrap();
        let (_, headers, body) = seen.iter().find(|(p, _, _)| p == "hook").unwrap();
        let signature = headers["x-callpulse-signature"].to_str().unwrap();
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(signature, format!("sha256={hex}"));
    }
    let (_, live) = app.get_json("/api/v1/live").await;
    assert_eq!(live["summary"]["active_alerts"], 1, "{live}");
    assert_eq!(live["alerts"][0]["alert"], "failing_calls");

    // 4 failed of 14 is 29 %, under the 40 % clear threshold.
    for n in 10..20 {
        post_outbound_call(&app, n, false).await;
    }
    let pager = receiver.wait_for("pagerduty", 2).await;
    assert_eq!(pager[1]["event_action"], "resolve");
    assert_eq!(pager[1]["dedup_key"], pager[0]["dedup_key"]);
    let slack = receiver.wait_for("slack", 2).await;
    assert!(slack[1]["text"].as_str().unwrap().contains("RESOLVED"));
    let hooks = receiver.wait_for("hook", 3).await;
    assert_eq!(hooks[2]["status"], "resolved");
    assert!(hooks[2]["ended_at"].is_string());
    assert!(
        hooks[2]["summary"]
            .as_str()
            .unwrap()
            .starts_with("failing_calls resolved: error_rate 28.6% over 30m (14 calls)"),
        "{}",
        hooks[2]["summary"]
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, alerts) = app.get_json("/api/v1/alerts").await;
        let recent = alerts["recent"].as_array().unwrap();
        if recent.iter().all(|n| n["pending_deliveries"] == 0) {
            assert_eq!(alerts["active"], serde_json::json!([]));
            assert_eq!(recent.len(), 2, "one firing and one resolved notice");
            assert_eq!(recent[0]["status"], "resolved");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{alerts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.bodies("pagerduty").len(), 2, "nothing fires twice");
}

#[tokio::test]
async fn a_trunk_fires_after_five_failures_in_a_row_and_clears_after_three_successes() {
    let receiver = Receiver::default();
    let url = start_receiver(receiver.clone()).await;
    let config = format!(
        r#"
[alerts]
defaults = false
interval_seconds = 1

[[alerts.rules]]
name = "trunk_unhealthy"
metric = "error_rate"
op = ">"
threshold = 0.2
window = "10m"
min_sample = 50
per = "trunk"
or_consecutive_failures = 5
clear_after_successes = 3
severity = "critical"

[[alerts.channels]]
name = "hook"
type = "webhook"
url = "{url}/hook"
"#
    );
    let app = spawn_app_with_config(&config).await;
    for n in 0..4 {
        post_outbound_call(&app, n, true).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.bodies("hook").is_empty(),
        "four in a row is not five"
    );
    post_outbound_call(&app, 4, true).await;
    let fired = receiver.wait_for("hook", 1).await;
    assert_eq!(fired[0]["key"], "trunk_id=ST_alerting");
    assert_eq!(fired[0]["labels"]["trunk_id"], "ST_alerting");
    assert_eq!(fired[0]["failed_in_row"], 5);
    assert!(
        fired[0]["summary"]
            .as_str()
            .unwrap()
            .ends_with("; 5 failed calls in a row"),
        "{}",
        fired[0]["summary"]
    );
    for n in 10..12 {
        post_outbound_call(&app, n, false).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.bodies("hook").len(),
        1,
        "two successes do not clear it"
    );
    post_outbound_call(&app, 12, false).await;
    let resolved = receiver.wait_for("hook", 2).await;
    assert_eq!(resolved[1]["status"], "resolved");
    assert_eq!(resolved[1]["key"], "trunk_id=ST_alerting");
}

#[tokio::test]
async fn notices_pending_at_a_kill_9_are_delivered_once_after_the_restart() {
    let receiver = Receiver::default();
    // The webhook receiver refuses (500) three times before it accepts.
    receiver.failures.lock().unwrap().insert("hook".into(), 3);
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = serve_process(dir.path(), &config(&url), "127.0.0.1:0").await;
    let client = TestApp::client_for(&first.base);
    for n in 0..4 {
        post_outbound_call(&client, n, true).await;
    }
    receiver.wait_for("hook", 1).await;
    // SIGKILL while the webhook delivery is pending (its retry is a second away).
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    assert!(
        receiver.bodies("hook").len() < 4,
        "still pending when killed"
    );

    let again = serve_process(dir.path(), &config(&url), "127.0.0.1:0").await;
    receiver.wait_for("hook", 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hooks = receiver.bodies("hook");
    assert_eq!(
        hooks.len(),
        4,
        "three refusals, then one acceptance: {hooks:?}"
    );
    assert!(hooks.iter().all(|h| h["status"] == "firing"));
    assert!(
        hooks
            .iter()
            .all(|h| h["notice_id"] == hooks[0]["notice_id"]),
        "the same notice, never a second firing"
    );
    assert_eq!(
        receiver.bodies("slack").len(),
        1,
        "slack had it before the kill, not again"
    );
    assert_eq!(receiver.bodies("pagerduty").len(), 1);
    let alerts: Value = reqwest::get(format!("{}/api/v1/alerts", again.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        alerts["active"].as_array().unwrap().len(),
        1,
        "still firing after the restart"
    );
    assert_eq!(
        alerts["recent"].as_array().unwrap().len(),
        1,
        "one notice in all"
    );
    assert_eq!(alerts["recent"][0]["pending_deliveries"], 0);
}

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port.
async fn start_alertmanager() -> Service {
    let binary = std::env::var("CALLPULSE_ALERTMANAGER")
        .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".into());
    start_service(
        &binary,
        "prometheus-alertmanager",
        "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n",
        |config, data, port| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
            ]
        },
    )
    .await
}

/// Alertmanager's active alerts named `name`.
async fn active_in(am: &Service, name: &str) -> Vec<Value> {
    let alerts: Vec<Value> = reqwest::get(format!("{}/api/v2/alerts", am.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["status"]["state"] == "active")
        .collect()
}

#[tokio::test]
async fn a_real_alertmanager_shows_the_alert_and_then_its_resolution() {
    let am = start_alertmanager().await;
    let config = format!(
        r#"{FAST_FAILING_CALLS}
[[alerts.channels]]
name = "am"
type = "alertmanager"
url = "{}"
"#,
        am.url
    );
    let app = spawn_app_with_config(&config).await;
    for n in 0..4 {
        post_outbound_call(&app, n, true).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let alert = loop {
        if let Some(a) = active_in(&am, "failing_calls").await.pop() {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], "callpulse");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("failing_calls: error_rate 100.0% > 50.0%"),
        "{alert}"
    );
    assert_eq!(alert["generatorURL"], "http://callpulse.test/");

    for n in 10..20 {
        post_outbound_call(&app, n, false).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !active_in(&am, "failing_calls").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alertmanager still shows the alert after it resolved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, alerts) = app.get_json("/api/v1/alerts").await;
    assert_eq!(alerts["recent"][0]["status"], "resolved");
}
