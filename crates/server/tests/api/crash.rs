//! Crash safety: `callpulse serve` (the built binary) killed with SIGKILL while the simulator
//! sends webhooks and application events, then restarted on the same port. Every event the
//! simulator saw acknowledged must be in the log, and `callpulse rebuild` must give the same CDRs
//! and rollups as the live path (which resumed from its cursor after the kill).

use crate::helpers::{EVENTS_TOKEN, KEY, SECRET, serve_process};
use callpulse_server::simulate::{SimConfig, run};
use sqlx::{Connection, Row};
use std::collections::BTreeSet;
use std::time::Duration;

/// The rows of a two-column text query.
async fn pairs(db: &str, sql: &str) -> Vec<(String, String)> {
    let mut conn = sqlx::SqliteConnection::connect(db).await.unwrap();
    sqlx::query(sql)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The derived rows `rebuild` recreates, in a comparable form.
async fn derived(db: &str) -> (Vec<(String, String)>, Vec<String>) {
    let cdrs = pairs(db, "SELECT call_id, body FROM cdrs ORDER BY call_id").await;
    let mut conn = sqlx::SqliteConnection::connect(db).await.unwrap();
    let mut rollups = Vec::new();
    for table in ["rollups", "rollup_slices"] {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            let cells: Vec<String> = (0..r.len())
                .map(|i| {
                    r.try_get::<Option<i64>, _>(i)
                        .map(|v| format!("{v:?}"))
                        .or_else(|_| r.try_get::<Option<String>, _>(i).map(|v| format!("{v:?}")))
                        .or_else(|_| r.try_get::<Option<Vec<u8>>, _>(i).map(|v| format!("{v:?}")))
                        .unwrap()
                })
                .collect();
            rollups.push(format!("{table} {}", cells.join(" ")));
        }
    }
    rollups.sort();
    (cdrs, rollups)
}

#[tokio::test]
async fn a_kill_9_under_load_loses_no_acknowledged_event_and_rebuild_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("callpulse.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = format!("events_token = \"{EVENTS_TOKEN}\"\n");
    let mut server = serve_process(dir.path(), &config, &listen).await;
    let acks = dir.path().join("acks.txt");
    let sim = tokio::spawn(run(
        SimConfig {
            base_url: server.base.clone(),
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            events_token: EVENTS_TOKEN.into(),
            rate: 40.0,
            duration: Some(Duration::from_secs(4)),
            speed: 120.0,
            seed: Some(9),
            ack_log: Some(acks.clone()),
            failure_share: 0.0,
        },
        tokio_util::sync::CancellationToken::new(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = serve_process(dir.path(), &config, &listen).await;
    let report = sim.await.unwrap().unwrap();
    assert!(
        report.webhooks_acked > 100 && report.app_events_acked > 5,
        "{report:?}"
    );

    // Wait until the restarted pipeline has applied the whole log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let backlog: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM call_events WHERE seq > COALESCE(
                (SELECT value FROM cursors WHERE name = 'cdr_pipeline'), 0)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if backlog == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "backlog {backlog}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut server = server;
    let pid = server.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    server.child.wait().await.unwrap();

    let acked: BTreeSet<(String, String)> = std::fs::read_to_string(&acks)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, id)| (s.to_owned(), id.to_owned()))
        .collect();
    let logged: BTreeSet<(String, String)> = pairs(&db, "SELECT source, event_id FROM event_log")
        .await
        .into_iter()
        .collect();
    let missing: Vec<_> = acked.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing: {missing:?}",
        missing.len()
    );
    assert!(
        acked.iter().any(|(s, _)| s == "app"),
        "application events were acknowledged"
    );

    let live = derived(&db).await;
    assert!(!live.0.is_empty() && !live.1.is_empty());
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .args(["rebuild", "--database", &db])
        .env("RUST_LOG", "warn")
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let rebuilt = derived(&db).await;
    assert_eq!(rebuilt.0.len(), live.0.len(), "CDR count");
    for (a, b) in live.0.iter().zip(&rebuilt.0) {
        assert_eq!(a, b, "a CDR differs after rebuild");
    }
    assert_eq!(rebuilt.1, live.1, "rollups differ after rebuild");
}
