//! What only the PostgreSQL store has: time partitions, retention, the views, duplicates across
//! partitions, and a log position no slow commit can slip behind. Each test gets a database of
//! its own on the local cluster.

#[path = "support/cdr.rs"]
mod cdr;
#[path = "support/postgres.rs"]
mod postgres;

use callpulse_core::Timestamp;
use callpulse_core::metrics::{MetricParams, tally_cdrs};
use callpulse_server::ingest::{livekit, webhook_entry};
use callpulse_server::pipeline;
use callpulse_server::store::{
    self, Appended, LogPosition, NewEvent, PgStore, RetentionPolicy, Store,
};
use chrono::TimeZone;
use sqlx::Connection;

const DAY: i64 = 86_400_000;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

use cdr::fixture;

/// A sample webhook as logged, with its id and time replaced.
fn webhook(name: &str, id: &str, at_ms: i64) -> NewEvent {
    let mut value: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
    value["id"] = id.into();
    value["createdAt"] = (at_ms / 1000).to_string().into();
    let body = serde_json::to_vec(&value).unwrap();
    let decoded = livekit::decode(&body, Timestamp(at_ms)).unwrap();
    webhook_entry(decoded, body, Timestamp(at_ms))
}

/// The call events after `after` once some are visible. Transaction ids are cluster-wide, so
/// a write transaction of another test's database can hold the horizon back for a moment.
async fn visible_after(
    store: &dyn Store,
    after: LogPosition,
) -> Vec<(LogPosition, callpulse_core::CallEvent)> {
    for _ in 0..100 {
        let seen = store.call_events_after(after, 10).await.unwrap();
        if !seen.is_empty() {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no call event became visible after {after:?}");
}

/// Which partition of `table` holds the rows matching `clause`.
async fn partition_of(url: &str, table: &str, clause: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(&format!(
        "SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {clause} ORDER BY 1"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

async fn names(store: &PgStore, table: &str) -> Vec<String> {
    store
        .partitions_of(table)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect()
}

/// Maintenance on 28 December makes every day partition from the 27th to 5 January and the
/// December and January rollup partitions; rows either side of midnight on New Year's Eve land
/// in different day and month partitions, none in the default partition.
#[tokio::test]
async fn partitions_cover_a_day_and_a_month_boundary_ahead_of_need() {
    let db = postgres::TestDb::create().await;
    let store = PgStore::open(&db.url, MetricParams::default())
        .await
        .unwrap();
    let now = Timestamp(ms("2026-12-28T12:00:00Z"));
    let done = store
        .maintain(now, &RetentionPolicy::KEEP_ALL)
        .await
        .unwrap();
    assert!(done.created.contains(&"event_log_p20270105".to_owned()));
    assert!(!done.created.contains(&"event_log_p20270106".to_owned()));
    let days = names(&store, "event_log").await;
    for day in 27..=31 {
        assert!(
            days.contains(&format!("event_log_p202612{day}")),
            "{days:?}"
        );
    }
    for day in 1..=5 {
        assert!(
            days.contains(&format!("event_log_p2027010{day}")),
            "{days:?}"
        );
    }
    let months = names(&store, "rollup_slices").await;
    assert!(
        months.contains(&"rollup_slices_p202612".to_owned()),
        "{months:?}"
    );
    assert!(
        months.contains(&"rollup_slices_p202701".to_owned()),
        "{months:?}"
    );
    // A second pass finds nothing to do.
    let again = store
        .maintain(now, &RetentionPolicy::KEEP_ALL)
        .await
        .unwrap();
    assert!(again.created.is_empty(), "{again:?}");

    let before = ms("2026-12-31T23:59:59Z");
    let after = ms("2027-01-01T00:00:00Z");
    let appended = store
        .append(&[
            webhook("02", "EV_before", before),
            webhook("05", "EV_after", after),
        ])
        .await
        .unwrap();
    assert!(
        appended
            .iter()
            .all(|a| matches!(a, Appended::Stored { .. }))
    );
    assert_eq!(
        partition_of(&db.url, "event_log", "event_id = 'EV_before'").await,
        ["event_log_p20261231"]
    );
    assert_eq!(
        partition_of(&db.url, "event_log", "event_id = 'EV_after'").await,
        ["event_log_p20270101"]
    );
    let mut cdr = cdr::answered_after(5);
    cdr.call_id = "SCL_eve".into();
    cdr.start_time = Timestamp(ms("2026-12-31T23:50:00Z"));
    let mut next = cdr.clone();
    next.call_id = "SCL_new_year".into();
    next.start_time = Timestamp(after);
    store.upsert_cdrs(&[cdr, next], now).await.unwrap();
    assert_eq!(
        partition_of(&db.url, "cdrs", "TRUE").await,
        ["cdrs_p20261231", "cdrs_p20270101"]
    );
    assert_eq!(
        partition_of(&db.url, "rollup_slices", "TRUE").await,
        ["rollup_slices_p202612", "rollup_slices_p202701"]
    );
    let stranded = store.default_partition_rows().await.unwrap();
    assert_eq!(stranded.len(), 6);
    assert!(stranded.iter().all(|d| d.rows == 0), "{stranded:?}");
}

/// A row no partition covers is kept by the default partition, counted as a health figure, and
/// moved into a partition made for it by the next maintenance pass.
#[tokio::test]
async fn the_default_partition_catches_stray_rows_until_maintenance_adopts_them() {
    let db = postgres::TestDb::create().await;
    let store = PgStore::open(&db.url, MetricParams::default())
        .await
        .unwrap();
    let now = pipeline::now();
    let old = now.millis() - 40 * DAY;
    store.append(&[webhook("02", "EV_old", old)]).await.unwrap();
    let stranded = store.default_partition_rows().await.unwrap();
    let rows = |table: &str| {
        stranded
            .iter()
            .find(|d| d.table == table)
            .map(|d| d.rows)
            .unwrap()
    };
    assert_eq!(rows("event_log"), 1);
    assert_eq!(rows("call_events"), 1);
    assert_eq!(rows("cdrs"), 0);
    let done = store
        .maintain(now, &RetentionPolicy::KEEP_ALL)
        .await
        .unwrap();
    assert_eq!(done.adopted_rows, 2, "{done:?}");
    let day = chrono::Utc
        .timestamp_millis_opt(old)
        .unwrap()
        .format("%Y%m%d")
        .to_string();
    assert_eq!(
        partition_of(&db.url, "event_log", "event_id = 'EV_old'").await,
        [format!("event_log_p{day}")]
    );
    let after = store.default_partition_rows().await.unwrap();
    assert!(after.iter().all(|d| d.rows == 0), "{after:?}");
    // The adopted event is still a duplicate of itself, and still reaches the pipeline.
    assert_eq!(
        store.append(&[webhook("02", "EV_old", old)]).await.unwrap(),
        [Appended::Duplicate]
    );
    assert_eq!(visible_after(&store, LogPosition::default()).await.len(), 1);
}

/// Retention drops whole partitions whose every row is past the limit, per table, and nothing
/// newer; `--dry-run` only lists them. Rollups outlive the events they summarise.
#[tokio::test]
async fn retention_drops_only_partitions_past_their_limit() {
    let db = postgres::TestDb::create().await;
    let store = PgStore::open(&db.url, MetricParams::default())
        .await
        .unwrap();
    let now = pipeline::now();
    let today = now.millis().div_euclid(DAY) * DAY;
    let policy = RetentionPolicy {
        events_days: 10,
        quarantine_days: 10,
        cdrs_days: 20,
        rollups_days: 400,
    };
    // Events 12, 10 and 9 days old; CDRs 25 and 15 days old.
    let mut events = Vec::new();
    for age in [12, 10, 9] {
        events.push(webhook(
            "02",
            &format!("EV_{age}"),
            today - age * DAY + 1000,
        ));
    }
    store.append(&events).await.unwrap();
    let mut cdrs = Vec::new();
    for age in [25, 15] {
        let mut cdr = cdr::answered_after(5);
        cdr.call_id = format!("SCL_{age}");
        cdr.start_time = Timestamp(today - age * DAY + 1000);
        cdrs.push(cdr);
    }
    store.upsert_cdrs(&cdrs, now).await.unwrap();
    store
        .maintain(now, &RetentionPolicy::KEEP_ALL)
        .await
        .unwrap();

    let day = |age: i64| {
        chrono::Utc
            .timestamp_millis_opt(today - age * DAY)
            .unwrap()
            .format("%Y%m%d")
            .to_string()
    };
    let planned = store.enforce_retention(now, &policy, true).await.unwrap();
    let mut listed: Vec<(String, i64)> = planned
        .iter()
        .map(|e| (e.partition.clone(), e.rows))
        .collect();
    listed.sort();
    let mut expected = vec![
        (format!("call_events_p{}", day(12)), 1),
        (format!("cdrs_p{}", day(25)), 1),
        (format!("event_log_p{}", day(12)), 1),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    // The dry run dropped nothing.
    assert_eq!(store.event_count().await.unwrap(), 3);

    // The command line says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .args(["retention", "--dry-run", "--database", &db.url])
        .args([
            "--retention-events-days",
            "10",
            "--retention-quarantine-days",
            "10",
        ])
        .args([
            "--retention-cdrs-days",
            "20",
            "--retention-rollups-days",
            "400",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("would drop event_log_p{}", day(12))),
        "{text}"
    );
    assert!(!text.contains(&format!("event_log_p{}", day(10))), "{text}");
    assert_eq!(store.event_count().await.unwrap(), 3);

    let dropped = store.enforce_retention(now, &policy, false).await.unwrap();
    assert_eq!(dropped.len(), 3);
    assert_eq!(store.event_count().await.unwrap(), 2);
    assert!(store.get_cdr("SCL_25").await.unwrap().is_none());
    assert!(store.get_cdr("SCL_15").await.unwrap().is_some());
    let days = names(&store, "event_log").await;
    assert!(!days.contains(&format!("event_log_p{}", day(12))));
    assert!(days.contains(&format!("event_log_p{}", day(10))));
    // The rollups still count the dropped CDR.
    let rows = store
        .rollup_rows(
            Timestamp(today - 30 * DAY),
            Timestamp(today),
            &Default::default(),
        )
        .await
        .unwrap();
    let total: i64 = rows.iter().map(|r| r.tally.total_calls).sum();
    assert_eq!(total, 2);
    // A rebuild could not make the CDRs whose events are gone again: it refuses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .args(["rebuild", "--database", &db.url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--discard-unlogged-cdrs"), "{err}");
    assert!(store.get_cdr("SCL_15").await.unwrap().is_some());
    // Nothing more to drop.
    assert!(
        store
            .enforce_retention(now, &policy, true)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An event id is stored once even when a second copy claims another day (another partition).
#[tokio::test]
async fn a_repeated_id_is_a_duplicate_across_partitions() {
    let db = postgres::TestDb::create().await;
    let store = store::open(&db.url, MetricParams::default()).await.unwrap();
    let now = pipeline::now().millis();
    let first = store.append(&[webhook("02", "EV_x", now)]).await.unwrap();
    assert!(matches!(first[0], Appended::Stored { .. }));
    let later = store
        .append(&[
            webhook("02", "EV_x", now - 3 * DAY),
            webhook("02", "EV_x", now),
        ])
        .await
        .unwrap();
    assert_eq!(later, [Appended::Duplicate, Appended::Duplicate]);
    assert_eq!(store.event_count().await.unwrap(), 1);
}

/// Two instances sharing the database append the same ids at once, each copy claiming a
/// different day: every id is stored once, and exactly one append hears it was stored.
#[tokio::test]
async fn concurrent_appends_of_one_id_from_two_instances_store_it_once() {
    let db = postgres::TestDb::create().await;
    let instances = [
        store::open(&db.url, MetricParams::default()).await.unwrap(),
        store::open(&db.url, MetricParams::default()).await.unwrap(),
    ];
    let now = pipeline::now().millis();
    let ids: Vec<String> = (0..40).map(|i| format!("EV_race{i:02}")).collect();
    let appends = (0..24).map(|task| {
        let store = instances[task % 2].clone();
        let batch: Vec<NewEvent> = ids
            .iter()
            .map(|id| webhook("02", id, now - (task as i64 % 4) * DAY))
            .collect();
        tokio::spawn(async move { store.append(&batch).await.unwrap() })
    });
    let outcomes = futures::future::join_all(appends).await;
    for (i, _) in ids.iter().enumerate() {
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o.as_ref().unwrap()[i], Appended::Stored { .. }))
            .count();
        assert_eq!(stored, 1, "{} stored {stored} times", ids[i]);
    }
    assert_eq!(instances[0].event_count().await.unwrap(), ids.len() as i64);
}

/// The pipeline's position only passes transactions that have finished: an append that
/// commits while an older transaction is still open is held back until that one ends, so the
/// older one can never land behind the position.
#[tokio::test]
async fn the_log_position_waits_for_older_transactions() {
    let db = postgres::TestDb::create().await;
    let store = store::open(&db.url, MetricParams::default()).await.unwrap();
    let mut older = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut older).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut older)
        .await
        .unwrap();
    store
        .append(&[webhook("02", "EV_newer", pipeline::now().millis())])
        .await
        .unwrap();
    let origin = LogPosition::default();
    assert!(
        store
            .call_events_after(origin, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let (backlog, _) = store.call_events_backlog(origin).await.unwrap();
    assert_eq!(backlog, 1, "the backlog counts it");
    sqlx::query("COMMIT").execute(&mut older).await.unwrap();
    let seen = visible_after(store.as_ref(), origin).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].0 > origin);
    assert_eq!(store.log_head().await.unwrap(), seen[0].0);
    assert!(
        store
            .call_events_after(seen[0].0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The views show what the API shows: a CDR's fields, and the day's counters and rates in the
/// tally's order.
#[tokio::test]
async fn the_views_match_the_stored_cdrs_and_rollups() {
    let db = postgres::TestDb::create().await;
    let params = MetricParams::default();
    let store = store::open(&db.url, params).await.unwrap();
    let mut answered = cdr::answered_after(5);
    answered.start_time = Timestamp(ms("2026-11-20T10:00:00Z"));
    answered.call_id = "SCL_a".into();
    let mut abandoned = answered.clone();
    abandoned.call_id = "SCL_b".into();
    abandoned.outcome = callpulse_core::Outcome::Abandoned;
    abandoned.answer_time = None;
    store
        .upsert_cdrs(&[answered.clone(), abandoned.clone()], Timestamp(0))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let row: (String, String, Option<String>, f64) = sqlx::query_as(
        "SELECT call_id, outcome, trunk_id,
                extract(epoch FROM start_time)::float8 * 1000 FROM callpulse_cdrs
         WHERE call_id = 'SCL_a'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row.0, "SCL_a");
    assert_eq!(row.1, "answered");
    assert_eq!(row.2, answered.trunk_id);
    assert_eq!(row.3 as i64, answered.start_time.millis());
    let direct = tally_cdrs([&answered, &abandoned], &params);
    let day: (i64, i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT SUM(total_calls)::bigint, SUM(answered_calls)::bigint,
                SUM(abandoned_calls)::bigint, MAX(answer_rate)
         FROM callpulse_metrics_daily WHERE dimension = 'all' AND bucket = '2026-11-20T00:00:00Z'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (day.0, day.1, day.2),
        (
            direct.total_calls,
            direct.answered_calls,
            direct.abandoned_calls
        )
    );
    assert_eq!(day.3, direct.metrics().answer_rate);
    let hourly: i64 = sqlx::query_scalar(
        "SELECT SUM(total_calls)::bigint FROM callpulse_metrics_hourly
         WHERE dimension = 'trunk' AND bucket = '2026-11-20T10:00:00Z'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(hourly, 2);
}

/// The pipeline on PostgreSQL makes the CDRs of the samples, and a rebuild from the log makes
/// the same ones again.
#[tokio::test]
async fn a_rebuild_makes_the_cdrs_the_pipeline_made() {
    let db = postgres::TestDb::create().await;
    let store = store::open(&db.url, MetricParams::default()).await.unwrap();
    let mut batch = Vec::new();
    for name in [
        "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12",
    ] {
        let body = fixture(name);
        let decoded = livekit::decode(&body, pipeline::now()).unwrap();
        batch.push(webhook_entry(decoded, body, pipeline::now()));
    }
    store.append(&batch).await.unwrap();
    let params = callpulse_core::BuildParams {
        now: pipeline::now(),
        ..Default::default()
    };
    // Other tests' transactions on the cluster may hold the horizon back for a moment.
    for _ in 0..100 {
        pipeline::catch_up(store.as_ref(), &params, None)
            .await
            .unwrap();
        let cursor = store.cursor(pipeline::CURSOR).await.unwrap();
        if store.call_events_backlog(cursor).await.unwrap().0 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let all = store::CdrQuery {
        limit: 1000,
        ..Default::default()
    };
    let before = store.list_cdrs(&all).await.unwrap();
    assert!(before.len() >= 6, "{} CDRs", before.len());
    let report = callpulse_server::rebuild::rebuild(store.as_ref(), &params, |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(report.cdrs as usize, before.len());
    assert_eq!(store.list_cdrs(&all).await.unwrap(), before);
    // The cursor stands after the rebuilt log: nothing is applied twice.
    let cursor = store.cursor(pipeline::CURSOR).await.unwrap();
    assert_eq!(store.call_events_backlog(cursor).await.unwrap().0, 0);
}
