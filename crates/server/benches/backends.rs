//! PostgreSQL beside SQLite, same data, same run: webhook ingest through the real server, the
//! CDR pipeline behind it, loading CDRs (with their rollups), and the dashboard's query set
//! through the metric engine. Each backend gets a fresh database; the PostgreSQL one is created
//! on the server named by `CALLPULSE_BENCH_POSTGRES` (an admin URL; default the local cluster as
//! user postgres) and dropped at the end.
//!
//! usage: cargo bench --bench backends -- [--webhooks 5000] [--cdrs 200000] [--runs 7]

mod common;

use callpulse_core::Timestamp;
use callpulse_core::metrics::MetricParams;
use callpulse_server::metrics;
use callpulse_server::store::{self, Store};
use common::{Databases, generate, joined, median, post_webhook, start_server};
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SENDERS: usize = 16;

struct Args {
    webhooks: usize,
    cdrs: usize,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        webhooks: 5000,
        cdrs: 200_000,
        runs: 7,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        let n = pair[1].replace('_', "").parse().ok();
        match (pair[0].as_str(), n) {
            ("--webhooks", Some(n)) => a.webhooks = n,
            ("--cdrs", Some(n)) => a.cdrs = n,
            ("--runs", Some(n)) => a.runs = n,
            _ => {}
        }
    }
    a
}

/// Webhooks/s through the real server, and CDRs/s until the pipeline has built them all.
async fn ingest(database: &str, webhooks: usize) -> (f64, f64) {
    let running = start_server(database).await;
    let base = format!("http://{}", running.addr);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let bodies: Vec<Vec<u8>> = (0..webhooks).map(|i| joined(i, &mut rng).1).collect();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut senders = Vec::new();
    for chunk in bodies.chunks(webhooks.div_ceil(SENDERS)) {
        let chunk = chunk.to_vec();
        let client = client.clone();
        let base = base.clone();
        senders.push(tokio::spawn(async move {
            for body in chunk {
                post_webhook(&client, &base, body).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let store = running.state.store.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open = store.open_cdrs().await.unwrap().len();
        if open >= webhooks || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let built_secs = started.elapsed().as_secs_f64();
    running.shutdown.cancel();
    running.join().await;
    (webhooks as f64 / ingest_secs, webhooks as f64 / built_secs)
}

/// CDRs/s loading `cdrs` through the store (rows and rollups).
async fn load(store: &dyn Store, cdrs: &[callpulse_core::Cdr], now: i64) -> f64 {
    let t = Instant::now();
    for chunk in cdrs.chunks(5_000) {
        store.upsert_cdrs(chunk, Timestamp(now)).await.unwrap();
    }
    cdrs.len() as f64 / t.elapsed().as_secs_f64()
}

/// The median ms of each dashboard query, and their answers (to check both backends agree).
async fn queries(store: &dyn Store, now: i64, runs: usize) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for case in common::dashboard_cases(now) {
        let q = case.query();
        let mut times = Vec::new();
        let mut answer = String::new();
        for _ in 0..runs {
            let t = Instant::now();
            let a = metrics::query(store, &q).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            answer = format!("{:?} {:?}", a.totals, a.groups);
        }
        out.push((median(times), answer));
    }
    out
}

#[tokio::main]
async fn main() {
    let args = args();
    let dbs = Databases::create("ingest").await;
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", "SQLite", "PostgreSQL", "PG/SQLite"
    );
    let (sqlite_in, sqlite_built) = ingest(&dbs.sqlite, args.webhooks).await;
    let (pg_in, pg_built) = ingest(&dbs.postgres, args.webhooks).await;
    let row = |name: &str, s: f64, p: f64, unit: &str| {
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>8.2}  {unit}",
            name,
            s,
            p,
            p / s
        );
    };
    row("webhook ingest", sqlite_in, pg_in, "webhooks/s");
    row("ingest until CDRs built", sqlite_built, pg_built, "calls/s");
    dbs.drop().await;

    let now = chrono::Utc::now().timestamp_millis();
    let cdrs = generate(args.cdrs, 500, now);
    let dbs = Databases::create("queries").await;
    let params = MetricParams::default();
    let sqlite: Arc<dyn Store> = store::open(&dbs.sqlite, params).await.unwrap();
    let pg: Arc<dyn Store> = store::open(&dbs.postgres, params).await.unwrap();
    let (s, p) = (
        load(sqlite.as_ref(), &cdrs, now).await,
        load(pg.as_ref(), &cdrs, now).await,
    );
    row("load CDRs with rollups", s, p, "CDRs/s");
    // Back-filled days sit in the default partitions until maintenance adopts them.
    pg.maintain(Timestamp(now), &store::RetentionPolicy::KEEP_ALL)
        .await
        .unwrap();
    drop(cdrs);
    let sq = queries(sqlite.as_ref(), now, args.runs).await;
    let pq = queries(pg.as_ref(), now, args.runs).await;
    let mut agree = true;
    let (mut st, mut pt) = (0.0, 0.0);
    for (case, ((s, sa), (p, pa))) in common::dashboard_cases(now).iter().zip(sq.iter().zip(&pq)) {
        agree &= sa == pa;
        st += s;
        pt += p;
        println!(
            "{:<34} {:>12.3} {:>12.3} {:>8.2}  ms{}",
            case.name,
            s,
            p,
            p / s,
            if sa == pa { "" } else { "  (answers differ!)" }
        );
    }
    println!(
        "{:<34} {:>12.3} {:>12.3} {:>8.2}  ms",
        "whole query set",
        st,
        pt,
        pt / st
    );
    println!(
        "\n{} new calls from {SENDERS} senders through the real server; {} CDRs over 60 days; \
         medians of {} runs; both stores in this process, on this machine",
        args.webhooks, args.cdrs, args.runs
    );
    drop((sqlite, pg));
    dbs.drop().await;
    if !agree {
        eprintln!("the backends' answers differ");
        std::process::exit(1);
    }
}
