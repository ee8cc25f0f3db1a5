//! Store behaviour that no HTTP request shows directly.

use callpulse_core::metrics::{MetricParams, tally_cdrs};
use callpulse_core::{Direction, Timestamp};
use callpulse_server::store::{self, MetricFilter};

#[path = "support/cdr.rs"]
mod cdr;
use cdr::answered_after;

#[path = "support/postgres.rs"]
mod postgres;

/// Every full-combination rollup row the store holds.
async fn every_rollup_row(store: &dyn store::Store) -> Vec<store::RollupRow> {
    store
        .rollup_rows(
            Timestamp(0),
            Timestamp(i64::MAX / 2),
            &MetricFilter::default(),
        )
        .await
        .unwrap()
}

/// What keeps a backend's database alive while a test runs.
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Pg(postgres::TestDb),
}

/// A fresh database of each backend: a SQLite file in its own temporary folder, and a
/// PostgreSQL database of its own. Every story below runs against both.
async fn backends() -> Vec<(&'static str, String, Keep)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("store.db").display());
    let pg = postgres::TestDb::create().await;
    vec![
        ("sqlite", sqlite, Keep::Dir(dir)),
        ("postgres", pg.url.clone(), Keep::Pg(pg)),
    ]
}

/// A rewrite subtracts what the old version added, even when the service-level threshold changed
/// in between (no counter drifts or goes negative).
#[tokio::test]
async fn rewrite_after_a_threshold_change_subtracts_the_stored_contribution() {
    for (backend, url, _keep) in backends().await {
        let strict = MetricParams {
            service_level_seconds: 20.0,
        };
        let lenient = MetricParams {
            service_level_seconds: 30.0,
        };
        let cdr = answered_after(25);
        store::open(&url, strict)
            .await
            .unwrap()
            .upsert_cdrs(std::slice::from_ref(&cdr), Timestamp(0))
            .await
            .unwrap();
        let reopened = store::open(&url, lenient).await.unwrap();
        let mut later = cdr.clone();
        later.recording_url = Some("s3://rec".into());
        reopened
            .upsert_cdrs(&[later.clone()], Timestamp(0))
            .await
            .unwrap();
        let rows = every_rollup_row(reopened.as_ref()).await;
        assert_eq!(rows.len(), 1, "{backend}");
        assert_eq!(rows[0].tally, tally_cdrs([&later], &lenient), "{backend}");
        assert_eq!(rows[0].tally.answered_within_threshold, 1, "{backend}");
    }
}

/// A CDR written before contributions were stored as binary tallies keeps its JSON contribution:
/// a window's edge reads it, and a rewrite subtracts it.
#[tokio::test]
async fn a_contribution_stored_as_json_is_read_and_subtracted() {
    use callpulse_server::metrics::{MetricsQuery, query};
    for (backend, url, _keep) in backends().await {
        let params = MetricParams::default();
        let store = store::open(&url, params).await.unwrap();
        let cdr = answered_after(25);
        store
            .upsert_cdrs(std::slice::from_ref(&cdr), Timestamp(0))
            .await
            .unwrap();
        // Turn the row back into one written before the binary column existed.
        let json = serde_json::to_string(&store::RollupRow::of(&cdr, &params)).unwrap();
        let legacy = "UPDATE cdrs SET contribution = $1, contribution_tally = NULL";
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(legacy)
                .bind(&json)
                .execute(&pool)
                .await
                .unwrap();
        } else {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(legacy)
                .bind(&json)
                .execute(&pool)
                .await
                .unwrap();
        }
        // A window with both edges inside the call's quarter-hour reads the contribution.
        let start = cdr.start_time.millis();
        let q = MetricsQuery {
            from: Timestamp(start - 1),
            to: Timestamp(start + 1),
            filter: MetricFilter::default(),
            group_by: None,
            tz: chrono_tz::UTC,
        };
        let answer = query(store.as_ref(), &q).await.unwrap();
        assert_eq!(answer.totals, tally_cdrs([&cdr], &params), "{backend}");
        // A rewrite subtracts the JSON contribution and stores the new one.
        let mut later = cdr.clone();
        later.agent_id = Some("agent-9".into());
        store
            .upsert_cdrs(std::slice::from_ref(&later), Timestamp(0))
            .await
            .unwrap();
        let rows = every_rollup_row(store.as_ref()).await;
        assert_eq!(rows.len(), 1, "{backend}");
        assert_eq!(rows[0].agent_id.as_deref(), Some("agent-9"), "{backend}");
        assert_eq!(rows[0].tally, tally_cdrs([&later], &params), "{backend}");
        let answer = query(store.as_ref(), &q).await.unwrap();
        assert_eq!(answer.totals, tally_cdrs([&later], &params), "{backend}");
    }
}

/// Realistic CDRs spread over three days, some rewritten: the metric engine (slices at three
/// levels, full-combination rollups, CDR edges) equals a direct computation for random windows,
/// filters, groupings and time zones.
#[tokio::test]
async fn metric_engine_equals_direct_computation_over_days() {
    use callpulse_core::BuildParams;
    use callpulse_core::metrics::Tally;
    use callpulse_server::metrics::{GroupBy, MetricsQuery, query};
    use callpulse_server::simulate::{random_call, script_cdrs};
    use rand::{Rng, SeedableRng};

    for (backend, url, _keep) in backends().await {
        let params = MetricParams::default();
        let store = store::open(&url, params).await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        let t0: i64 = 1_795_000_000_000;
        let build = BuildParams {
            now: Timestamp(t0 + 30 * 86_400_000),
            ..BuildParams::default()
        };
        let mut cdrs = Vec::new();
        while cdrs.len() < 600 {
            for mut c in script_cdrs(&random_call(&mut rng, t0), &build) {
                let shift = rng.gen_range(0..3 * 86_400_000i64);
                c.start_time = Timestamp(c.start_time.millis() + shift);
                c.answer_time = c.answer_time.map(|t| Timestamp(t.millis() + shift));
                c.end_time = c.end_time.map(|t| Timestamp(t.millis() + shift));
                c.agent_id = Some(format!("agent-{}", rng.gen_range(0..7)));
                c.call_id = format!("SCL_{}", cdrs.len());
                cdrs.push(c);
            }
        }
        // First versions, then rewrites (some move to another bucket, agent or outcome).
        let mut first_versions = cdrs.clone();
        for c in first_versions.iter_mut().step_by(3) {
            c.start_time = Timestamp(c.start_time.millis() - 4_000_000);
            c.agent_id = None;
            c.outcome = callpulse_core::Outcome::InProgress;
            c.end_time = None;
        }
        for chunk in first_versions.chunks(70) {
            store.upsert_cdrs(chunk, Timestamp(0)).await.unwrap();
        }
        for chunk in cdrs.chunks(90) {
            store.upsert_cdrs(chunk, Timestamp(0)).await.unwrap();
        }
        let groupings = [
            None,
            Some(GroupBy::Hour),
            Some(GroupBy::Day),
            Some(GroupBy::Agent),
            Some(GroupBy::Trunk),
            Some(GroupBy::Direction),
        ];
        let zones = ["UTC", "Asia/Kathmandu", "America/New_York", "Asia/Kolkata"];
        for i in 0..40 {
            let from = t0 - 3_600_000 + rng.gen_range(0..2 * 86_400_000i64);
            let to = from + rng.gen_range(0..3 * 86_400_000i64);
            let to = if i % 5 == 0 { t0 + 5 * 86_400_000 } else { to };
            let filter = match i % 4 {
                0 => MetricFilter::default(),
                1 => MetricFilter {
                    agent_id: Some("agent-3".into()),
                    ..Default::default()
                },
                2 => MetricFilter {
                    direction: Some(Direction::Inbound),
                    ..Default::default()
                },
                _ => MetricFilter {
                    trunk_id: cdrs[i].trunk_id.clone(),
                    ..Default::default()
                },
            };
            let tz: chrono_tz::Tz = zones[i % zones.len()].parse().unwrap();
            let group_by = groupings[i % groupings.len()];
            let q = MetricsQuery {
                from: Timestamp(from),
                to: Timestamp(to),
                filter: filter.clone(),
                group_by,
                tz,
            };
            let answer = query(store.as_ref(), &q).await.unwrap();
            let direct = tally_cdrs(
                cdrs.iter().filter(|c| {
                    (from..to).contains(&c.start_time.millis())
                        && filter.direction.is_none_or(|d| d == c.direction)
                        && filter
                            .agent_id
                            .as_ref()
                            .is_none_or(|a| c.agent_id.as_ref() == Some(a))
                        && filter
                            .trunk_id
                            .as_ref()
                            .is_none_or(|t| c.trunk_id.as_ref() == Some(t))
                }),
                &params,
            );
            assert_eq!(answer.totals, direct, "{backend} case {i}: {q:?}");
            let mut summed = Tally::default();
            for (_, g) in &answer.groups {
                summed.add(g, 1);
            }
            if group_by.is_some() {
                assert_eq!(summed, direct, "{backend} case {i}: groups add up");
            }
        }
        // A reopened store loads its in-memory day rows from the file and answers the same.
        let reopened = store::open(&url, params).await.unwrap();
        let q = MetricsQuery {
            from: Timestamp(t0 - 86_400_000),
            to: Timestamp(t0 + 5 * 86_400_000),
            filter: MetricFilter::default(),
            group_by: Some(GroupBy::Agent),
            tz: chrono_tz::UTC,
        };
        let again = query(reopened.as_ref(), &q).await.unwrap();
        assert_eq!(again.totals, tally_cdrs(cdrs.iter(), &params));
        assert_eq!(
            again.groups,
            query(store.as_ref(), &q).await.unwrap().groups,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn the_last_version_of_a_call_in_one_batch_wins_and_counts_once() {
    for (backend, url, _keep) in backends().await {
        let params = MetricParams::default();
        let store = store::open(&url, params).await.unwrap();
        let first = answered_after(5);
        let mut second = answered_after(25);
        second.trunk_id = Some("ST_b".into());
        store
            .upsert_cdrs(&[first, second.clone()], Timestamp(0))
            .await
            .unwrap();
        assert_eq!(store.get_cdr("SCL_sl").await.unwrap(), Some(second.clone()));
        let rows = every_rollup_row(store.as_ref()).await;
        assert_eq!(rows.len(), 1, "{backend}");
        assert_eq!(rows[0].trunk_id.as_deref(), Some("ST_b"));
        assert_eq!(rows[0].tally, tally_cdrs([&second], &params));
    }
}

/// An agent's stored state is its report with the latest event time, whatever the arrival order;
/// a repeated event id changes nothing, in a later batch or in the same one.
#[tokio::test]
async fn agent_states_keep_the_latest_report_by_event_time() {
    use callpulse_core::Source;
    use callpulse_core::event::AgentState;
    use callpulse_core::live::ReportedState;
    use callpulse_server::store::{AgentReport, Appended, NewEvent};
    for (backend, url, _keep) in backends().await {
        let store = store::open(&url, MetricParams::default()).await.unwrap();
        let report = |id: &str, agent: &str, state: AgentState, at: i64| NewEvent {
            source: Source::App,
            event_id: id.into(),
            event_type: "agent_state".into(),
            received_at: Timestamp(at),
            body: b"{}".to_vec(),
            call_event: None,
            agent_report: Some(AgentReport {
                agent_id: agent.into(),
                reported: ReportedState {
                    state,
                    at: Timestamp(at),
                },
            }),
            occurred_at: Timestamp(at),
            sent_at: None,
        };
        let appended = store
            .append(&[
                report("1", "alice", AgentState::Busy, 2_000),
                report("2", "alice", AgentState::Available, 1_000),
                report("3", "bob", AgentState::Away, 5_000),
                report("4", "carol", AgentState::Available, 1_000),
                report("4", "carol", AgentState::Offline, 3_000),
            ])
            .await
            .unwrap();
        assert!(
            appended[..4]
                .iter()
                .all(|a| matches!(a, Appended::Stored { .. })),
            "{backend}"
        );
        assert_eq!(appended[4], Appended::Duplicate, "{backend}");
        assert_eq!(
            store
                .append(&[report("3", "bob", AgentState::Offline, 9_000)])
                .await
                .unwrap(),
            vec![Appended::Duplicate]
        );
        let states: Vec<(String, AgentState, i64)> = store
            .agent_states()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.agent_id, r.reported.state, r.reported.at.millis()))
            .collect();
        assert_eq!(
            states,
            vec![
                ("alice".into(), AgentState::Busy, 2_000),
                ("bob".into(), AgentState::Away, 5_000),
                ("carol".into(), AgentState::Available, 1_000),
            ],
            "{backend}"
        );
    }
}

/// The call events' lookup indexes, by name, as SQLite lists them.
async fn call_event_indexes(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT name FROM sqlite_master
         WHERE type = 'index' AND tbl_name = 'call_events' AND name LIKE 'call_events_by_%'
         ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// A rebuild reloads call events without their lookup indexes and makes them after; one stopped
/// in between leaves a store that makes them again when it opens.
#[tokio::test]
async fn call_event_indexes_dropped_for_a_rebuild_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let all = [
        "call_events_by_call_no",
        "call_events_by_room_name_no",
        "call_events_by_room_sid_no",
    ];
    let store = store::open(&url, MetricParams::default()).await.unwrap();
    assert_eq!(call_event_indexes(&url).await, all);
    store.reset_derived().await.unwrap();
    assert!(call_event_indexes(&url).await.is_empty());
    store.index_call_events().await.unwrap();
    assert_eq!(call_event_indexes(&url).await, all);
    // Stopped between the two: the next open makes them.
    store.reset_derived().await.unwrap();
    drop(store);
    let _reopened = store::open(&url, MetricParams::default()).await.unwrap();
    assert_eq!(call_event_indexes(&url).await, all);
}

/// A SQLite database `old.db` in `dir` with the layout of the migrations before `before` (a
/// migration number), and a connection to it.
async fn old_layout(
    dir: &std::path::Path,
    before: &str,
) -> (std::path::PathBuf, sqlx::SqliteConnection) {
    use sqlx::Connection;
    let migrations = dir.join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    for file in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap()
    {
        let path = file.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < before {
            std::fs::copy(&path, migrations.join(name)).unwrap();
        }
    }
    let path = dir.join("old.db");
    let mut old = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(migrations.as_path())
        .await
        .unwrap()
        .run(&mut old)
        .await
        .unwrap();
    (path, old)
}

/// When the upgrade tests' calls start.
const UPGRADE_T0: i64 = 1_795_000_000_000;

/// The upgrade tests' build parameters: a day after their calls, so every call has ended.
fn upgrade_build() -> callpulse_core::BuildParams {
    callpulse_core::BuildParams {
        now: Timestamp(UPGRADE_T0 + 86_400_000),
        ..Default::default()
    }
}

/// The log entries of scripted calls' LiveKit webhooks, each received when it was sent.
fn webhook_entries<'a>(
    steps: impl IntoIterator<Item = &'a callpulse_server::simulate::Step>,
) -> Vec<callpulse_server::store::NewEvent> {
    use callpulse_server::ingest::{livekit, webhook_entry};
    use callpulse_server::simulate::Payload;
    steps
        .into_iter()
        .filter_map(|step| match &step.payload {
            Payload::Webhook(body) => {
                let decoded = livekit::decode(body, Timestamp(step.at_ms)).unwrap();
                Some(webhook_entry(decoded, body.clone(), Timestamp(step.at_ms)))
            }
            Payload::App(_) => None,
        })
        .collect()
}

/// A store in today's layout at `dir/fresh.db`, holding `entries` with the pipeline caught up.
async fn fresh_store(
    dir: &std::path::Path,
    entries: &[callpulse_server::store::NewEvent],
    build: &callpulse_core::BuildParams,
) -> std::sync::Arc<dyn store::Store> {
    let url = format!("sqlite://{}", dir.join("fresh.db").display());
    let fresh = store::open(&url, MetricParams::default()).await.unwrap();
    fresh.append(entries).await.unwrap();
    callpulse_server::pipeline::catch_up(fresh.as_ref(), build, None)
        .await
        .unwrap();
    fresh
}

/// Closes the old database at `path` and opens it as a store, which migrates it.
async fn upgrade(
    old: sqlx::SqliteConnection,
    path: &std::path::Path,
) -> std::sync::Arc<dyn store::Store> {
    use sqlx::Connection;
    old.close().await.unwrap();
    let url = format!("sqlite://{}", path.display());
    store::open(&url, MetricParams::default()).await.unwrap()
}

/// Copies [`fresh_store`]'s call events into a layout before migration 0010.
const OLD_CALL_EVENTS: &str =
    "INSERT INTO call_events (seq, call_id, room_sid, room_name, at_ms, event_type, body)
     SELECT seq, call_id, room_sid, room_name, at_ms, event_type, body FROM fresh.call_events";

/// Runs `copies` on `old` with [`fresh_store`]'s database attached as `fresh`.
async fn copy_from_fresh(dir: &std::path::Path, old: &mut sqlx::SqliteConnection, copies: &[&str]) {
    sqlx::query(&format!(
        "ATTACH DATABASE '{}' AS fresh",
        dir.join("fresh.db").display()
    ))
    .execute(&mut *old)
    .await
    .unwrap();
    for copy in copies {
        sqlx::query(copy).execute(&mut *old).await.unwrap();
    }
}

/// SQLite logs a call event in its log row and indexes it when the pipeline follows the log.
/// A database written before that (events indexed in the append, some not yet applied) is
/// upgraded so that the pipeline still applies every event it had not reached, and builds the
/// same CDR as a database that never knew the old layout.
#[tokio::test]
async fn events_logged_before_the_upgrade_and_not_yet_applied_are_applied_after_it() {
    use callpulse_server::pipeline;
    use callpulse_server::simulate::random_call;
    use rand::SeedableRng;

    let dir = tempfile::tempdir().unwrap();
    let (t0, build) = (UPGRADE_T0, upgrade_build());
    let script = random_call(&mut rand::rngs::StdRng::seed_from_u64(7), t0);
    let entries = webhook_entries(script.room.iter().chain(&script.egress));
    assert!(entries.iter().filter(|e| e.call_event.is_some()).count() >= 3);

    // Today's layout: the pipeline indexes what it follows.
    let fresh = fresh_store(dir.path(), &entries, &build).await;
    let mut expected = fresh.open_cdrs().await.unwrap();
    expected.extend(fresh.recent_finished(10).await.unwrap());
    assert!(!expected.is_empty());
    drop(fresh);

    // The old layout (migrations before 0007), with the same rows: the log, every call event
    // indexed, and the pipeline's cursor past the first call event only.
    let (old_path, mut old) = old_layout(dir.path(), "0007").await;
    copy_from_fresh(
        dir.path(),
        &mut old,
        &[
            "INSERT INTO event_log (seq, source, event_id, event_type, received_at_ms, body)
             SELECT seq, source, event_id, event_type, received_at_ms, body FROM fresh.event_log",
            OLD_CALL_EVENTS,
        ],
    )
    .await;
    let first_call_event: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM call_events")
        .fetch_one(&mut old)
        .await
        .unwrap();
    sqlx::query("INSERT INTO cursors (name, value) VALUES (?, ?)")
        .bind(pipeline::CURSOR)
        .bind(first_call_event)
        .execute(&mut old)
        .await
        .unwrap();
    let upgraded = upgrade(old, &old_path).await;
    let applied = pipeline::catch_up(upgraded.as_ref(), &build, None)
        .await
        .unwrap();
    let call_events = entries.iter().filter(|e| e.call_event.is_some()).count();
    assert_eq!(applied, call_events - 1, "every event past the cursor");
    for cdr in expected {
        let built = upgraded.get_cdr(&cdr.call_id).await.unwrap();
        assert_eq!(
            built,
            Some(cdr),
            "the call's CDR is built after the upgrade"
        );
    }
}

/// SQLite indexes call events by numbers given to their call ids and room keys (migration 0010).
/// A database indexed by the keys themselves is upgraded so that every lookup the pipeline makes
/// (a call's events with its room's, the calls of a room) finds what a database that never knew
/// the old layout finds.
#[tokio::test]
async fn call_events_indexed_by_their_keys_are_found_after_the_upgrade_to_key_numbers() {
    use callpulse_server::simulate::random_call;
    use callpulse_server::store::Room;
    use rand::SeedableRng;

    let dir = tempfile::tempdir().unwrap();
    let (t0, build) = (UPGRADE_T0, upgrade_build());
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let steps: Vec<_> = (0..6)
        .flat_map(|i| {
            let script = random_call(&mut rng, t0 + i * 60_000);
            script.room.into_iter().chain(script.egress)
        })
        .collect();
    let fresh = fresh_store(dir.path(), &webhook_entries(&steps), &build).await;
    let call_ids = fresh.all_call_ids().await.unwrap();
    assert!(call_ids.len() >= 6, "{call_ids:?}");
    let cdrs = fresh.get_cdrs(&call_ids).await.unwrap();
    let rooms: Vec<Room> = cdrs
        .iter()
        .map(|c| Room {
            sid: c.room_sid.clone(),
            name: c.room_name.clone(),
        })
        .collect();
    assert!(rooms.iter().any(|r| r.sid.is_some()));
    // Each call's events, sorted, as their debug text: the lookups promise no order.
    async fn found(
        store: &dyn store::Store,
        call_ids: &[String],
        rooms: &[Room],
    ) -> (Vec<(String, Vec<String>)>, Vec<String>) {
        let mut events: Vec<(String, Vec<String>)> = store
            .events_for_calls(call_ids)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, events)| {
                let mut events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
                events.sort();
                (id, events)
            })
            .collect();
        events.sort();
        let mut in_rooms = store.calls_in_rooms(rooms).await.unwrap();
        in_rooms.sort();
        (events, in_rooms)
    }
    let expected = found(fresh.as_ref(), &call_ids, &rooms).await;
    assert_eq!(expected.0.len(), call_ids.len());
    assert!(expected.0.iter().all(|(_, events)| events.len() >= 2));
    assert_eq!(expected.1.len(), call_ids.len());
    drop(fresh);

    // The layout before 0010, with the same log, call events and cursor.
    let (old_path, mut old) = old_layout(dir.path(), "0010").await;
    copy_from_fresh(
        dir.path(),
        &mut old,
        &[
            "INSERT INTO event_log SELECT * FROM fresh.event_log",
            OLD_CALL_EVENTS,
            "INSERT INTO cursors SELECT * FROM fresh.cursors",
        ],
    )
    .await;
    let upgraded = upgrade(old, &old_path).await;
    assert_eq!(upgraded.all_call_ids().await.unwrap(), call_ids);
    assert_eq!(found(upgraded.as_ref(), &call_ids, &rooms).await, expected);
}

/// SQLite's log finds a repeated event by (source, when it was sent, id) since the upgrade that
/// keyed it so. Rows logged before it get the time the decoder gives them (a LiveKit webhook its
/// `createdAt`, an application event none), so a repeat of any of them is still refused after
/// the upgrade, sequence numbers carry on from the old counter, and a call's timeline still
/// finds where each of its events was logged.
#[tokio::test]
async fn events_logged_before_the_log_was_keyed_by_time_are_still_refused_when_repeated() {
    use callpulse_server::ingest::{app_entries, app_events, livekit, webhook_entry};
    use callpulse_server::simulate::{Payload, random_call};
    use callpulse_server::store::Appended;
    use rand::SeedableRng;
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let t0: i64 = 1_795_000_000_000;
    let script = random_call(&mut rand::rngs::StdRng::seed_from_u64(8), t0);
    let mut entries: Vec<_> = script
        .room
        .iter()
        .chain(&script.egress)
        .filter_map(|step| match &step.payload {
            Payload::Webhook(body) => {
                // Arrival two seconds after the event: the key must not be the arrival.
                let received = Timestamp(step.at_ms + 2_000);
                let decoded = livekit::decode(body, received).unwrap();
                Some(webhook_entry(decoded, body.clone(), received))
            }
            Payload::App(_) => None,
        })
        .collect();
    let call_id = entries
        .iter()
        .find_map(|e| match &e.call_event.as_ref()?.scope {
            callpulse_core::event::Scope::Call { call_id } => Some(call_id.clone()),
            _ => None,
        })
        .expect("the call has a call-scoped event");
    let app = serde_json::json!([
        {"id": "AE_queue", "type": "queue_entered", "at": "2026-11-18T20:13:20.250Z",
         "call_id": call_id, "queue": "support"},
        {"id": "AE_agent", "type": "agent_state", "at": "2026-11-18T20:13:21.123Z",
         "agent_id": "agent-7", "state": "available"},
    ]);
    entries.extend(app_entries(
        app_events::parse_batch(&app).unwrap(),
        Timestamp(t0 + 60_000),
    ));
    assert!(entries.len() >= 5);

    // The layout before the upgrade, its log written as the store wrote it then.
    let (path, mut old) = old_layout(dir.path(), "0008").await;
    for e in &entries {
        sqlx::query(
            "INSERT INTO event_log
             (source, event_id, event_type, received_at_ms, body, call_event)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(match e.source {
            callpulse_core::Source::Livekit => "livekit",
            callpulse_core::Source::App => "app",
        })
        .bind(&e.event_id)
        .bind(&e.event_type)
        .bind(e.received_at.millis())
        .bind(&e.body)
        .bind(
            e.call_event
                .as_ref()
                .map(|c| serde_json::to_string(c).unwrap()),
        )
        .execute(&mut old)
        .await
        .unwrap();
    }
    // A row logged and then removed: its number is never given again.
    sqlx::query("INSERT INTO event_log (source, event_id, event_type, received_at_ms, body) VALUES ('livekit', 'EV_gone', 'room_started', 1, x'7b7d')")
        .execute(&mut old)
        .await
        .unwrap();
    let gone: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM event_log")
        .fetch_one(&mut old)
        .await
        .unwrap();
    sqlx::query("DELETE FROM event_log WHERE seq = ?")
        .bind(gone)
        .execute(&mut old)
        .await
        .unwrap();
    old.close().await.unwrap();

    let upgraded = store::open(
        &format!("sqlite://{}", path.display()),
        MetricParams::default(),
    )
    .await
    .unwrap();
    assert_eq!(upgraded.event_count().await.unwrap(), entries.len() as i64);
    let again = upgraded.append(&entries).await.unwrap();
    assert!(
        again.iter().all(|a| matches!(a, Appended::Duplicate)),
        "every repeat is refused: {again:?}"
    );
    let mut new = entries[0].clone();
    new.event_id = "EV_after_the_upgrade".into();
    match upgraded.append(&[new]).await.unwrap()[..] {
        [Appended::Stored { seq }] => assert!(seq > gone, "{seq} follows {gone}"),
        ref other => panic!("the new event is stored: {other:?}"),
    }
    let build = callpulse_core::BuildParams {
        now: Timestamp(t0 + 86_400_000),
        ..Default::default()
    };
    callpulse_server::pipeline::catch_up(upgraded.as_ref(), &build, None)
        .await
        .unwrap();
    let timeline = upgraded.call_timeline(&call_id).await.unwrap();
    assert!(timeline.len() >= 3);
    assert!(
        timeline.iter().all(|e| e.seq > 0),
        "every event is found where it was logged: {timeline:?}"
    );
}

/// Under appends that never stop, the SQLite WAL still starts over, so it stays near the size at
/// which the checkpointer lets the writer restart it (64 MiB). A checkpoint from a reader alone
/// never copies the last frames while commits keep coming, and the WAL would then hold every
/// page written: here 200 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_starts_over_under_appends_that_never_stop() {
    use callpulse_core::Source;
    use callpulse_server::store::NewEvent;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = store::open(
        &format!("sqlite://{}", db.display()),
        MetricParams::default(),
    )
    .await
    .unwrap();
    let wal = dir.path().join("store.db-wal");
    let body = vec![b'x'; 32 * 1024];
    let mut largest = 0;
    // 300 commits of 2 MiB at most 100 a second: at most 50 MiB between two checkpoints, and 600
    // MiB in all, over twice what the WAL may hold before it starts over.
    for commit in 0..300 {
        let events: Vec<NewEvent> = (0..64)
            .map(|i| NewEvent {
                source: Source::App,
                event_id: format!("{commit}-{i}"),
                event_type: "note".into(),
                received_at: Timestamp(0),
                body: body.clone(),
                call_event: None,
                agent_report: None,
                occurred_at: Timestamp(0),
                sent_at: None,
            })
            .collect();
        store.append(&events).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(store.event_count().await.unwrap(), 300 * 64);
    assert!(largest < 512 << 20, "the WAL grew to {} MiB", largest >> 20);
}

/// CDR writes that run at once keep the rollups exact: each rewrite subtracts what the version
/// stored when it commits added, never one another write replaced in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cdr_writes_keep_the_rollups_exact() {
    use callpulse_core::metrics::Tally;
    use std::collections::BTreeMap;
    let calls: Vec<String> = (0..20).map(|c| format!("SCL_{c}")).collect();
    for (backend, url, _keep) in backends().await {
        let params = MetricParams::default();
        let store = store::open(&url, params).await.unwrap();
        let writers = (0..8i64).map(|w| {
            let store = store.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                for round in 0..10 {
                    let cdrs: Vec<_> = calls
                        .iter()
                        .map(|id| {
                            let mut cdr = answered_after(1 + (w * 10 + round) % 40);
                            cdr.call_id = id.clone();
                            cdr.trunk_id = Some(format!("ST_{}", (w + round) % 3));
                            cdr
                        })
                        .collect();
                    store.upsert_cdrs(&cdrs, Timestamp(0)).await.unwrap();
                }
            })
        });
        for writer in futures::future::join_all(writers).await {
            writer.unwrap();
        }
        let stored = store.get_cdrs(&calls).await.unwrap();
        assert_eq!(stored.len(), calls.len(), "{backend}");
        let mut expected: BTreeMap<Option<String>, Tally> = BTreeMap::new();
        for cdr in &stored {
            expected
                .entry(cdr.trunk_id.clone())
                .or_default()
                .add(&Tally::of(cdr, &params), 1);
        }
        let mut rolled: BTreeMap<Option<String>, Tally> = BTreeMap::new();
        for row in every_rollup_row(store.as_ref()).await {
            rolled.entry(row.trunk_id).or_default().add(&row.tally, 1);
        }
        rolled.retain(|_, tally| *tally != Tally::default());
        assert_eq!(rolled, expected, "{backend}");
    }
}
