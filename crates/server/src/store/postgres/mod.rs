//! The PostgreSQL backend, for production and for several instances sharing one database.
//!
//! Same trait, same derived tables as SQLite, with three differences that matter:
//! - Tables that grow with time are partitioned (`partitions`), and retention drops partitions.
//! - The CDR pipeline's position is (writing transaction, seq), read only below every running
//!   transaction, because concurrent appends commit out of `seq` order.
//! - Every CDR write takes one advisory lock for its transaction, so rollups stay exact even if
//!   two writers ever overlap, and announces the calls it wrote (`NOTIFY`), so every instance's
//!   live state follows the one pipeline.
//!
//! There is no in-memory rollup cache here: another instance may write at any moment.

mod partitions;

use super::rollup::{self, Level, RollupKey, Slice, key_of_row};
use super::rows::{self, decode_json, encode_json};
use super::sql;
use super::{
    AgentReport, AlertRecord, Appended, Buckets, CdrQuery, Change, DefaultPartitionRows, Delivery,
    ExpiredPartition, IndexedEvent, Lease, LogPosition, Maintenance, MetricFilter, NewEvent,
    Quarantined, RawEvent, RetentionPolicy, RollupRow, Room, SliceFilter, Store, StoreError,
    StoredAlert, event_index, latest_versions, room_keys, source_name,
};
use async_trait::async_trait;
use callpulse_core::metrics::{MetricParams, Tally};
use callpulse_core::{CallEvent, Cdr, Outcome, Source, Timestamp};
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

pub use partitions::DAYS_AHEAD;

/// Held while migrating and creating the first partitions, so instances starting together
/// take turns.
const STARTUP_LOCK: i64 = 0x6361_6c6c_7075_6c00;
/// Held by every CDR write for its transaction.
const ROLLUP_LOCK: i64 = 0x6361_6c6c_7075_6c02;
/// The class of role leases (`pg_try_advisory_lock(class, hashtext(role))`).
const LEASE_CLASS: i32 = 0x6370;
const CDRS_CHANNEL: &str = "callpulse_cdrs";
const AGENTS_CHANNEL: &str = "callpulse_agents";
const ALERTS_CHANNEL: &str = "callpulse_alerts";
/// NOTIFY payloads must stay under 8000 bytes.
const NOTIFY_BYTES: usize = 7000;
/// Call events inserted per statement by a rebuild.
const CALL_EVENT_CHUNK: usize = 5000;
/// Concurrent webhook transactions (of the pool's 16 connections).
const WRITERS: usize = 6;
/// Rollup rows read and written per statement.
const DELTA_CHUNK: usize = 1000;
/// CDRs written per statement.
const CDR_CHUNK: usize = 500;

pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    params: MetricParams,
}

fn position_of(r: &PgRow) -> LogPosition {
    LogPosition {
        tx: r.get("tx"),
        seq: r.get("seq"),
    }
}

impl PgStore {
    /// Connects, applies the migrations and creates the partitions of the coming days (under
    /// an advisory lock: instances may start together).
    pub async fn open(url: &str, params: MetricParams) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("callpulse")
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // While the database is unreachable (a restart) a request waits this long for a
            // connection before it is answered 503, and LiveKit retries: fail fast.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await?;
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(STARTUP_LOCK)
            .execute(&mut *conn)
            .await?;
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&mut *conn)
            .await;
        let store = PgStore {
            pool: pool.clone(),
            options,
            params,
        };
        let ensured = match migrated {
            Ok(()) => partitions::ensure(&pool, crate::pipeline::now(), &RetentionPolicy::KEEP_ALL)
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        };
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(STARTUP_LOCK)
            .execute(&mut *conn)
            .await?;
        ensured?;
        Ok(store)
    }

    /// The partitions of `table` this store created, as (name, from, to).
    pub async fn partitions_of(&self, table: &str) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let t = partitions::TABLES
            .iter()
            .find(|t| t.table == table)
            .ok_or(StoreError::Unsupported("not a partitioned table"))?;
        Ok(partitions::existing(&self.pool, t)
            .await?
            .into_iter()
            .map(|p| (p.name, p.from, p.to))
            .collect())
    }

    async fn cdrs_where(&self, clause: &str, arg: &str) -> Result<Vec<Cdr>, StoreError> {
        let sql = format!("SELECT body::text AS body FROM cdrs WHERE {clause}");
        let rows = sqlx::query(&sql).bind(arg).fetch_all(&self.pool).await?;
        decode_bodies(&rows)
    }
}

impl RetentionPolicy {
    /// Keeps everything (what start-up assumes before the configured policy applies).
    pub const KEEP_ALL: RetentionPolicy = RetentionPolicy {
        events_days: 1_000_000,
        quarantine_days: 1_000_000,
        cdrs_days: 1_000_000,
        rollups_days: 1_000_000,
    };
}

fn decode_bodies(rows: &[PgRow]) -> Result<Vec<Cdr>, StoreError> {
    rows.iter()
        .map(|r| decode_json(r.get::<&str, _>("body")))
        .collect()
}

async fn notify(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A role lease: a session-level advisory lock on its own connection, released when the
/// connection closes (dropping the lease, or the process dying).
struct PgLease {
    conn: PgConnection,
}

#[async_trait]
impl Lease for PgLease {
    async fn held(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.conn.ping()).await,
            Ok(Ok(()))
        )
    }
}

#[async_trait]
impl Store for PgStore {
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        // One statement (`callpulse_append`, migration 0005), its own transaction.
        let mut c = AppendColumns::default();
        for e in batch {
            c.source.push(source_name(e.source));
            c.event_id.push(e.event_id.as_str());
            c.event_type.push(e.event_type.as_str());
            c.occurred_ms.push(e.occurred_at.millis());
            c.received_at_ms.push(e.received_at.millis());
            c.body.push(e.body.as_slice());
            let (call_id, room_sid, room_name) = match &e.call_event {
                Some(event) => event_index(event),
                None => (None, None, None),
            };
            c.call_id.push(call_id);
            c.room_sid.push(room_sid);
            c.room_name.push(room_name);
            c.at_ms
                .push(e.call_event.as_ref().map(|event| event.at.millis()));
            c.call_event_type
                .push(e.call_event.as_ref().map(|event| event.body.type_name()));
            c.call_event
                .push(e.call_event.as_ref().map(encode_json).transpose()?);
            let report = e.agent_report.as_ref();
            c.agent_id.push(report.map(|r| r.agent_id.as_str()));
            c.agent_state
                .push(report.map(|r| r.reported.state.as_str()));
            c.agent_at_ms.push(report.map(|r| r.reported.at.millis()));
        }
        let stored: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT ord, seq FROM callpulse_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15)",
        )
        .bind(&c.source)
        .bind(&c.event_id)
        .bind(&c.event_type)
        .bind(&c.occurred_ms)
        .bind(&c.received_at_ms)
        .bind(&c.body)
        .bind(&c.call_id)
        .bind(&c.room_sid)
        .bind(&c.room_name)
        .bind(&c.at_ms)
        .bind(&c.call_event_type)
        .bind(&c.call_event)
        .bind(&c.agent_id)
        .bind(&c.agent_state)
        .bind(&c.agent_at_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = vec![Appended::Duplicate; batch.len()];
        for (ord, seq) in stored {
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::Corrupt(format!("append returned position {ord}")))?;
            *slot = Appended::Stored { seq };
        }
        Ok(out)
    }

    async fn quarantine(&self, item: &Quarantined) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO quarantine (source, received_at_ms, reason, content_type, body)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(source_name(item.source))
        .bind(item.received_at.millis())
        .bind(&item.reason)
        .bind(&item.content_type)
        .bind(&item.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn quarantine_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM quarantine")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn oldest_event(&self) -> Result<Option<Timestamp>, StoreError> {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(received_at_ms) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(oldest.map(Timestamp))
    }

    async fn event_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM event_log")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn call_events_after(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<(LogPosition, CallEvent)>, StoreError> {
        let rows = sqlx::query(
            "SELECT xid::text::bigint AS tx, seq, body FROM call_events
             WHERE (xid, seq) > ($1::text::xid8, $2)
               AND xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY xid, seq LIMIT $3",
        )
        .bind(after.tx.to_string())
        .bind(after.seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((position_of(r), decode_json(r.get::<&str, _>("body"))?)))
            .collect()
    }

    async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let row = sqlx::query(
            "SELECT xid::text::bigint AS tx, seq FROM call_events ORDER BY xid DESC, seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(position_of).unwrap_or_default())
    }

    async fn calls_in_rooms(&self, rooms: &[Room]) -> Result<Vec<String>, StoreError> {
        let (sids, names) = room_keys(rooms, false);
        Ok(sqlx::query_scalar(
            "SELECT call_id FROM cdrs WHERE room_sid = ANY($1) OR room_name = ANY($2)",
        )
        .bind(&sids)
        .bind(&names)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn own_events(&self, call_ids: &[String]) -> Result<Vec<IndexedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_id, room_sid, room_name, body FROM call_events WHERE call_id = ANY($1)",
        )
        .bind(call_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::indexed_event).collect()
    }

    async fn room_events(&self, rooms: &[Room]) -> Result<Vec<IndexedEvent>, StoreError> {
        let (sids, names) = room_keys(rooms, true);
        let rows = sqlx::query(
            "SELECT call_id, room_sid, room_name, body FROM call_events
             WHERE room_sid = ANY($1) OR (room_sid IS NULL AND room_name = ANY($2))",
        )
        .bind(&sids)
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::indexed_event).collect()
    }

    async fn upsert_cdrs(&self, cdrs: &[Cdr], now: Timestamp) -> Result<(), StoreError> {
        let unique = latest_versions(cdrs);
        if unique.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROLLUP_LOCK)
            .execute(&mut *tx)
            .await?;
        let mut deltas = HashMap::new();
        for chunk in unique.chunks(CDR_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|c| c.call_id.as_str()).collect();
            let starts: HashMap<&str, i64> = chunk
                .iter()
                .map(|c| (c.call_id.as_str(), c.start_time.millis()))
                .collect();
            let mut moved_ids = Vec::new();
            let mut moved_starts = Vec::new();
            for r in sqlx::query(&format!(
                "SELECT call_id, {} FROM cdrs WHERE call_id = ANY($1)",
                sql::CONTRIBUTION_COLUMNS
            ))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            {
                if let Some(old) = rows::contribution(&r)? {
                    rollup::accumulate(&mut deltas, &old, -1);
                }
                let call_id: String = r.get("call_id");
                let start: i64 = r.get("start_ms");
                if starts.get(call_id.as_str()) != Some(&start) {
                    moved_ids.push(call_id);
                    moved_starts.push(start);
                }
            }
            if !moved_ids.is_empty() {
                // The call's start moved: its row may belong to another partition now.
                sqlx::query(
                    "DELETE FROM cdrs WHERE (call_id, start_ms) IN
                         (SELECT * FROM UNNEST($1::text[], $2::bigint[]))",
                )
                .bind(&moved_ids)
                .bind(&moved_starts)
                .execute(&mut *tx)
                .await?;
            }
            let rows = sql::cdr_rows(chunk, &self.params, &mut deltas)?;
            let mut upsert = QueryBuilder::<Postgres>::new("");
            sql::cdr_upsert(&mut upsert, &rows, now, "::jsonb", "call_id, start_ms");
            upsert.build().execute(&mut *tx).await?;
        }
        let deltas: Vec<(RollupKey, Tally)> =
            deltas.into_iter().filter(|(_, d)| !d.is_empty()).collect();
        for chunk in deltas.chunks(DELTA_CHUNK) {
            apply_deltas(&mut tx, chunk).await?;
        }
        if let Some(latest) = unique.iter().map(|c| c.start_time.millis()).max() {
            sqlx::query("UPDATE cdr_bounds SET latest_start_ms = GREATEST(latest_start_ms, $1)")
                .bind(latest)
                .execute(&mut *tx)
                .await?;
        }
        let mut payload = String::new();
        for cdr in &unique {
            if payload.len() + cdr.call_id.len() + 1 > NOTIFY_BYTES {
                notify(&mut tx, CDRS_CHANNEL, &payload).await?;
                payload.clear();
            }
            if !payload.is_empty() {
                payload.push('\n');
            }
            payload.push_str(&cdr.call_id);
        }
        notify(&mut tx, CDRS_CHANNEL, &payload).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn contributions(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut sql = sql::contributions::<Postgres>(
            from.millis(),
            to.millis(),
            filter,
            sql::StoredAs::Either,
        );
        let mut out = Vec::new();
        for r in &sql.build().fetch_all(&self.pool).await? {
            out.extend(rows::contribution(r)?);
        }
        Ok(out)
    }

    async fn slice_rows(
        &self,
        slice: Slice,
        level: Level,
        buckets: &Buckets,
        filter: SliceFilter<'_>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let Some(mut sql) = sql::slice_rows::<Postgres>(slice, level, buckets, filter) else {
            return Ok(vec![]);
        };
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| rows::slice_row(slice, r)).collect()
    }

    async fn latest_start(&self) -> Result<Option<Timestamp>, StoreError> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT latest_start_ms FROM cdr_bounds")
            .fetch_one(&self.pool)
            .await?;
        Ok(latest.map(Timestamp))
    }

    async fn rollup_rows(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut sql = sql::rollup_rows::<Postgres>(from.millis(), to.millis(), filter);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::rollup_row).collect()
    }

    async fn open_calls_idle_since(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT call_id FROM cdrs WHERE outcome = 'in_progress' AND last_event_ms <= $1
             ORDER BY last_event_ms LIMIT $2",
        )
        .bind(before.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn cursor(&self, name: &str) -> Result<LogPosition, StoreError> {
        let row = sqlx::query("SELECT tx, seq FROM cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(position_of).unwrap_or_default())
    }

    async fn call_events_backlog(
        &self,
        after: LogPosition,
    ) -> Result<(i64, Option<Timestamp>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(received_at_ms) AS oldest FROM call_events
             WHERE (xid, seq) > ($1::text::xid8, $2)",
        )
        .bind(after.tx.to_string())
        .bind(after.seq)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.get("n"),
            row.get::<Option<i64>, _>("oldest").map(Timestamp),
        ))
    }

    async fn set_cursor(&self, name: &str, value: LogPosition) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, tx, seq) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, seq = excluded.seq",
        )
        .bind(name)
        .bind(value.tx)
        .bind(value.seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_cdrs(&self, q: &CdrQuery) -> Result<Vec<Cdr>, StoreError> {
        let mut sql = sql::cdr_listing::<Postgres>(
            "SELECT body::text AS body FROM cdrs",
            " COLLATE \"C\"",
            q,
        );
        let rows = sql.build().fetch_all(&self.pool).await?;
        decode_bodies(&rows)
    }

    async fn get_cdr(&self, call_id: &str) -> Result<Option<Cdr>, StoreError> {
        Ok(self.cdrs_where("call_id = $1", call_id).await?.pop())
    }

    async fn open_cdrs(&self) -> Result<Vec<Cdr>, StoreError> {
        self.cdrs_where("outcome = $1", Outcome::InProgress.as_str())
            .await
    }

    async fn recent_finished(&self, limit: i64) -> Result<Vec<Cdr>, StoreError> {
        let rows = sqlx::query(
            "SELECT body::text AS body FROM cdrs WHERE end_ms IS NOT NULL
             ORDER BY end_ms DESC, call_id COLLATE \"C\" DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        decode_bodies(&rows)
    }

    async fn agent_states(&self) -> Result<Vec<AgentReport>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent_id, state, at_ms FROM agent_states ORDER BY agent_id COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::agent_report).collect()
    }

    async fn last_outcomes_by_trunk(
        &self,
        since: Timestamp,
        per_trunk: i64,
    ) -> Result<Vec<(String, Vec<Outcome>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT trunk_id, outcome FROM (
                 SELECT trunk_id, outcome, end_ms, call_id, ROW_NUMBER() OVER (
                     PARTITION BY trunk_id ORDER BY end_ms DESC, call_id COLLATE \"C\" DESC) AS n
                 FROM cdrs WHERE end_ms >= $1 AND trunk_id IS NOT NULL) ranked
             WHERE n <= $2 ORDER BY trunk_id COLLATE \"C\", end_ms DESC, call_id COLLATE \"C\" DESC",
        )
        .bind(since.millis())
        .bind(per_trunk)
        .fetch_all(&self.pool)
        .await?;
        rows::outcomes_by_trunk(&rows)
    }

    async fn firing_alerts(&self) -> Result<Vec<StoredAlert>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule, key, since_ms, notice FROM alert_states WHERE state = 'firing'
             ORDER BY since_ms, rule COLLATE \"C\", key COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::stored_alert).collect()
    }

    async fn record_alert_transition(
        &self,
        t: &AlertRecord,
        channels: &[String],
    ) -> Result<i64, StoreError> {
        let notice = t.notice.to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO alert_states (rule, key, state, since_ms, notice)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (rule, key) DO UPDATE
             SET state = excluded.state, since_ms = excluded.since_ms, notice = excluded.notice",
        )
        .bind(&t.rule)
        .bind(&t.key)
        .bind(if t.status == "firing" {
            "firing"
        } else {
            "inactive"
        })
        .bind(t.at.millis())
        .bind(&notice)
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alert_notices (rule, key, status, created_ms, body)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&t.rule)
        .bind(&t.key)
        .bind(t.status)
        .bind(t.at.millis())
        .bind(&notice)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO alert_deliveries (notice_id, channel, next_attempt_ms)
             SELECT $1, channel, $3 FROM UNNEST($2::text[]) AS channel",
        )
        .bind(id)
        .bind(channels)
        .bind(t.at.millis())
        .execute(&mut *tx)
        .await?;
        notify(&mut tx, ALERTS_CHANNEL, "").await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn due_deliveries(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.notice_id, d.channel, d.attempts, n.body FROM alert_deliveries d
             JOIN alert_notices n ON n.id = d.notice_id
             WHERE d.delivered_ms IS NULL AND d.next_attempt_ms <= $1
             ORDER BY d.notice_id, d.id LIMIT $2",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::delivery).collect()
    }

    async fn delivery_done(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_deliveries SET delivered_ms = $1, attempts = attempts + 1,
                 last_error = NULL
             WHERE id = $2",
        )
        .bind(now.millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delivery_failed(
        &self,
        id: i64,
        next: Timestamp,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_ms = $1,
                 last_error = $2
             WHERE id = $3",
        )
        .bind(next.millis())
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn recent_notices(
        &self,
        limit: i64,
    ) -> Result<Vec<(serde_json::Value, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.body, (SELECT COUNT(*) FROM alert_deliveries d
                             WHERE d.notice_id = n.id AND d.delivered_ms IS NULL) AS pending
             FROM alert_notices n ORDER BY n.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::notice).collect()
    }

    async fn arrival(
        &self,
        source: Source,
        key: &str,
        _at: Timestamp,
    ) -> Result<Option<(i64, Timestamp)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, received_at_ms FROM event_log WHERE event_id = $1 AND source = $2 ORDER BY seq LIMIT 1",
        )
        .bind(key)
        .bind(source_name(source))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get("seq"), Timestamp(r.get("received_at_ms")))))
    }

    async fn raw_events_after(&self, seq: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, source, event_id, received_at_ms, body FROM event_log
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::raw_event).collect()
    }

    async fn reset_derived(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("TRUNCATE call_events, cdrs, cursors, rollups, rollup_slices")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE cdr_bounds SET latest_start_ms = NULL")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_call_events(
        &self,
        rows: &[(i64, Timestamp, CallEvent)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, Timestamp, &CallEvent)> =
            rows.iter().map(|(seq, at, e)| (*seq, *at, e)).collect();
        for chunk in rows.chunks(CALL_EVENT_CHUNK) {
            insert_call_events(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn all_call_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT call_id FROM call_events WHERE call_id IS NOT NULL
             GROUP BY call_id ORDER BY MIN(seq)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn call_events_by_seq(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, CallEvent)>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, body FROM call_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::sequenced_event).collect()
    }

    fn writers(&self) -> usize {
        WRITERS
    }

    async fn try_lease(&self, role: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let mut conn = self.options.connect().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LEASE_CLASS)
            .bind(role)
            .fetch_one(&mut conn)
            .await?;
        if taken {
            Ok(Some(Box::new(PgLease { conn })))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    async fn watch(&self) -> Result<Option<BoxStream<'static, Change>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([CDRS_CHANNEL, AGENTS_CHANNEL, ALERTS_CHANNEL])
            .await?;
        let stream = futures::stream::unfold(listener, |mut listener| async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        let change = match n.channel() {
                            CDRS_CHANNEL => Change::Cdrs(
                                n.payload()
                                    .split('\n')
                                    .filter(|s| !s.is_empty())
                                    .map(str::to_owned)
                                    .collect(),
                            ),
                            AGENTS_CHANNEL => Change::Agents,
                            _ => Change::Alerts,
                        };
                        return Some((change, listener));
                    }
                    // The connection dropped: notifications may be lost, so resynchronise.
                    Ok(None) => return Some((Change::Resync, listener)),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for changes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(stream.boxed()))
    }

    async fn maintain(
        &self,
        now: Timestamp,
        retention: &RetentionPolicy,
    ) -> Result<Maintenance, StoreError> {
        let (created, adopted_rows) = partitions::ensure(&self.pool, now, retention).await?;
        let dropped = partitions::retire(&self.pool, now, retention, false).await?;
        Ok(Maintenance {
            created,
            adopted_rows,
            dropped,
        })
    }

    async fn enforce_retention(
        &self,
        now: Timestamp,
        retention: &RetentionPolicy,
        dry_run: bool,
    ) -> Result<Vec<ExpiredPartition>, StoreError> {
        partitions::retire(&self.pool, now, retention, dry_run).await
    }

    async fn default_partition_rows(&self) -> Result<Vec<DefaultPartitionRows>, StoreError> {
        partitions::default_rows(&self.pool).await
    }

    async fn get_cdrs(&self, call_ids: &[String]) -> Result<Vec<Cdr>, StoreError> {
        let rows = sqlx::query("SELECT body::text AS body FROM cdrs WHERE call_id = ANY($1)")
            .bind(call_ids)
            .fetch_all(&self.pool)
            .await?;
        decode_bodies(&rows)
    }
}

/// Inserts decoded call events: (log seq, when it arrived, the event), in one statement.
async fn insert_call_events(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    rows: &[(i64, Timestamp, &CallEvent)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (mut seqs, mut calls, mut sids, mut names) = (vec![], vec![], vec![], vec![]);
    let (mut ats, mut received, mut types, mut bodies) = (vec![], vec![], vec![], vec![]);
    for (seq, arrived, event) in rows {
        let (call_id, room_sid, room_name) = event_index(event);
        seqs.push(*seq);
        calls.push(call_id);
        sids.push(room_sid);
        names.push(room_name);
        ats.push(event.at.millis());
        received.push(arrived.millis());
        types.push(event.body.type_name());
        bodies.push(encode_json(*event)?);
    }
    sqlx::query(
        "INSERT INTO call_events
             (seq, call_id, room_sid, room_name, at_ms, received_at_ms, event_type, body)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::bigint[], $7::text[], $8::text[])
         ON CONFLICT (seq, at_ms) DO UPDATE SET call_id = excluded.call_id,
             room_sid = excluded.room_sid, room_name = excluded.room_name,
             event_type = excluded.event_type, body = excluded.body",
    )
    .bind(&seqs)
    .bind(&calls)
    .bind(&sids)
    .bind(&names)
    .bind(&ats)
    .bind(&received)
    .bind(&types)
    .bind(&bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The arguments of `callpulse_append`: a column each, an element per event.
#[derive(Default)]
struct AppendColumns<'a> {
    source: Vec<&'a str>,
    event_id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    occurred_ms: Vec<i64>,
    received_at_ms: Vec<i64>,
    body: Vec<&'a [u8]>,
    call_id: Vec<Option<&'a str>>,
    room_sid: Vec<Option<&'a str>>,
    room_name: Vec<Option<&'a str>>,
    at_ms: Vec<Option<i64>>,
    call_event_type: Vec<Option<&'a str>>,
    call_event: Vec<Option<String>>,
    agent_id: Vec<Option<&'a str>>,
    agent_state: Vec<Option<&'a str>>,
    agent_at_ms: Vec<Option<i64>>,
}

/// One column of rollup keys, bound as an array.
enum KeyColumn<'a> {
    Int(Vec<i64>),
    Text(Vec<&'a str>),
}

/// `UNNEST(...) AS k(columns)` over `keys`, a column array each, and the arrays to bind. A
/// thousand keys given as `(columns) IN ((...), ...)` cost PostgreSQL about 60 ms to plan (one OR
/// branch each), against 5 ms to run this join.
fn key_arrays<'a>(combo: bool, keys: &[&'a RollupKey]) -> (String, Vec<KeyColumn<'a>>) {
    let mut arrays: Vec<KeyColumn<'a>> = Vec::with_capacity(5);
    for (i, key) in keys.iter().enumerate() {
        for (c, part) in rollup::key_parts(key).into_iter().enumerate() {
            if i == 0 {
                arrays.push(match part {
                    rollup::KeyPart::Int(_) => KeyColumn::Int(Vec::with_capacity(keys.len())),
                    rollup::KeyPart::Text(_) => KeyColumn::Text(Vec::with_capacity(keys.len())),
                });
            }
            match (&mut arrays[c], part) {
                (KeyColumn::Int(v), rollup::KeyPart::Int(n)) => v.push(n),
                (KeyColumn::Text(v), rollup::KeyPart::Text(t)) => v.push(t),
                _ => unreachable!("every key of a table has the same column types"),
            }
        }
    }
    let columns = if combo { COMBO_COLUMNS } else { SLICE_COLUMNS };
    let casts: Vec<String> = arrays
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            KeyColumn::Int(_) => format!("${}::bigint[]", i + 1),
            KeyColumn::Text(_) => format!("${}::text[]", i + 1),
        })
        .collect();
    (
        format!("UNNEST({}) AS k({columns})", casts.join(", ")),
        arrays,
    )
}

fn bind_arrays<'q>(
    mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    arrays: &'q [KeyColumn<'q>],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for array in arrays {
        query = match array {
            KeyColumn::Int(v) => query.bind(v),
            KeyColumn::Text(v) => query.bind(v),
        };
    }
    query
}

const COMBO_COLUMNS: &str = "bucket_ms, direction, trunk_id, agent_id, queue";
const SLICE_COLUMNS: &str = "slice, level, bucket_ms, direction, value";

/// Adds deltas to their rollup rows: one read, one delete of the rows that became empty, one
/// upsert of the others, per table. Slice rows also get their counters as a plain array.
async fn apply_deltas(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    deltas: &[(RollupKey, Tally)],
) -> Result<(), StoreError> {
    for combo in [true, false] {
        let (table, columns) = if combo {
            ("rollups", COMBO_COLUMNS)
        } else {
            ("rollup_slices", SLICE_COLUMNS)
        };
        let mine: Vec<&(RollupKey, Tally)> = deltas
            .iter()
            .filter(|(k, _)| matches!(k, RollupKey::Combo { .. }) == combo)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let keys: Vec<&RollupKey> = mine.iter().map(|(k, _)| k).collect();
        let (unnest, arrays) = key_arrays(combo, &keys);
        let select =
            format!("SELECT {columns}, tally FROM {table} JOIN {unnest} USING ({columns})");
        let mut current: HashMap<RollupKey, Tally> = HashMap::new();
        for r in bind_arrays(sqlx::query(&select), &arrays)
            .fetch_all(&mut **tx)
            .await?
        {
            let tally = rollup::decode_tally(r.get::<&[u8], _>(5))
                .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?;
            current.insert(key_of_row(combo, &r)?, tally);
        }
        let (emptied, updated) = rollup::fold(current, &mine);
        if !emptied.is_empty() {
            let (unnest, arrays) = key_arrays(combo, &emptied);
            let matching: Vec<String> = columns
                .split(", ")
                .map(|c| format!("t.{c} = k.{c}"))
                .collect();
            let delete = format!(
                "DELETE FROM {table} t USING {unnest} WHERE {}",
                matching.join(" AND ")
            );
            bind_arrays(sqlx::query(&delete), &arrays)
                .execute(&mut **tx)
                .await?;
        }
        if !updated.is_empty() {
            let extra = if combo { "" } else { ", counters" };
            let mut upsert = QueryBuilder::<Postgres>::new(format!(
                "INSERT INTO {table} ({columns}, tally{extra}) "
            ));
            upsert.push_values(&updated, |mut row, (key, tally)| {
                sql::push_key(&mut row, key);
                row.push_bind(rollup::encode_tally(tally));
                if !combo {
                    row.push_bind(tally.counters().to_vec());
                }
            });
            let set_extra = if combo {
                ""
            } else {
                ", counters = excluded.counters"
            };
            upsert.push(format!(
                " ON CONFLICT ({columns}) DO UPDATE SET tally = excluded.tally{set_extra}"
            ));
            upsert.build().execute(&mut **tx).await?;
        }
    }
    Ok(())
}
