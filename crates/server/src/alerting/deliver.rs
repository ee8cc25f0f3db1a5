//! The deliverer: sends every due delivery of the outbox, marks what its receiver accepted (2xx),
//! and retries the rest with exponential backoff. A crash between a send and its mark sends that
//! notice again after the restart (at least once); receivers deduplicate by the notice id, the
//! PagerDuty `dedup_key` or Alertmanager's labels.
//!
//! It also re-asserts every firing alert to Alertmanager each minute, as Prometheus does, so
//! Alertmanager keeps it active while callpulse runs and lets it lapse if callpulse stops.

use super::channels::{self, Request};
use super::rules::{AlertConfig, ChannelKind};
use crate::leader::{Role, Turn};
use crate::store::{Store, StoreError};
use callpulse_core::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 50;
const MAX_BACKOFF_MS: i64 = 5 * 60_000;
const REASSERT_EVERY: Duration = Duration::from_secs(60);

/// Delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn backoff_ms(attempts: i64) -> i64 {
    (1000_i64 << attempts.clamp(0, 20)).min(MAX_BACKOFF_MS)
}

async fn send(client: &reqwest::Client, request: Request) -> Result<(), String> {
    let mut builder = client.post(&request.url).body(request.body);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    match builder.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{} answered {}", request.url, r.status())),
        Err(e) => Err(format!("{}: {e}", request.url)),
    }
}

/// Sends what is due now; returns how many deliveries it attempted.
pub async fn deliver_due(
    store: &dyn Store,
    config: &AlertConfig,
    client: &reqwest::Client,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let due = store.due_deliveries(now, BATCH).await?;
    for d in &due {
        let Some(channel) = config.channels.iter().find(|c| c.name == d.channel) else {
            store
                .delivery_failed(
                    d.id,
                    Timestamp(now.millis() + MAX_BACKOFF_MS),
                    "channel no longer configured",
                )
                .await?;
            continue;
        };
        let request = channels::request(channel, &d.notice, d.notice_id, now);
        match send(client, request).await {
            Ok(()) => store.delivery_done(d.id, crate::pipeline::now()).await?,
            Err(error) => {
                tracing::warn!(channel = %d.channel, attempt = d.attempts + 1, %error, "alert delivery failed");
                let next = Timestamp(crate::pipeline::now().millis() + backoff_ms(d.attempts));
                store.delivery_failed(d.id, next, &error).await?;
            }
        }
    }
    Ok(due.len())
}

async fn reassert_firing(store: &dyn Store, config: &AlertConfig, client: &reqwest::Client) {
    let managers: Vec<&str> = config
        .channels
        .iter()
        .filter_map(|c| match &c.kind {
            ChannelKind::Alertmanager { url } => Some(url.as_str()),
            _ => None,
        })
        .collect();
    if managers.is_empty() {
        return;
    }
    let firing = match store.firing_alerts().await {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(error = %e, "reading firing alerts failed");
            return;
        }
    };
    let now = crate::pipeline::now();
    let alerts: Vec<serde_json::Value> = firing
        .iter()
        .map(|a| channels::alertmanager_alert(&a.notice, now))
        .collect();
    for url in managers {
        let request = Request {
            url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::Value::Array(alerts.clone())
                .to_string()
                .into_bytes(),
        };
        if let Err(error) = send(client, request).await {
            tracing::warn!(%error, "re-asserting firing alerts failed");
        }
    }
}

/// Runs until `shutdown`: delivers when woken and at least every second.
/// The role of delivering notices: one instance plays it, or each would send every notice.
pub const ROLE: &str = "alert_delivery";

pub async fn run_deliverer(
    store: Arc<dyn Store>,
    config: Arc<AlertConfig>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client with a timeout builds");
    let mut last_reassert = tokio::time::Instant::now();
    let mut role = Role::new(ROLE);
    loop {
        if role.turn(store.as_ref()).await == Turn::Standby {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::pipeline::STANDBY_POLL) => continue,
            }
        }
        loop {
            match deliver_due(store.as_ref(), &config, &client, crate::pipeline::now()).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "alert delivery failed");
                    break;
                }
            }
        }
        if last_reassert.elapsed() >= REASSERT_EVERY {
            last_reassert = tokio::time::Instant::now();
            reassert_firing(store.as_ref(), &config, &client).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<i64> = (0..12).map(super::backoff_ms).collect();
        assert_eq!(&delays[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(delays[11], 300_000);
    }
}
