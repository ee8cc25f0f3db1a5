//! The traffic simulator: realistic calls sent to a callpulse server as LiveKit would send them.
//!
//! Each room's events go out in order, one at a time (LiveKit's per-room queue); rooms interleave;
//! egress events travel on their own queue; a few webhooks are delivered twice (LiveKit retries);
//! application events go to `POST /api/v1/events`. Failed deliveries are retried like LiveKit's
//! go-retryablehttp: 5 attempts, exponential backoff, 429 and 5xx retried, 4xx not.

pub mod history;
mod scenario;
pub mod wire;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use scenario::{CallScript, Payload, Step, random_call, trunk_failure_call};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub base_url: String,
    pub api_key: String,
    pub api_secret: String,
    pub events_token: String,
    /// New calls per second.
    pub rate: f64,
    /// Stop starting calls after this long; `None` runs until shutdown.
    pub duration: Option<Duration>,
    /// Sending runs this many times faster than the calls' own clock.
    pub speed: f64,
    pub seed: Option<u64>,
    pub ack_log: Option<PathBuf>,
    /// Share of calls (0 to 1) that fail at the trunk instead of following the usual mix.
    pub failure_share: f64,
}

/// What a run sent and what the server acknowledged.
#[derive(Debug, Default)]
pub struct SimReport {
    pub calls: u64,
    pub webhooks_acked: u64,
    pub duplicates_sent: u64,
    pub app_events_acked: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    webhooks_acked: AtomicU64,
    duplicates_sent: AtomicU64,
    app_events_acked: AtomicU64,
    failed: AtomicU64,
}

struct Sender {
    client: reqwest::Client,
    config: SimConfig,
    counters: Counters,
    ack_log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

pub async fn run(config: SimConfig, shutdown: CancellationToken) -> anyhow::Result<SimReport> {
    anyhow::ensure!(config.rate > 0.0, "rate must be positive");
    anyhow::ensure!(config.speed > 0.0, "speed must be positive");
    let ack_log = match &config.ack_log {
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ))),
        None => None,
    };
    let sender = Arc::new(Sender {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?,
        config: config.clone(),
        counters: Counters::default(),
        ack_log,
    });
    let mut rng = config
        .seed
        .map_or_else(StdRng::from_entropy, StdRng::seed_from_u64);
    let started = tokio::time::Instant::now();
    let mut calls = 0u64;
    let mut tasks = JoinSet::new();
    while config.duration.is_none_or(|d| started.elapsed() < d) {
        let gap = -rng.gen_range(f64::EPSILON..1.0f64).ln() / config.rate;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs_f64(gap.min(60.0))) => {}
        }
        let t0 = chrono::Utc::now().timestamp_millis();
        let script = if config.failure_share > 0.0 && rng.gen_bool(config.failure_share.min(1.0)) {
            trunk_failure_call(&mut rng, t0)
        } else {
            random_call(&mut rng, t0)
        };
        let seed = rng.r#gen::<u64>();
        calls += 1;
        let t0 = tokio::time::Instant::now();
        let first_at = script.room.first().map_or(0, |s| s.at_ms);
        for queue in [script.room, script.egress] {
            let sender = sender.clone();
            let shutdown = shutdown.clone();
            tasks
                .spawn(async move { sender.send_queue(queue, t0, first_at, seed, shutdown).await });
        }
        while tasks.try_join_next().is_some() {}
    }
    tokio::select! {
        _ = shutdown.cancelled() => tasks.abort_all(),
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
    if let Some(log) = &sender.ack_log {
        let mut log = log.lock().expect("ack log lock");
        log.flush()?;
    }
    let c = &sender.counters;
    Ok(SimReport {
        calls,
        webhooks_acked: c.webhooks_acked.load(Ordering::Relaxed),
        duplicates_sent: c.duplicates_sent.load(Ordering::Relaxed),
        app_events_acked: c.app_events_acked.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
    })
}

enum Delivery {
    Acked,
    Refused,
}

impl Sender {
    /// Sends one queue's steps in order, each at its scaled time.
    async fn send_queue(
        &self,
        steps: Vec<Step>,
        t0: tokio::time::Instant,
        first_at: i64,
        seed: u64,
        shutdown: CancellationToken,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        for step in steps {
            let offset = (step.at_ms - first_at).max(0) as f64 / 1000.0 / self.config.speed;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(t0 + Duration::from_secs_f64(offset)) => {}
            }
            let duplicate = rng.gen_bool(0.02);
            for _ in 0..(1 + usize::from(duplicate)) {
                self.deliver(&step.payload).await;
            }
            if duplicate {
                self.counters
                    .duplicates_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn deliver(&self, payload: &Payload) {
        let base = self.config.base_url.trim_end_matches('/');
        let mut backoff = Duration::from_secs(1);
        for attempt in 1..=5 {
            let result = match payload {
                Payload::Webhook(body) => self.post_webhook(base, body).await,
                Payload::App(event) => self.post_app_event(base, event).await,
            };
            match result {
                Ok(Delivery::Acked) => {
                    self.record_ack(payload);
                    return;
                }
                Ok(Delivery::Refused) => break,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, attempt, "delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => tracing::warn!(error = %e, "delivery failed after 5 attempts"),
            }
        }
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }

    async fn post_webhook(&self, base: &str, body: &[u8]) -> anyhow::Result<Delivery> {
        let auth = wire::sign(body, &self.config.api_key, &self.config.api_secret)?;
        let response = self
            .client
            .post(format!("{base}/webhooks/livekit"))
            .header("Authorization", auth)
            .header("Content-Type", "application/webhook+json")
            .header("User-Agent", "LiveKit")
            .body(body.to_vec())
            .send()
            .await?;
        classify(response.status())
    }

    async fn post_app_event(
        &self,
        base: &str,
        event: &serde_json::Value,
    ) -> anyhow::Result<Delivery> {
        let response = self
            .client
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(&self.config.events_token)
            .json(&serde_json::Value::Array(vec![event.clone()]))
            .send()
            .await?;
        classify(response.status())
    }

    fn record_ack(&self, payload: &Payload) {
        let (counter, line) = match payload {
            Payload::Webhook(body) => (
                &self.counters.webhooks_acked,
                serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(|id| format!("livekit {id}"))),
            ),
            Payload::App(event) => (
                &self.counters.app_events_acked,
                event["id"].as_str().map(|id| format!("app {id}")),
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let (Some(log), Some(line)) = (&self.ack_log, line)
            && let Ok(mut log) = log.lock()
        {
            let _ = writeln!(log, "{line}");
        }
    }
}

fn classify(status: reqwest::StatusCode) -> anyhow::Result<Delivery> {
    if status.is_success() {
        Ok(Delivery::Acked)
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        anyhow::bail!("server answered {status}")
    } else {
        tracing::warn!(%status, "delivery refused");
        Ok(Delivery::Refused)
    }
}

/// The CDRs a script's calls build when every event arrives, decoded by the real ingest code.
/// For benchmarks and tests that need realistic CDRs without a server.
pub fn script_cdrs(
    script: &CallScript,
    params: &callpulse_core::BuildParams,
) -> Vec<callpulse_core::Cdr> {
    use crate::ingest::{app_events, livekit};
    use callpulse_core::{Timestamp, event::Scope};
    let mut events = Vec::new();
    for step in script.room.iter().chain(&script.egress) {
        match &step.payload {
            Payload::Webhook(body) => {
                if let Ok(Some(e)) =
                    livekit::decode(body, Timestamp(step.at_ms)).map(|d| d.call_event)
                {
                    events.push(e);
                }
            }
            Payload::App(value) => {
                if let Ok(parsed) = app_events::parse_batch(value) {
                    events.extend(parsed.into_iter().filter_map(|(e, _)| match e {
                        app_events::AppEvent::Call(e) => Some(*e),
                        app_events::AppEvent::AgentState { .. } => None,
                    }));
                }
            }
        }
    }
    let mut calls: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.scope {
            Scope::Call { call_id } => Some(call_id.clone()),
            Scope::Room { .. } => None,
        })
        .collect();
    calls.sort();
    calls.dedup();
    calls
        .iter()
        .map(|c| callpulse_core::build(c, &events, params))
        .collect()
}
