//! `callpulse rebuild`: drop every derived row and recompute it from the event log, proving that
//! the log alone is the truth.

use crate::ingest::decode_logged;
use crate::pipeline;
use crate::store::{Store, StoreError};
use callpulse_core::BuildParams;

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildReport {
    pub events: u64,
    pub call_events: u64,
    pub cdrs: u64,
}

const PAGE: i64 = 5000;

/// How much older (ms) the oldest CDR is than the oldest logged event, if by more than a day:
/// retention dropped the events of those CDRs, and a rebuild cannot make them again.
pub async fn unlogged_cdrs(store: &dyn Store) -> Result<Option<i64>, StoreError> {
    let oldest_cdr = store
        .list_cdrs(&crate::store::CdrQuery {
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(match (oldest_cdr.first(), store.oldest_event().await?) {
        (Some(cdr), Some(event)) => {
            let gap = event.millis() - cdr.start_time.millis();
            (gap > 86_400_000).then_some(gap)
        }
        (Some(_), None) => Some(i64::MAX),
        _ => None,
    })
}

/// Re-decodes every logged event and rebuilds every CDR. `progress` is told how many log rows
/// and then how many calls are done, with their totals.
pub async fn rebuild(
    store: &dyn Store,
    params: &BuildParams,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<RebuildReport, StoreError> {
    let total = store.event_count().await? as u64;
    store.reset_derived().await?;
    let mut report = RebuildReport::default();
    let mut after = 0;
    loop {
        let rows = store.raw_events_after(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let decoded: Vec<_> = rows
            .iter()
            .filter_map(|raw| decode_logged(raw).map(|e| (raw.seq, raw.received_at, e)))
            .collect();
        store.insert_call_events(&decoded).await?;
        report.events += rows.len() as u64;
        report.call_events += decoded.len() as u64;
        progress("events", report.events, total);
    }
    let calls = store.all_call_ids().await?;
    for chunk in calls.chunks(500) {
        report.cdrs += pipeline::rebuild_calls(store, chunk.iter().map(String::as_str), params)
            .await?
            .len() as u64;
        progress("calls", report.cdrs, calls.len() as u64);
    }
    store
        .set_cursor(pipeline::CURSOR, store.log_head().await?)
        .await?;
    Ok(report)
}
