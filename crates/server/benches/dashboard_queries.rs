//! Dashboard query benchmark: the metric engine (rollups) against a plain SQL `GROUP BY` over the
//! CDR table, on the same database, in the same run.
//!
//! It builds realistic CDRs from the simulator's call mix (decoded and built by the real ingest and
//! CDR code), spreads them over 60 days, loads them through the store (which maintains the
//! rollups), then times the dashboard's query set both ways and checks the answers agree. A second
//! set asks windows whose edges fall anywhere (an API user, a Grafana panel).
//!
//! usage: cargo bench --bench dashboard_queries -- [--cdrs 1000000] [--runs 7] [--agents 500]
//!        [--database sqlite|postgres] [--keep NAME] [--write-peer N] [--engine-only] [--only NAME]
//!
//! `--keep` keeps the loaded database (a SQLite file path, or a PostgreSQL database name on the
//! server of `CALLPULSE_BENCH_POSTGRES`) and reuses it on the next run instead of loading again.
//! When it loads, it also writes the first `--write-peer` CDRs (default 1,000,000; 0 for none) as
//! bare rows into a fresh database, to show what the rollup corrections cost the write.
//! `--engine-only` skips the plain SQL side and `--only` keeps the query named NAME
//! (for profiling the engine).

mod common;

use callpulse_core::Timestamp;
use callpulse_core::metrics::{MetricParams, Metrics, Tally};
use callpulse_server::metrics::{self, GroupKey};
use callpulse_server::store::{self, Store};
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::Instant;

use common::{Case, generate, median};

struct Args {
    cdrs: usize,
    runs: usize,
    agents: usize,
    postgres: bool,
    keep: Option<String>,
    engine_only: bool,
    only: Option<String>,
    write_peer: usize,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let mut a = Args {
        cdrs: 1_000_000,
        runs: 7,
        agents: 500,
        postgres: false,
        keep: None,
        engine_only: argv.iter().any(|a| a == "--engine-only"),
        only: None,
        write_peer: 1_000_000,
    };
    for pair in argv.windows(2) {
        let n = pair[1].replace('_', "").parse().ok();
        match (pair[0].as_str(), n) {
            ("--cdrs", Some(n)) => a.cdrs = n,
            ("--runs", Some(n)) => a.runs = n,
            ("--agents", Some(n)) => a.agents = n,
            ("--write-peer", Some(n)) => a.write_peer = n,
            ("--database", _) => a.postgres = pair[1] == "postgres",
            ("--keep", _) => a.keep = Some(pair[1].clone()),
            ("--only", _) => a.only = Some(pair[1].clone()),
            _ => {}
        }
    }
    a
}

/// A plain connection for the SQL a user would write.
enum Plain {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The tally as plain SQL (no percentiles) over the CDR table, grouped by `group`.
fn plain_sql_text(group: &str, postgres: bool) -> String {
    let count = |cond: &str| {
        if postgres {
            format!("SUM(({cond})::int)::bigint")
        } else {
            format!("SUM({cond})")
        }
    };
    let sum = |expr: &str| {
        if postgres {
            format!("SUM({expr})::bigint")
        } else {
            format!("SUM({expr})")
        }
    };
    let greatest = if postgres { "GREATEST" } else { "MAX" };
    let answered = "outcome = 'answered' AND answer_ms IS NOT NULL";
    let inbound_answered = format!("direction = 'inbound' AND {answered}");
    let columns = [
        count("outcome <> 'in_progress'"),
        count("outcome = 'in_progress'"),
        count("direction = 'inbound' AND outcome <> 'in_progress'"),
        count("direction = 'outbound' AND outcome <> 'in_progress'"),
        count("outcome = 'answered'"),
        count("direction = 'inbound' AND outcome = 'answered'"),
        count("direction = 'outbound' AND outcome = 'answered'"),
        count("outcome = 'abandoned'"),
        count("outcome = 'abandoned' AND short_abandon"),
        count("outcome = 'failed'"),
        count("direction = 'inbound' AND outcome = 'failed'"),
        count("outcome = 'busy'"),
        count("outcome = 'no_answer'"),
        count("direction = 'inbound' AND outcome = 'no_answer'"),
        count("outcome = 'answered' AND transfer_type IS NOT NULL"),
        count(&inbound_answered),
        sum(&format!(
            "CASE WHEN {inbound_answered} THEN {greatest}(answer_ms - start_ms, 0) END"
        )),
        count(answered),
        sum(&format!(
            "CASE WHEN {answered} THEN {greatest}(end_ms - answer_ms, 0) + wrap_up_ms END"
        )),
        count(&format!(
            "{inbound_answered} AND answer_ms - start_ms <= 20000"
        )),
    ];
    // Ordered as the engine orders its groups: bytewise, no value first.
    let order = if postgres {
        format!("CAST({group} AS TEXT) COLLATE \"C\" NULLS FIRST")
    } else {
        "1".to_owned()
    };
    format!(
        "SELECT CAST({group} AS TEXT) AS g, {} FROM cdrs WHERE start_ms >= $1 AND start_ms < $2
         GROUP BY 1 ORDER BY {order}",
        columns.join(", ")
    )
}

fn tally_of_row<R: Row>(r: &R) -> Tally
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let v = |i: usize| r.get::<Option<i64>, _>(i).unwrap_or(0);
    Tally {
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
    }
}

async fn plain_sql(plain: &Plain, from: i64, to: i64, group: &str) -> Vec<Tally> {
    match plain {
        Plain::Sqlite(pool) => sqlx::query(&plain_sql_text(group, false))
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .expect("plain sql runs")
            .iter()
            .map(tally_of_row)
            .collect(),
        Plain::Postgres(pool) => sqlx::query(&plain_sql_text(group, true))
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
            .expect("plain sql runs")
            .iter()
            .map(tally_of_row)
            .collect(),
    }
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

/// Where the benchmark's database lives, and whether it already holds the CDRs.
struct Database {
    url: String,
    loaded_at: Option<i64>,
    /// A PostgreSQL database to drop at the end (admin URL, name) unless kept.
    drop_pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// A database for the run: kept under `keep` (and reused when it holds `cdrs` CDRs), or fresh.
async fn database(postgres: bool, keep: Option<&str>, cdrs: usize) -> Database {
    let (url, drop_pg, dir) = if postgres {
        let admin = std::env::var("CALLPULSE_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = keep.map_or_else(
            || format!("callpulse_bench_queries_{:08x}", rand::random::<u32>()),
            str::to_owned,
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL is reachable");
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let cut = admin.rfind('/').unwrap();
        let url = format!("{}/{name}", &admin[..cut]);
        let drop_pg = keep.is_none().then_some((admin, name));
        (url, drop_pg, None)
    } else if let Some(path) = keep {
        (format!("sqlite://{path}"), None, None)
    } else {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        (url, None, Some(dir))
    };
    let mut db = Database {
        url,
        loaded_at: None,
        drop_pg,
        _dir: dir,
    };
    if keep.is_some() {
        db.loaded_at = loaded_at(&db.url, cdrs).await;
    }
    db
}

impl Database {
    async fn remove(self) {
        if let Some((admin, name)) = self.drop_pg {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// CDRs/s writing `cdrs` as the store writes CDR rows (same statement, same rows per statement and
/// per transaction) into a fresh database of the same schema, without any rollup work: the peer
/// of loading through the store.
async fn rows_alone(postgres: bool, cdrs: &[callpulse_core::Cdr], now: i64) -> f64 {
    let db = database(postgres, None, 0).await;
    let params = MetricParams::default();
    drop(store::open(&db.url, params).await.expect("schema"));
    let prepared = |part: &'_ [callpulse_core::Cdr]| -> Vec<(String, Vec<u8>)> {
        part.iter()
            .map(|c| {
                let tally = store::RollupRow::of(c, &params).tally;
                (
                    serde_json::to_string(c).unwrap(),
                    store::rollup::encode_tally(&tally),
                )
            })
            .collect()
    };
    let t = Instant::now();
    if postgres {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        for chunk in cdrs.chunks(5_000) {
            let mut tx = pool.begin().await.unwrap();
            for part in chunk.chunks(500) {
                let rows: Vec<store::CdrRow> = part
                    .iter()
                    .zip(prepared(part))
                    .map(|(c, (body, tally))| (c, body, tally))
                    .collect();
                let mut upsert = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
                store::cdr_upsert(
                    &mut upsert,
                    &rows,
                    Timestamp(now),
                    "::jsonb",
                    "call_id, start_ms",
                );
                upsert.build().execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    } else {
        let options = db
            .url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        for chunk in cdrs.chunks(5_000) {
            let mut tx = pool.begin().await.unwrap();
            for part in chunk.chunks(50) {
                let rows: Vec<store::CdrRow> = part
                    .iter()
                    .zip(prepared(part))
                    .map(|(c, (body, tally))| (c, body, tally))
                    .collect();
                let mut upsert = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
                store::cdr_upsert(&mut upsert, &rows, Timestamp(now), "", "call_id");
                upsert.build().execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
    let rate = cdrs.len() as f64 / t.elapsed().as_secs_f64();
    db.remove().await;
    rate
}

/// The `now` a kept database was loaded at, if it holds `cdrs` CDRs.
async fn loaded_at(url: &str, cdrs: usize) -> Option<i64> {
    let sql = "SELECT now_ms, cdrs FROM bench_loaded";
    let (now, n): (i64, i64) = if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.ok()?;
        sqlx::query_as(sql).fetch_one(&mut conn).await.ok()?
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
        sqlx::query_as(sql).fetch_one(&mut conn).await.ok()?
    };
    (n == cdrs as i64).then_some(now)
}

async fn mark_loaded(url: &str, now: i64, cdrs: usize) {
    let statements = [
        "CREATE TABLE bench_loaded (now_ms BIGINT NOT NULL, cdrs BIGINT NOT NULL)".to_owned(),
        format!("INSERT INTO bench_loaded VALUES ({now}, {cdrs})"),
    ];
    for sql in &statements {
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// Times each case both ways; prints a line per case and the set's total. Returns whether all
/// agreed. The engine's runs go first, the whole set in turn as a dashboard asks it; the plain
/// SQL's runs follow, so its scans of gigabytes do not evict the engine's working set between
/// its runs.
async fn run_set(
    title: &str,
    cases: &[Case],
    store: &dyn Store,
    plain: Option<&Plain>,
    runs: usize,
    only: Option<&str>,
) -> bool {
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| only.is_none_or(|only| c.name == only))
        .collect();
    let mut engine_times = vec![Vec::new(); cases.len()];
    let mut engine_metrics = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, case) in cases.iter().enumerate() {
            let q = case.query();
            let t = Instant::now();
            let answer = metrics::query(store, &q).await.expect("query runs");
            let groups: Vec<(GroupKey, Metrics)> = answer
                .groups
                .iter()
                .map(|(k, t)| (k.clone(), t.metrics()))
                .collect();
            let totals = answer.totals.metrics();
            engine_times[i].push(t.elapsed().as_secs_f64() * 1000.0);
            engine_metrics[i] = if case.group_by.is_some() {
                groups
                    .into_iter()
                    .filter(|(_, m)| m.total_calls + m.in_progress_calls > 0)
                    .map(|(_, m)| m)
                    .collect()
            } else {
                vec![totals]
            };
        }
    }
    let mut plain_times = vec![Vec::new(); cases.len()];
    let mut plain_metrics = vec![Vec::new(); cases.len()];
    if let Some(plain) = plain {
        for _ in 0..runs {
            for (i, case) in cases.iter().enumerate() {
                let t = Instant::now();
                let rows = plain_sql(plain, case.from, case.to, case.sql_group).await;
                plain_metrics[i] = rows.iter().map(Tally::metrics).collect::<Vec<_>>();
                plain_times[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    println!(
        "\n{:<22} {:>8} {:>12} {:>12} {:>9} {:>7}",
        title, "groups", "engine ms", "plain ms", "speed-up", "agree"
    );
    let (mut engine_total, mut plain_total) = (0.0, 0.0);
    let mut all_agree = true;
    for (i, case) in cases.iter().enumerate() {
        let e = median(std::mem::take(&mut engine_times[i]));
        let p = if plain.is_some() {
            median(std::mem::take(&mut plain_times[i]))
        } else {
            f64::NAN
        };
        engine_total += e;
        plain_total += p;
        let ok = plain.is_none() || agree(&engine_metrics[i], &plain_metrics[i]);
        all_agree &= ok;
        println!(
            "{:<22} {:>8} {:>12.3} {:>12.3} {:>8.1}x {:>7}",
            case.name,
            engine_metrics[i].len(),
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
    all_agree
}

#[tokio::main]
async fn main() {
    let args = args();
    let params = MetricParams::default();
    let db = database(args.postgres, args.keep.as_deref(), args.cdrs).await;
    let store: Arc<dyn Store> = store::open(&db.url, params).await.expect("store opens");
    let now = match db.loaded_at {
        Some(now) => {
            println!("reusing {} CDRs loaded earlier into {}", args.cdrs, db.url);
            now
        }
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            let t = Instant::now();
            let cdrs = generate(args.cdrs, args.agents, now);
            println!(
                "generated {} CDRs from the simulator's mix in {:.1} s",
                cdrs.len(),
                t.elapsed().as_secs_f64()
            );
            let peer = args.write_peer.min(cdrs.len());
            let t = Instant::now();
            let mut first_part = None;
            for (i, chunk) in cdrs.chunks(5_000).enumerate() {
                store
                    .upsert_cdrs(chunk, Timestamp(now))
                    .await
                    .expect("cdrs load");
                if first_part.is_none() && (i + 1) * 5_000 >= peer {
                    first_part = Some(t.elapsed().as_secs_f64());
                }
            }
            println!(
                "loaded them through the store (CDRs + rollups) at {:.0} CDRs/s",
                cdrs.len() as f64 / t.elapsed().as_secs_f64()
            );
            if peer > 0 {
                let with = peer as f64 / first_part.unwrap_or(f64::NAN);
                let alone = rows_alone(args.postgres, &cdrs[..peer], now).await;
                println!(
                    "the first {peer} CDRs: {with:.0} CDRs/s with their rollup corrections, \
                     {alone:.0} CDRs/s as rows alone (same statements, fresh database): {:.2} \
                     of the rows-alone rate",
                    with / alone
                );
            }
            // Back-filled days sit in PostgreSQL's default partitions until maintenance adopts
            // them (a no-op on SQLite).
            store
                .maintain(Timestamp(now), &store::RetentionPolicy::KEEP_ALL)
                .await
                .expect("maintenance runs");
            if args.keep.is_some() {
                mark_loaded(&db.url, now, args.cdrs).await;
            }
            now
        }
    };
    let plain = if args.postgres {
        Plain::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("plain pool"),
        )
    } else {
        Plain::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("plain pool"),
        )
    };
    let mut all_agree = run_set(
        "dashboard query",
        &common::dashboard_cases(now),
        store.as_ref(),
        (!args.engine_only).then_some(&plain),
        args.runs,
        args.only.as_deref(),
    )
    .await;
    all_agree &= run_set(
        "any window",
        &common::unaligned_cases(now),
        store.as_ref(),
        (!args.engine_only).then_some(&plain),
        args.runs,
        args.only.as_deref(),
    )
    .await;
    println!(
        "\nmedians of {} runs; {} CDRs over 60 days, {} agents; {}; engine = metrics::query \
         (rollups), plain = SQL GROUP BY over cdrs",
        args.runs,
        args.cdrs,
        args.agents,
        if args.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    drop(store);
    db.remove().await;
    if !all_agree {
        eprintln!("the engine and plain SQL disagree");
        std::process::exit(1);
    }
}
