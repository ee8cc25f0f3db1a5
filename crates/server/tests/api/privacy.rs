//! `--mask-numbers`: no phone number leaves the server whole, in any read path.

use crate::helpers::{TestApp, app_with_samples, fixture, start_with_args};
use std::time::Duration;

const SAMPLES: [&str; 12] = [
    "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12",
];

/// Every phone number in the LiveKit samples (`+` and 10 or more digits).
fn sample_numbers() -> Vec<String> {
    let mut numbers = Vec::new();
    for name in SAMPLES {
        let text = String::from_utf8(fixture(name)).unwrap();
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices('+') {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits >= 10 {
                numbers.push(text[i..i + 1 + digits].to_owned());
            }
        }
    }
    numbers.sort();
    numbers.dedup();
    numbers
}

/// What each read path answers, as text.
async fn everything_readable(base: &str) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let cdrs: serde_json::Value = client
        .get(format!("{base}/api/v1/cdrs?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut paths: Vec<String> = [
        "/api/v1/cdrs?limit=100",
        "/api/v1/cdrs?format=csv",
        "/api/v1/cdrs?format=ndjson",
        "/api/v1/live",
    ]
    .map(String::from)
    .to_vec();
    for cdr in cdrs["cdrs"].as_array().unwrap() {
        paths.push(format!("/api/v1/cdrs/{}", cdr["call_id"].as_str().unwrap()));
    }
    let mut out = Vec::new();
    for path in paths {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        out.push((path, r.text().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn masked_numbers_show_only_their_last_four_digits_everywhere() {
    let numbers = sample_numbers();
    assert!(numbers.len() >= 4, "{numbers:?}");

    // Without the flag the numbers are there (so the check below can fail).
    let plain = app_with_samples().await;
    let shown: String = everything_readable(&plain.base)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert!(numbers.iter().any(|n| shown.contains(n.as_str())));

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("masked.db").display());
    let running = start_with_args(&db, None, &["--mask-numbers"]).await;
    let base = format!("http://{}", running.addr);
    let app = TestApp::client_for(&base);
    for name in SAMPLES {
        assert_eq!(app.post_webhook(&fixture(name)).await.status(), 200);
    }
    // Wait until the pipeline has built as many CDRs as the unmasked server holds.
    let want = plain.get_json("/api/v1/cdrs?limit=100").await.1["cdrs"]
        .as_array()
        .unwrap()
        .len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: serde_json::Value = reqwest::get(format!("{base}/api/v1/cdrs?limit=100"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if got["cdrs"].as_array().unwrap().len() == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "CDRs never built");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut masked_seen = false;
    for (path, text) in everything_readable(&base).await {
        for number in &numbers {
            // Neither the whole number nor any 7 of its digits in a row.
            let tail = &number[number.len() - 7..];
            assert!(!text.contains(tail), "{path} shows {number}: {text}");
            let masked = format!(
                "+{}{}",
                "*".repeat(number.len() - 5),
                &number[number.len() - 4..]
            );
            masked_seen |= text.contains(&masked);
        }
    }
    assert!(masked_seen, "masked numbers keep their last four digits");
}

#[tokio::test]
async fn hashed_numbers_never_reach_the_disk_and_a_caller_stays_recognisable() {
    let numbers = sample_numbers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hashed.db");
    let db = format!("sqlite://{}", path.display());
    let running = start_with_args(
        &db,
        None,
        &[
            "--hash-numbers",
            "--number-hash-key",
            "a-secret-key-for-tests-01",
        ],
    )
    .await;
    let base = format!("http://{}", running.addr);
    let app = TestApp::client_for(&base);
    for name in SAMPLES {
        assert_eq!(
            app.post_webhook(&fixture(name)).await.status(),
            200,
            "{name}"
        );
    }
    // Fixtures 02 and 05 are the same inbound caller (+15105550123) joining and leaving.
    let call = "SCL_9piNuUTbRzfj";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let cdr = loop {
        let r = reqwest::get(format!("{base}/api/v1/cdrs/{call}"))
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        if status == 200 && body["cdr"]["outcome"] != "in_progress" {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caller = cdr["cdr"]["caller_number"].as_str().unwrap();
    assert!(
        caller.starts_with('~') && caller.len() == 17,
        "a token, not a number: {caller}"
    );
    let same_key =
        callpulse_server::privacy::NumberHasher::new("a-secret-key-for-tests-01").unwrap();
    assert_eq!(caller, same_key.token("15105550123"));
    running.shutdown.cancel();
    running.join().await;

    let mut on_disk = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("hashed.db-wal")) {
        on_disk.extend(wal);
    }
    let on_disk = String::from_utf8_lossy(&on_disk);
    assert!(on_disk.contains(caller), "the token is what is stored");
    for number in &numbers {
        assert!(
            !on_disk.contains(&number[number.len() - 7..]),
            "{number} is on disk"
        );
    }
}
