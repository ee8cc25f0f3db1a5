//! Live fan-out benchmark: webhook ingest with N WebSocket clients watching, against the same
//! ingest with none, in the same run; and the time from a webhook's 200 to its delta at a client.
//!
//! For each client count it starts the real server (SQLite in a temp dir) in this process,
//! connects the clients, then posts new inbound calls (`participant_joined`, signed as LiveKit
//! signs) from 16 concurrent senders. Every client reads every message; one of them times the
//! arrival of the delta that carries each call.
//!
//! usage: cargo bench --bench live_fanout -- [--webhooks 3000] [--clients 0,100,500]

mod common;

use common::{joined, post_webhook};
use futures::StreamExt;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const SENDERS: usize = 16;

fn args() -> (usize, Vec<usize>) {
    let argv: Vec<String> = std::env::args().collect();
    let mut webhooks = 3000;
    let mut clients = vec![0, 100, 500];
    for pair in argv.windows(2) {
        match pair[0].as_str() {
            "--webhooks" => webhooks = pair[1].parse().expect("--webhooks N"),
            "--clients" => {
                clients = pair[1]
                    .split(',')
                    .map(|n| n.parse().expect("--clients N,N"))
                    .collect()
            }
            _ => {}
        }
    }
    (webhooks, clients)
}

struct Run {
    webhooks_per_s: f64,
    latencies_ms: Vec<f64>,
    messages_per_client: f64,
}

async fn run(webhooks: usize, clients: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fan.db").display());
    let running = common::start_server(&db).await;
    let base = format!("http://{}", running.addr);
    let ws_url = format!("ws://{}/api/v1/live/ws", running.addr);

    // Every client reads everything; client 0 notes when each call first appears.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for c in 0..clients {
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let seen = seen.clone();
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if c == 0 {
                        let now = Instant::now();
                        let mut seen = seen.lock().unwrap();
                        for part in text.as_str().split("\"call_id\":\"").skip(1) {
                            if let Some(id) = part.split('"').next() {
                                seen.entry(id.to_owned()).or_insert(now);
                            }
                        }
                    }
                }
            }
        }));
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let bodies: Vec<(String, Vec<u8>)> = (0..webhooks).map(|i| joined(i, &mut rng)).collect();
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut senders = Vec::new();
    for chunk in bodies.chunks(webhooks.div_ceil(SENDERS)) {
        let chunk = chunk.to_vec();
        let client = client.clone();
        let base = base.clone();
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            for (call_id, body) in chunk {
                post_webhook(&client, &base, body).await;
                acked.lock().unwrap().insert(call_id, Instant::now());
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed();

    // Wait for the deltas to reach client 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients > 0 && seen.lock().unwrap().len() < webhooks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies_ms = Vec::new();
    {
        let seen = seen.lock().unwrap();
        for (call, at) in acked.lock().unwrap().iter() {
            if let Some(arrived) = seen.get(call) {
                latencies_ms.push(arrived.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    let messages_per_client = if clients == 0 {
        0.0
    } else {
        received.load(std::sync::atomic::Ordering::Relaxed) as f64 / clients as f64
    };
    running.shutdown.cancel();
    for r in readers {
        r.abort();
    }
    Run {
        webhooks_per_s: webhooks as f64 / elapsed.as_secs_f64(),
        latencies_ms,
        messages_per_client,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let (webhooks, clients) = args();
    println!(
        "{:>8} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "clients", "webhooks/s", "ratio", "p50 ms", "p99 ms", "max ms", "delivered", "msgs/client"
    );
    let mut baseline = None;
    for n in clients {
        let r = run(webhooks, n).await;
        let base = *baseline.get_or_insert(r.webhooks_per_s);
        println!(
            "{:>8} {:>12.0} {:>9.2} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>12.0}",
            n,
            r.webhooks_per_s,
            r.webhooks_per_s / base,
            percentile(&r.latencies_ms, 0.5),
            percentile(&r.latencies_ms, 0.99),
            r.latencies_ms.last().copied().unwrap_or(f64::NAN),
            if n == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", r.latencies_ms.len(), webhooks)
            },
            r.messages_per_client,
        );
    }
    println!(
        "\n{webhooks} new calls per row from {SENDERS} senders; SQLite; ratio = webhooks/s against the first row \
         (clients run in the same process, on the same cores); latency = webhook's 200 to the delta at a client"
    );
}
