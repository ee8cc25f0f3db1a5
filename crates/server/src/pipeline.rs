//! The CDR pipeline: follows the event log and rebuilds the CDR of every call an event touches.
//!
//! The log is the queue: the pipeline's position is a stored cursor, so a crash between an append
//! and its CDR only delays the CDR until the next start. Every build reads the call's full event
//! set, so the order in which events are processed never changes a CDR.

use crate::http::IngestCounters;
use crate::leader::{Role, Turn};
use crate::live::LiveHub;
use crate::store::{Room, Store, StoreError};
use callpulse_core::event::{EventBody, Scope};
use callpulse_core::{Anomaly, CallEvent, Cdr};
use callpulse_core::{BuildParams, Timestamp, build};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const CURSOR: &str = "cdr_pipeline";
/// Call events read per pass. A call's events (four or five) often fall in one batch, and its CDR
/// is then built and written once for all of them: on SQLite, 5,000 against 1,000 took the
/// pipeline's lag after 10 s of full-speed load from 2.3 to 0.9 s.
const BATCH: i64 = 5000;
/// CDRs written per transaction. The CDRs of one batch share most of their rollup rows, read and
/// written once per transaction: on SQLite, 64 against 8 cut the pipeline's write time for the same
/// events from 24.6 to 7.8 s, and its lag after the load from 7.5 to under a second. Appends wait
/// behind each transaction (a few milliseconds at 64); at 500 one could hold them 40 ms.
const CDRS_PER_WRITE: usize = 64;
/// Calls whose events are loaded and built at a time, out of a batch's calls: a batch of 5,000
/// new calls built at once held 90 MiB more after it (`--stages memory`).
const CALLS_PER_BUILD: usize = 512;
/// After a pass that found work, the pipeline lets this much time pass before the next, so under
/// load it takes the log in larger batches (fewer write transactions taking the writer from the
/// appender) at the cost of this much more delay for CDRs.
const BUSY_PASS_GAP: Duration = Duration::from_millis(50);
/// How often an instance on standby asks for a role's lease.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);

/// The current time as a core timestamp.
pub fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}

/// Processes every call event not yet applied, telling `live` (when given) of every CDR it
/// stores. Returns how many events it applied.
pub async fn catch_up(
    store: &dyn Store,
    params: &BuildParams,
    live: Option<&LiveHub>,
) -> Result<usize, StoreError> {
    let mut cursor = store.cursor(CURSOR).await?;
    let mut applied = 0;
    loop {
        let batch = store.call_events_after(cursor, BATCH).await?;
        let Some((last, _)) = batch.last() else {
            return Ok(applied);
        };
        let last = *last;
        store.index_followed(&batch).await?;
        let mut calls = BTreeSet::new();
        let mut rooms = BTreeSet::new();
        for (_, event) in &batch {
            let room = match (&event.scope, &event.body) {
                (Scope::Call { call_id }, body) => {
                    calls.insert(call_id.clone());
                    // A SIP leg's events tell its room's other legs whose tracks are SIP.
                    match body {
                        EventBody::SipJoined { participant }
                        | EventBody::SipLeft { participant, .. } => Some(Room {
                            sid: participant.room_sid.clone(),
                            name: participant.room_name.clone(),
                        }),
                        _ => None,
                    }
                }
                (Scope::Room { sid, name }, _) => Some(Room {
                    sid: sid.clone(),
                    name: name.clone(),
                }),
            };
            if let Some(room) = room.filter(|r| r.sid.is_some() || r.name.is_some()) {
                rooms.insert(room);
            }
        }
        if !rooms.is_empty() {
            let rooms: Vec<Room> = rooms.into_iter().collect();
            calls.extend(store.calls_in_rooms(&rooms).await?);
        }
        let events = batch.len();
        drop(batch);
        let calls: Vec<String> = calls.into_iter().collect();
        for calls in calls.chunks(CALLS_PER_BUILD) {
            let cdrs = build_calls(store, calls.iter().map(String::as_str), params).await?;
            for part in cdrs.chunks(CDRS_PER_WRITE) {
                store.upsert_cdrs(part, params.now).await?;
            }
            if let Some(live) = live {
                live.apply_cdrs(&cdrs);
            }
        }
        store.set_cursor(CURSOR, last).await?;
        applied += events;
        cursor = last;
        if (events as i64) < BATCH {
            // Everything visible when the batch was read is applied.
            return Ok(applied);
        }
    }
}

/// Rebuilds and stores the CDRs of the given calls; returns the CDRs stored.
pub async fn rebuild_calls<'a>(
    store: &dyn Store,
    calls: impl IntoIterator<Item = &'a str>,
    params: &BuildParams,
) -> Result<Vec<Cdr>, StoreError> {
    let cdrs = build_calls(store, calls, params).await?;
    store.upsert_cdrs(&cdrs, params.now).await?;
    Ok(cdrs)
}

/// Builds the CDRs of the given calls from their stored events, without storing them.
async fn build_calls<'a>(
    store: &dyn Store,
    calls: impl IntoIterator<Item = &'a str>,
    params: &BuildParams,
) -> Result<Vec<Cdr>, StoreError> {
    let calls: Vec<String> = calls.into_iter().map(str::to_owned).collect();
    let mut cdrs = Vec::new();
    let mut gathered = store.events_for_calls(&calls).await?;
    for call_id in &calls {
        let events = gathered.remove(call_id).unwrap_or_default();
        cdrs.extend(build_call(call_id, &events, params));
    }
    Ok(cdrs)
}

/// The CDR of one call from its events, or none when they are not a call: a call is a SIP leg
/// (METRICS.md §1), and application events alone make no CDR.
pub fn build_call(call_id: &str, events: &[CallEvent], params: &BuildParams) -> Option<Cdr> {
    let cdr = build(call_id, events, params);
    (!cdr.anomalies.contains(&Anomaly::MissingSipParticipant)).then_some(cdr)
}

/// Closes calls whose events stopped arriving longer than the call timeout ago. Returns how many
/// it closed.
pub async fn close_idle_calls(
    store: &dyn Store,
    params: &BuildParams,
    live: Option<&LiveHub>,
) -> Result<usize, StoreError> {
    let before = Timestamp(params.now.millis() - params.call_timeout_ms);
    let mut closed = 0;
    loop {
        let idle = store.open_calls_idle_since(before, BATCH).await?;
        if idle.is_empty() {
            return Ok(closed);
        }
        let cdrs = rebuild_calls(store, idle.iter().map(String::as_str), params).await?;
        closed += cdrs.len();
        if let Some(live) = live {
            live.apply_cdrs(&cdrs);
        }
        if idle.len() < BATCH as usize {
            return Ok(closed);
        }
    }
}

/// Runs until `shutdown`: applies new events when woken (and at least every second), and closes
/// idle calls every `sweep_every`.
pub async fn run(
    store: Arc<dyn Store>,
    params: BuildParams,
    wake: Arc<Notify>,
    live: Arc<LiveHub>,
    counters: Arc<IngestCounters>,
    shutdown: CancellationToken,
) {
    let sweep_every = Duration::from_secs(30);
    let mut last_sweep = tokio::time::Instant::now() - sweep_every;
    let mut role = Role::new(CURSOR);
    loop {
        if role.turn(store.as_ref()).await == Turn::Standby {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(STANDBY_POLL) => continue,
            }
        }
        let params = BuildParams {
            now: now(),
            ..params.clone()
        };
        let applied = match catch_up(store.as_ref(), &params, Some(&live)).await {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(error = %e, "cdr pipeline failed; retrying");
                0
            }
        };
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            match close_idle_calls(store.as_ref(), &params, Some(&live)).await {
                Ok(0) => {}
                Ok(n) => {
                    IngestCounters::add(&counters.calls_closed_by_timeout, n as u64);
                    tracing::info!(calls = n, "closed calls by timeout");
                }
                Err(e) => tracing::error!(error = %e, "closing idle calls failed"),
            }
        }
        if applied > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(BUSY_PASS_GAP) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
