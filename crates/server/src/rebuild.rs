//! `callpulse rebuild`: drop every derived row and recompute it from the event log, proving that
//! the log alone is the truth.

use crate::ingest::decode_logged;
use crate::pipeline;
use crate::store::{Store, StoreError};
use callpulse_core::{BuildParams, CallEvent, Cdr};
use tokio::sync::mpsc;

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RebuildReport {
    pub events: u64,
    pub call_events: u64,
    pub cdrs: u64,
}

mod window;
use window::{Horizons, Window};

/// Log rows read and decoded per page, and call events per page of the scan.
const PAGE: i64 = 5000;
/// CDRs written per transaction.
const CDRS_PER_WRITE: usize = 500;
/// Pages a stage may run ahead of the next.
const STAGE_QUEUE: usize = 2;

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
/// and then how many call events are done, with their totals.
///
/// Two sequential passes, each run as stages joined by short queues so the two cores work at
/// once. The first reads the log, decodes it on a blocking thread and writes the call events,
/// noting where each call's and each room's events end ([`Horizons`]). The second reads the call
/// events back in log order into a [`Window`], which gives out each call once the scan has passed
/// the last of its events and its room's; its CDR is built there and written by the last stage,
/// each call once, with its rollups.
pub async fn rebuild(
    store: &dyn Store,
    params: &BuildParams,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<RebuildReport, StoreError> {
    let total = store.event_count().await? as u64;
    store.reset_derived().await?;
    let mut report = RebuildReport::default();
    let mut horizons = Horizons::default();

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
            for (seq, _, event) in &decoded {
                horizons.note(*seq, event);
            }
            report.events += rows as u64;
            report.call_events += decoded.len() as u64;
            progress("events", report.events, total);
        }
        Ok::<_, StoreError>(())
    };
    tokio::try_join!(read, write_events)?;
    store.index_call_events().await?;

    let call_events = report.call_events;
    let (page_tx, mut page_rx) = mpsc::channel::<Vec<(i64, CallEvent)>>(STAGE_QUEUE);
    let read = async move {
        let mut after = i64::MIN;
        loop {
            let page = store.call_events_by_seq(after, PAGE).await?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = *last;
            if page_tx.send(page).await.is_err() {
                return Ok(());
            }
        }
    };
    let (built_tx, mut built_rx) = mpsc::channel::<(usize, Vec<Cdr>)>(STAGE_QUEUE);
    let params_owned = params.clone();
    let build = tokio::task::spawn_blocking(move || {
        let mut window = Window::new(&horizons);
        let build = |complete: Vec<(String, Vec<CallEvent>)>| -> Vec<Cdr> {
            complete
                .iter()
                .filter_map(|(id, events)| pipeline::build_call(id, events, &params_owned))
                .collect()
        };
        while let Some(page) = page_rx.blocking_recv() {
            let scanned = page.len();
            for (seq, event) in page {
                window.feed(seq, event);
            }
            let cdrs = build(window.complete());
            if built_tx.blocking_send((scanned, cdrs)).is_err() {
                return;
            }
        }
        let _ = built_tx.blocking_send((0, build(window.finish())));
    });
    let write_cdrs = async {
        let mut scanned = 0;
        while let Some((events, cdrs)) = built_rx.recv().await {
            // Through the live path's write, which corrects the rollups for whatever a running
            // pipeline wrote meanwhile.
            for page in cdrs.chunks(CDRS_PER_WRITE) {
                store.upsert_cdrs(page, params.now).await?;
            }
            report.cdrs += cdrs.len() as u64;
            scanned += events as u64;
            progress("calls", scanned, call_events);
        }
        Ok::<_, StoreError>(())
    };
    // On an error the other stages stop as their queues close.
    tokio::try_join!(read, write_cdrs)?;
    joined(build).await;
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
