//! The embedded SQLite backend: one file, WAL, `synchronous=FULL` so that a committed append is on
//! disk before the webhook is answered.

use super::rollup::{self, KeyPart, Level, RollupKey, Slice, key_of_row, key_parts};
use super::{
    AgentReport, AlertRecord, Appended, CdrQuery, Delivery, Lease, LogPosition, MetricFilter,
    NewEvent, Quarantined, RawEvent, RollupRow, SoleLease, Store, StoreError, StoredAlert,
    TimelineEntry, event_index, latest_versions, parse_direction, parse_source, source_name,
};
use super::{Buckets, SliceFilter};
use async_trait::async_trait;
use callpulse_core::event::AgentState;
use callpulse_core::event::{EventBody, Scope};
use callpulse_core::live::ReportedState;
use callpulse_core::metrics::{MetricParams, Tally};
use callpulse_core::{CallEvent, Cdr, Timestamp};
use callpulse_core::{Direction, Outcome};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Reads go through a small pool; every write goes through one connection, so writes queue in
/// the process instead of failing on a stale snapshot (`SQLITE_BUSY_SNAPSHOT`).
///
/// Day-level slice rows, and hour-level rows of the slices other than agents, are also kept in
/// memory (days × the values of each dimension, hours × trunks and queues: tens of thousands of
/// rows for months of traffic), loaded at open and updated after each commit, so the dashboard's
/// windows are summed without a query. Another process writing the same file (a `rebuild` while
/// serving) is not seen until a restart.
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    params: MetricParams,
    cache: std::sync::RwLock<SliceCache>,
    /// At least the latest call start stored (only ever raised, so never below it).
    latest_start: std::sync::atomic::AtomicI64,
}

/// Cached slice tallies by (slice, level, bucket start), then by (direction, value).
type SliceCache = HashMap<(Slice, Level, i64), HashMap<(Direction, String), Tally>>;

/// Which slice rows live in memory: every day row; hour rows except per agent (too many).
fn cached(slice: Slice, level: Level) -> bool {
    level == Level::Day || (level == Level::Hour && slice != Slice::Agent)
}

fn apply_to_cache(cache: &mut SliceCache, key: &RollupKey, delta: &Tally) {
    if let RollupKey::Slice {
        slice,
        level,
        bucket,
        direction,
        value,
    } = key
        && cached(*slice, *level)
    {
        let bucket = cache.entry((*slice, *level, *bucket)).or_default();
        let entry = bucket.entry((*direction, value.clone())).or_default();
        entry.add(delta, 1);
        if entry.is_empty() {
            bucket.remove(&(*direction, value.clone()));
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    pub async fn open(url: &str, params: MetricParams) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let mut cache = SliceCache::new();
        let rows = sqlx::query(
            "SELECT slice, level, bucket_ms, direction, value, tally FROM rollup_slices
             WHERE level = ? OR (level = ? AND slice <> ?)",
        )
        .bind(Level::Day as i64)
        .bind(Level::Hour as i64)
        .bind(Slice::Agent as i64)
        .fetch_all(&pool)
        .await?;
        for r in &rows {
            let tally = rollup::decode_tally(r.get::<&[u8], _>(5))
                .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?;
            apply_to_cache(&mut cache, &key_of_row(false, r)?, &tally);
        }
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(start_ms) FROM cdrs")
            .fetch_one(&pool)
            .await?;
        Ok(SqliteStore {
            pool,
            writer,
            params,
            cache: std::sync::RwLock::new(cache),
            latest_start: std::sync::atomic::AtomicI64::new(latest.unwrap_or(i64::MIN)),
        })
    }

    fn cached_rows(
        &self,
        slice: Slice,
        level: Level,
        buckets: &Buckets,
        filter: SliceFilter<'_>,
    ) -> Vec<RollupRow> {
        let SliceFilter {
            direction,
            value,
            merge,
        } = filter;
        let cache = self
            .cache
            .read()
            .expect("slice cache lock is never poisoned");
        let starts: Vec<i64> = match buckets {
            Buckets::List(starts) => starts.clone(),
            Buckets::Range(from, to) => {
                let width = level.width_ms();
                let first = from.millis().div_euclid(width) * width;
                let count = (to.millis().saturating_sub(first) / width).max(0) as usize;
                if count > cache.len() {
                    // A wide range: walk what the cache holds rather than every bucket in it.
                    let mut held: Vec<i64> = cache
                        .keys()
                        .filter(|(s, l, start)| {
                            *s == slice
                                && *l == level
                                && *start >= from.millis()
                                && *start < to.millis()
                        })
                        .map(|(_, _, start)| *start)
                        .collect();
                    held.sort_unstable();
                    held
                } else {
                    (first..to.millis())
                        .step_by(width as usize)
                        .filter(|s| *s >= from.millis())
                        .collect()
                }
            }
        };
        let mut out = Vec::new();
        let mut merged: HashMap<(Direction, &str), (i64, Tally)> = HashMap::new();
        for start in starts {
            let Some(day) = cache.get(&(slice, level, start)) else {
                continue;
            };
            for ((d, v), tally) in day {
                if direction.is_some_and(|want| want != *d) || value.is_some_and(|want| want != v) {
                    continue;
                }
                if merge {
                    let slot = merged
                        .entry((*d, v.as_str()))
                        .or_insert_with(|| (start, Tally::default()));
                    slot.1.add(tally, 1);
                } else {
                    out.push(slice.row(
                        start,
                        *d,
                        (!v.is_empty()).then(|| v.clone()),
                        tally.clone(),
                    ));
                }
            }
        }
        for ((d, v), (start, tally)) in merged {
            out.push(slice.row(start, d, (!v.is_empty()).then(|| v.to_owned()), tally));
        }
        out
    }

    async fn cdrs_where(&self, clause: &str, arg: &str) -> Result<Vec<Cdr>, StoreError> {
        let sql = format!("SELECT body FROM cdrs WHERE {clause}");
        let rows = sqlx::query(&sql).bind(arg).fetch_all(&self.pool).await?;
        decode_bodies(&rows)
    }
}

fn decode_bodies(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<Cdr>, StoreError> {
    rows.iter()
        .map(|r| decode_json(r.get::<&str, _>("body")))
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for e in batch {
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO event_log (source, event_id, event_type, received_at_ms, body)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, event_id) DO NOTHING RETURNING seq",
            )
            .bind(source_name(e.source))
            .bind(&e.event_id)
            .bind(&e.event_type)
            .bind(e.received_at.millis())
            .bind(&e.body)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(seq) = seq else {
                out.push(Appended::Duplicate);
                continue;
            };
            if let Some(call_event) = &e.call_event {
                insert_call_event(&mut tx, seq, call_event).await?;
            }
            if let Some(report) = &e.agent_report {
                sqlx::query(
                    "INSERT INTO agent_states (agent_id, state, at_ms) VALUES (?, ?, ?)
                     ON CONFLICT (agent_id) DO UPDATE
                     SET state = excluded.state, at_ms = excluded.at_ms
                     WHERE excluded.at_ms >= agent_states.at_ms",
                )
                .bind(&report.agent_id)
                .bind(report.reported.state.as_str())
                .bind(report.reported.at.millis())
                .execute(&mut *tx)
                .await?;
            }
            out.push(Appended::Stored { seq });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn quarantine(&self, item: &Quarantined) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO quarantine (source, received_at_ms, reason, content_type, body)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(source_name(item.source))
        .bind(item.received_at.millis())
        .bind(&item.reason)
        .bind(&item.content_type)
        .bind(&item.body)
        .execute(&self.writer)
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
        let rows =
            sqlx::query("SELECT seq, body FROM call_events WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after.seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    LogPosition {
                        tx: 0,
                        seq: r.get("seq"),
                    },
                    decode_json(r.get::<&str, _>("body"))?,
                ))
            })
            .collect()
    }

    async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM call_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(LogPosition {
            tx: 0,
            seq: seq.unwrap_or(0),
        })
    }

    async fn calls_in_room(
        &self,
        sid: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let (clause, arg) = match (sid, name) {
            (Some(sid), _) => ("room_sid = ?", sid),
            (None, Some(name)) => ("room_name = ?", name),
            (None, None) => return Ok(vec![]),
        };
        let sql = format!("SELECT call_id FROM cdrs WHERE {clause}");
        Ok(sqlx::query_scalar(&sql)
            .bind(arg)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn events_for_call(&self, call_id: &str) -> Result<Vec<CallEvent>, StoreError> {
        let own: Vec<String> = sqlx::query_scalar("SELECT body FROM call_events WHERE call_id = ?")
            .bind(call_id)
            .fetch_all(&self.pool)
            .await?;
        let mut events: Vec<CallEvent> = own
            .iter()
            .map(|b| decode_json(b))
            .collect::<Result<_, _>>()?;
        let room = events.iter().find_map(|e| match (&e.scope, &e.body) {
            (
                Scope::Call { .. },
                EventBody::SipJoined { participant } | EventBody::SipLeft { participant, .. },
            ) => Some((participant.room_sid.clone(), participant.room_name.clone())),
            _ => None,
        });
        let Some((sid, name)) = room else {
            return Ok(events);
        };
        let related: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM call_events
             WHERE (call_id IS NULL OR call_id <> ?1)
               AND (room_sid = ?2 OR (room_sid IS NULL AND room_name = ?3))",
        )
        .bind(call_id)
        .bind(sid)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        for body in &related {
            events.push(decode_json(body)?);
        }
        Ok(events)
    }

    async fn upsert_cdrs(&self, cdrs: &[Cdr], now: Timestamp) -> Result<(), StoreError> {
        let unique = latest_versions(cdrs);
        let mut tx = self.writer.begin().await?;
        let mut deltas = HashMap::new();
        for chunk in unique.chunks(CDR_CHUNK) {
            let mut select = QueryBuilder::<Sqlite>::new(
                "SELECT call_id, contribution FROM cdrs WHERE call_id IN (",
            );
            let mut ids = select.separated(", ");
            for cdr in chunk {
                ids.push_bind(cdr.call_id.as_str());
            }
            select.push(")");
            for r in select.build().fetch_all(&mut *tx).await? {
                if let Some(old) = r.get::<Option<&str>, _>(1) {
                    let old: RollupRow = decode_json(old)?;
                    rollup::accumulate(&mut deltas, &old, -1);
                }
            }
            let mut rows = Vec::with_capacity(chunk.len());
            for cdr in chunk {
                let contribution = RollupRow::of(cdr, &self.params);
                rollup::accumulate(&mut deltas, &contribution, 1);
                rows.push((*cdr, encode_json(*cdr)?, encode_json(&contribution)?));
            }
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO cdrs (call_id, start_ms, end_ms, last_event_ms, direction, outcome,
                    trunk_id, agent_id, queue, room_sid, room_name, body, updated_at_ms, contribution,
                    answer_ms, wrap_up_ms, short_abandon, transfer_type) ",
            );
            insert.push_values(&rows, |mut b, (cdr, body, contribution)| {
                b.push_bind(cdr.call_id.as_str())
                    .push_bind(cdr.start_time.millis())
                    .push_bind(cdr.end_time.map(Timestamp::millis))
                    .push_bind(cdr.last_event_at.millis())
                    .push_bind(cdr.direction.as_str())
                    .push_bind(cdr.outcome.as_str())
                    .push_bind(cdr.trunk_id.as_deref())
                    .push_bind(cdr.agent_id.as_deref())
                    .push_bind(cdr.queue.as_deref())
                    .push_bind(cdr.room_sid.as_deref())
                    .push_bind(cdr.room_name.as_deref())
                    .push_bind(body.as_str())
                    .push_bind(now.millis())
                    .push_bind(contribution.as_str())
                    .push_bind(cdr.answer_time.map(Timestamp::millis))
                    .push_bind((cdr.wrap_up_seconds * 1000.0).round() as i64)
                    .push_bind(cdr.short_abandon)
                    .push_bind(cdr.transfer_type.map(|t| t.as_str()));
            });
            insert.push(
                " ON CONFLICT (call_id) DO UPDATE SET start_ms = excluded.start_ms,
                    end_ms = excluded.end_ms, last_event_ms = excluded.last_event_ms,
                    direction = excluded.direction, outcome = excluded.outcome,
                    trunk_id = excluded.trunk_id, agent_id = excluded.agent_id,
                    queue = excluded.queue, room_sid = excluded.room_sid,
                    room_name = excluded.room_name, body = excluded.body,
                    updated_at_ms = excluded.updated_at_ms, contribution = excluded.contribution,
                    answer_ms = excluded.answer_ms, wrap_up_ms = excluded.wrap_up_ms,
                    short_abandon = excluded.short_abandon, transfer_type = excluded.transfer_type",
            );
            insert.build().execute(&mut *tx).await?;
        }
        let deltas: Vec<(RollupKey, Tally)> =
            deltas.into_iter().filter(|(_, d)| !d.is_empty()).collect();
        for chunk in deltas.chunks(DELTA_CHUNK) {
            apply_deltas(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        if let Some(latest) = unique.iter().map(|c| c.start_time.millis()).max() {
            self.latest_start
                .fetch_max(latest, std::sync::atomic::Ordering::Relaxed);
        }
        let mut cache = self
            .cache
            .write()
            .expect("slice cache lock is never poisoned");
        for (key, delta) in &deltas {
            apply_to_cache(&mut cache, key, delta);
        }
        Ok(())
    }

    async fn rollup_rows(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT bucket_ms, direction, trunk_id, agent_id, queue, tally FROM rollups WHERE bucket_ms >= ",
        );
        sql.push_bind(from.millis())
            .push(" AND bucket_ms < ")
            .push_bind(to.millis());
        if let Some(d) = filter.direction {
            sql.push(" AND direction = ").push_bind(d.as_str());
        }
        for (column, value) in [
            ("trunk_id", &filter.trunk_id),
            ("agent_id", &filter.agent_id),
            ("queue", &filter.queue),
        ] {
            if let Some(v) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(v.clone());
            }
        }
        let rows = sql.build().fetch_all(&self.pool).await?;
        let dim = |r: &sqlx::sqlite::SqliteRow, c: &str| {
            let v: String = r.get(c);
            (!v.is_empty()).then_some(v)
        };
        rows.iter()
            .map(|r| {
                Ok(RollupRow {
                    bucket: Timestamp(r.get("bucket_ms")),
                    direction: parse_direction(r.get("direction"))?,
                    trunk_id: dim(r, "trunk_id"),
                    agent_id: dim(r, "agent_id"),
                    queue: dim(r, "queue"),
                    tally: rollup::decode_tally(r.get::<&[u8], _>("tally"))
                        .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?,
                })
            })
            .collect()
    }

    async fn slice_rows(
        &self,
        slice: Slice,
        level: Level,
        buckets: &Buckets,
        filter: SliceFilter<'_>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let SliceFilter {
            direction, value, ..
        } = filter;
        if cached(slice, level) {
            return Ok(self.cached_rows(slice, level, buckets, filter));
        }
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT bucket_ms, direction, value, tally FROM rollup_slices WHERE slice = ",
        );
        sql.push_bind(slice as i64)
            .push(" AND level = ")
            .push_bind(level as i64);
        match buckets {
            Buckets::Range(from, to) => {
                sql.push(" AND bucket_ms >= ")
                    .push_bind(from.millis())
                    .push(" AND bucket_ms < ")
                    .push_bind(to.millis());
            }
            Buckets::List(starts) if starts.is_empty() => return Ok(vec![]),
            Buckets::List(starts) => {
                sql.push(" AND bucket_ms IN (");
                let mut list = sql.separated(", ");
                for start in starts {
                    list.push_bind(*start);
                }
                sql.push(")");
            }
        }
        if let Some(d) = direction {
            sql.push(" AND direction = ")
                .push_bind(rollup::direction_code(d));
        }
        if let Some(v) = value {
            sql.push(" AND value = ").push_bind(v.to_owned());
        }
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let direction = rollup::direction_from_code(r.get("direction"))
                    .ok_or_else(|| StoreError::Corrupt("unknown direction code".into()))?;
                let value: String = r.get("value");
                let tally = rollup::decode_tally(r.get::<&[u8], _>("tally"))
                    .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?;
                Ok(slice.row(
                    r.get("bucket_ms"),
                    direction,
                    (!value.is_empty()).then_some(value),
                    tally,
                ))
            })
            .collect()
    }

    async fn latest_start(&self) -> Result<Option<Timestamp>, StoreError> {
        let latest = self.latest_start.load(std::sync::atomic::Ordering::Relaxed);
        Ok((latest != i64::MIN).then_some(Timestamp(latest)))
    }

    async fn open_calls_idle_since(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT call_id FROM cdrs WHERE outcome = 'in_progress' AND last_event_ms <= ?
             ORDER BY last_event_ms LIMIT ?",
        )
        .bind(before.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn call_events_backlog(
        &self,
        after: LogPosition,
    ) -> Result<(i64, Option<Timestamp>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(e.received_at_ms) AS oldest
             FROM call_events c JOIN event_log e ON e.seq = c.seq WHERE c.seq > ?",
        )
        .bind(after.seq)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.get("n"),
            row.get::<Option<i64>, _>("oldest").map(Timestamp),
        ))
    }

    async fn cursor(&self, name: &str) -> Result<LogPosition, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM cursors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(LogPosition {
            tx: 0,
            seq: v.unwrap_or(0),
        })
    }

    async fn set_cursor(&self, name: &str, value: LogPosition) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, value) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value.seq)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_cdrs(&self, q: &CdrQuery) -> Result<Vec<Cdr>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT body FROM cdrs WHERE 1 = 1");
        if let Some(from) = q.from {
            sql.push(" AND start_ms >= ").push_bind(from.millis());
        }
        if let Some(to) = q.to {
            sql.push(" AND start_ms < ").push_bind(to.millis());
        }
        if let Some(d) = q.direction {
            sql.push(" AND direction = ").push_bind(d.as_str());
        }
        if let Some(o) = q.outcome {
            sql.push(" AND outcome = ").push_bind(o.as_str());
        }
        for (column, value) in [
            ("trunk_id", &q.trunk_id),
            ("agent_id", &q.agent_id),
            ("queue", &q.queue),
        ] {
            if let Some(v) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(v.clone());
            }
        }
        let (beyond, order) = if q.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((start, call_id)) = &q.after {
            sql.push(format_args!(" AND (start_ms, call_id) {beyond} ("))
                .push_bind(start.millis())
                .push(", ")
                .push_bind(call_id.clone())
                .push(")");
        }
        sql.push(format_args!(
            " ORDER BY start_ms {order}, call_id {order} LIMIT "
        ))
        .push_bind(i64::from(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| decode_json(r.get::<&str, _>("body")))
            .collect()
    }

    async fn get_cdr(&self, call_id: &str) -> Result<Option<Cdr>, StoreError> {
        Ok(self.cdrs_where("call_id = ?", call_id).await?.pop())
    }

    async fn open_cdrs(&self) -> Result<Vec<Cdr>, StoreError> {
        self.cdrs_where("outcome = ?", Outcome::InProgress.as_str())
            .await
    }

    async fn recent_finished(&self, limit: i64) -> Result<Vec<Cdr>, StoreError> {
        let rows = sqlx::query(
            "SELECT body FROM cdrs WHERE end_ms IS NOT NULL ORDER BY end_ms DESC, call_id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        decode_bodies(&rows)
    }

    async fn agent_states(&self) -> Result<Vec<AgentReport>, StoreError> {
        let rows = sqlx::query("SELECT agent_id, state, at_ms FROM agent_states ORDER BY agent_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let state: &str = r.get("state");
                Ok(AgentReport {
                    agent_id: r.get("agent_id"),
                    reported: ReportedState {
                        state: AgentState::parse(state).ok_or_else(|| {
                            StoreError::Corrupt(format!("unknown agent state `{state}`"))
                        })?,
                        at: Timestamp(r.get("at_ms")),
                    },
                })
            })
            .collect()
    }

    async fn last_outcomes_by_trunk(
        &self,
        since: Timestamp,
        per_trunk: i64,
    ) -> Result<Vec<(String, Vec<Outcome>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT trunk_id, outcome FROM (
                 SELECT trunk_id, outcome, end_ms, call_id, ROW_NUMBER() OVER (
                     PARTITION BY trunk_id ORDER BY end_ms DESC, call_id DESC) AS n
                 FROM cdrs WHERE end_ms >= ? AND trunk_id IS NOT NULL)
             WHERE n <= ? ORDER BY trunk_id, end_ms DESC, call_id DESC",
        )
        .bind(since.millis())
        .bind(per_trunk)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(String, Vec<Outcome>)> = Vec::new();
        for r in rows {
            let trunk: String = r.get("trunk_id");
            let outcome: &str = r.get("outcome");
            let outcome = Outcome::parse(outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown outcome `{outcome}`")))?;
            match out.last_mut() {
                Some((t, list)) if *t == trunk => list.push(outcome),
                _ => out.push((trunk, vec![outcome])),
            }
        }
        Ok(out)
    }

    async fn firing_alerts(&self) -> Result<Vec<StoredAlert>, StoreError> {
        let rows = sqlx::query(
            "SELECT rule, key, since_ms, notice FROM alert_states WHERE state = 'firing'
             ORDER BY since_ms, rule, key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredAlert {
                    rule: r.get("rule"),
                    key: r.get("key"),
                    since: Timestamp(r.get("since_ms")),
                    notice: decode_json(r.get::<&str, _>("notice"))?,
                })
            })
            .collect()
    }

    async fn record_alert_transition(
        &self,
        t: &AlertRecord,
        channels: &[String],
    ) -> Result<i64, StoreError> {
        let notice = t.notice.to_string();
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO alert_states (rule, key, state, since_ms, notice) VALUES (?, ?, ?, ?, ?)
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
            "INSERT INTO alert_notices (rule, key, status, created_ms, body) VALUES (?, ?, ?, ?, ?)
             RETURNING id",
        )
        .bind(&t.rule)
        .bind(&t.key)
        .bind(t.status)
        .bind(t.at.millis())
        .bind(&notice)
        .fetch_one(&mut *tx)
        .await?;
        for channel in channels {
            sqlx::query(
                "INSERT INTO alert_deliveries (notice_id, channel, next_attempt_ms) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(channel)
            .bind(t.at.millis())
            .execute(&mut *tx)
            .await?;
        }
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
             WHERE d.delivered_ms IS NULL AND d.next_attempt_ms <= ?
             ORDER BY d.notice_id, d.id LIMIT ?",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.get("id"),
                    notice_id: r.get("notice_id"),
                    channel: r.get("channel"),
                    attempts: r.get("attempts"),
                    notice: decode_json(r.get::<&str, _>("body"))?,
                })
            })
            .collect()
    }

    async fn delivery_done(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_deliveries SET delivered_ms = ?, attempts = attempts + 1, last_error = NULL
             WHERE id = ?",
        )
        .bind(now.millis())
        .bind(id)
        .execute(&self.writer)
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
            "UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ?
             WHERE id = ?",
        )
        .bind(next.millis())
        .bind(error)
        .bind(id)
        .execute(&self.writer)
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
             FROM alert_notices n ORDER BY n.id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((decode_json(r.get::<&str, _>("body"))?, r.get("pending"))))
            .collect()
    }

    async fn call_timeline(&self, call_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let gathered = self.events_for_call(call_id).await?;
        let events = callpulse_core::cdr::call_timeline(call_id, &gathered);
        let mut out = Vec::with_capacity(events.len());
        for event in events.into_iter().cloned() {
            let row = sqlx::query(
                "SELECT seq, received_at_ms FROM event_log WHERE event_id = ? AND source = ?",
            )
            .bind(&event.key)
            .bind(source_name(event.source))
            .fetch_optional(&self.pool)
            .await?;
            let (seq, received) = row.map_or((0, event.at.millis()), |r| {
                (r.get("seq"), r.get("received_at_ms"))
            });
            out.push(TimelineEntry {
                seq,
                received_at: Timestamp(received),
                event,
            });
        }
        out.sort_by_key(|e| (e.event.at, e.seq));
        Ok(out)
    }

    async fn raw_events_after(&self, seq: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, source, event_id, received_at_ms, body FROM event_log
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RawEvent {
                    seq: r.get("seq"),
                    source: parse_source(r.get("source"))?,
                    event_id: r.get("event_id"),
                    received_at: Timestamp(r.get("received_at_ms")),
                    body: r.get("body"),
                })
            })
            .collect()
    }

    async fn reset_derived(&self) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for table in ["call_events", "cdrs", "cursors", "rollups", "rollup_slices"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.cache
            .write()
            .expect("slice cache lock is never poisoned")
            .clear();
        self.latest_start
            .store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn insert_call_events(
        &self,
        rows: &[(i64, Timestamp, CallEvent)],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (seq, _, event) in rows {
            insert_call_event(&mut tx, *seq, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn all_call_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT call_id FROM call_events WHERE call_id IS NOT NULL ORDER BY call_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_cdrs(&self, call_ids: &[String]) -> Result<Vec<Cdr>, StoreError> {
        let mut out = Vec::with_capacity(call_ids.len());
        for chunk in call_ids.chunks(500) {
            let mut sql = QueryBuilder::<Sqlite>::new("SELECT body FROM cdrs WHERE call_id IN (");
            let mut ids = sql.separated(", ");
            for id in chunk {
                ids.push_bind(id.as_str());
            }
            sql.push(")");
            out.extend(decode_bodies(&sql.build().fetch_all(&self.pool).await?)?);
        }
        Ok(out)
    }

    async fn try_lease(&self, _role: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(Some(Box::new(SoleLease)))
    }
}

async fn insert_call_event(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    seq: i64,
    event: &CallEvent,
) -> Result<(), StoreError> {
    let (call_id, room_sid, room_name) = event_index(event);
    sqlx::query(
        "INSERT OR REPLACE INTO call_events (seq, call_id, room_sid, room_name, at_ms, event_type, body)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(seq)
    .bind(call_id)
    .bind(room_sid)
    .bind(room_name)
    .bind(event.at.millis())
    .bind(event.body.type_name())
    .bind(encode_json(event)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Rollup rows read and written per statement.
const DELTA_CHUNK: usize = 300;
/// CDRs written per statement (18 values each, under SQLite's variable limit).
const CDR_CHUNK: usize = 50;

const COMBO_COLUMNS: &str = "bucket_ms, direction, trunk_id, agent_id, queue";
const SLICE_COLUMNS: &str = "slice, level, bucket_ms, direction, value";

fn push_key_list<'q>(sql: &mut QueryBuilder<'q, Sqlite>, keys: &[&'q RollupKey]) {
    sql.push("(VALUES ");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(");
        let mut tuple = sql.separated(", ");
        for part in key_parts(key) {
            match part {
                KeyPart::Int(v) => tuple.push_bind(v),
                KeyPart::Text(v) => tuple.push_bind(v),
            };
        }
        sql.push(")");
    }
    sql.push(")");
}

/// Adds deltas to their rollup rows: one read of the rows, one upsert of the changed rows, one
/// delete of the rows that became empty, per table.
async fn apply_deltas(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
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
        let mut select = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {columns}, tally FROM {table} WHERE ({columns}) IN "
        ));
        push_key_list(&mut select, &keys);
        let mut current: HashMap<RollupKey, Tally> = HashMap::new();
        for r in select.build().fetch_all(&mut **tx).await? {
            let tally = rollup::decode_tally(r.get::<&[u8], _>(5))
                .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?;
            current.insert(key_of_row(combo, &r)?, tally);
        }
        let (emptied, updated) = rollup::fold(current, &mine);
        if !emptied.is_empty() {
            let mut delete =
                QueryBuilder::<Sqlite>::new(format!("DELETE FROM {table} WHERE ({columns}) IN "));
            push_key_list(&mut delete, &emptied);
            delete.build().execute(&mut **tx).await?;
        }
        if !updated.is_empty() {
            let mut upsert =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO {table} ({columns}, tally) "));
            upsert.push_values(&updated, |mut row, (key, tally)| {
                for part in key_parts(key) {
                    match part {
                        KeyPart::Int(v) => row.push_bind(v),
                        KeyPart::Text(v) => row.push_bind(v),
                    };
                }
                row.push_bind(rollup::encode_tally(tally));
            });
            upsert.push(format!(
                " ON CONFLICT ({columns}) DO UPDATE SET tally = excluded.tally"
            ));
            upsert.build().execute(&mut **tx).await?;
        }
    }
    Ok(())
}
