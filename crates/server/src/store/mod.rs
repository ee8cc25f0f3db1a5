//! Storage: one `Store` trait speaking core types, one implementation per backend.
//!
//! The backend is chosen once from the database URL (`sqlite://...` or `postgres://...`). Only
//! this module knows SQL. The event log is the ground truth; `call_events` and `cdrs` are derived
//! from it and can be rebuilt (`callpulse rebuild`).

mod group_commit;
mod postgres;
pub mod rollup;
mod rows;
mod sql;
mod sqlite;

use async_trait::async_trait;
use callpulse_core::live::ReportedState;
use callpulse_core::metrics::{MetricParams, Tally};
use callpulse_core::{CallEvent, Cdr, Direction, Outcome, Source, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;

pub use group_commit::{GroupCommit, GroupError};
pub use postgres::{DAYS_AHEAD, PgStore};
pub use sql::{CdrRow, cdr_upsert};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database url `{0}` (expected sqlite://... or postgres://...)")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// A position in the call-event log, in the order the CDR pipeline applies events.
///
/// SQLite has one writer, so log sequence numbers are allocated in commit order and `seq` alone
/// is the position (`tx` is 0). On PostgreSQL concurrent appends commit in any order, so the
/// position is the writing transaction's id, then `seq`, and only transactions older than every
/// running one are read: a row can never appear behind a position already passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    pub tx: i64,
    pub seq: i64,
}

/// A change another instance sharing the database made, for this instance's live state.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// These calls' CDRs were stored.
    Cdrs(Vec<String>),
    /// An agent reported a state.
    Agents,
    /// An alert fired or resolved.
    Alerts,
    /// Changes may have been missed (the connection dropped): reload the live state.
    Resync,
}

/// A held lease on a role only one instance may play at a time (the CDR pipeline, the alert
/// evaluator). Dropping it gives the role up.
#[async_trait]
pub trait Lease: Send {
    /// Whether the lease is still held (the database may have dropped the session).
    async fn held(&mut self) -> bool;
}

/// How long each kind of row is kept. PostgreSQL enforces it by dropping whole partitions once
/// their newest possible row is older than the limit; rollups outlive the rows they summarise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The event log and the decoded call events.
    pub events_days: u32,
    pub quarantine_days: u32,
    pub cdrs_days: u32,
    pub rollups_days: u32,
}

impl RetentionPolicy {
    /// Refuses a policy that drops rollups before the rows they summarise.
    pub fn validate(&self) -> Result<(), String> {
        if self.rollups_days < self.cdrs_days || self.rollups_days < self.events_days {
            return Err(format!(
                "rollup retention ({} days) must be at least the CDR ({} days) and event ({} \
                 days) retention: metrics would vanish before the calls they count",
                self.rollups_days, self.cdrs_days, self.events_days
            ));
        }
        if [self.events_days, self.quarantine_days, self.cdrs_days].contains(&0) {
            return Err("retention must be at least 1 day".into());
        }
        Ok(())
    }
}

/// A partition past its retention.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredPartition {
    pub table: String,
    pub partition: String,
    /// The partition's upper bound: every row in it is older.
    pub until: Timestamp,
    pub rows: i64,
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Maintenance {
    pub created: Vec<String>,
    /// Rows moved out of catch-all partitions into partitions created for them.
    pub adopted_rows: i64,
    pub dropped: Vec<ExpiredPartition>,
}

/// How full the catch-all partitions are: rows there mean a partition was missing.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultPartitionRows {
    pub table: String,
    pub rows: i64,
}

/// An authentic event to append to the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: Source,
    pub event_id: String,
    pub event_type: String,
    pub received_at: Timestamp,
    pub body: Vec<u8>,
    /// The decoded call event, when the event matters to a CDR.
    pub call_event: Option<CallEvent>,
    /// An agent's reported state (`agent_state`), kept as that agent's latest when it is newer.
    pub agent_report: Option<AgentReport>,
    /// When the event happened by its own body (LiveKit's `createdAt`, an application event's
    /// `at`), else when it arrived. A retry carries the same body, so it has the same time: the
    /// partitioned log finds duplicates within one partition.
    pub occurred_at: Timestamp,
    /// When the sender says it sent the event: a LiveKit body's `createdAt`, which every retry
    /// repeats (it resends the same bytes, FACTS.md §2.4). SQLite's duplicate check leads with
    /// it, so appends land at the end of its index instead of at random places. Events without
    /// one (application events, whose id alone must decide) share the key's `None` part.
    pub sent_at: Option<Timestamp>,
}

/// A firing alert as stored: its rule, key and the notice that fired it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub rule: String,
    pub key: String,
    pub since: Timestamp,
    pub notice: serde_json::Value,
}

/// An alert transition to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub rule: String,
    pub key: String,
    /// `firing` or `resolved`.
    pub status: &'static str,
    pub at: Timestamp,
    /// The notice, as channels will render it.
    pub notice: serde_json::Value,
}

/// One notice to deliver to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub notice_id: i64,
    pub channel: String,
    pub attempts: i64,
    pub notice: serde_json::Value,
}

/// An agent's state as the application reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub agent_id: String,
    pub reported: ReportedState,
}

/// What became of an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored { seq: i64 },
    Duplicate,
}

/// An authentic body that could not be decoded.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub source: Source,
    pub received_at: Timestamp,
    pub reason: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A raw log row, for rebuilds.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub seq: i64,
    pub source: Source,
    pub event_id: String,
    pub received_at: Timestamp,
    pub body: Vec<u8>,
}

/// One entry of a call's event timeline.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub seq: i64,
    pub received_at: Timestamp,
    pub event: CallEvent,
}

/// Filters and position for listing CDRs, ordered by `start_time`, then `call_id`.
#[derive(Debug, Clone, Default)]
pub struct CdrQuery {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub direction: Option<Direction>,
    pub outcome: Option<Outcome>,
    pub trunk_id: Option<String>,
    pub agent_id: Option<String>,
    pub queue: Option<String>,
    /// Start after this `(start_time, call_id)` in the listing's order.
    pub after: Option<(Timestamp, String)>,
    /// Latest start first (the dashboard's recent calls) instead of earliest first.
    pub newest_first: bool,
    pub limit: u32,
}

/// Width of a rollup bucket: 15 minutes divides every UTC offset in use.
pub const BUCKET_MS: i64 = 15 * 60 * 1000;

/// The start of the rollup bucket holding `t`.
pub fn bucket_of(t: Timestamp) -> Timestamp {
    Timestamp(t.millis().div_euclid(BUCKET_MS) * BUCKET_MS)
}

/// Which CDRs a metric query covers, besides the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricFilter {
    pub direction: Option<Direction>,
    pub trunk_id: Option<String>,
    pub agent_id: Option<String>,
    pub queue: Option<String>,
}

/// What to read of a slice besides its buckets.
#[derive(Debug, Clone, Copy, Default)]
pub struct SliceFilter<'a> {
    pub direction: Option<Direction>,
    pub value: Option<&'a str>,
    /// The caller sums the rows regardless of bucket: they may come merged.
    pub merge: bool,
}

/// Which buckets of a level to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Buckets {
    /// Bucket starts in `[from, to)`.
    Range(Timestamp, Timestamp),
    /// These bucket starts.
    List(Vec<i64>),
}

/// The tally of one bucket and one combination of dimensions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RollupRow {
    pub bucket: Timestamp,
    pub direction: Direction,
    pub trunk_id: Option<String>,
    pub agent_id: Option<String>,
    pub queue: Option<String>,
    pub tally: Tally,
}

impl RollupRow {
    /// The row a CDR contributes to.
    pub fn of(cdr: &Cdr, params: &MetricParams) -> RollupRow {
        RollupRow {
            bucket: bucket_of(cdr.start_time),
            direction: cdr.direction,
            trunk_id: cdr.trunk_id.clone(),
            agent_id: cdr.agent_id.clone(),
            queue: cdr.queue.clone(),
            tally: Tally::of(cdr, params),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends a batch atomically: all stored (or found duplicate), or none.
    async fn append(&self, batch: &[NewEvent]) -> Result<Vec<Appended>, StoreError>;
    async fn quarantine(&self, item: &Quarantined) -> Result<(), StoreError>;
    async fn quarantine_count(&self) -> Result<i64, StoreError>;
    async fn event_count(&self) -> Result<i64, StoreError>;
    /// When the earliest event still logged arrived.
    async fn oldest_event(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Decoded call events with a log position after `after`, in log order.
    async fn call_events_after(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<(LogPosition, CallEvent)>, StoreError>;
    /// Puts call events the pipeline read ([`Store::call_events_after`]) where the builder finds
    /// them ([`Store::own_events`], [`Store::room_events`]), before it builds their calls. A
    /// backend that indexes them in the append has nothing to do. SQLite indexes them here: the
    /// lookup table's three random-keyed indexes cost a page write each per event, which in the
    /// acknowledging transaction every webhook waited for. Writing a row twice changes nothing.
    async fn index_followed(&self, _events: &[(LogPosition, CallEvent)]) -> Result<(), StoreError> {
        Ok(())
    }
    /// A position at or past the last call event in the log, where a rebuild leaves the
    /// pipeline's cursor.
    async fn log_head(&self) -> Result<LogPosition, StoreError>;
    /// The calls already known in any of these rooms: by sid where the room has one, else by
    /// name.
    async fn calls_in_rooms(&self, rooms: &[Room]) -> Result<Vec<String>, StoreError>;
    /// Each call's own events (`Some(call_id)`), for every call in `call_ids`.
    async fn own_events(&self, call_ids: &[String]) -> Result<Vec<IndexedEvent>, StoreError>;
    /// The events of these rooms' other parts: room events and every leg's events, matched by
    /// sid, or by name where an event has no sid.
    async fn room_events(&self, rooms: &[Room]) -> Result<Vec<IndexedEvent>, StoreError>;
    /// Everything the builder needs for each call: its events, its room's events, and the SIP
    /// events of the other legs of its room. Two reads, however many calls.
    async fn events_for_calls(
        &self,
        call_ids: &[String],
    ) -> Result<HashMap<String, Vec<CallEvent>>, StoreError> {
        let mut out: HashMap<String, Vec<CallEvent>> =
            call_ids.iter().map(|id| (id.clone(), Vec::new())).collect();
        for e in self.own_events(call_ids).await? {
            if let Some(events) = e.call_id.as_ref().and_then(|id| out.get_mut(id)) {
                events.push(e.event);
            }
        }
        let rooms: HashMap<String, Room> = out
            .iter()
            .filter_map(|(id, events)| Some((id.clone(), room_of(events)?)))
            .collect();
        let mut wanted: Vec<Room> = rooms.values().cloned().collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(out);
        }
        let related = self.room_events(&wanted).await?;
        // Indexed by sid, and by name for events without a sid, so each call looks only at its
        // room's events however many rooms the batch holds.
        let mut by_sid: HashMap<&str, Vec<&IndexedEvent>> = HashMap::new();
        let mut by_name: HashMap<&str, Vec<&IndexedEvent>> = HashMap::new();
        for e in &related {
            match (&e.room_sid, &e.room_name) {
                (Some(sid), _) => by_sid.entry(sid).or_default().push(e),
                (None, Some(name)) => by_name.entry(name).or_default().push(e),
                (None, None) => {}
            }
        }
        for (id, room) in &rooms {
            let events = out.get_mut(id).expect("every room is of a call asked for");
            let of_sid = room.sid.as_deref().and_then(|sid| by_sid.get(sid));
            let of_name = room.name.as_deref().and_then(|name| by_name.get(name));
            for e in of_sid.into_iter().chain(of_name).flatten() {
                if e.call_id.as_deref() != Some(id.as_str()) && room.holds(e) {
                    events.push(e.event.clone());
                }
            }
        }
        Ok(out)
    }
    /// `events_for_calls` for one call.
    async fn events_for_call(&self, call_id: &str) -> Result<Vec<CallEvent>, StoreError> {
        let id = call_id.to_owned();
        Ok(self
            .events_for_calls(std::slice::from_ref(&id))
            .await?
            .remove(&id)
            .unwrap_or_default())
    }
    /// Writes CDRs and, in the same transaction, corrects the rollups: the old version's
    /// contribution is subtracted and the new one added.
    async fn upsert_cdrs(&self, cdrs: &[Cdr], now: Timestamp) -> Result<(), StoreError>;
    /// Rows of one slice and level: the buckets in `buckets`, one direction or both, one value
    /// of the slice's dimension or all. With `merge`, rows of equal direction and value may come
    /// summed over their buckets (carrying the first bucket), for queries not grouped by time.
    async fn slice_rows(
        &self,
        slice: rollup::Slice,
        level: rollup::Level,
        buckets: &Buckets,
        filter: SliceFilter<'_>,
    ) -> Result<Vec<RollupRow>, StoreError>;
    /// At least the latest call start stored: no call starts after it, so a bucket reaching past
    /// it holds nothing more than its part before.
    async fn latest_start(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Rollup rows of the buckets in `[from, to)` (both bucket-aligned) matching `filter`.
    async fn rollup_rows(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError>;
    /// What each CDR starting in `[from, to)` and matching `filter` added to the rollups, as it
    /// was stored with the CDR: the part of a window no rollup bucket fits.
    async fn contributions(
        &self,
        from: Timestamp,
        to: Timestamp,
        filter: &MetricFilter,
    ) -> Result<Vec<RollupRow>, StoreError>;
    /// Calls still in progress whose last event is older than `before`.
    async fn open_calls_idle_since(
        &self,
        before: Timestamp,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;

    async fn cursor(&self, name: &str) -> Result<LogPosition, StoreError>;
    /// Call events after `after`: how many, and when the oldest arrived.
    async fn call_events_backlog(
        &self,
        after: LogPosition,
    ) -> Result<(i64, Option<Timestamp>), StoreError>;
    async fn set_cursor(&self, name: &str, value: LogPosition) -> Result<(), StoreError>;

    async fn list_cdrs(&self, query: &CdrQuery) -> Result<Vec<Cdr>, StoreError>;
    async fn get_cdr(&self, call_id: &str) -> Result<Option<Cdr>, StoreError>;
    /// Every call in progress.
    async fn open_cdrs(&self) -> Result<Vec<Cdr>, StoreError>;
    /// The finished calls with the latest ends, newest first.
    async fn recent_finished(&self, limit: i64) -> Result<Vec<Cdr>, StoreError>;
    /// Each agent's latest reported state.
    async fn agent_states(&self) -> Result<Vec<AgentReport>, StoreError>;

    /// Per trunk, the outcomes of its calls that ended at or after `since`, latest end first, at
    /// most `per_trunk` of them.
    async fn last_outcomes_by_trunk(
        &self,
        since: Timestamp,
        per_trunk: i64,
    ) -> Result<Vec<(String, Vec<Outcome>)>, StoreError>;

    /// Every alert that is firing, as stored.
    async fn firing_alerts(&self) -> Result<Vec<StoredAlert>, StoreError>;
    /// Records an alert's transition in one transaction: its new state, the notice, and one
    /// pending delivery per channel. Returns the notice id.
    async fn record_alert_transition(
        &self,
        transition: &AlertRecord,
        channels: &[String],
    ) -> Result<i64, StoreError>;
    /// Deliveries not yet accepted whose next attempt is due at `now`, oldest first.
    async fn due_deliveries(&self, now: Timestamp, limit: i64)
    -> Result<Vec<Delivery>, StoreError>;
    /// The receiver accepted the delivery.
    async fn delivery_done(&self, id: i64, now: Timestamp) -> Result<(), StoreError>;
    /// The attempt failed; try again at `next`.
    async fn delivery_failed(
        &self,
        id: i64,
        next: Timestamp,
        error: &str,
    ) -> Result<(), StoreError>;
    /// The latest notices, newest first, with how many of their deliveries are still pending.
    async fn recent_notices(&self, limit: i64)
    -> Result<Vec<(serde_json::Value, i64)>, StoreError>;
    /// The log position and arrival time of the logged event `key` of `source`. `at` is the
    /// event's time, which a backend whose log is keyed by time uses to find it.
    async fn arrival(
        &self,
        source: Source,
        key: &str,
        at: Timestamp,
    ) -> Result<Option<(i64, Timestamp)>, StoreError>;
    /// The events the builder used for a call, each with where and when it was logged.
    async fn call_timeline(&self, call_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let gathered = self.events_for_call(call_id).await?;
        let events = callpulse_core::cdr::call_timeline(call_id, &gathered);
        let mut out = Vec::with_capacity(events.len());
        for event in events.into_iter().cloned() {
            let (seq, received_at) = self
                .arrival(event.source, &event.key, event.at)
                .await?
                .unwrap_or((0, event.at));
            out.push(TimelineEntry {
                seq,
                received_at,
                event,
            });
        }
        out.sort_by_key(|e| (e.event.at, e.seq));
        Ok(out)
    }

    /// Raw log rows after `seq`, for rebuilds.
    async fn raw_events_after(&self, seq: i64, limit: i64) -> Result<Vec<RawEvent>, StoreError>;
    /// Drops every derived row (call events, CDRs, cursors) before a rebuild. A backend may also
    /// drop the call events' lookup indexes, which [`Store::index_call_events`] makes again.
    async fn reset_derived(&self) -> Result<(), StoreError>;
    /// Makes the call events' lookup indexes where [`Store::reset_derived`] dropped them: built
    /// once over a reloaded table they cost a sort, where kept during the reload every row costs
    /// a random page write in each.
    async fn index_call_events(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Decoded call events of logged rows: (seq, when the row arrived, the event).
    async fn insert_call_events(
        &self,
        rows: &[(i64, Timestamp, CallEvent)],
    ) -> Result<(), StoreError>;
    /// Every call id with at least one call-scoped event, in the order of their first logged
    /// event.
    async fn all_call_ids(&self) -> Result<Vec<String>, StoreError>;
    /// The call events a rebuild wrote ([`Store::insert_call_events`]) after log position `seq`,
    /// in log order: the rebuild's sequential scan.
    async fn call_events_by_seq(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, CallEvent)>, StoreError>;

    /// How many appends may usefully run at once (group commit's writer tasks).
    fn writers(&self) -> usize {
        1
    }
    /// Takes the lease on `role` if no other instance holds it. A backend used by one process
    /// at a time always grants it.
    async fn try_lease(&self, role: &str) -> Result<Option<Box<dyn Lease>>, StoreError>;
    /// Changes made through other instances sharing this database, when the backend can share.
    async fn watch(
        &self,
    ) -> Result<Option<futures::stream::BoxStream<'static, Change>>, StoreError> {
        Ok(None)
    }
    /// Housekeeping due at `now`: partitions ahead of need, rows stranded in catch-all
    /// partitions moved where they belong, partitions past retention dropped.
    async fn maintain(
        &self,
        _now: Timestamp,
        _retention: &RetentionPolicy,
    ) -> Result<Maintenance, StoreError> {
        Ok(Maintenance::default())
    }
    /// The partitions past retention at `now`; dropped unless `dry_run`.
    async fn enforce_retention(
        &self,
        _now: Timestamp,
        _retention: &RetentionPolicy,
        _dry_run: bool,
    ) -> Result<Vec<ExpiredPartition>, StoreError> {
        Err(StoreError::Unsupported(
            "retention drops PostgreSQL partitions; the SQLite store keeps everything",
        ))
    }
    /// The CDRs of these calls (those that exist), in no particular order.
    async fn get_cdrs(&self, call_ids: &[String]) -> Result<Vec<Cdr>, StoreError>;
    /// Rows in each catch-all partition (none for a backend without partitions).
    async fn default_partition_rows(&self) -> Result<Vec<DefaultPartitionRows>, StoreError> {
        Ok(vec![])
    }
}

/// A lease that is never contended (one process owns the database).
pub struct SoleLease;

#[async_trait]
impl Lease for SoleLease {
    async fn held(&mut self) -> bool {
        true
    }
}

/// The last version of each call in a batch, in first-seen order of the winners.
pub(crate) fn latest_versions(cdrs: &[Cdr]) -> Vec<&Cdr> {
    let mut position: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, cdr) in cdrs.iter().enumerate() {
        position.insert(cdr.call_id.as_str(), i);
    }
    cdrs.iter()
        .enumerate()
        .filter(|(i, c)| position[c.call_id.as_str()] == *i)
        .map(|(_, c)| c)
        .collect()
}

/// Opens the store named by `url` and brings its schema up to date. `params` decide how a CDR
/// counts in the rollups (a change needs `callpulse rebuild`).
pub async fn open(url: &str, params: MetricParams) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, params).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::open(url, params).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

pub(crate) fn source_name(source: Source) -> &'static str {
    match source {
        Source::Livekit => "livekit",
        Source::App => "app",
    }
}

pub(crate) fn parse_direction(s: &str) -> Result<Direction, StoreError> {
    match s {
        "inbound" => Ok(Direction::Inbound),
        "outbound" => Ok(Direction::Outbound),
        other => Err(StoreError::Corrupt(format!("unknown direction `{other}`"))),
    }
}

pub(crate) fn parse_source(name: &str) -> Result<Source, StoreError> {
    match name {
        "livekit" => Ok(Source::Livekit),
        "app" => Ok(Source::App),
        other => Err(StoreError::Corrupt(format!("unknown source `{other}`"))),
    }
}

/// A LiveKit room as call events name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room {
    pub sid: Option<String>,
    pub name: Option<String>,
}

impl Room {
    /// Whether an event belongs to this room: the same sid, or no sid and the same name.
    fn holds(&self, e: &IndexedEvent) -> bool {
        match (&e.room_sid, &self.sid) {
            (Some(theirs), Some(ours)) => theirs == ours,
            (Some(_), None) => false,
            (None, _) => e.room_name.is_some() && e.room_name == self.name,
        }
    }
}

/// A stored call event with the columns it is found by.
#[derive(Debug, Clone)]
pub struct IndexedEvent {
    pub call_id: Option<String>,
    pub room_sid: Option<String>,
    pub room_name: Option<String>,
    pub event: CallEvent,
}

/// The room of a call's SIP leg, from the leg's own events.
pub(crate) fn room_of(events: &[CallEvent]) -> Option<Room> {
    use callpulse_core::event::{EventBody, Scope};
    events.iter().find_map(|e| match (&e.scope, &e.body) {
        (
            Scope::Call { .. },
            EventBody::SipJoined { participant } | EventBody::SipLeft { participant, .. },
        ) => Some(Room {
            sid: participant.room_sid.clone(),
            name: participant.room_name.clone(),
        }),
        _ => None,
    })
}

/// The sids of the rooms that have one, and the names of the others (of all, with
/// `every_name`: events without a sid are matched by name even in a room known by sid).
pub(crate) fn room_keys(rooms: &[Room], every_name: bool) -> (Vec<String>, Vec<String>) {
    let sids = rooms.iter().filter_map(|r| r.sid.clone()).collect();
    let names = rooms
        .iter()
        .filter(|r| every_name || r.sid.is_none())
        .filter_map(|r| r.name.clone())
        .collect();
    (sids, names)
}

/// The columns a call event is indexed by: call id, room sid, room name.
pub(crate) fn event_index(e: &CallEvent) -> (Option<&str>, Option<&str>, Option<&str>) {
    use callpulse_core::event::{EventBody, Scope};
    match (&e.scope, &e.body) {
        (
            Scope::Call { call_id },
            EventBody::SipJoined { participant } | EventBody::SipLeft { participant, .. },
        ) => (
            Some(call_id),
            participant.room_sid.as_deref(),
            participant.room_name.as_deref(),
        ),
        (Scope::Call { call_id }, _) => (Some(call_id), None, None),
        (Scope::Room { sid, name }, _) => (None, sid.as_deref(), name.as_deref()),
    }
}
