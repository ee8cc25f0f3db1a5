//! Read access: API tokens for the API, the live socket, the dashboard and `/metrics`; the
//! dashboard's login cookie; the refusal to serve a non-loopback address without a token.

use crate::helpers::{EVENTS_TOKEN, fixture, serve_args, sign, start_with_args};
use callpulse_server::app;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "read-token-for-tests-0001";
const OTHER_TOKEN: &str = "read-token-for-tests-0002";

struct Guarded {
    running: app::Running,
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn guarded() -> Guarded {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("auth.db").display());
    let tokens = format!("{TOKEN},{OTHER_TOKEN}");
    let running = start_with_args(&db, None, &["--api-token", &tokens]).await;
    Guarded {
        base: format!("http://{}", running.addr),
        running,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    }
}

impl Guarded {
    async fn get(&self, path: &str, auth: Option<(&str, String)>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        req.send().await.unwrap()
    }
}

#[tokio::test]
async fn reading_needs_one_of_the_tokens_and_ingest_keeps_its_own_credentials() {
    let app = guarded().await;
    for path in [
        "/api/v1/cdrs",
        "/api/v1/metrics",
        "/api/v1/summary",
        "/api/v1/live",
        "/api/v1/ingest",
        "/api/v1/alerts",
    ] {
        let r = app.get(path, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{path}: {body}");
        let wrong = app
            .get(
                path,
                Some(("authorization", "Bearer read-token-for-tests-0003".into())),
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        for token in [TOKEN, OTHER_TOKEN] {
            let ok = app
                .get(path, Some(("authorization", format!("Bearer {token}"))))
                .await;
            assert_eq!(ok.status(), StatusCode::OK, "{path}");
        }
    }
    // The events token does not read, and the read token does not write events.
    let r = app
        .get(
            "/api/v1/cdrs",
            Some(("authorization", format!("Bearer {EVENTS_TOKEN}"))),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .post(format!("{}/api/v1/events", app.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Webhooks need LiveKit's signature only; health checks need nothing.
    let body = fixture("01");
    let r = app
        .client
        .post(format!("{}/webhooks/livekit", app.base))
        .header(AUTHORIZATION, sign(&body))
        .header("Content-Type", "application/webhook+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    // `/metrics` on its own listener asks for the same tokens.
    let metrics = format!("http://{}/metrics", app.running.metrics_addr.unwrap());
    let r = app.client.get(&metrics).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .get(&metrics)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_dashboard_logs_in_once_and_keeps_the_token_in_a_strict_http_only_cookie() {
    let app = guarded().await;
    let r = app.get("/", None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    let form = app.get("/login", None).await;
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("name=\"token\""));

    let wrong = app
        .client
        .post(format!("{}/login", app.base))
        .form(&[("token", "read-token-for-tests-0009")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let ok = app
        .client
        .post(format!("{}/login", app.base))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = app.get("/", Some(("cookie", session.clone()))).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Log out"));
    let live = app
        .get("/api/v1/live", Some(("cookie", session.clone())))
        .await;
    assert_eq!(live.status(), StatusCode::OK);

    // The live socket: with the cookie from this origin, yes; from another origin, no.
    let ws = format!("{}/api/v1/live/ws", app.base.replace("http://", "ws://"));
    let handshake = |origin: &str| {
        let mut request = ws.as_str().into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert(COOKIE, session.parse().unwrap());
        headers.insert("origin", origin.parse().unwrap());
        request
    };
    assert!(
        tokio_tungstenite::connect_async(handshake(&app.base))
            .await
            .is_ok()
    );
    let request = handshake("http://evil.example");
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a cross-origin socket must be refused: {other:?}"),
    }
    match tokio_tungstenite::connect_async(ws.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a socket without a token must be refused: {other:?}"),
    }

    let out = app
        .client
        .post(format!("{}/logout", app.base))
        .header(COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn a_public_address_without_a_token_is_refused_unless_insecure_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("open.db").display());
    let refused = app::start(serve_args(&db, &["--listen", "0.0.0.0:0"])).await;
    let message = format!("{:#}", refused.err().expect("must refuse to start"));
    assert!(message.contains("without an API token"), "{message}");
    assert!(message.contains("--insecure-no-auth"), "{message}");

    let weak = app::start(serve_args(&db, &["--api-token", "short"])).await;
    let message = format!("{:#}", weak.err().expect("must refuse a weak token"));
    assert!(message.contains("shorter than 16"), "{message}");
    assert!(
        !message.contains("short\""),
        "the token itself is never shown"
    );

    let running = app::start(serve_args(
        &db,
        &["--listen", "0.0.0.0:0", "--insecure-no-auth"],
    ))
    .await
    .expect("explicitly insecure starts");
    let r = reqwest::get(format!(
        "http://127.0.0.1:{}/api/v1/cdrs",
        running.addr.port()
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    running.shutdown.cancel();
    running.join().await;

    // On loopback with no token, reading is open (the default for a local try-out).
    let local = start_with_args(&db, None, &[]).await;
    let page = reqwest::get(format!("http://{}/", local.addr))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(!page.text().await.unwrap().contains("Log out"));
}
