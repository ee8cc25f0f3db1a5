//! Dashboard query benchmark: the metric engine (rollups) against a plain SQL `GROUP BY` over the
//! CDR table, on the same database, in the same run.
//!
//! It builds realistic CDRs from the simulator's call mix (decoded and built by the real ingest and
//! CDR code), spreads them over 60 days, loads them through the store (which maintains the
//! rollups), then times the dashboard's query set both ways and checks the answers agree.
//!
//! usage: cargo bench --bench dashboard_queries -- [--cdrs 1000000] [--runs 7] [--agents 500]

mod common;

use callpulse_core::Timestamp;
use callpulse_core::metrics::{MetricParams, Metrics, Tally};
use callpulse_server::metrics::{self, GroupKey, MetricsQuery};
use callpulse_server::store::{self, MetricFilter};
use sqlx::Row;
use std::time::Instant;

use common::{generate, median};

struct Args {
    cdrs: usize,
    runs: usize,
    agents: usize,
}

fn args() -> Args {
    let mut a = Args {
        cdrs: 1_000_000,
        runs: 7,
        agents: 500,
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        let n = pair[1].replace('_', "").parse().ok();
        match (pair[0].as_str(), n) {
            ("--cdrs", Some(n)) => a.cdrs = n,
            ("--runs", Some(n)) => a.runs = n,
            ("--agents", Some(n)) => a.agents = n,
            _ => {}
        }
    }
    a
}

/// A plain SQL tally (no percentiles) over the CDR table, grouped by `group`.
async fn plain_sql(
    pool: &sqlx::SqlitePool,
    from: i64,
    to: i64,
    group: &str,
) -> Vec<(String, Tally)> {
    let sql = format!(
        "SELECT CAST({group} AS TEXT) AS g,
            SUM(outcome <> 'in_progress'), SUM(outcome = 'in_progress'),
            SUM(direction = 'inbound' AND outcome <> 'in_progress'),
            SUM(direction = 'outbound' AND outcome <> 'in_progress'),
            SUM(outcome = 'answered'), SUM(direction = 'inbound' AND outcome = 'answered'),
            SUM(direction = 'outbound' AND outcome = 'answered'), SUM(outcome = 'abandoned'),
            SUM(outcome = 'abandoned' AND short_abandon), SUM(outcome = 'failed'),
            SUM(direction = 'inbound' AND outcome = 'failed'), SUM(outcome = 'busy'),
            SUM(outcome = 'no_answer'), SUM(direction = 'inbound' AND outcome = 'no_answer'),
            SUM(outcome = 'answered' AND transfer_type IS NOT NULL),
            SUM(direction = 'inbound' AND outcome = 'answered' AND answer_ms IS NOT NULL),
            SUM(CASE WHEN direction = 'inbound' AND outcome = 'answered' AND answer_ms IS NOT NULL
                     THEN MAX(answer_ms - start_ms, 0) END),
            SUM(outcome = 'answered' AND answer_ms IS NOT NULL),
            SUM(CASE WHEN outcome = 'answered' AND answer_ms IS NOT NULL
                     THEN MAX(end_ms - answer_ms, 0) + wrap_up_ms END),
            SUM(direction = 'inbound' AND outcome = 'answered' AND answer_ms IS NOT NULL
                AND answer_ms - start_ms <= 20000)
         FROM cdrs WHERE start_ms >= ?1 AND start_ms < ?2 GROUP BY 1 ORDER BY 1"
    );
    let rows = sqlx::query(&sql)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .expect("plain sql runs");
    rows.iter()
        .map(|r| {
            let v = |i: usize| r.get::<Option<i64>, _>(i).unwrap_or(0);
            let t = Tally {
                total_calls: v(1),
                in_progress_calls: v(2),
                inbound_calls: v(3),
                outbound_calls: v(4),
                answered_calls: v(5),
                inbound_answered: v(6),
                outbound_answered: v(7),
                abandoned_calls: v(8),
                short_abandoned_calls: v(9),
                failed_calls: v(10),
                inbound_failed: v(11),
                busy_calls: v(12),
                no_answer_calls: v(13),
                inbound_no_answer: v(14),
                transferred_calls: v(15),
                speed_of_answer_calls: v(16),
                speed_of_answer_ms: v(17),
                handled_calls: v(18),
                handle_time_ms: v(19),
                answered_within_threshold: v(20),
                ..Tally::default()
            };
            (r.get::<Option<String>, _>(0).unwrap_or_default(), t)
        })
        .collect()
}

/// The metrics both sides compute (plain SQL has no percentiles).
fn comparable(m: &Metrics) -> Vec<Option<f64>> {
    vec![
        Some(m.total_calls as f64),
        Some(m.in_progress_calls as f64),
        m.answer_rate,
        m.abandonment_rate,
        m.avg_speed_of_answer_seconds,
        m.avg_handle_time_seconds,
        m.service_level,
        m.transfer_rate,
        m.error_rate,
        m.connect_rate,
    ]
}

fn agree(a: &[Metrics], b: &[Metrics]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            comparable(x)
                .iter()
                .zip(comparable(y))
                .all(|(p, q)| match (p, q) {
                    (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                    (p, q) => *p == q,
                })
        })
}

#[tokio::main]
async fn main() {
    let args = args();
    let now = chrono::Utc::now().timestamp_millis();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let params = MetricParams::default();

    let t = Instant::now();
    let cdrs = generate(args.cdrs, args.agents, now);
    println!(
        "generated {} CDRs from the simulator's mix in {:.1} s",
        cdrs.len(),
        t.elapsed().as_secs_f64()
    );

    let store = store::open(&url, params).await.expect("store opens");
    let t = Instant::now();
    for chunk in cdrs.chunks(5_000) {
        store
            .upsert_cdrs(chunk, Timestamp(now))
            .await
            .expect("cdrs load");
    }
    let load_secs = t.elapsed().as_secs_f64();
    println!(
        "loaded them through the store (CDRs + rollups) at {:.0} CDRs/s",
        cdrs.len() as f64 / load_secs
    );
    drop(cdrs);

    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("plain pool");
    let tz = chrono_tz::UTC;
    let cases = common::dashboard_cases(now);

    println!(
        "\n{:<22} {:>8} {:>12} {:>12} {:>9} {:>7}",
        "query", "groups", "engine ms", "plain ms", "speed-up", "agree"
    );
    let (mut engine_total, mut plain_total) = (0.0, 0.0);
    let mut all_agree = true;
    for case in &cases {
        let q = MetricsQuery {
            from: Timestamp(case.from),
            to: Timestamp(case.to),
            filter: MetricFilter::default(),
            group_by: case.group_by,
            tz,
        };
        let mut engine_times = Vec::new();
        let mut engine_metrics = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            let answer = metrics::query(store.as_ref(), &q, &params)
                .await
                .expect("query runs");
            let groups: Vec<(GroupKey, Metrics)> = answer
                .groups
                .iter()
                .map(|(k, t)| (k.clone(), t.metrics()))
                .collect();
            let totals = answer.totals.metrics();
            engine_times.push(t.elapsed().as_secs_f64() * 1000.0);
            engine_metrics = if case.group_by.is_some() {
                groups
                    .into_iter()
                    .filter(|(_, m)| m.total_calls + m.in_progress_calls > 0)
                    .map(|(_, m)| m)
                    .collect()
            } else {
                vec![totals]
            };
        }
        let mut plain_times = Vec::new();
        let mut plain_metrics = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            let rows = plain_sql(&pool, case.from, case.to, case.sql_group).await;
            plain_metrics = rows.iter().map(|(_, t)| t.metrics()).collect::<Vec<_>>();
            plain_times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (e, p) = (median(engine_times), median(plain_times));
        engine_total += e;
        plain_total += p;
        let ok = agree(&engine_metrics, &plain_metrics);
        all_agree &= ok;
        println!(
            "{:<22} {:>8} {:>12.3} {:>12.3} {:>8.1}x {:>7}",
            case.name,
            engine_metrics.len(),
            e,
            p,
            p / e,
            if ok { "yes" } else { "NO" }
        );
    }
    println!(
        "{:<22} {:>8} {:>12.3} {:>12.3} {:>8.1}x",
        "whole set",
        "",
        engine_total,
        plain_total,
        plain_total / engine_total
    );
    println!(
        "\nmedians of {} runs; {} CDRs over 60 days; SQLite; engine = metrics::query (rollups)",
        args.runs, args.cdrs
    );
    if !all_agree {
        eprintln!("the engine and plain SQL disagree");
        std::process::exit(1);
    }
}
