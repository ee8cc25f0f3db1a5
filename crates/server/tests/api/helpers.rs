//! `spawn_app()` and typed helpers to talk to it.

use base64::Engine;
use callpulse_server::app::{self, Running};
use callpulse_server::config::{Cli, Command};
use clap::Parser;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub const KEY: &str = "APIkey1";
pub const SECRET: &str = "secret-one-that-is-long-enough-0001";
pub const KEY2: &str = "APIkey2";
pub const SECRET2: &str = "secret-two-that-is-long-enough-0002";
pub const EVENTS_TOKEN: &str = "events-token-for-tests";
pub const MAX_BODY: usize = 64 * 1024;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Running,
    pub db_url: String,
    pub _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn(None).await
}

/// A server whose configuration file holds `config` (for its `[alerts]`).
pub async fn spawn_app_with_config(config: &str) -> TestApp {
    spawn(Some(config)).await
}

async fn spawn(config: Option<&str>) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("callpulse.db").display());
    let path = config.map(|text| {
        let path = dir.path().join("callpulse.toml");
        std::fs::write(&path, text).expect("config written");
        path
    });
    let running = start_with_config(&db_url, path.as_deref()).await;
    TestApp {
        base: format!("http://{}", running.addr),
        client: reqwest::Client::new(),
        running,
        db_url,
        _dir: dir,
    }
}

impl TestApp {
    /// Stops the server, waits for its tasks, and starts it again on the same database.
    pub async fn restart(self) -> (Running, tempfile::TempDir) {
        self.running.shutdown.cancel();
        let TestApp {
            running,
            db_url,
            _dir,
            ..
        } = self;
        running.join().await;
        (start(&db_url).await, _dir)
    }
}

pub async fn start(db_url: &str) -> Running {
    start_with_config(db_url, None).await
}

pub async fn start_with_config(db_url: &str, config: Option<&std::path::Path>) -> Running {
    start_with_args(db_url, config, &[]).await
}

/// A server with the test settings and `extra` flags after them.
pub async fn start_with_args(
    db_url: &str,
    config: Option<&std::path::Path>,
    extra: &[&str],
) -> Running {
    let mut args = serve_args(db_url, extra);
    args.config_file = config.map(std::path::Path::to_path_buf);
    app::start(args).await.expect("server starts")
}

/// The test settings with `extra` flags after them.
pub fn serve_args(db_url: &str, extra: &[&str]) -> callpulse_server::config::ServeArgs {
    let keys = format!("{KEY}:{SECRET},{KEY2}:{SECRET2}");
    let max_body = MAX_BODY.to_string();
    let mut argv = vec![
        "callpulse",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database",
        db_url,
        "--livekit-keys",
        &keys,
        "--events-token",
        EVENTS_TOKEN,
        "--max-body-bytes",
        &max_body,
    ];
    argv.extend_from_slice(extra);
    let cli = Cli::try_parse_from(argv).expect("test arguments parse");
    let Command::Serve(args) = cli.command else {
        unreachable!("serve was given")
    };
    args
}

pub use crate::inputs::fixture;

/// A LiveKit-style token: HS256 over the body's SHA-256, signed with the given key.
pub fn sign_with(body: &[u8], key: &str, secret: &str, ttl: Duration) -> String {
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    livekit_api::access_token::AccessToken::with_api_key(key, secret)
        .with_ttl(ttl)
        .with_sha256(&sha)
        .to_jwt()
        .expect("token signs")
}

pub fn sign(body: &[u8]) -> String {
    sign_with(body, KEY, SECRET, Duration::from_secs(300))
}

impl TestApp {
    /// A client for a server that runs elsewhere (another process) at `base`.
    pub fn client_for(base: &str) -> RemoteApp {
        RemoteApp {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn post_webhook_raw(
        &self,
        body: Vec<u8>,
        auth: Option<String>,
        content_type: &str,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhooks/livekit", self.base))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        self.post_webhook_raw(body.to_vec(), Some(sign(body)), "application/webhook+json")
            .await
    }

    pub async fn post_events(&self, events: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/events", self.base))
            .bearer_auth(EVENTS_TOKEN)
            .json(events)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    pub async fn ingest_stats(&self) -> Value {
        self.get_json("/api/v1/ingest").await.1
    }

    /// Polls the CDR until `ready` holds (the pipeline works asynchronously), for up to 10 s.
    pub async fn wait_for_cdr(&self, call_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get_json(&format!("/api/v1/cdrs/{call_id}")).await;
            if status == 200 && ready(&body["cdr"]) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cdr {call_id} never became ready: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the pipeline has applied every logged event.
    pub async fn settle(&self) {
        let params = callpulse_core::BuildParams {
            now: callpulse_server::pipeline::now(),
            ..Default::default()
        };
        callpulse_server::pipeline::catch_up(
            self.running.state.store.as_ref(),
            &params,
            Some(&self.running.state.live),
        )
        .await
        .expect("pipeline catches up");
    }
}

pub async fn error_body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("errors are JSON");
    assert!(body["error"].is_string(), "error code present: {body}");
    assert!(body["detail"].is_string(), "detail present: {body}");
    (status, body)
}

/// A server that has received all twelve LiveKit samples, with its pipeline caught up.
pub async fn app_with_samples() -> TestApp {
    let app = spawn_app().await;
    for name in [
        "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12",
    ] {
        assert_eq!(
            app.post_webhook(&fixture(name)).await.status(),
            200,
            "{name}"
        );
    }
    app.settle().await;
    app
}

impl TestApp {
    /// Two seconds of simulated traffic (40 calls/s, 300x speed) sent to this server.
    pub async fn simulate(&self, seed: u64) -> callpulse_server::simulate::SimReport {
        let config = callpulse_server::simulate::SimConfig {
            base_url: self.base.clone(),
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            events_token: EVENTS_TOKEN.into(),
            rate: 40.0,
            duration: Some(Duration::from_secs(2)),
            speed: 300.0,
            seed: Some(seed),
            ack_log: None,
            failure_share: 0.0,
        };
        callpulse_server::simulate::run(config, tokio_util::sync::CancellationToken::new())
            .await
            .expect("simulation runs")
    }
}

/// The sample calls' first second (`room.creationTime` of samples 01–07).
pub const SAMPLE_EPOCH_S: i64 = 1_795_442_530;

/// A LiveKit sample with every epoch time (quoted seconds or milliseconds) moved by `shift_s`
/// seconds, for tests whose calls must be recent (live state, timeouts).
pub fn fixture_shifted(name: &str, shift_s: i64) -> Vec<u8> {
    let text = String::from_utf8(fixture(name)).expect("fixtures are UTF-8");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"17") {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let quoted = rest.as_bytes().get(digits) == Some(&b'"');
        let value: Option<i64> = rest[..digits].parse().ok();
        match (quoted, digits, value) {
            (true, 10, Some(s)) => out.push_str(&(s + shift_s).to_string()),
            (true, 13, Some(ms)) => out.push_str(&(ms + shift_s * 1000).to_string()),
            _ => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out.into_bytes()
}

/// `fixture_shifted` so that the sample calls started a minute ago.
pub fn fixture_recent(name: &str) -> Vec<u8> {
    let now_s = chrono::Utc::now().timestamp();
    fixture_shifted(name, now_s - 60 - SAMPLE_EPOCH_S)
}

/// A server reached over HTTP only (another process).
pub struct RemoteApp {
    pub base: String,
    pub client: reqwest::Client,
}

impl RemoteApp {
    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        self.client
            .post(format!("{}/webhooks/livekit", self.base))
            .header("Content-Type", "application/webhook+json")
            .header("Authorization", sign(body))
            .body(body.to_vec())
            .send()
            .await
            .expect("request sent")
    }
}

/// A third-party server (Alertmanager, Prometheus) started for a test on a free loopback port,
/// stopped when dropped.
pub struct Service {
    pub url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// Starts `binary` with `config` written to its config file; `args` gets the config path, a
/// data folder and the port. Waits until `GET /-/ready` answers 2xx.
pub async fn start_service(
    binary: &str,
    package: &str,
    config: &str,
    args: impl Fn(&std::path::Path, &std::path::Path, u16) -> Vec<String>,
) -> Service {
    assert!(
        std::path::Path::new(binary).exists(),
        "{binary} is missing: install Debian's {package} (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(binary)
        .args(args(&config_path, &dir.path().join("data"), port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/-/ready"))
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{binary} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Service {
        url,
        _child: child,
        _dir: dir,
    }
}

/// `callpulse serve` as its own process (the built binary), so it can be killed with SIGKILL.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub base: String,
}

/// Its database is `callpulse.db` in `dir`; `listen` may name a fixed port (to restart on it).
pub async fn serve_process(dir: &std::path::Path, config: &str, listen: &str) -> ServeProcess {
    use tokio::io::AsyncBufReadExt;
    let path = dir.join("callpulse.toml");
    std::fs::write(&path, config).unwrap();
    let keys = format!("{}:{}", KEY, SECRET);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .arg(format!("--config={}", path.display()))
        .args(["serve", "--listen", listen, "--metrics-addr", "127.0.0.1:0"])
        .args(["--livekit-keys", &keys])
        .arg(format!(
            "--database=sqlite://{}",
            dir.join("callpulse.db").display()
        ))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("callpulse starts");
    // Its log goes to standard error.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("callpulse listening addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("callpulse exited before listening")
    })
    .await
    .expect("callpulse listens within 30 s");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ServeProcess {
        child,
        base: format!("http://{addr}"),
    }
}
