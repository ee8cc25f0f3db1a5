//! The embedded SQLite backend: one file, WAL, `synchronous=FULL` so that a committed append is on
//! disk before the webhook is answered.

use super::rollup::{self, Level, RollupKey, Slice, key_of_row};
use super::rows::{self, decode_json, encode_json};
use super::sql;
use super::{
    AgentReport, AlertRecord, Appended, CdrQuery, Delivery, IndexedEvent, Lease, LogPosition,
    MetricFilter, NewEvent, Quarantined, RawEvent, RollupRow, Room, SoleLease, Store, StoreError,
    StoredAlert, event_index, latest_versions, room_keys, source_name,
};
use super::{Buckets, SliceFilter};
use async_trait::async_trait;
use callpulse_core::metrics::{MetricParams, Tally};
use callpulse_core::{CallEvent, Cdr, Source, Timestamp};
use callpulse_core::{Direction, Outcome};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
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
    writer: Arc<Writer>,
    params: MetricParams,
    cache: std::sync::RwLock<SliceCache>,
    /// At least the latest call start stored (only ever raised, so never below it).
    latest_start: std::sync::atomic::AtomicI64,
    /// Held from reading CDRs' stored contributions and the rollup rows they touch to committing
    /// their replacements: those reads go through a reader connection, outside the writer's
    /// lock, so two CDR writes must not interleave.
    cdr_writes: tokio::sync::Mutex<()>,
    /// Stops the WAL checkpointer when the store is dropped.
    _checkpointer: tokio_util::sync::DropGuard,
}

/// How every write transaction begins: IMMEDIATE takes the write lock first (waiting for it under
/// the busy timeout), so a transaction can never find, at its first write, that a checkpoint or
/// another process moved the database under the snapshot it read (SQLITE_BUSY_SNAPSHOT, which no
/// timeout retries).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Rows a connection's thread may send ahead of the task reading them. At sqlx's 50, a read of
/// thousands of rows (a rebuild's pages, the pipeline's gathering) stopped the thread every 50
/// rows until the task caught up: at 4,096 a rebuild of 746k events made 180-210k voluntary
/// context switches instead of 440-480k, spent a quarter less time in the kernel, and took about
/// 6 % less time.
const ROW_CHANNEL: usize = 4096;

/// The one connection every write goes through, behind a fair lock. Held directly rather than as
/// a pool of one, whose checkout and return each cost a round trip to the connection's thread (a
/// ping) and the return a spawned task, all with the write lock held.
///
/// Appends (a webhook waits for each) go first: background work asks for the lock through
/// [`Writer::connection_after_appends`], so an append waits behind at most the one background
/// transaction already running.
struct Writer {
    conn: tokio::sync::Mutex<sqlx::SqliteConnection>,
    options: SqliteConnectOptions,
    /// Appends under way, from asking for the connection to the end of their commit.
    appending: std::sync::atomic::AtomicUsize,
    /// Told when the last append under way ends.
    appends_done: tokio::sync::Notify,
    /// [`BACKGROUND_YIELD`], but for tests.
    background_yield: Duration,
}

/// How long work that can wait (CDRs, rollups, call-event indexes, the cursor, checkpoints) lets
/// appends go first before taking its turn anyway: under sustained overload the CDR pipeline still
/// gets the writer at least this often, and its lag stays bounded.
const BACKGROUND_YIELD: Duration = Duration::from_millis(100);

/// An append under way; lets waiting background work go when the last one ends.
struct AppendTurn<'a>(&'a Writer);

impl Drop for AppendTurn<'_> {
    fn drop(&mut self) {
        if self
            .0
            .appending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.appends_done.notify_waiters();
        }
    }
}

type WriterGuard<'a> = tokio::sync::MutexGuard<'a, sqlx::SqliteConnection>;

impl Writer {
    fn new(
        conn: sqlx::SqliteConnection,
        options: SqliteConnectOptions,
        background_yield: Duration,
    ) -> Writer {
        Writer {
            conn: tokio::sync::Mutex::new(conn),
            options,
            appending: std::sync::atomic::AtomicUsize::new(0),
            appends_done: tokio::sync::Notify::new(),
            background_yield,
        }
    }

    /// The connection, with no transaction left open by its last user.
    async fn connection(&self) -> Result<WriterGuard<'_>, StoreError> {
        let mut conn = self.conn.lock().await;
        if conn.is_in_transaction() {
            // A commit that failed (a full disk: SQLITE_FULL) leaves its transaction open, and
            // neither a new transaction nor the durability setting can start inside it: roll it
            // back (its callers were told it failed). sqlx's rollback first, for a transaction
            // it began; then SQL's, for one begun by a statement.
            let _ = <<Sqlite as sqlx::Database>::TransactionManager as sqlx::TransactionManager>::rollback(&mut *conn).await;
            if conn.is_in_transaction() {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            }
            if conn.is_in_transaction() {
                self.reopen(&mut conn).await?;
            }
        }
        Ok(conn)
    }

    /// Marks an append under way until the turn is dropped.
    fn append_turn(&self) -> AppendTurn<'_> {
        self.appending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        AppendTurn(self)
    }

    /// The connection for work that can wait: it first lets every append under way end (each
    /// webhook waits for its append), for up to [`BACKGROUND_YIELD`].
    async fn connection_after_appends(&self) -> Result<WriterGuard<'_>, StoreError> {
        let deadline = tokio::time::Instant::now() + self.background_yield;
        loop {
            let done = self.appends_done.notified();
            tokio::pin!(done);
            // Registered before the count is read, so an append ending in between still wakes it.
            done.as_mut().enable();
            if self.appending.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                break;
            }
        }
        self.connection().await
    }

    /// Replaces a connection in an unknown state with a fresh one; the old one closes, and its
    /// transaction with it.
    async fn reopen(&self, conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        *conn = self.options.connect().await?;
        Ok(())
    }
}

/// A batch of statements that opens a write transaction committing with `durability`, to be sent
/// to the writer connection in one round trip ([`send_batch`]) with what follows, up to `COMMIT`.
/// Sent one by one, each statement waited for its task to be scheduled again among the request
/// handlers, with the write lock held: an append held the writer 25-40 % longer at 3,000
/// webhooks/s.
fn begin_batch<'q>(durability: Durability) -> QueryBuilder<'q, Sqlite> {
    let mut sql = QueryBuilder::new(durability.pragma());
    sql.push("; ").push(BEGIN_WRITE).push("; ");
    sql
}

/// Runs a batch of statements in one round trip; the rows of all of them, once every one has
/// succeeded. A batch whose text recurs (an append of n events) is kept prepared; one that
/// hardly does (a write of CDRs and the rollup rows they touch) would only push those out of
/// the connection's cache of 100.
async fn send_batch(
    conn: &mut sqlx::SqliteConnection,
    mut sql: QueryBuilder<'_, Sqlite>,
    recurs: bool,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, StoreError> {
    Ok(sql.build().persistent(recurs).fetch_all(conn).await?)
}

/// `result`, after rolling back the transaction a failed batch left open: the statements after
/// the one that failed, its `COMMIT` among them, did not run.
async fn end_failed<T>(
    conn: &mut sqlx::SqliteConnection,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if result.is_err() && conn.is_in_transaction() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// Whether a write transaction's commit must be on disk before it returns.
#[derive(Debug, Clone, Copy)]
enum Durability {
    /// Acknowledged input and alert notices: fsync at commit.
    Durable,
    /// Rows the log can rebuild (CDRs, rollups, cursors). WAL commits are ordered, so a crash
    /// loses only a suffix of them, never one that precedes a durable commit, and the next durable
    /// commit's fsync carries them to disk too.
    Derived,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Durable => "PRAGMA synchronous = FULL",
            Durability::Derived => "PRAGMA synchronous = NORMAL",
        }
    }
}

/// How often the WAL is checkpointed, from a connection of its own: commits never stop to copy
/// the WAL back into the database (autocheckpoint is off).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

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

impl SqliteStore {
    pub async fn open(url: &str, params: MetricParams) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .row_buffer_size(ROW_CHANNEL)
            // 16 MiB of page cache a connection instead of 2: the pipeline re-reads recent pages.
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", "0")
            // Statement journals (multi-row upserts keep one to undo a failed statement) stay in
            // memory: spilled to a temporary file they cost a write system call a page (a rebuild
            // took 13-15 % longer).
            .pragma("temp_store", "memory")
            // A WAL that grew past this (512 MiB, twice `WAL_RESTART_PAGES`) is cut back to it
            // when it starts over.
            .pragma("journal_size_limit", "536870912");
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        // A rebuild stopped between dropping the call events' indexes and making them again.
        create_call_event_indexes(&mut conn).await?;
        let writer = Arc::new(Writer::new(conn, options.clone(), BACKGROUND_YIELD));
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
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoint_wal(pool.clone(), writer.clone(), stop.clone()));
        Ok(SqliteStore {
            pool,
            writer,
            params,
            cache: std::sync::RwLock::new(cache),
            latest_start: std::sync::atomic::AtomicI64::new(latest.unwrap_or(i64::MIN)),
            cdr_writes: tokio::sync::Mutex::new(()),
            _checkpointer: stop.drop_guard(),
        })
    }

    /// The writer connection, set to commit with `durability`; its transactions begin with
    /// [`BEGIN_WRITE`].
    async fn writer(&self, durability: Durability) -> Result<WriterGuard<'_>, StoreError> {
        let mut conn = self.writer.connection().await?;
        if let Err(e) = sqlx::query(durability.pragma()).execute(&mut *conn).await {
            // A fresh connection for the next write.
            self.writer.reopen(&mut conn).await?;
            return Err(e.into());
        }
        Ok(conn)
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

    /// Writes call events under their log rows in one derived transaction.
    async fn write_call_events(&self, rows: &[(i64, &CallEvent)]) -> Result<(), StoreError> {
        let encoded = encode_call_events(rows)?;
        let mut sql = begin_batch(Durability::Derived);
        push_call_events(&mut sql, &encoded);
        sql.push("COMMIT");
        let mut conn = self.writer.connection_after_appends().await?;
        // Up to 250 events a batch: as many texts, which would push the appends' out.
        let sent = send_batch(&mut conn, sql, false).await;
        end_failed(&mut conn, sent).await.map(drop)
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
        // The decoded call event rides in its log row; `call_events` is filled by the pipeline
        // (`index_followed`), so this transaction writes no index but the log's own unique one.
        let call_events = batch
            .iter()
            .map(|e| e.call_event.as_ref().map(encode_json).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        // The whole transaction is one batch.
        let mut sql = begin_batch(Durability::Durable);
        // An agent report counts only with its event's first copy: the first in the batch, and
        // only if the log does not hold the id yet (so these statements precede the insert).
        let mut first_copies = std::collections::HashSet::new();
        for e in batch {
            let Some(report) = &e.agent_report else {
                continue;
            };
            if !first_copies.insert((e.source, e.event_id.as_str())) {
                continue;
            }
            sql.push("INSERT INTO agent_states (agent_id, state, at_ms) SELECT ")
                .push_bind(&report.agent_id)
                .push(", ")
                .push_bind(report.reported.state.as_str())
                .push(", ")
                .push_bind(report.reported.at.millis())
                .push(" WHERE NOT EXISTS (SELECT 1 FROM event_log WHERE source = ")
                .push_bind(source_name(e.source))
                .push(" AND dedup_ms = ")
                .push_bind(dedup_ms(e))
                .push(" AND event_id = ")
                .push_bind(e.event_id.as_str())
                .push(
                    ") ON CONFLICT (agent_id) DO UPDATE \
                 SET state = excluded.state, at_ms = excluded.at_ms \
                 WHERE excluded.at_ms >= agent_states.at_ms; ",
                );
        }
        // One insert per chunk; RETURNING names the rows that were new.
        for (chunk, call_events) in batch
            .chunks(APPEND_CHUNK)
            .zip(call_events.chunks(APPEND_CHUNK))
        {
            sql.push(
                "INSERT INTO event_log \
                 (source, event_id, event_type, received_at_ms, body, call_event, dedup_ms) ",
            );
            sql.push_values(chunk.iter().zip(call_events), |mut b, (e, call_event)| {
                b.push_bind(source_name(e.source))
                    .push_bind(e.event_id.as_str())
                    .push_bind(e.event_type.as_str())
                    .push_bind(e.received_at.millis())
                    .push_bind(e.body.as_slice())
                    .push_bind(call_event.as_deref())
                    .push_bind(dedup_ms(e));
            });
            sql.push(
                " ON CONFLICT (source, dedup_ms, event_id) DO NOTHING \
                 RETURNING seq, source, event_id; ",
            );
        }
        sql.push("COMMIT");
        let _turn = self.writer.append_turn();
        let mut conn = self.writer.connection().await?;
        let sent = send_batch(&mut conn, sql, true).await;
        let rows = end_failed(&mut conn, sent).await?;
        let mut new_seqs: HashMap<(String, String), i64> = rows
            .iter()
            .map(|r| ((r.get(1), r.get(2)), r.get(0)))
            .collect();
        Ok(batch
            .iter()
            .map(|e| {
                // The first copy of an id in the batch took its row; later copies are duplicates.
                match new_seqs.remove(&(source_name(e.source).to_owned(), e.event_id.clone())) {
                    Some(seq) => Appended::Stored { seq },
                    None => Appended::Duplicate,
                }
            })
            .collect())
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
        .execute(&mut *self.writer(Durability::Durable).await?)
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
        // The log rows themselves: `call_events` holds only what the pipeline has indexed.
        let rows = sqlx::query(
            "SELECT seq, call_event FROM event_log
             WHERE seq > ? AND call_event IS NOT NULL ORDER BY seq LIMIT ?",
        )
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
                    decode_json(r.get::<&str, _>("call_event"))?,
                ))
            })
            .collect()
    }

    /// The last log row, call event or not: positions are plain sequence numbers here, and a
    /// rebuild that sets the pipeline's cursor here leaves no row behind it whose `call_event`
    /// (decoded when it arrived) could be indexed over the rebuild's decoding.
    async fn log_head(&self) -> Result<LogPosition, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(LogPosition {
            tx: 0,
            seq: seq.unwrap_or(0),
        })
    }

    /// Found through the legs' SIP events, which name the call and its room, rather than the
    /// CDRs' room columns: indexes on those (random keys) cost every CDR write two page writes
    /// (migration 0009).
    async fn calls_in_rooms(&self, rooms: &[Room]) -> Result<Vec<String>, StoreError> {
        let (sids, names) = room_keys(rooms, false);
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT DISTINCT call_id FROM call_events WHERE call_id IS NOT NULL AND (",
        );
        push_key_numbers_in(&mut sql, KeyKind::RoomSid, &sids);
        sql.push(" OR ");
        push_key_numbers_in(&mut sql, KeyKind::RoomName, &names);
        sql.push(")");
        Ok(sql.build_query_scalar().fetch_all(&self.pool).await?)
    }

    async fn own_events(&self, call_ids: &[String]) -> Result<Vec<IndexedEvent>, StoreError> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT call_id, room_sid, room_name, body FROM call_events WHERE ",
        );
        push_key_numbers_in(&mut sql, KeyKind::Call, call_ids);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::indexed_event).collect()
    }

    async fn room_events(&self, rooms: &[Room]) -> Result<Vec<IndexedEvent>, StoreError> {
        let (sids, names) = room_keys(rooms, true);
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT call_id, room_sid, room_name, body FROM call_events WHERE ",
        );
        push_key_numbers_in(&mut sql, KeyKind::RoomSid, &sids);
        sql.push(" OR (room_sid IS NULL AND ");
        push_key_numbers_in(&mut sql, KeyKind::RoomName, &names);
        sql.push(")");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::indexed_event).collect()
    }

    async fn upsert_cdrs(&self, cdrs: &[Cdr], now: Timestamp) -> Result<(), StoreError> {
        let unique = latest_versions(cdrs);
        let deltas = {
            let _turn = self.cdr_writes.lock().await;
            write_cdrs(&self.pool, &self.writer, &unique, &self.params, now).await?
        };
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
        let mut sql = sql::rollup_rows::<Sqlite>(from.millis(), to.millis(), filter);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::rollup_row).collect()
    }

    async fn contributions(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let mut out = Vec::new();
        // Two reads, so the first (every row written since the binary column) walks the covering
        // index alone.
        for stored in [sql::StoredAs::Binary, sql::StoredAs::Json] {
            let mut sql = sql::contributions::<Sqlite>(from.millis(), to.millis(), filter, stored);
            for r in &sql.build().fetch_all(&self.pool).await? {
                out.extend(rows::contribution(r)?);
            }
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
        if cached(slice, level) {
            return Ok(self.cached_rows(slice, level, buckets, filter));
        }
        let Some(mut sql) = sql::slice_rows::<Sqlite>(slice, level, buckets, filter) else {
            return Ok(vec![]);
        };
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(|r| rows::slice_row(slice, r)).collect()
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
            "SELECT COUNT(*) AS n, MIN(received_at_ms) AS oldest
             FROM event_log WHERE seq > ? AND call_event IS NOT NULL",
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
        let mut sql = begin_batch(Durability::Derived);
        sql.push("INSERT INTO cursors (name, value) VALUES (")
            .push_bind(name)
            .push(", ")
            .push_bind(value.seq)
            .push(") ON CONFLICT (name) DO UPDATE SET value = excluded.value; COMMIT");
        let mut conn = self.writer.connection_after_appends().await?;
        let sent = send_batch(&mut conn, sql, true).await;
        end_failed(&mut conn, sent).await.map(drop)
    }

    async fn list_cdrs(&self, q: &CdrQuery) -> Result<Vec<Cdr>, StoreError> {
        let mut sql = sql::cdr_listing::<Sqlite>("SELECT body FROM cdrs", "", q);
        let rows = sql.build().fetch_all(&self.pool).await?;
        decode_bodies(&rows)
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
                     PARTITION BY trunk_id ORDER BY end_ms DESC, call_id DESC) AS n
                 FROM cdrs WHERE end_ms >= ? AND trunk_id IS NOT NULL)
             WHERE n <= ? ORDER BY trunk_id, end_ms DESC, call_id DESC",
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
             ORDER BY since_ms, rule, key",
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
        let mut conn = self.writer(Durability::Durable).await?;
        let mut tx = conn.begin_with(BEGIN_WRITE).await?;
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
        rows.iter().map(rows::delivery).collect()
    }

    async fn delivery_done(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_deliveries SET delivered_ms = ?, attempts = attempts + 1, last_error = NULL
             WHERE id = ?",
        )
        .bind(now.millis())
        .bind(id)
        .execute(&mut *self.writer(Durability::Durable).await?)
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
        .execute(&mut *self.writer(Durability::Durable).await?)
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
        rows.iter().map(rows::notice).collect()
    }

    async fn arrival(
        &self,
        source: Source,
        key: &str,
        at: Timestamp,
    ) -> Result<Option<(i64, Timestamp)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, received_at_ms FROM event_log
             WHERE source = ? AND dedup_ms IN (?, 0) AND event_id = ?",
        )
        .bind(source_name(source))
        .bind(at.millis())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get("seq"), Timestamp(r.get("received_at_ms")))))
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
        rows.iter().map(rows::raw_event).collect()
    }

    async fn reset_derived(&self) -> Result<(), StoreError> {
        let mut conn = self.writer(Durability::Derived).await?;
        let mut tx = conn.begin_with(BEGIN_WRITE).await?;
        for table in [
            "call_events",
            "call_keys",
            "cdrs",
            "cursors",
            "rollups",
            "rollup_slices",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        for (name, _) in CALL_EVENT_INDEXES {
            sqlx::query(&format!("DROP INDEX IF EXISTS {name}"))
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

    async fn index_call_events(&self) -> Result<(), StoreError> {
        create_call_event_indexes(&mut *self.writer(Durability::Derived).await?).await
    }

    async fn insert_call_events(
        &self,
        rows: &[(i64, Timestamp, CallEvent)],
    ) -> Result<(), StoreError> {
        let rows: Vec<(i64, &CallEvent)> = rows.iter().map(|(seq, _, e)| (*seq, e)).collect();
        self.write_call_events(&rows).await
    }

    async fn index_followed(&self, events: &[(LogPosition, CallEvent)]) -> Result<(), StoreError> {
        for part in events.chunks(INDEXED_PER_WRITE) {
            let rows: Vec<(i64, &CallEvent)> = part.iter().map(|(at, e)| (at.seq, e)).collect();
            self.write_call_events(&rows).await?;
        }
        Ok(())
    }

    async fn all_call_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT call_id FROM call_events WHERE call_no IS NOT NULL
             GROUP BY call_no ORDER BY MIN(seq)",
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
            sqlx::query("SELECT seq, body FROM call_events WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::sequenced_event).collect()
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

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until `stop`, first from a reader connection:
/// PASSIVE, it copies what no reader still needs and never waits for, or blocks, the writer.
///
/// That alone never lets the WAL start over under writes that never pause: a writer restarts the
/// WAL only when the last checkpoint copied every frame, and by the time a concurrent checkpoint
/// ends, new commits have added frames, so the WAL grows without bound (8 GB loading a million
/// CDRs). So once the WAL holds more than [`WAL_RESTART_PAGES`], a second PASSIVE checkpoint runs
/// on the writer connection itself, in its turn among the writes: it copies only what was
/// committed since the first (milliseconds of work), and the next write starts the WAL over.
/// `journal_size_limit` then trims the file.
async fn checkpoint_wal(
    pool: SqlitePool,
    writer: Arc<Writer>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        let passive = "PRAGMA wal_checkpoint(PASSIVE)";
        let first: Result<(i64, i64, i64), _> = sqlx::query_as(passive).fetch_one(&pool).await;
        let result: Result<(), StoreError> = match first {
            Ok((_, wal_pages, _)) if wal_pages > WAL_RESTART_PAGES => {
                async {
                    let mut conn = writer.connection_after_appends().await?;
                    sqlx::query(passive).execute(&mut *conn).await?;
                    Ok(())
                }
                .await
            }
            other => other.map(drop).map_err(StoreError::from),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// WAL pages (4 KiB) past which the checkpointer lets the writer start the WAL over: 256 MiB.
///
/// The writer's checkpoint holds every write back while it runs (5-20 ms on a small database, with
/// an fsync of the database file; 10-70 ms on one holding 760k events of history, whose checkpoints
/// write pages all over a larger file), so how often it runs shows in the appends' tail latency.
/// At full speed the WAL grows by over 100 MiB a second, at 5,000 webhooks/s by about 70: past
/// 16 MiB it ran four times a second at full speed, past 64 MiB two or three, and the webhooks'
/// p99 at full speed fell from 22-25 to 17-19 ms. On the database with history, at 5,000/s, the
/// p99 was 42-53 ms past 64 MiB and 12.5-13.7 ms past 256 MiB (on a fresh one 9.5-10.3 ms
/// either way). The cost is disk: up to about 256 MiB more WAL (512 MiB at most once trimmed),
/// and as much more to replay after a crash.
const WAL_RESTART_PAGES: i64 = 65_536;

/// Call events with their JSON bodies, as [`push_call_events`] writes them.
type EncodedCallEvent<'a> = (i64, &'a CallEvent, String);

fn encode_call_events<'a>(
    rows: &[(i64, &'a CallEvent)],
) -> Result<Vec<EncodedCallEvent<'a>>, StoreError> {
    rows.iter()
        .map(|(seq, event)| Ok((*seq, *event, encode_json(event)?)))
        .collect()
}

/// The kinds of key a call event is found by, as `call_keys.kind` numbers them (migration 0010),
/// in the order [`event_index`] gives them.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    Call = 0,
    RoomSid = 1,
    RoomName = 2,
}

impl KeyKind {
    const ALL: [KeyKind; 3] = [KeyKind::Call, KeyKind::RoomSid, KeyKind::RoomName];

    /// The `call_events` column holding the number of this kind's key.
    fn number_column(self) -> &'static str {
        match self {
            KeyKind::Call => "call_no",
            KeyKind::RoomSid => "room_sid_no",
            KeyKind::RoomName => "room_name_no",
        }
    }
}

/// Appends the statements that write call events under their log rows: first the numbers of the
/// keys not numbered yet, then the events, indexed by those numbers.
fn push_call_events<'q>(sql: &mut QueryBuilder<'q, Sqlite>, encoded: &'q [EncodedCallEvent<'q>]) {
    for chunk in encoded.chunks(APPEND_CHUNK) {
        let mut keys = std::collections::BTreeSet::new();
        for (_, event, _) in chunk {
            let (call_id, room_sid, room_name) = event_index(event);
            for (kind, key) in KeyKind::ALL.into_iter().zip([call_id, room_sid, room_name]) {
                if let Some(key) = key {
                    keys.insert((kind as i64, key));
                }
            }
        }
        if !keys.is_empty() {
            sql.push("INSERT INTO call_keys (kind, key) ");
            sql.push_values(keys, |mut b, (kind, key)| {
                b.push_bind(kind).push_bind(key);
            });
            sql.push(" ON CONFLICT (kind, key) DO NOTHING; ");
        }
        // The numbers are looked up once a row by one subquery a kind, written once: a subquery
        // for every row of a batch made the statement take milliseconds to compile.
        // The VALUES rows are (seq, call_id, room_sid, room_name, at_ms, event_type, body), which
        // SQLite names column1 to column7: a kind's key is column 2 + its number.
        sql.push(
            "INSERT OR REPLACE INTO call_events
                (seq, call_id, room_sid, room_name, call_no, room_sid_no, room_name_no,
                 at_ms, event_type, body)
             SELECT column1, column2, column3, column4, ",
        );
        for kind in KeyKind::ALL {
            sql.push(format_args!(
                "(SELECT key_no FROM call_keys WHERE kind = {} AND key = column{}), ",
                kind as i64,
                kind as i64 + 2
            ));
        }
        sql.push("column5, column6, column7 FROM (");
        sql.push_values(chunk, |mut b, (seq, event, body)| {
            let (call_id, room_sid, room_name) = event_index(event);
            b.push_bind(*seq)
                .push_bind(call_id)
                .push_bind(room_sid)
                .push_bind(room_name)
                .push_bind(event.at.millis())
                .push_bind(event.body.type_name())
                .push_bind(body.as_str());
        });
        sql.push("); ");
    }
}

/// Call events whose key of `kind` is one of `keys`, found by the keys' numbers; a false
/// condition for no keys.
fn push_key_numbers_in(sql: &mut QueryBuilder<'_, Sqlite>, kind: KeyKind, keys: &[String]) {
    if keys.is_empty() {
        sql.push("0");
        return;
    }
    sql.push(format_args!(
        "{} IN (SELECT key_no FROM call_keys WHERE kind = {} AND ",
        kind.number_column(),
        kind as i64
    ));
    push_in(sql, "key", keys);
    sql.push(")");
}

/// `column IN (values...)`, or a false condition for no values. SQLite takes up to 32,766
/// parameters a statement: the pipeline asks for at most a few thousand.
fn push_in(sql: &mut QueryBuilder<'_, Sqlite>, column: &str, values: &[String]) {
    if values.is_empty() {
        sql.push("0");
        return;
    }
    sql.push(format_args!("{column} IN ("));
    let mut list = sql.separated(", ");
    for v in values {
        list.push_bind(v.clone());
    }
    sql.push(")");
}

/// The call events' lookup indexes (as migration 0010 made them), which a rebuild drops while it
/// reloads the table and makes again after.
const CALL_EVENT_INDEXES: [(&str, &str); 3] = [
    (
        "call_events_by_call_no",
        "ON call_events (call_no) WHERE call_no IS NOT NULL",
    ),
    (
        "call_events_by_room_sid_no",
        "ON call_events (room_sid_no) WHERE room_sid_no IS NOT NULL",
    ),
    (
        "call_events_by_room_name_no",
        "ON call_events (room_name_no) WHERE room_name_no IS NOT NULL",
    ),
];

/// Makes those of [`CALL_EVENT_INDEXES`] that are missing.
async fn create_call_event_indexes(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    for (name, definition) in CALL_EVENT_INDEXES {
        sqlx::query(&format!("CREATE INDEX IF NOT EXISTS {name} {definition}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Call events the pipeline indexes per write transaction: appends wait behind each one.
const INDEXED_PER_WRITE: usize = 250;

/// Rollup rows read and written per statement.
const DELTA_CHUNK: usize = 300;
/// CDRs written per statement (18 values each, under SQLite's variable limit).
const CDR_CHUNK: usize = 50;
/// Log rows (5 values) or call events (7) written per statement: 7,000 values, under SQLite's
/// limit of 32,766.
const APPEND_CHUNK: usize = 1000;

const COMBO_COLUMNS: &str = "bucket_ms, direction, trunk_id, agent_id, queue";
const SLICE_COLUMNS: &str = "slice, level, bucket_ms, direction, value";

/// Writes CDRs and adds their contributions to the rollup rows. The stored contributions of these
/// calls are read, then the rollup rows the changes touch, both through a reader connection;
/// then everything is written and committed in one derived transaction, one round trip to the
/// writer. The caller holds `cdr_writes`, so nothing else changes those rows in between (the
/// reads see every commit made before them). Read inside the writer's transaction, the two
/// reads held the writer, and every webhook behind it, for two more round trips. Returns the
/// deltas applied.
async fn write_cdrs(
    reader: &SqlitePool,
    writer: &Writer,
    unique: &[&Cdr],
    params: &MetricParams,
    now: Timestamp,
) -> Result<Vec<(RollupKey, Tally)>, StoreError> {
    let mut sql = QueryBuilder::<Sqlite>::new("");
    for chunk in unique.chunks(CDR_CHUNK) {
        sql.push(format!(
            "SELECT {} FROM cdrs WHERE call_id IN (",
            sql::CONTRIBUTION_COLUMNS
        ));
        let mut ids = sql.separated(", ");
        for cdr in chunk {
            ids.push_bind(cdr.call_id.as_str());
        }
        sql.push("); ");
    }
    let mut deltas = HashMap::new();
    for r in sql.build().persistent(false).fetch_all(reader).await? {
        if let Some(old) = rows::contribution(&r)? {
            rollup::accumulate(&mut deltas, &old, -1);
        }
    }
    let rows = unique
        .chunks(CDR_CHUNK)
        .map(|chunk| sql::cdr_rows(chunk, params, &mut deltas))
        .collect::<Result<Vec<_>, _>>()?;
    let deltas: Vec<(RollupKey, Tally)> =
        deltas.into_iter().filter(|(_, d)| !d.is_empty()).collect();
    let tables = [
        ("rollups", COMBO_COLUMNS, true),
        ("rollup_slices", SLICE_COLUMNS, false),
    ];
    let in_table = |key: &RollupKey, combo: bool| matches!(key, RollupKey::Combo { .. }) == combo;
    let mut current: HashMap<RollupKey, Tally> = HashMap::new();
    if !deltas.is_empty() {
        let mut sql = QueryBuilder::<Sqlite>::new("");
        for (table, columns, combo) in tables {
            let keys: Vec<&RollupKey> = deltas
                .iter()
                .map(|(k, _)| k)
                .filter(|k| in_table(k, combo))
                .collect();
            for keys in keys.chunks(DELTA_CHUNK) {
                sql.push(format!(
                    "SELECT {columns}, tally FROM {table} WHERE ({columns}) IN "
                ));
                sql::push_key_list(&mut sql, keys);
                sql.push("; ");
            }
        }
        for r in sql.build().persistent(false).fetch_all(reader).await? {
            let tally = rollup::decode_tally(r.get::<&[u8], _>(5))
                .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))?;
            let combo = sqlx::Column::name(&r.columns()[0]) != "slice";
            current.insert(key_of_row(combo, &r)?, tally);
        }
    }
    let mut sql = begin_batch(Durability::Derived);
    for rows in &rows {
        sql::cdr_upsert(&mut sql, rows, now, "", "call_id");
        sql.push("; ");
    }
    let all: Vec<&(RollupKey, Tally)> = deltas.iter().collect();
    let (emptied, updated) = rollup::fold(current, &all);
    for (table, columns, combo) in tables {
        let emptied: Vec<&RollupKey> = emptied
            .iter()
            .copied()
            .filter(|k| in_table(k, combo))
            .collect();
        let updated: Vec<&(&RollupKey, Tally)> =
            updated.iter().filter(|(k, _)| in_table(k, combo)).collect();
        for chunk in emptied.chunks(DELTA_CHUNK) {
            sql.push(format!("DELETE FROM {table} WHERE ({columns}) IN "));
            sql::push_key_list(&mut sql, chunk);
            sql.push("; ");
        }
        for chunk in updated.chunks(DELTA_CHUNK) {
            sql.push(format!("INSERT INTO {table} ({columns}, tally) "));
            sql.push_values(chunk, |mut row, (key, tally)| {
                sql::push_key(&mut row, key);
                row.push_bind(rollup::encode_tally(tally));
            });
            sql.push(format!(
                " ON CONFLICT ({columns}) DO UPDATE SET tally = excluded.tally; "
            ));
        }
    }
    sql.push("COMMIT");
    let mut conn = writer.connection_after_appends().await?;
    let sent = send_batch(&mut conn, sql, false).await;
    end_failed(&mut conn, sent).await?;
    Ok(deltas)
}

/// The time part of the log's duplicate check (migration 0008): when the sender sent the event,
/// 0 when it does not say.
fn dedup_ms(event: &NewEvent) -> i64 {
    event.sent_at.map_or(0, Timestamp::millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer over a fresh database file whose background work waits for appends up to
    /// `background_yield`; the folder must outlive it.
    async fn writer(background_yield: Duration) -> (tempfile::TempDir, Arc<Writer>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let conn = options.connect().await.unwrap();
        let writer = Writer::new(conn, options, background_yield);
        (dir, Arc::new(writer))
    }

    /// Background work waits while an append is under way, and takes the writer when it ends
    /// (long before its own deadline).
    #[tokio::test]
    async fn background_work_lets_an_append_under_way_go_first() {
        let (_dir, writer) = writer(Duration::from_secs(600)).await;
        let turn = writer.append_turn();
        let background = tokio::spawn({
            let writer = writer.clone();
            async move { writer.connection_after_appends().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !background.is_finished(),
            "background work took the writer while an append was under way"
        );
        drop(turn);
        tokio::time::timeout(Duration::from_secs(30), background)
            .await
            .expect("background work went once the append ended")
            .unwrap()
            .unwrap();
    }

    /// Under an append that never ends, background work still gets the writer once its wait is
    /// over.
    #[tokio::test]
    async fn background_work_is_not_starved_by_appends() {
        let wait = Duration::from_millis(50);
        let (_dir, writer) = writer(wait).await;
        let _turn = writer.append_turn();
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(30), writer.connection_after_appends())
            .await
            .expect("background work was starved")
            .map(drop)
            .unwrap();
        assert!(started.elapsed() >= wait);
    }
}
