//! Two server processes on one PostgreSQL database, fed the simulator's events of the same calls
//! interleaved between them, many sent to both at once: their CDRs and metrics equal those of
//! one SQLite instance fed the same events, and both live panels follow the one pipeline.

use crate::helpers::{EVENTS_TOKEN, KEY, SECRET, spawn_app};
use crate::pg::TestDb;
use callpulse_server::simulate::{Payload, random_call, wire};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// A `callpulse serve` process, killed when dropped.
struct Process {
    base: String,
    _child: tokio::process::Child,
}

async fn serve_process(database: &str) -> Process {
    let keys = format!("{KEY}:{SECRET}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-addr", "off"])
        .args(["--database", database, "--livekit-keys", &keys])
        .args(["--events-token", EVENTS_TOKEN])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the callpulse binary starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1)
                && line.contains("callpulse listening")
            {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server listens within a minute");
    // Keep reading stderr so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        base: format!("http://{addr}"),
        _child: child,
    }
}

/// Sends one payload to `base` as LiveKit or the application would.
async fn send(client: &reqwest::Client, base: &str, payload: &Payload) {
    let response = match payload {
        Payload::Webhook(body) => client
            .post(format!("{base}/webhooks/livekit"))
            .header("Content-Type", "application/webhook+json")
            .header("Authorization", wire::sign(body, KEY, SECRET).unwrap())
            .body(body.clone())
            .send()
            .await
            .unwrap(),
        Payload::App(value) => client
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(EVENTS_TOKEN)
            .json(&[value])
            .send()
            .await
            .unwrap(),
    };
    assert!(
        response.status().is_success(),
        "{base}: {}",
        response.status()
    );
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn all_cdrs(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let page = get(client, format!("{base}/api/v1/cdrs?limit=1000")).await;
    page["cdrs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("a CDR page: {page}"))
}

#[tokio::test]
async fn two_instances_on_postgres_equal_one_sqlite_instance() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut payloads: Vec<(i64, Payload)> = Vec::new();
    for i in 0..40 {
        let script = random_call(&mut rng, t0 + i * 7_000);
        for step in script.room.into_iter().chain(script.egress) {
            payloads.push((t0 + i * 7_000 + step.at_ms, step.payload));
        }
    }
    payloads.sort_by_key(|(at, _)| *at);

    let single = spawn_app().await;
    let client = reqwest::Client::new();
    for (_, payload) in &payloads {
        send(&client, &single.base, payload).await;
    }

    let db = TestDb::create().await;
    // Started together: the migrations and first partitions are made once, under a lock.
    let (a, b) = tokio::join!(serve_process(&db.url), serve_process(&db.url));
    // Shuffled within windows of 16 (late and early events), each to either instance, a third
    // of them to both at the same moment.
    let mut order: Vec<&Payload> = payloads.iter().map(|(_, p)| p).collect();
    for window in order.chunks_mut(16) {
        for i in (1..window.len()).rev() {
            window.swap(i, rng.gen_range(0..=i));
        }
    }
    for chunk in order.chunks(8) {
        let mut sends = Vec::new();
        for payload in chunk {
            let (first, other) = if rng.gen_bool(0.5) {
                (&a, &b)
            } else {
                (&b, &a)
            };
            sends.push(send(&client, &first.base, payload));
            if rng.gen_bool(0.33) {
                sends.push(send(&client, &other.base, payload));
            }
        }
        futures::future::join_all(sends).await;
    }

    single.settle().await;
    let expected = all_cdrs(&client, &single.base).await;
    assert!(expected.len() >= 40, "{} CDRs", expected.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (from_a, from_b) = (
            all_cdrs(&client, &a.base).await,
            all_cdrs(&client, &b.base).await,
        );
        if from_a == expected && from_b == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instances' CDRs never matched: {} and {} of {}",
            from_a.len(),
            from_b.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let from = chrono::DateTime::from_timestamp_millis(t0 - 3_600_000).unwrap();
    let to = chrono::Utc::now() + chrono::Duration::hours(2);
    for group in ["", "&group_by=trunk", "&group_by=agent", "&group_by=hour"] {
        let path = format!(
            "/api/v1/metrics?from={}&to={}{group}",
            from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let one = get(&client, format!("{}{path}", single.base)).await;
        assert!(one["totals"].is_object(), "{one}");
        assert_eq!(
            get(&client, format!("{}{path}", a.base)).await,
            one,
            "{path}"
        );
        assert_eq!(
            get(&client, format!("{}{path}", b.base)).await,
            one,
            "{path}"
        );
    }
    // Every row found its partition: the catch-all partitions are empty.
    let ingest = get(&client, format!("{}/api/v1/ingest", b.base)).await;
    let stranded = ingest["default_partition_rows"].as_object().unwrap();
    assert_eq!(stranded.len(), 6, "{ingest}");
    assert!(stranded.values().all(|rows| rows == 0), "{ingest}");
    // Each instance's live panel follows the one pipeline, whichever instance runs it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = |base: String| {
            let client = client.clone();
            async move {
                let v = get(&client, format!("{base}/api/v1/live")).await;
                let ids = |key: &str| -> Vec<Value> {
                    v[key]
                        .as_array()
                        .unwrap_or_else(|| panic!("{key} in {v}"))
                        .iter()
                        .map(|c| c["call_id"].clone())
                        .collect()
                };
                (ids("calls"), ids("recent_calls"), v["agents"].clone())
            }
        };
        let (la, lb, one) = (
            live(a.base.clone()).await,
            live(b.base.clone()).await,
            live(single.base.clone()).await,
        );
        if la == one && lb == one {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "live panels differ:\n{la:?}\n{lb:?}\n{one:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
