//! Command line and configuration: one clap tree. Every setting is a flag, a `CALLPULSE_*`
//! environment variable, or a key of an optional `callpulse.toml`; a flag beats the environment,
//! which beats the file, which beats the default. Secrets are never printed.

use anyhow::{Context, bail};
use callpulse_core::BuildParams;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "callpulse",
    version,
    about = "Telephony monitoring and analytics for LiveKit"
)]
#[command(args_override_self = true)]
pub struct Cli {
    /// Configuration file (TOML, flat `key = value` with the flag names); ignored when missing.
    #[arg(
        long,
        global = true,
        env = "CALLPULSE_CONFIG",
        default_value = "callpulse.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server: webhooks, application events, CDRs and the API.
    Serve(ServeArgs),
    /// Recompute every CDR and rollup from the event log.
    Rebuild(RebuildArgs),
    /// Print metrics over a window as a table.
    Report(ReportArgs),
    /// Drop the PostgreSQL partitions past retention now (`--dry-run`: only list them).
    Retention(RetentionCommandArgs),
    /// Send realistic, signed LiveKit webhooks and application events to a server.
    Simulate(SimulateArgs),
}

#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Database URL: `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "CALLPULSE_DATABASE",
        default_value = "sqlite://./callpulse.db"
    )]
    pub database: String,
}

#[derive(Args, Clone)]
pub struct CdrArgs {
    /// A call with no event for this many seconds is closed by timeout.
    #[arg(long, env = "CALLPULSE_CALL_TIMEOUT_SECONDS", default_value_t = 6 * 3600)]
    pub call_timeout_seconds: u64,
    /// Abandons shorter than this many seconds are short abandons.
    #[arg(long, env = "CALLPULSE_SHORT_ABANDON_SECONDS", default_value_t = 5.0)]
    pub short_abandon_seconds: f64,
    /// Per-queue short-abandon thresholds: `queue=seconds,queue2=seconds`.
    #[arg(long, env = "CALLPULSE_SHORT_ABANDON_BY_QUEUE", default_value = "")]
    pub short_abandon_by_queue: String,
}

impl CdrArgs {
    pub fn build_params(&self) -> anyhow::Result<BuildParams> {
        let mut by_queue = BTreeMap::new();
        for item in self
            .short_abandon_by_queue
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            let (queue, secs) = item.split_once('=').with_context(|| {
                format!("short-abandon-by-queue: `{item}` is not queue=seconds")
            })?;
            let secs: f64 = secs
                .trim()
                .parse()
                .with_context(|| format!("short-abandon-by-queue: `{secs}` is not a number"))?;
            by_queue.insert(queue.trim().to_owned(), (secs * 1000.0) as i64);
        }
        Ok(BuildParams {
            call_timeout_ms: (self.call_timeout_seconds * 1000) as i64,
            short_abandon_ms: (self.short_abandon_seconds * 1000.0) as i64,
            short_abandon_ms_by_queue: by_queue,
            ..BuildParams::default()
        })
    }
}

#[derive(Args, Clone)]
pub struct MetricArgs {
    /// IANA time zone for day and hour buckets and "today" (a query may ask for another).
    #[arg(long, env = "CALLPULSE_TIMEZONE", default_value = "UTC")]
    pub timezone: chrono_tz::Tz,
    /// Service level: inbound calls answered within this many seconds (a change needs `rebuild`).
    #[arg(long, env = "CALLPULSE_SERVICE_LEVEL_SECONDS", default_value_t = 20.0)]
    pub service_level_seconds: f64,
    /// Target: answer rate at least this.
    #[arg(long, env = "CALLPULSE_TARGET_ANSWER_RATE", default_value_t = 0.95)]
    pub target_answer_rate: f64,
    /// Target: abandonment rate at most this.
    #[arg(
        long,
        env = "CALLPULSE_TARGET_ABANDONMENT_RATE",
        default_value_t = 0.05
    )]
    pub target_abandonment_rate: f64,
    /// Target: average speed of answer at most this many seconds.
    #[arg(
        long,
        env = "CALLPULSE_TARGET_SPEED_OF_ANSWER_SECONDS",
        default_value_t = 30.0
    )]
    pub target_speed_of_answer_seconds: f64,
    /// Target: service level at least this.
    #[arg(long, env = "CALLPULSE_TARGET_SERVICE_LEVEL", default_value_t = 0.80)]
    pub target_service_level: f64,
    /// Target: error rate at most this.
    #[arg(long, env = "CALLPULSE_TARGET_ERROR_RATE", default_value_t = 0.01)]
    pub target_error_rate: f64,
    /// Amber: a rate worse than last week by more than this many points (0.05 = 5 points).
    #[arg(long, env = "CALLPULSE_WARN_MARGIN_POINTS", default_value_t = 0.05)]
    pub warn_margin_points: f64,
    /// Amber: a duration worse than last week by more than this fraction (0.2 = 20 %).
    #[arg(long, env = "CALLPULSE_WARN_MARGIN_RATIO", default_value_t = 0.2)]
    pub warn_margin_ratio: f64,
    /// Grey: fewer calls than this behind a metric is too few to judge.
    #[arg(long, env = "CALLPULSE_MIN_CALLS_TO_JUDGE", default_value_t = 10)]
    pub min_calls_to_judge: i64,
}

impl MetricArgs {
    pub fn settings(&self) -> crate::http::MetricSettings {
        crate::http::MetricSettings {
            tz: self.timezone,
            params: self.metric_params(),
            targets: callpulse_core::metrics::judge::Targets {
                answer_rate: self.target_answer_rate,
                abandonment_rate: self.target_abandonment_rate,
                avg_speed_of_answer_seconds: self.target_speed_of_answer_seconds,
                service_level: self.target_service_level,
                error_rate: self.target_error_rate,
                warn_margin_points: self.warn_margin_points,
                warn_margin_ratio: self.warn_margin_ratio,
                min_calls: self.min_calls_to_judge,
            },
        }
    }

    pub fn metric_params(&self) -> callpulse_core::metrics::MetricParams {
        callpulse_core::metrics::MetricParams {
            service_level_seconds: self.service_level_seconds,
        }
    }
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CALLPULSE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener; `off` for none.
    #[arg(long, env = "CALLPULSE_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// Trunks named in `/metrics` labels (the busiest); the rest are summed as `other`.
    #[arg(long, env = "CALLPULSE_METRICS_MAX_TRUNKS", default_value_t = 50)]
    pub metrics_max_trunks: usize,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub cdr: CdrArgs,
    #[command(flatten)]
    pub metrics: MetricArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// LiveKit API keys that may sign webhooks: `key1:secret1,key2:secret2`.
    #[arg(long, env = "CALLPULSE_LIVEKIT_KEYS", hide_env_values = true)]
    pub livekit_keys: Option<String>,
    /// One LiveKit API key (with --livekit-api-secret), as LiveKit's own tools name it.
    #[arg(long, env = "LIVEKIT_API_KEY")]
    pub livekit_api_key: Option<String>,
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true)]
    pub livekit_api_secret: Option<String>,
    /// Bearer token(s) for `POST /api/v1/events`, comma-separated.
    #[arg(long, env = "CALLPULSE_EVENTS_TOKEN", hide_env_values = true)]
    pub events_token: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "CALLPULSE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Live deltas a WebSocket client may fall behind by before it is sent a fresh snapshot.
    #[arg(long, env = "CALLPULSE_LIVE_BACKLOG", default_value_t = crate::live::DEFAULT_BACKLOG)]
    pub live_backlog: usize,
    /// Webhooks waiting to be stored before more are refused with 503 (LiveKit retries).
    #[arg(long, env = "CALLPULSE_INGEST_QUEUE", default_value_t = 20_000)]
    pub ingest_queue: usize,
    /// Most webhooks stored in one transaction (group commit).
    #[arg(long, env = "CALLPULSE_INGEST_MAX_BATCH", default_value_t = 1_000)]
    pub ingest_max_batch: usize,
    /// Run the traffic simulator in-process so the dashboard has live calls at once.
    #[arg(long, env = "CALLPULSE_DEMO")]
    pub demo: bool,
    /// Demo traffic: new calls per second.
    #[arg(long, env = "CALLPULSE_DEMO_RATE", default_value_t = 0.05)]
    pub demo_rate: f64,
    /// Demo: days of past calls written into an empty database at start (0: none).
    #[arg(long, env = "CALLPULSE_DEMO_HISTORY_DAYS", default_value_t = 14)]
    pub demo_history_days: u32,
    /// API tokens that may read the API, the live socket, the dashboard and `/metrics`
    /// (comma-separated; several allow rotation). Needed unless every listener is on loopback.
    #[arg(
        long = "api-token",
        env = "CALLPULSE_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// Serve on a non-loopback address without API tokens: anyone who reaches it reads every call.
    #[arg(long, env = "CALLPULSE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Mark the dashboard's session cookie `Secure` (when users reach callpulse over HTTPS).
    #[arg(long, env = "CALLPULSE_SECURE_COOKIE")]
    pub secure_cookie: bool,
    /// Show phone numbers with only their last four digits in the API, exports and dashboard.
    #[arg(long, env = "CALLPULSE_MASK_NUMBERS")]
    pub mask_numbers: bool,
    /// Store a keyed hash instead of each phone number (key: `--number-hash-key`).
    #[arg(long, env = "CALLPULSE_HASH_NUMBERS")]
    pub hash_numbers: bool,
    /// The secret key of `--hash-numbers` (at least 16 characters; keep it to keep tokens stable).
    #[arg(long, env = "CALLPULSE_NUMBER_HASH_KEY", hide_env_values = true)]
    pub number_hash_key: Option<String>,
    /// Most live WebSockets open at once; more get 503.
    #[arg(long, env = "CALLPULSE_MAX_LIVE_CLIENTS", default_value_t = 1000)]
    pub max_live_clients: usize,
    /// Most connections open at once on each listener; more wait to be accepted.
    #[arg(long, env = "CALLPULSE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (slow-loris protection).
    #[arg(long, env = "CALLPULSE_HEADER_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub header_timeout_seconds: f64,
    /// Seconds from a request's headers to its response, body included; then 408.
    #[arg(
        long,
        env = "CALLPULSE_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30.0
    )]
    pub request_timeout_seconds: f64,
    /// Benchmark ceiling: answer `POST /webhooks/livekit` after reading the body, verifying and
    /// storing nothing (no database is opened). For `cargo bench --bench ingest` only.
    #[arg(long, hide = true)]
    pub bench_noop: bool,
    /// The configuration file, for its structured sections (`[alerts]`); set by `main`.
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The connection and request limits of every listener.
    pub fn limits(&self) -> anyhow::Result<crate::http::serve::Limits> {
        let seconds = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 && s < 86_400.0 {
                Ok(std::time::Duration::from_secs_f64(s))
            } else {
                anyhow::bail!("--{name} must be a number of seconds above 0, got {s}")
            }
        };
        if self.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        Ok(crate::http::serve::Limits {
            max_connections: self.max_connections,
            header_timeout: seconds("header-timeout-seconds", self.header_timeout_seconds)?,
            request_timeout: seconds("request-timeout-seconds", self.request_timeout_seconds)?,
        })
    }

    /// The configured `(key, secret)` pairs.
    pub fn livekit_key_pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut pairs = parse_key_pairs(self.livekit_keys.as_deref().unwrap_or(""))?;
        match (&self.livekit_api_key, &self.livekit_api_secret) {
            (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => {
                pairs.push((k.clone(), s.clone()))
            }
            (Some(_), None) | (None, Some(_)) => {
                bail!("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be given together")
            }
            _ => {}
        }
        Ok(pairs)
    }

    pub fn events_tokens(&self) -> Vec<String> {
        self.events_token
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Parses `key1:secret1,key2:secret2`.
pub fn parse_key_pairs(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((k, s)) if !k.is_empty() && !s.is_empty() => Ok((k.to_owned(), s.to_owned())),
            _ => bail!("livekit-keys: an entry is not `key:secret` (entries are comma-separated)"),
        })
        .collect()
}

/// How long rows are kept on PostgreSQL (whole partitions are dropped past it).
#[derive(Args, Clone)]
pub struct RetentionArgs {
    /// Days of raw events (webhooks and application events) kept.
    #[arg(long, env = "CALLPULSE_RETENTION_EVENTS_DAYS", default_value_t = 90)]
    pub retention_events_days: u32,
    /// Days of quarantined bodies kept.
    #[arg(
        long,
        env = "CALLPULSE_RETENTION_QUARANTINE_DAYS",
        default_value_t = 30
    )]
    pub retention_quarantine_days: u32,
    /// Days of CDRs kept.
    #[arg(long, env = "CALLPULSE_RETENTION_CDRS_DAYS", default_value_t = 400)]
    pub retention_cdrs_days: u32,
    /// Days of metric rollups kept (at least the CDR and event retention).
    #[arg(long, env = "CALLPULSE_RETENTION_ROLLUPS_DAYS", default_value_t = 1100)]
    pub retention_rollups_days: u32,
}

impl RetentionArgs {
    pub fn policy(&self) -> anyhow::Result<crate::store::RetentionPolicy> {
        let policy = crate::store::RetentionPolicy {
            events_days: self.retention_events_days,
            quarantine_days: self.retention_quarantine_days,
            cdrs_days: self.retention_cdrs_days,
            rollups_days: self.retention_rollups_days,
        };
        policy.validate().map_err(anyhow::Error::msg)?;
        Ok(policy)
    }
}

#[derive(Args, Clone)]
pub struct RetentionCommandArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// List what would be dropped, drop nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Clone)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Rebuild even though CDRs older than the oldest logged event exist (retention dropped
    /// their events): those CDRs and their rollups are lost.
    #[arg(long)]
    pub discard_unlogged_cdrs: bool,
    #[command(flatten)]
    pub cdr: CdrArgs,
    #[command(flatten)]
    pub metrics: MetricArgs,
}

#[derive(Args, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub metrics: MetricArgs,
    /// Start of the window (RFC 3339, or a date YYYY-MM-DD in the time zone); default: today.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window, exclusive (RFC 3339 or a date); default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// Group by hour, day, trunk, agent, queue or direction.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Time zone of the buckets (default: --timezone).
    #[arg(long)]
    pub tz: Option<chrono_tz::Tz>,
}

#[derive(Args, Clone)]
pub struct SimulateArgs {
    /// Base URL of the callpulse server.
    #[arg(
        long,
        env = "CALLPULSE_SIMULATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// New calls per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// How long to send new calls, in seconds (calls in flight then finish).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// The LiveKit `key:secret` pair to sign with (the first of CALLPULSE_LIVEKIT_KEYS).
    #[arg(long, env = "CALLPULSE_LIVEKIT_KEYS", hide_env_values = true)]
    pub livekit_keys: String,
    /// Bearer token for application events.
    #[arg(long, env = "CALLPULSE_EVENTS_TOKEN", hide_env_values = true)]
    pub events_token: String,
    /// Speed-up: a call's simulated minute lasts 60/speed real seconds.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Random seed, for repeatable traffic.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Append the id of every event the server acknowledged (2xx) to this file, one per line.
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    /// Share of calls (0 to 1) that fail at the trunk, to drive an outage (and its alerts).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub failure_share: f64,
}

/// Command-line arguments with the configuration file's settings inserted where neither a flag
/// nor an environment variable sets them.
/// Where `/metrics` listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

fn metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    match s {
        "off" | "" => Ok(MetricsAddr(None)),
        _ => s
            .parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|e| format!("`{s}`: {e} (an address like 127.0.0.1:9464, or off)")),
    }
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share from 0 to 1")),
    }
}

pub fn args_with_config_file(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let path = config_path(&args);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(args),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let command = Cli::command();
    let Some((position, sub)) = args
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(i, a)| command.find_subcommand(a.to_str()?).map(|s| (i, s.clone())))
    else {
        return Ok(args);
    };
    let mut inserted = Vec::new();
    for (key, value) in &table {
        if key == "alerts" {
            continue; // structured: read by the alerting, not a flag
        }
        let flag = key.replace('_', "-");
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
        else {
            if Cli::command()
                .get_arguments()
                .any(|a| a.get_long() == Some(flag.as_str()))
            {
                continue;
            }
            bail!(
                "{}: unknown setting `{key}` for `{}`",
                path.display(),
                sub.get_name()
            );
        };
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Boolean(true) => {
                inserted.push(OsString::from(format!("--{flag}")));
                continue;
            }
            toml::Value::Boolean(false) => continue,
            other => other.to_string(),
        };
        inserted.push(OsString::from(format!("--{flag}={value}")));
    }
    let mut out = args;
    out.splice(position + 1..position + 1, inserted);
    Ok(out)
}

fn config_path(args: &[OsString]) -> PathBuf {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        let a = a.to_string_lossy();
        if let Some(v) = a.strip_prefix("--config=") {
            return PathBuf::from(v);
        }
        if a == "--config"
            && let Some(v) = iter.next()
        {
            return PathBuf::from(v);
        }
    }
    std::env::var_os("CALLPULSE_CONFIG")
        .map_or_else(|| PathBuf::from("callpulse.toml"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        match cli.command {
            Command::Serve(a) => a,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn config_file_fills_what_flags_do_not_set_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callpulse.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax_body_bytes = 2048\ndemo = true\nshort_abandon_by_queue = \"q=3\"\n",
        )
        .unwrap();
        let config = format!("--config={}", path.display());
        let argv = ["callpulse", &config, "serve", "--max-body-bytes", "4096"];
        let args = args_with_config_file(argv.iter().map(OsString::from).collect()).unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let serve = serve_args(&refs);
        assert_eq!(serve.listen.port(), 9999);
        assert_eq!(serve.max_body_bytes, 4096, "the flag beats the file");
        assert!(serve.demo);
        let params = serve.cdr.build_params().unwrap();
        assert_eq!(params.short_abandon_ms_by_queue.get("q"), Some(&3000));
    }

    #[test]
    fn unknown_config_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let config = format!("--config={}", path.display());
        let argv = ["callpulse", &config, "serve"];
        let err = args_with_config_file(argv.iter().map(OsString::from).collect()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn livekit_keys_parse_and_malformed_pairs_are_refused() {
        let pairs = parse_key_pairs("a:1, b:2").unwrap();
        assert_eq!(
            pairs,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert!(parse_key_pairs("nocolon").is_err());
        assert!(parse_key_pairs("k:").is_err());
    }
}
