//! Wiring: open the store, start the CDR pipeline and the HTTP server (and the demo traffic),
//! all stopped by one shutdown token.

use crate::config::ServeArgs;
use crate::http::{self, AppState, IngestCounters};
use crate::ingest::livekit::WebhookVerifier;
use crate::live::LiveHub;
use crate::privacy::NumberDisplay;
use crate::{alerting, maintenance, pipeline, simulate, store};
use anyhow::{Context, bail};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` listens, unless turned off.
    pub metrics_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub state: AppState,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every task has stopped (after `shutdown` is cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The demo history's busiest hour is capped so a high `--demo-rate` does not make start-up
/// write millions of events.
const HISTORY_PEAK_CALLS_PER_HOUR: f64 = 300.0;

fn random_token() -> String {
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| char::from(b"abcdefghijkmnopqrstuvwxyz23456789"[rng.gen_range(0..33)]))
        .collect()
}

/// Opens the store, binds the listener and starts every task.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let mut key_pairs = args.livekit_key_pairs()?;
    let mut events_tokens = args.events_tokens();
    if args.demo {
        if key_pairs.is_empty() {
            key_pairs.push(("demo".into(), random_token()));
        }
        if events_tokens.is_empty() {
            events_tokens.push(random_token());
        }
    }
    if key_pairs.is_empty() {
        bail!(
            "no LiveKit API keys configured: set CALLPULSE_LIVEKIT_KEYS=key:secret (or \
             LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or --livekit-keys), or run with --demo"
        );
    }
    if events_tokens.is_empty() {
        tracing::warn!(
            "no CALLPULSE_EVENTS_TOKEN set: POST /api/v1/events will refuse every request"
        );
    }
    let read_access = http::auth::ReadAccess::new(&args.api_tokens, args.secure_cookie)
        .context("checking --api-token")?;
    let exposed: Vec<SocketAddr> = std::iter::once(args.listen)
        .chain(args.metrics_addr.0)
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if read_access.is_open() && !exposed.is_empty() {
        if !args.insecure_no_auth {
            bail!(
                "refusing to serve call records on {} without an API token: anyone who can reach                  it could read them. Set CALLPULSE_API_TOKENS (or --api-token), listen on                  127.0.0.1, or pass --insecure-no-auth",
                exposed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
        tracing::warn!("--insecure-no-auth: anyone who can reach this server reads every call");
    }
    let limits = args.limits()?;
    let hasher = if args.hash_numbers {
        let key = args.number_hash_key.as_deref().unwrap_or_default();
        Some(crate::privacy::NumberHasher::new(key)?)
    } else {
        None
    };
    let numbers = if args.mask_numbers {
        NumberDisplay::LastFour
    } else {
        NumberDisplay::Full
    };
    let params = args.cdr.build_params()?;
    let retention = args.retention.policy()?;
    let metric_settings = args.metrics.settings();
    let alert_config = Arc::new(alerting::load(args.config_file.as_deref())?);
    let store = store::open(&args.store.database, metric_settings.params)
        .await
        .with_context(|| format!("opening {}", args.store.database))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;

    let live = Arc::new(
        LiveHub::load(store.as_ref(), args.live_backlog, numbers)
            .await
            .context("loading the live state")?,
    );
    let shutdown = CancellationToken::new();
    let state = AppState {
        appender: store::GroupCommit::start(
            store.clone(),
            args.ingest_queue,
            args.ingest_max_batch,
        ),
        store: store.clone(),
        verifier: Arc::new(WebhookVerifier::new(
            key_pairs.iter().map(|(k, s)| (k.as_str(), s.as_str())),
        )),
        events_tokens: Arc::new(events_tokens.clone()),
        pipeline_wake: Arc::new(Notify::new()),
        counters: Arc::new(IngestCounters::default()),
        max_body_bytes: args.max_body_bytes,
        metrics: Arc::new(metric_settings),
        live,
        read_access,
        numbers,
        hasher,
        live_clients: Arc::new(tokio::sync::Semaphore::new(args.max_live_clients)),
    };
    let mut tasks = vec![tokio::spawn(pipeline::run(
        store,
        params,
        state.pipeline_wake.clone(),
        state.live.clone(),
        state.counters.clone(),
        shutdown.clone(),
    ))];
    if let Some(changes) = state.store.watch().await.context("listening for changes")? {
        tasks.push(tokio::spawn(crate::live::follow(
            state.live.clone(),
            state.store.clone(),
            changes,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(maintenance::run(
        state.store.clone(),
        retention,
        shutdown.clone(),
    )));
    let evaluator =
        alerting::Evaluator::load(state.store.as_ref(), alert_config.clone(), state.metrics.tz)
            .await
            .context("loading alert states")?;
    let deliver_wake = Arc::new(Notify::new());
    tasks.push(tokio::spawn(alerting::run_evaluator(
        evaluator,
        state.store.clone(),
        state.live.clone(),
        deliver_wake.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(alerting::run_deliverer(
        state.store.clone(),
        alert_config,
        deliver_wake,
        shutdown.clone(),
    )));
    let metrics_addr = match args.metrics_addr.0 {
        None => None,
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics listener {at}"))?;
            let bound = listener.local_addr()?;
            let router = http::metrics_router(state.clone(), args.metrics_max_trunks);
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                http::serve::serve(listener, router, limits, stop).await;
            }));
            Some(bound)
        }
    };
    let router = http::router(state.clone());
    let server_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(http::serve::serve(
        listener,
        router,
        limits,
        server_shutdown,
    )));
    if args.demo && args.demo_history_days > 0 && state.store.event_count().await? == 0 {
        let history = simulate::history::History {
            days: args.demo_history_days,
            // The history's busiest hour matches the live demo's rate, within reason.
            peak_calls_per_hour: (args.demo_rate * 3600.0).min(HISTORY_PEAK_CALLS_PER_HOUR),
            tz: state.metrics.tz,
            seed: rand::random(),
        };
        let store = state.store.clone();
        let wake = state.pipeline_wake.clone();
        let now = pipeline::now();
        tasks.push(tokio::spawn(async move {
            match simulate::history::backfill(store.as_ref(), &history, now).await {
                Ok(calls) => {
                    // Past days land in catch-all partitions until they have their own.
                    maintenance::pass(store.as_ref(), &retention).await;
                    wake.notify_one();
                    tracing::info!(calls, days = history.days, "demo history written");
                }
                Err(e) => tracing::error!(error = %e, "demo history failed"),
            }
        }));
    }
    if args.demo {
        let (key, secret) = key_pairs[0].clone();
        let config = simulate::SimConfig {
            base_url: format!("http://{addr}"),
            api_key: key,
            api_secret: secret,
            events_token: events_tokens[0].clone(),
            rate: args.demo_rate,
            duration: None,
            speed: 1.0,
            seed: None,
            ack_log: None,
            failure_share: 0.0,
        };
        let demo_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            match simulate::run(config, demo_shutdown).await {
                Ok(report) => tracing::info!(calls = report.calls, "demo traffic stopped"),
                Err(e) => tracing::error!(error = format!("{e:#}"), "demo traffic failed"),
            }
        }));
    }
    tracing::info!(%addr, demo = args.demo, metrics = ?metrics_addr, "callpulse listening");
    Ok(Running {
        addr,
        metrics_addr,
        shutdown,
        state,
        tasks,
    })
}
