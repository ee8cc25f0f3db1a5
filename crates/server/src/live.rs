//! The live board of this process and its fan-out to WebSocket clients.
//!
//! The CDR pipeline and the agent-report handler apply their changes here; each change becomes one
//! delta, rendered to JSON once and broadcast to every client through a bounded channel. Ingest
//! never waits for a client: a client that falls more than the channel's capacity behind is
//! handed a fresh snapshot instead of the backlog.

use crate::http::dto;
use crate::privacy::NumberDisplay;
use crate::store::{AgentReport, Change, Store, StoreError};
use axum::extract::ws::Utf8Bytes;
use callpulse_core::live::{BoardChange, LiveBoard, RECENT_CALLS};
use callpulse_core::{Cdr, Timestamp};
use futures::{Sink, SinkExt};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// One rendered message with its sequence number.
#[derive(Debug)]
pub struct Message {
    pub seq: u64,
    /// Shared by every client: cloning it copies no text.
    pub json: Utf8Bytes,
}

/// Deltas a client may fall behind by before it is sent a snapshot instead.
pub const DEFAULT_BACKLOG: usize = 256;

struct Inner {
    board: LiveBoard,
    seq: u64,
    /// The notices of the alerts firing now.
    alerts: Vec<serde_json::Value>,
}

/// The live board and the channel its deltas go out on.
pub struct LiveHub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Message>>,
    /// How the board shows phone numbers (masked ones never reach it).
    numbers: NumberDisplay,
}

impl LiveHub {
    /// An empty board whose clients may fall `backlog` deltas behind.
    pub fn new(backlog: usize) -> LiveHub {
        LiveHub {
            inner: Mutex::new(Inner {
                board: LiveBoard::default(),
                seq: 0,
                alerts: Vec::new(),
            }),
            tx: broadcast::channel(backlog.max(1)).0,
            numbers: NumberDisplay::Full,
        }
    }

    /// A board loaded from the store: the calls in progress, the last finished calls and the
    /// agents' latest reports.
    pub async fn load(
        store: &dyn Store,
        backlog: usize,
        numbers: NumberDisplay,
    ) -> Result<LiveHub, StoreError> {
        let recent = store.recent_finished(RECENT_CALLS as i64).await?;
        let open = store.open_cdrs().await?;
        let agents = store.agent_states().await?;
        let hub = LiveHub {
            numbers,
            ..LiveHub::new(backlog)
        };
        {
            let mut inner = hub.lock();
            for cdr in recent.iter().chain(&open) {
                inner.board.apply_cdr(&numbers.cdr(cdr));
            }
            for report in agents {
                inner
                    .board
                    .apply_agent_state(&report.agent_id, report.reported);
            }
        }
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies CDRs the pipeline has just stored; broadcasts one delta if anything changed.
    pub fn apply_cdrs(&self, cdrs: &[Cdr]) {
        let mut inner = self.lock();
        let mut changes = Vec::new();
        for cdr in cdrs {
            let change = inner.board.apply_cdr(&self.numbers.cdr(cdr));
            if !change.is_empty() {
                changes.push(change);
            }
        }
        self.publish(&mut inner, &changes);
    }

    /// Applies agent reports just stored; broadcasts one delta if an agent's state changed.
    pub fn apply_agent_reports<'a>(&self, reports: impl IntoIterator<Item = &'a AgentReport>) {
        let mut inner = self.lock();
        let mut change = BoardChange::default();
        for report in reports {
            if inner
                .board
                .apply_agent_state(&report.agent_id, report.reported)
            {
                change.agents.push(report.agent_id.clone());
            }
        }
        if !change.is_empty() {
            self.publish(&mut inner, &[change]);
        }
    }

    /// Replaces the active alerts; broadcasts a delta if they changed.
    pub fn set_alerts(&self, alerts: Vec<serde_json::Value>) {
        let mut inner = self.lock();
        if inner.alerts == alerts {
            return;
        }
        inner.alerts = alerts;
        self.publish_with(&mut inner, &[], true);
    }

    /// The live figures at `now`.
    pub fn summary(&self, now: Timestamp) -> callpulse_core::live::LiveSummary {
        self.lock().board.summary(now)
    }

    fn publish(&self, inner: &mut Inner, changes: &[BoardChange]) {
        if changes.is_empty() {
            return;
        }
        self.publish_with(inner, changes, false);
    }

    fn publish_with(&self, inner: &mut Inner, changes: &[BoardChange], alerts_changed: bool) {
        inner.seq += 1;
        if self.tx.receiver_count() == 0 {
            return; // nobody is watching: nothing to render
        }
        let json = dto::live_delta(
            &inner.board,
            &inner.alerts,
            inner.seq,
            changes,
            alerts_changed,
            crate::pipeline::now(),
        )
        .into();
        // A receiver may have gone since the count: not an error.
        let _ = self.tx.send(Arc::new(Message {
            seq: inner.seq,
            json,
        }));
    }

    /// The whole board now, as the snapshot message.
    pub fn snapshot(&self) -> Message {
        Self::snapshot_of(&self.lock())
    }

    fn snapshot_of(inner: &Inner) -> Message {
        Message {
            seq: inner.seq,
            json: dto::live_snapshot(
                &inner.board,
                &inner.alerts,
                inner.seq,
                crate::pipeline::now(),
            )
            .into(),
        }
    }

    /// The snapshot as a JSON value (`GET /api/v1/live`).
    pub fn snapshot_value(&self, now: Timestamp) -> serde_json::Value {
        let inner = self.lock();
        dto::live_snapshot_value(&inner.board, &inner.alerts, inner.seq, now)
    }

    /// A snapshot and a subscription taken together, so no delta is missed or seen twice.
    pub fn subscribe(&self) -> (Message, broadcast::Receiver<Arc<Message>>) {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        (Self::snapshot_of(&inner), rx)
    }

    /// How many clients are subscribed.
    pub fn clients(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// Sends a snapshot and then every delta to `sink` until the hub's channel closes or the sink
/// fails. A client that fell behind gets a fresh snapshot and continues from it.
pub async fn forward<S>(hub: &LiveHub, sink: &mut S) -> Result<(), S::Error>
where
    S: Sink<Utf8Bytes> + Unpin,
{
    let (snapshot, mut rx) = hub.subscribe();
    let mut seen = snapshot.seq;
    if !send_within(sink, snapshot.json).await? {
        return Ok(());
    }
    loop {
        let sent = match rx.recv().await {
            Ok(message) if message.seq > seen => {
                seen = message.seq;
                send_within(sink, message.json.clone()).await?
            }
            Ok(_) => true,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let snapshot = hub.snapshot();
                seen = snapshot.seq;
                send_within(sink, snapshot.json).await?
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if !sent {
            return Ok(());
        }
    }
}

/// A client that takes no message for this long (it stopped reading) is dropped.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one message; `Ok(false)` when the client did not take it within [`SEND_TIMEOUT`].
async fn send_within<S>(sink: &mut S, message: Utf8Bytes) -> Result<bool, S::Error>
where
    S: Sink<Utf8Bytes> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(sent) => sent.map(|()| true),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests;

/// Keeps `hub` in step with changes other instances sharing the database make: the calls the
/// (one) CDR pipeline stored, agents' reports and alert transitions. Applying a change this
/// instance made itself is harmless: the board ignores what it already holds.
pub async fn follow(
    hub: Arc<LiveHub>,
    store: Arc<dyn Store>,
    mut changes: futures::stream::BoxStream<'static, Change>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use futures::StreamExt;
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.next() => match change {
                Some(change) => change,
                None => return,
            },
        };
        if let Err(e) = apply_change(&hub, store.as_ref(), change).await {
            tracing::warn!(error = %e, "applying a change from another instance failed");
        }
    }
}

async fn apply_change(hub: &LiveHub, store: &dyn Store, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Cdrs(ids) => hub.apply_cdrs(&store.get_cdrs(&ids).await?),
        Change::Agents => hub.apply_agent_reports(&store.agent_states().await?),
        Change::Alerts => hub.set_alerts(firing_notices(store).await?),
        Change::Resync => {
            let open: Vec<String> = hub
                .lock()
                .board
                .calls()
                .iter()
                .map(|c| c.call_id.clone())
                .collect();
            let mut cdrs = store.get_cdrs(&open).await?;
            cdrs.extend(store.open_cdrs().await?);
            cdrs.extend(store.recent_finished(RECENT_CALLS as i64).await?);
            hub.apply_cdrs(&cdrs);
            hub.apply_agent_reports(&store.agent_states().await?);
            hub.set_alerts(firing_notices(store).await?);
        }
    }
    Ok(())
}

/// The notices of the alerts firing, in the evaluator's order (by rule, then key).
async fn firing_notices(store: &dyn Store) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut firing = store.firing_alerts().await?;
    firing.sort_by(|a, b| (&a.rule, &a.key).cmp(&(&b.rule, &b.key)));
    Ok(firing.into_iter().map(|a| a.notice).collect())
}
