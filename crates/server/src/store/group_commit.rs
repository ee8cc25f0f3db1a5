//! Group commit: concurrent appends of single events share one transaction, so one fsync makes
//! many events durable. Each caller waits for the commit of the batch that holds its event and
//! hears its own outcome; nothing is acknowledged before it is on disk.
//!
//! Writer tasks drain a bounded queue: each takes what has arrived (up to `max_batch`) and
//! appends it in one call while the next arrivals queue behind. SQLite has one writer anyway, so
//! it gets one task; PostgreSQL commits concurrent transactions in parallel, so it gets several
//! (`Store::writers`). Under light load a batch is one event and
//! no time is spent waiting for company. A full queue refuses at once (`Busy`), so an overloaded
//! server answers 503 quickly instead of holding requests until the sender gives up.

use super::{Appended, NewEvent, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Why an event was not appended.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("the append queue is full")]
    Busy,
    #[error("the store failed: {0}")]
    Store(String),
    #[error("the appender stopped")]
    Stopped,
}

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// The handle requests append through.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    /// Transactions committed so far (events per transaction = events / this).
    batches: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the writer tasks; they stop when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, queue: usize, max_batch: usize) -> GroupCommit {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let batches = Arc::new(AtomicU64::new(0));
        for _ in 0..store.writers().max(1) {
            tokio::spawn(run(
                store.clone(),
                rx.clone(),
                max_batch.max(1),
                batches.clone(),
            ));
        }
        GroupCommit { queue: tx, batches }
    }

    /// How many shared transactions have been committed.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Appends one event; returns once the transaction holding it has committed.
    pub async fn append(&self, event: NewEvent) -> Result<Appended, GroupError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Pending { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GroupError::Busy,
                mpsc::error::TrySendError::Closed(_) => GroupError::Stopped,
            })?;
        answer
            .await
            .map_err(|_| GroupError::Stopped)?
            .map_err(GroupError::Store)
    }
}

async fn run(
    store: Arc<dyn Store>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // The lock is held only while taking a batch, not while appending it.
    while rx.lock().await.recv_many(&mut batch, max_batch).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) =
            batch.drain(..).map(|p| (p.event, p.reply)).unzip();
        match store.append(&events).await {
            Ok(outcomes) => {
                batches.fetch_add(1, Ordering::Relaxed);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "group append failed");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callpulse_core::{Source, Timestamp};

    fn event(id: usize) -> NewEvent {
        NewEvent {
            source: Source::Livekit,
            event_id: format!("EV_{id}"),
            event_type: "room_started".into(),
            received_at: Timestamp(1_000),
            body: b"{}".to_vec(),
            call_event: None,
            agent_report: None,
            occurred_at: Timestamp(1_000),
            sent_at: None,
        }
    }

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = super::super::open(&url, Default::default()).await.unwrap();
        (dir, store)
    }

    /// Requests that arrive together share transactions, each hears its own outcome, and a
    /// repeated id within one transaction is a duplicate.
    #[tokio::test]
    async fn concurrent_appends_share_transactions() {
        let (_dir, store) = store().await;
        let group = GroupCommit::start(store.clone(), 10_000, 100);
        // 500 distinct events and 50 repeats, all sent before the appender first runs.
        let ids: Vec<usize> = (0..500).chain(0..50).collect();
        let outcomes = futures::future::join_all(ids.iter().map(|i| group.append(event(*i)))).await;
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Appended::Stored { .. })))
            .count();
        let duplicate = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Appended::Duplicate)))
            .count();
        assert_eq!((stored, duplicate), (500, 50));
        assert_eq!(store.event_count().await.unwrap(), 500);
        assert_eq!(group.batches(), 6, "550 events in batches of at most 100");
    }

    /// Past the queue's capacity a request is refused at once instead of waiting.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (_dir, store) = store().await;
        let group = GroupCommit::start(store.clone(), 1, 1);
        let outcomes = futures::future::join_all((0..20).map(|i| group.append(event(i)))).await;
        let busy = outcomes
            .iter()
            .filter(|o| matches!(o, Err(GroupError::Busy)))
            .count();
        assert_eq!(busy, 19, "one fits in the queue: {outcomes:?}");
        assert!(matches!(outcomes[0], Ok(Appended::Stored { .. })));
        assert_eq!(store.event_count().await.unwrap(), 1);
    }
}
