//! Storage housekeeping on a timer: partitions ahead of need, stranded rows adopted, partitions
//! past retention dropped. One instance does it at a time; it is idempotent, so a takeover
//! only repeats a check.

use crate::leader::{Role, Turn};
use crate::store::{RetentionPolicy, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "maintenance";
/// Between passes. Partitions exist a week ahead, so an hour leaves ample slack.
const EVERY: Duration = Duration::from_secs(3600);

/// One pass, logged.
pub async fn pass(store: &dyn Store, retention: &RetentionPolicy) {
    match store.maintain(crate::pipeline::now(), retention).await {
        Ok(done) => {
            if !done.created.is_empty() || !done.dropped.is_empty() || done.adopted_rows > 0 {
                tracing::info!(
                    created = done.created.len(),
                    adopted_rows = done.adopted_rows,
                    dropped = ?done.dropped.iter().map(|d| &d.partition).collect::<Vec<_>>(),
                    "storage maintenance"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "storage maintenance failed"),
    }
}

pub async fn run(store: Arc<dyn Store>, retention: RetentionPolicy, shutdown: CancellationToken) {
    let mut role = Role::new(ROLE);
    loop {
        let wait = match role.turn(store.as_ref()).await {
            Turn::Standby => crate::pipeline::STANDBY_POLL * 30,
            Turn::Leading | Turn::Took => {
                pass(store.as_ref(), &retention).await;
                EVERY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
