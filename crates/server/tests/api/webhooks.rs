//! `POST /webhooks/livekit`: signatures, duplicates, limits, quarantine, tolerant decoding.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn signed_sample_scenario_builds_an_answered_cdr() {
    let app = spawn_app().await;
    for name in ["01", "02", "03", "04", "05", "06", "07"] {
        let r = app.post_webhook(&fixture(name)).await;
        assert_eq!(r.status(), 200, "{name}");
    }
    let body = app
        .wait_for_cdr("SCL_9piNuUTbRzfj", |c| c["recording_url"].is_string())
        .await;
    let cdr = &body["cdr"];
    assert_eq!(cdr["outcome"], "answered");
    assert_eq!(cdr["start_time"], "2026-11-23T14:02:10.687Z");
    assert_eq!(cdr["answer_time"], "2026-11-23T14:02:12.000Z");
    assert_eq!(cdr["duration_seconds"], 186.0);
    assert_eq!(cdr["sip_error_code"], serde_json::Value::Null);
    assert_eq!(body["events"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn bearer_prefix_and_plain_json_content_type_are_accepted() {
    let app = spawn_app().await;
    let body = fixture("08");
    let r = app
        .post_webhook_raw(
            body.clone(),
            Some(format!("Bearer {}", sign(&body))),
            "application/json",
        )
        .await;
    assert_eq!(r.status(), 200);
    app.wait_for_cdr("SCL_sUdeADeKCykW", |c| c["outcome"] == "abandoned")
        .await;
}

#[tokio::test]
async fn second_configured_key_is_chosen_by_issuer() {
    let app = spawn_app().await;
    let body = fixture("09");
    let auth = sign_with(&body, KEY2, SECRET2, Duration::from_secs(300));
    let r = app
        .post_webhook_raw(body, Some(auth), "application/webhook+json")
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    let body = fixture("05");
    let other = fixture("06");
    let cases = [
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_string())),
        (
            "forged secret",
            Some(sign_with(
                &body,
                KEY,
                "wrong-secret-wrong-secret-wrong",
                Duration::from_secs(300),
            )),
        ),
        (
            "unknown key",
            Some(sign_with(
                &body,
                "APIunknown",
                SECRET,
                Duration::from_secs(300),
            )),
        ),
        ("other body", Some(sign(&other))),
        ("expired", Some(expired_token(&body))),
    ];
    for (why, auth) in cases {
        let r = app
            .post_webhook_raw(body.clone(), auth, "application/webhook+json")
            .await;
        let (status, json) = error_body(r).await;
        assert_eq!(status, 401, "{why}");
        assert_eq!(json["error"], "invalid_signature", "{why}");
    }
    assert_eq!(app.ingest_stats().await["events_in_log"], 0);
    assert_eq!(
        app.ingest_stats().await["since_start"]["webhooks_rejected"],
        6
    );
}

/// A token whose `exp` is ten minutes in the past, otherwise correct, built by hand as FACTS.md
/// §9 describes (the SDK refuses to make one).
fn expired_token(body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    use sha2::Digest;
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body));
    let now = chrono::Utc::now().timestamp();
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iss": KEY, "nbf": now - 900, "iat": now - 900, "exp": now - 600, "sha256": sha});
    let payload = b64(claims.to_string().as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test]
async fn duplicate_webhook_is_stored_once() {
    let app = spawn_app().await;
    let body = fixture("10");
    let first: serde_json::Value = app.post_webhook(&body).await.json().await.unwrap();
    let second: serde_json::Value = app.post_webhook(&body).await.json().await.unwrap();
    assert_eq!(first["status"], "stored");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(app.ingest_stats().await["events_in_log"], 1);
}

#[tokio::test]
async fn oversize_body_gets_413() {
    let app = spawn_app().await;
    let body = vec![b' '; MAX_BODY + 1];
    let auth = sign(&body);
    let (status, json) = error_body(
        app.post_webhook_raw(body, Some(auth), "application/webhook+json")
            .await,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(json["error"], "payload_too_large");
}

#[tokio::test]
async fn unsupported_content_type_gets_415() {
    let app = spawn_app().await;
    let body = fixture("10");
    let auth = sign(&body);
    let (status, _) = error_body(app.post_webhook_raw(body, Some(auth), "text/plain").await).await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn authentic_unparseable_bodies_are_quarantined_with_400() {
    let app = spawn_app().await;
    for body in [
        &b"this is not json"[..],
        b"[1,2,3]",
        b"{\"createdAt\": true}",
    ] {
        let auth = sign(body);
        let (status, json) = error_body(
            app.post_webhook_raw(body.to_vec(), Some(auth), "application/webhook+json")
                .await,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(json["error"], "unparseable_webhook");
    }
    let stats = app.ingest_stats().await;
    assert_eq!(stats["quarantined_in_store"], 3);
    assert_eq!(stats["since_start"]["webhooks_quarantined"], 3);
    assert_eq!(stats["events_in_log"], 0);
}

#[tokio::test]
async fn unknown_enum_value_is_stored_and_flagged_on_the_cdr() {
    let app = spawn_app().await;
    let body = String::from_utf8(fixture("09"))
        .unwrap()
        .replace("USER_REJECTED", "SOME_FUTURE_REASON")
        .into_bytes();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let cdr = app
        .wait_for_cdr("SCL_8piqEvbFWiyq", |c| c["outcome"] != "in_progress")
        .await;
    assert_eq!(cdr["cdr"]["disconnect_reason"], "SOME_FUTURE_REASON");
    let anomalies = cdr["cdr"]["anomalies"].as_array().unwrap();
    assert!(
        anomalies.iter().any(|a| a == "unknown_enum_value"),
        "{anomalies:?}"
    );
}

#[tokio::test]
async fn stored_events_survive_a_restart_and_the_pipeline_resumes() {
    let app = spawn_app().await;
    for name in ["08", "09"] {
        assert_eq!(app.post_webhook(&fixture(name)).await.status(), 200);
    }
    let (again, _dir) = app.restart().await;
    let stats: serde_json::Value = reqwest::get(format!("http://{}/api/v1/ingest", again.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["events_in_log"], 2);
    // The restarted pipeline builds the CDR from the log (asynchronously, so it is polled).
    let url = format!("http://{}/api/v1/cdrs/SCL_8piqEvbFWiyq", again.addr);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let cdr: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if cdr["cdr"]["outcome"] == "busy" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted pipeline never built the CDR: {cdr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A leg's CDR depends on its room's other SIP legs (their tracks are not answers), so their
/// events must rebuild it too: the live pipeline must agree with a rebuild whatever the order.
#[tokio::test]
async fn another_legs_late_join_rebuilds_this_leg() {
    use callpulse_server::simulate::wire::{self, Participant, Room};
    use livekit_protocol::{DisconnectReason, participant_info::Kind};
    use rand::SeedableRng;
    let app = spawn_app().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let t0 = 1_795_442_530_000;
    let room = Room {
        sid: "RM_two_legs".into(),
        name: "call-two-legs".into(),
        created_ms: t0,
    };
    let leg = |sid: &str, call: &str, inbound: bool, joined_ms: i64| {
        let mut attributes = std::collections::HashMap::from([
            ("sip.callID".to_string(), call.to_string()),
            (
                "sip.callStatus".to_string(),
                if inbound { "ringing" } else { "dialing" }.to_string(),
            ),
        ]);
        if inbound {
            attributes.insert("sip.ruleID".into(), "SDR_x".into());
        }
        Participant {
            sid: sid.into(),
            identity: format!("sip_{sid}"),
            name: String::new(),
            kind: Kind::Sip,
            joined_ms,
            attributes,
        }
    };
    let a = leg("PA_a", "SCL_legA", true, t0 + 300);
    let b = leg("PA_b", "SCL_legB", false, t0 + 2_000);
    let bodies = [
        wire::participant_joined(&mut rng, &room, &a),
        wire::track_published(&mut rng, &room, &b, t0 + 3_000),
        wire::participant_left(
            &mut rng,
            &room,
            &a,
            t0 + 20_000,
            Some("hangup"),
            DisconnectReason::ClientInitiated,
            false,
        ),
    ];
    for body in &bodies {
        assert_eq!(app.post_webhook(body).await.status(), 200);
    }
    app.settle().await;
    let before = app
        .wait_for_cdr("SCL_legA", |c| c["outcome"] != "in_progress")
        .await;
    assert_eq!(
        before["cdr"]["outcome"], "answered",
        "B's track looks like an agent until B is known"
    );
    let b_left = wire::participant_left(
        &mut rng,
        &room,
        &b,
        t0 + 25_000,
        Some("hangup"),
        DisconnectReason::ClientInitiated,
        false,
    );
    assert_eq!(app.post_webhook(&b_left).await.status(), 200);
    app.settle().await;
    let after = app
        .wait_for_cdr("SCL_legA", |c| c["outcome"] != "answered")
        .await;
    assert_eq!(after["cdr"]["outcome"], "abandoned");
}

#[tokio::test]
async fn application_events_alone_make_no_cdr() {
    let app = spawn_app().await;
    let batch = serde_json::json!([{"id": "w1", "type": "wrap_up", "at": "2026-11-23T10:00:00Z", "call_id": "SCL_typo", "seconds": 30}]);
    assert_eq!(app.post_events(&batch).await.status(), 200);
    app.settle().await;
    let (status, _) = app.get_json("/api/v1/cdrs/SCL_typo").await;
    assert_eq!(status, 404);
    assert_eq!(
        app.ingest_stats().await["events_in_log"],
        1,
        "the event is kept in the log"
    );
}

/// Past the ingest queue a webhook is refused at once with 503 and `Retry-After` (LiveKit
/// retries), and every webhook answered 200 is in the log.
#[tokio::test]
async fn an_overloaded_server_answers_503_at_once_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("o.db").display());
    let running = crate::helpers::start_with_args(
        &db,
        None,
        &["--ingest-queue", "1", "--ingest-max-batch", "1"],
    )
    .await;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let bodies: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            let mut v: serde_json::Value = serde_json::from_slice(&fixture("01")).unwrap();
            v["id"] = format!("EV_load_{i}").into();
            serde_json::to_vec(&v).unwrap()
        })
        .collect();
    let responses = futures::future::join_all(bodies.iter().map(|body| {
        client
            .post(format!("{base}/webhooks/livekit"))
            .header("Content-Type", "application/webhook+json")
            .header("Authorization", crate::helpers::sign(body))
            .body(body.clone())
            .send()
    }))
    .await;
    let (mut stored, mut refused) = (0, 0);
    for r in responses {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => stored += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "overloaded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "60 at once overflow a queue of one");
    assert!(stored > 0);
    assert_eq!(
        running.state.store.event_count().await.unwrap(),
        stored as i64
    );
    running.shutdown.cancel();
    running.join().await;
}

/// JSON nested far deeper than any real payload (the decoder stops at 128 levels) is refused with
/// 400, kept when authentic, and leaves the server serving.
#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let app = spawn_app().await;
    let depth = 25_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for body in [
        nested.clone(),
        format!("{{\"event\":\"room_started\",\"id\":\"EV_deep\",\"x\":{nested}}}"),
    ] {
        let body = body.into_bytes();
        let auth = sign(&body);
        let (status, json) = error_body(
            app.post_webhook_raw(body, Some(auth), "application/webhook+json")
                .await,
        )
        .await;
        assert_eq!(status, 400, "{json}");
        assert_eq!(json["error"], "unparseable_webhook");
    }
    let events = app
        .client
        .post(format!("{}/api/v1/events", app.base))
        .bearer_auth(EVENTS_TOKEN)
        .header("Content-Type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    let (status, json) = error_body(events).await;
    assert_eq!(status, 400, "{json}");
    // All three came with valid credentials, so all three are kept for inspection.
    let stats = app.ingest_stats().await;
    assert_eq!(stats["quarantined_in_store"], 3);
    assert_eq!(app.post_webhook(&fixture("01")).await.status(), 200);
}
