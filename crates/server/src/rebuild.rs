//! `callpulse rebuild`: drop every derived row and recompute it from the event log, proving that
//! the log alone is the truth.

use crate::ingest::decode_logged;
use crate::pipeline;
use crate::store::{Store, StoreError};
use callpulse_core::{BuildParams, Cdr};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildReport {
    pub events: u64,
    pub call_events: u64,
    pub cdrs: u64,
}

/// Log rows read and decoded per page.
const PAGE: i64 = 5000;
/// Calls whose events are read, and CDRs built and written, per page.
const CALLS_PER_PAGE: usize = 500;
/// Pages a stage may run ahead of the next.
const STAGE_QUEUE: usize = 2;
/// Pages of calls whose events are read at once, each on its own reader connection.
const READS_AT_ONCE: usize = 2;

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
///
/// Each phase runs as stages joined by short queues, so the two cores work at once: while the
/// store writes one page (call events, then CDRs with their rollups, on the writer connection),
/// the next log page is read while the last is decoded on a blocking thread, or two pages of
/// calls are read, each on its own reader connection, and built.
pub async fn rebuild(
    store: &dyn Store,
    params: &BuildParams,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<RebuildReport, StoreError> {
    let total = store.event_count().await? as u64;
    store.reset_derived().await?;
    let mut report = RebuildReport::default();

    let (decoded_tx, mut decoded_rx) = mpsc::channel(STAGE_QUEUE);
    let read = async move {
        let mut after = 0;
        loop {
            let rows = store.raw_events_after(after, PAGE).await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.seq;
            // Decoded on a blocking thread while the next page is read.
            let decoding = tokio::task::spawn_blocking(move || {
                let decoded: Vec<_> = rows
                    .iter()
                    .filter_map(|raw| decode_logged(raw).map(|e| (raw.seq, raw.received_at, e)))
                    .collect();
                (rows.len(), decoded)
            });
            if decoded_tx.send(decoding).await.is_err() {
                return Ok(());
            }
        }
    };
    let write_events = async {
        while let Some(decoding) = decoded_rx.recv().await {
            let (rows, decoded) = joined(decoding).await;
            store.insert_call_events(&decoded).await?;
            report.events += rows as u64;
            report.call_events += decoded.len() as u64;
            progress("events", report.events, total);
        }
        Ok::<_, StoreError>(())
    };
    tokio::try_join!(read, write_events)?;
    store.index_call_events().await?;

    let calls = store.all_call_ids().await?;
    let total_calls = calls.len() as u64;
    let (built_tx, mut built_rx) = mpsc::channel::<(usize, Vec<Cdr>)>(STAGE_QUEUE);
    let read_and_build = async move {
        let mut pages = futures::stream::iter(calls.chunks(CALLS_PER_PAGE))
            .map(|chunk| async move {
                let mut events = store.events_for_calls(chunk).await?;
                let (chunk, params) = (chunk.to_vec(), params.clone());
                let built = tokio::task::spawn_blocking(move || {
                    let cdrs: Vec<Cdr> = chunk
                        .iter()
                        .filter_map(|id| {
                            let events = events.remove(id).unwrap_or_default();
                            pipeline::build_call(id, &events, &params)
                        })
                        .collect();
                    (chunk.len(), cdrs)
                });
                Ok::<_, StoreError>(joined(built).await)
            })
            .buffered(READS_AT_ONCE);
        while let Some(page) = pages.try_next().await? {
            if built_tx.send(page).await.is_err() {
                break;
            }
        }
        Ok::<_, StoreError>(())
    };
    let write_cdrs = async {
        let mut calls_done = 0;
        while let Some((calls, cdrs)) = built_rx.recv().await {
            store.upsert_cdrs(&cdrs, params.now).await?;
            report.cdrs += cdrs.len() as u64;
            calls_done += calls as u64;
            progress("calls", calls_done, total_calls);
        }
        Ok::<_, StoreError>(())
    };
    tokio::try_join!(read_and_build, write_cdrs)?;
    store
        .set_cursor(pipeline::CURSOR, store.log_head().await?)
        .await?;
    Ok(report)
}

/// The result of CPU work run on a blocking thread (so it overlaps the stages' database work),
/// its panic passed on.
async fn joined<T>(work: tokio::task::JoinHandle<T>) -> T {
    work.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
