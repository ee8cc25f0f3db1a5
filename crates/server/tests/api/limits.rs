//! Connection and request limits against clients that hold the server up: headers sent slowly
//! (slow-loris), bodies that never finish, oversized heads, more connections than allowed.

use crate::helpers::start_with_args;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(extra: &[&str]) -> (callpulse_server::app::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("limits.db").display());
    (start_with_args(&db, None, extra).await, dir)
}

/// Reads until the server closes the connection (or 10 s pass); returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn headers_sent_too_slowly_get_the_connection_closed() {
    let (app, _dir) = server(&["--header-timeout-seconds", "0.5"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the connection stayed open {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A prompt client is still served.
    let r = reqwest::get(format!("http://{}/healthz", app.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_as_json() {
    let (app, _dir) = server(&["--request-timeout-seconds", "0.5"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nContent-Type: application/webhook+json\r\n\
              Authorization: whatever\r\nContent-Length: 1000\r\n\r\n{\"event\":",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let (app, _dir) = server(&[]).await;
    let r = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.addr))
        .header("X-Big", "a".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let (app, _dir) = server(&["--max-connections", "2", "--header-timeout-seconds", "30"]).await;
    let idle_a = TcpStream::connect(app.addr).await.unwrap();
    let _idle_b = TcpStream::connect(app.addr).await.unwrap();
    // Both permits are taken by silent connections; give the server a moment to accept them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("http://{}/healthz", app.addr);
    let client = reqwest::Client::new();
    let third = client
        .get(&url)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(third.is_err(), "a third connection must wait: {third:?}");
    drop(idle_a);
    let fourth = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served once a connection closed");
    assert_eq!(fourth.status(), 200);
}

#[tokio::test]
async fn live_sockets_past_their_cap_get_503_until_one_closes() {
    let (app, _dir) = server(&["--max-live-clients", "2"]).await;
    let url = format!("ws://{}/api/v1/live/ws", app.addr);
    let first = tokio_tungstenite::connect_async(&url).await.unwrap().0;
    let _second = tokio_tungstenite::connect_async(&url).await.unwrap().0;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third socket must be refused: {other:?}"),
    }
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio_tungstenite::connect_async(&url).await.is_err() {
        assert!(Instant::now() < deadline, "the seat was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
