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

mod open_calls;
use open_calls::OpenCalls;

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
/// Calls whose event sets the pipeline keeps between passes (`open_calls`): at full speed the
/// calls of the last few seconds, a few thousand.
const OPEN_CALLS: usize = 8_192;
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
    catch_up_with(store, params, live, &mut OpenCalls::new(OPEN_CALLS)).await
}

/// [`catch_up`], with the event sets kept from earlier passes in `open`.
async fn catch_up_with(
    store: &dyn Store,
    params: &BuildParams,
    live: Option<&LiveHub>,
    open: &mut OpenCalls,
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
        for (_, event) in &batch {
            open.follow(event);
        }
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
            let cdrs = build_open_calls(store, calls, params, open).await?;
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

/// Builds the CDRs of the given calls from their event sets: those `open` holds, and the others
/// loaded from the store (and held from now on).
async fn build_open_calls(
    store: &dyn Store,
    calls: &[String],
    params: &BuildParams,
    open: &mut OpenCalls,
) -> Result<Vec<Cdr>, StoreError> {
    let (mut held, missing) = open.take(calls);
    if !missing.is_empty() {
        let loaded = store.events_for_calls(&missing).await?;
        open.hold(&loaded);
        held.extend(loaded);
    }
    Ok(calls
        .iter()
        .filter_map(|id| build_call(id, held.get(id).map_or(&[], Vec::as_slice), params))
        .collect())
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
    let mut open = OpenCalls::new(OPEN_CALLS);
    loop {
        if role.turn(store.as_ref()).await == Turn::Standby {
            // Another instance may apply events meanwhile: what is held would go stale.
            open.clear();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(STANDBY_POLL) => continue,
            }
        }
        let params = BuildParams {
            now: now(),
            ..params.clone()
        };
        let loaded = open.events_loaded();
        let applied = match catch_up_with(store.as_ref(), &params, Some(&live), &mut open).await {
            Ok(applied) => applied,
            Err(e) => {
                // A batch followed in part is read again: start from the store.
                open.clear();
                tracing::error!(error = %e, "cdr pipeline failed; retrying");
                0
            }
        };
        IngestCounters::add(
            &counters.cdr_pipeline_events_loaded,
            open.events_loaded() - loaded,
        );
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ingest::{app_entries, app_events, livekit, webhook_entry};
    use crate::simulate::{Payload, random_call};
    use crate::store::NewEvent;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    /// The log entries of `calls` simulated calls (webhooks and application events), shuffled a
    /// little: late, early and repeated events.
    pub(crate) fn entries(calls: usize, seed: u64) -> Vec<NewEvent> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let t0: i64 = 1_795_000_000_000;
        let mut steps = Vec::new();
        for i in 0..calls {
            let script = random_call(&mut rng, t0 + i as i64 * 2_000);
            steps.extend(script.room.into_iter().chain(script.egress));
        }
        steps.sort_by_key(|s| s.at_ms);
        let mut out = Vec::new();
        for step in steps {
            let at = Timestamp(step.at_ms);
            match step.payload {
                Payload::Webhook(body) => {
                    let decoded = livekit::decode(&body, at).unwrap();
                    out.push(webhook_entry(decoded, body, at));
                }
                Payload::App(value) => {
                    out.extend(app_entries(app_events::parse_batch(&value).unwrap(), at));
                }
            }
        }
        // Moves some events later and repeats others, as LiveKit's retries and queues do.
        for _ in 0..out.len() / 5 {
            let (i, j) = (rng.gen_range(0..out.len()), rng.gen_range(0..out.len()));
            out.swap(i, j);
        }
        for _ in 0..out.len() / 20 {
            let repeated = out.choose(&mut rng).unwrap().clone();
            let at = rng.gen_range(0..out.len());
            out.insert(at, repeated);
        }
        out
    }

    async fn store(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join(name).display());
        crate::store::open(&url, Default::default()).await.unwrap()
    }

    /// CDRs built from the event sets kept across passes, appended a few events at a time and
    /// with room for only a few calls (so sets are dropped and loaded again), are the CDRs a
    /// pipeline reading every set from the store builds.
    #[tokio::test]
    async fn sets_kept_across_passes_build_the_cdrs_the_store_gives() {
        let dir = tempfile::tempdir().unwrap();
        let params = BuildParams {
            now: Timestamp(1_795_000_000_000 + 86_400_000),
            ..BuildParams::default()
        };
        let events = entries(60, 11);
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut loaded = Vec::new();
        for capacity in [OPEN_CALLS, 4] {
            let kept = store(&dir, &format!("kept-{capacity}.db")).await;
            let fresh = store(&dir, &format!("fresh-{capacity}.db")).await;
            let mut open = OpenCalls::new(capacity);
            let mut rest = events.as_slice();
            while !rest.is_empty() {
                let (part, after) = rest.split_at(rng.gen_range(1..=12).min(rest.len()));
                rest = after;
                for s in [&kept, &fresh] {
                    s.append(part).await.unwrap();
                }
                catch_up_with(kept.as_ref(), &params, None, &mut open)
                    .await
                    .unwrap();
                // A fresh pipeline reads every set from the store.
                catch_up(fresh.as_ref(), &params, None).await.unwrap();
            }
            assert!(open.len() <= capacity);
            let mut ids = fresh.all_call_ids().await.unwrap();
            ids.sort();
            let mut expected = fresh.get_cdrs(&ids).await.unwrap();
            let mut built = kept.get_cdrs(&ids).await.unwrap();
            expected.sort_by(|a, b| a.call_id.cmp(&b.call_id));
            built.sort_by(|a, b| a.call_id.cmp(&b.call_id));
            assert!(expected.len() >= 50, "{} CDRs", expected.len());
            assert_eq!(built, expected, "capacity {capacity}");
            loaded.push(open.events_loaded());
        }
        // Every call's set is loaded at least once; with room for four calls, again and again.
        let events = events.len() as u64;
        assert!(
            loaded[0] > 0 && loaded[0] < events,
            "{loaded:?} of {events}"
        );
        assert!(loaded[1] > loaded[0] * 2, "{loaded:?} of {events}");
    }
}
