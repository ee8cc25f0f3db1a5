//! Webhook ingest at line rate, against the ceiling measured in the same run.
//!
//! Every server here is the real `callpulse` binary in its own process; the load generator is
//! this process, sending the simulator's signed LiveKit webhooks over keep-alive HTTP/1.1
//! connections on loopback. Stages:
//!
//! - **ceiling**: `callpulse serve --bench-noop` (same binary and HTTP stack; it reads the body
//!   and answers, verifying and storing nothing), as fast as the connections allow;
//! - **sqlite** / **postgres**: a fresh database; first a fixed rate (`--rate`, open loop: each
//!   latency counts from when the request was due, so a stall is not hidden), with how far the CDR
//!   pipeline is behind when it stops and the wait until it has caught up; then as fast as the
//!   connections allow; then the wait until the pipeline has caught up, and the CDRs. With
//!   `--history N` the database first holds about N events of the demo history's mix, with their
//!   CDRs (written, then rebuilt), as a database in service does. Each run
//!   also reports webhooks per durable commit; every run, the ceiling's too, the CPU the server
//!   and the load generator used, in cores (under the machine's cores together: not CPU-bound);
//! - **memory**: resident memory of a fresh server with no calls, then with `--active-calls`
//!   calls in progress (each one SIP caller ringing);
//! - **kill9**: SIGKILL the SQLite server halfway through a full-speed run, restart it, and check
//!   that every event the load generator saw acknowledged is in the log;
//! - **rebuild**: `--rebuild-events` events written to a fresh log (the demo history's mix),
//!   then `callpulse rebuild` timed.
//!
//! usage: cargo bench --bench ingest -- [--seconds 10] [--connections 64] [--rate 5000]
//!        [--events 400000] [--active-calls 100000] [--rebuild-events 1000000] [--history 0]
//!        [--stages ceiling,sqlite,postgres,memory,kill9,rebuild]

mod common;

use bytes::Bytes;
use callpulse_core::Timestamp;
use callpulse_server::simulate::Payload;
use callpulse_server::simulate::{history, random_call, wire};
use common::{Databases, KEY, SECRET, joined, median};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use rand::SeedableRng;
use sqlx::Connection;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Args {
    seconds: f64,
    connections: usize,
    rate: f64,
    events: usize,
    active_calls: usize,
    rebuild_events: usize,
    history: usize,
    stages: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10.0,
        connections: 64,
        rate: 5000.0,
        events: 400_000,
        active_calls: 100_000,
        rebuild_events: 1_000_000,
        history: 0,
        stages: [
            "ceiling", "sqlite", "postgres", "memory", "kill9", "rebuild",
        ]
        .map(String::from)
        .to_vec(),
    };
    let argv: Vec<String> = std::env::args().collect();
    for pair in argv.windows(2) {
        let value = pair[1].replace('_', "");
        let n = value.parse::<f64>().ok();
        match (pair[0].as_str(), n) {
            ("--seconds", Some(n)) => a.seconds = n,
            ("--connections", Some(n)) => a.connections = n as usize,
            ("--rate", Some(n)) => a.rate = n,
            ("--events", Some(n)) => a.events = n as usize,
            ("--active-calls", Some(n)) => a.active_calls = n as usize,
            ("--rebuild-events", Some(n)) => a.rebuild_events = n as usize,
            ("--history", Some(n)) => a.history = n as usize,
            ("--stages", _) => a.stages = value.split(',').map(String::from).collect(),
            _ => {}
        }
    }
    a
}

/// A webhook body and its event id.
struct Webhook {
    id: String,
    body: Bytes,
}

/// A webhook with its `Authorization` value, ready to send.
struct Signed {
    id: String,
    auth: String,
    body: Bytes,
}

/// `n` webhooks of the simulator's call mix, calls starting 10 ms apart from now, in the order
/// LiveKit would send them (by time, calls interleaved).
fn webhooks(n: usize) -> Vec<Webhook> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let now = chrono::Utc::now().timestamp_millis();
    let mut steps = Vec::with_capacity(n + 64);
    let mut call = 0i64;
    while steps.len() < n {
        let script = random_call(&mut rng, now + call * 10);
        call += 1;
        for step in script.room.into_iter().chain(script.egress) {
            if let Payload::Webhook(body) = step.payload {
                steps.push((step.at_ms, body));
            }
        }
    }
    steps.sort_by_key(|(at, _)| *at);
    steps.truncate(n);
    steps
        .into_iter()
        .map(|(_, body)| Webhook {
            id: event_id(&body),
            body: Bytes::from(body),
        })
        .collect()
}

fn event_id(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs webhooks now (tokens live 5 minutes, so each stage signs its own).
fn sign(hooks: &[Webhook]) -> Arc<Vec<Signed>> {
    Arc::new(
        hooks
            .iter()
            .map(|h| Signed {
                id: h.id.clone(),
                auth: wire::sign(&h.body, KEY, SECRET).unwrap(),
                body: h.body.clone(),
            })
            .collect(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU time process `pid` (`self` for this one) has used so far, user and system, all threads,
/// seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports these in USER_HZ, 100 a second on every platform it runs on here.
    ticks / 100.0
}

/// A `callpulse serve` process.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(database: &str, extra: &[&str]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::env::temp_dir().join(format!("callpulse-bench-{}.log", addr.port()));
        let keys = format!("{KEY}:{SECRET}");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--database", database, "--livekit-keys", &keys])
            .args(["--events-token", "bench-events-token"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("the callpulse binary starts");
        let server = Server {
            child,
            addr,
            metrics,
            log,
        };
        server.wait_up().await;
        server
    }

    async fn wait_up(&self) {
        let url = format!("http://{}/healthz", self.addr);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up; see {}", self.log.display());
    }

    /// Resident set size, MiB.
    fn rss_mib(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    /// CPU time the server has used so far (user and system, all threads), seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.child.id().expect("running").to_string())
    }

    /// The group commit's transactions so far.
    async fn commits(&self) -> f64 {
        self.metric("callpulse_ingest_transactions_total").await
    }

    /// Runs `load` and prints, besides what `drive` saw, how many webhooks each durable commit
    /// held and how much CPU the server used: whether the run was bound by the cores or by the
    /// append's round trips.
    async fn drive_measured(&self, label: &str, requests: Arc<Vec<Signed>>, load: Load) -> Outcome {
        let commits = self.commits().await;
        let (outcome, cpu) = self.drive_timed(requests, load).await;
        let commits = self.commits().await - commits;
        println!("{label}   {}", outcome.summary());
        println!(
            "{label}   {:.1} webhooks per commit ({:.0} commits/s); {cpu}",
            outcome.acked.len() as f64 / commits.max(1.0),
            commits / outcome.secs,
        );
        outcome
    }

    /// Runs `load`; what it saw, and the CPU the server and the load generator used meanwhile
    /// (together under the machine's cores: the run was bound by something else).
    async fn drive_timed(&self, requests: Arc<Vec<Signed>>, load: Load) -> (Outcome, String) {
        let (server, generator) = (self.cpu_seconds(), cpu_seconds("self"));
        let start = Instant::now();
        let outcome = drive(self.addr, requests, load).await;
        let secs = start.elapsed().as_secs_f64();
        let cpu = format!(
            "CPU: server {:.2}, load generator {:.2} of {} cores",
            (self.cpu_seconds() - server) / secs,
            (cpu_seconds("self") - generator) / secs,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        (outcome, cpu)
    }

    /// The sum of a `/metrics` series over its labels.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Seconds until the CDR pipeline has nothing left to read (at most five minutes).
    async fn caught_up(&self) -> f64 {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(300) {
            if self.metric("callpulse_cdr_pipeline_backlog_events").await == 0.0 {
                return t.elapsed().as_secs_f64();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        f64::NAN
    }

    async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// What one load run saw.
#[derive(Default)]
struct Outcome {
    /// Indexes of the requests answered 2xx.
    acked: Vec<usize>,
    /// Acknowledgement latency of each, microseconds.
    latency_us: Vec<u32>,
    busy: u64,
    refused: u64,
    failed: u64,
    secs: f64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.secs
    }
    fn percentile_ms(&self, q: f64) -> f64 {
        let mut v = self.latency_us.clone();
        v.sort_unstable();
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    }
    fn summary(&self) -> String {
        format!(
            "{:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  ({} acked, {} busy, {} refused, {} failed)",
            self.rate(),
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.acked.len(),
            self.busy,
            self.refused,
            self.failed
        )
    }
}

/// How a load run paces and ends.
#[derive(Clone, Copy)]
struct Load {
    connections: usize,
    /// Requests per second (open loop); `None`: each connection sends as soon as it has an answer.
    rate: Option<f64>,
    seconds: f64,
    /// Start over at the first request when all were sent (only where ids need not be new).
    cycle: bool,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    request: &Signed,
) -> anyhow::Result<hyper::StatusCode> {
    sender.ready().await?;
    let req = hyper::Request::post("/webhooks/livekit")
        .header(HOST, "127.0.0.1")
        .header(AUTHORIZATION, &request.auth)
        .header(CONTENT_TYPE, "application/webhook+json")
        .body(Full::new(request.body.clone()))?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Sends `requests` to `addr` as `load` says; each connection is one task.
async fn drive(addr: SocketAddr, requests: Arc<Vec<Signed>>, load: Load) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(load.seconds);
    let workers: Vec<_> = (0..load.connections)
        .map(|_| {
            let (next, requests) = (next.clone(), requests.clone());
            tokio::spawn(async move {
                let mut part = Outcome::default();
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if !load.cycle && i >= requests.len() {
                        break;
                    }
                    let due = match load.rate {
                        Some(rate) => start + Duration::from_secs_f64(i as f64 / rate),
                        None => Instant::now(),
                    };
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let sender = match &mut conn {
                        Some(sender) => sender,
                        None => match connect(addr).await {
                            Ok(sender) => conn.insert(sender),
                            Err(_) => {
                                part.failed += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let k = i % requests.len();
                    match send(sender, &requests[k]).await {
                        Ok(status) if status.is_success() => {
                            part.acked.push(k);
                            part.latency_us.push(due.elapsed().as_micros() as u32);
                        }
                        Ok(hyper::StatusCode::SERVICE_UNAVAILABLE) => part.busy += 1,
                        Ok(_) => part.refused += 1,
                        Err(_) => {
                            part.failed += 1;
                            conn = None;
                        }
                    }
                }
                part
            })
        })
        .collect();
    let mut all = Outcome::default();
    for w in workers {
        let part = w.await.unwrap();
        all.acked.extend(part.acked);
        all.latency_us.extend(part.latency_us);
        all.busy += part.busy;
        all.refused += part.refused;
        all.failed += part.failed;
    }
    all.secs = start.elapsed().as_secs_f64().min(load.seconds);
    all
}

/// Strings of the first column of `sql`'s rows, read straight from the database.
async fn column(database: &str, sql: &str) -> Vec<String> {
    if database.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(database).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
    }
}

async fn count(database: &str, table: &str) -> usize {
    column(
        database,
        &format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"),
    )
    .await
    .first()
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

/// The fixed-rate run, then the full-speed run, then the pipeline's catch-up, on one backend.
async fn backend(name: &str, database: &str, hooks: &[Webhook], args: &Args) -> Outcome {
    if args.history > 0 {
        let (logged, _) = write_history(database, args.history).await;
        run_rebuild(database).await;
        println!(
            "{name:<10} starts from {logged} events of history and {} CDRs",
            count(database, "cdrs").await
        );
    }
    let server = Server::start(database, &[]).await;
    let paced = ((args.rate * args.seconds) as usize).min(hooks.len() / 2);
    server
        .drive_measured(
            &format!("{name:<10} at {:>6.0}/s", args.rate),
            sign(&hooks[..paced]),
            Load {
                connections: args.connections,
                rate: Some(args.rate),
                seconds: args.seconds,
                cycle: false,
            },
        )
        .await;
    // Whether the pipeline keeps up at that rate: how far behind it is when the load stops.
    let behind = server.metric("callpulse_cdr_pipeline_backlog_events").await;
    let lag = server.caught_up().await;
    println!(
        "{name:<10} at {:>6.0}/s   pipeline {behind:.0} events behind when the load stopped, \
         caught up {lag:.1} s after",
        args.rate
    );
    let full = server
        .drive_measured(
            &format!("{name:<10} full speed"),
            sign(&hooks[paced..]),
            Load {
                connections: args.connections,
                rate: None,
                seconds: args.seconds,
                cycle: false,
            },
        )
        .await;
    let lag = server.caught_up().await;
    let loaded = server
        .metric("callpulse_cdr_pipeline_events_loaded_total")
        .await;
    let received = server.metric("callpulse_webhooks_received_total").await;
    server.stop().await;
    println!(
        "{name:<10} pipeline caught up {lag:.1} s after the load; {} events logged, {} CDRs",
        count(database, "event_log").await,
        count(database, "cdrs").await
    );
    println!(
        "{name:<10} pipeline read {loaded:.0} call events back from the store for calls it did \
         not hold: {:.2} per webhook received",
        loaded / received.max(1.0)
    );
    full
}

async fn memory(args: &Args) {
    let dbs = Databases::create("memory").await;
    let server = Server::start(&dbs.sqlite, &[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = server.rss_mib();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let calls: Vec<Webhook> = (0..args.active_calls)
        .map(|i| {
            let body = joined(i, &mut rng).1;
            Webhook {
                id: event_id(&body),
                body: body.into(),
            }
        })
        .collect();
    let sent = drive(
        server.addr,
        sign(&calls),
        Load {
            connections: args.connections,
            rate: None,
            seconds: 600.0,
            cycle: false,
        },
    )
    .await;
    server.caught_up().await;
    let active = server.metric("callpulse_active_calls").await;
    let busy = server.rss_mib();
    println!(
        "memory     RSS {idle:.0} MiB with no calls; {busy:.0} MiB with {active:.0} calls in \
         progress ({} webhooks acked)",
        sent.acked.len()
    );
    server.stop().await;
    dbs.drop().await;
}

/// Kills the server mid-run; every acknowledged event must be in the log after the restart.
async fn kill9(database: &str, hooks: &[Webhook], args: &Args) -> bool {
    let mut server = Server::start(database, &[]).await;
    let requests = sign(hooks);
    let load = Load {
        connections: args.connections,
        rate: None,
        seconds: args.seconds,
        cycle: false,
    };
    let run = tokio::spawn(drive(server.addr, requests.clone(), load));
    tokio::time::sleep(Duration::from_secs_f64(args.seconds / 2.0)).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    let outcome = run.await.unwrap();
    let restarted = Server::start(database, &[]).await;
    restarted.caught_up().await;
    restarted.stop().await;
    let logged: std::collections::HashSet<String> = column(
        database,
        "SELECT event_id FROM event_log WHERE source = 'livekit'",
    )
    .await
    .into_iter()
    .collect();
    let missing = outcome
        .acked
        .iter()
        .filter(|&&k| !logged.contains(&requests[k].id))
        .count();
    println!(
        "kill9      SIGKILL after {:.1} s of full-speed load: {} acknowledged, {} in the log after \
         restart, {} acknowledged but missing; {} requests failed while it was down",
        args.seconds / 2.0,
        outcome.acked.len(),
        logged.len(),
        missing,
        outcome.failed
    );
    missing == 0
}

/// Writes about `events` events of the demo history's mix to the log (no CDRs); how many were
/// logged, and how long it took in seconds.
async fn write_history(database: &str, events: usize) -> (i64, f64) {
    let store = callpulse_server::store::open(database, Default::default())
        .await
        .unwrap();
    // The demo history averages about ten events a call and 0.42 of its peak hourly rate.
    let peak = events as f64 / 10.0 / (60.0 * 24.0 * 0.42);
    let plan = history::History {
        days: 60,
        peak_calls_per_hour: peak,
        tz: chrono_tz::UTC,
        seed: 11,
    };
    let t = Instant::now();
    let now = Timestamp(chrono::Utc::now().timestamp_millis());
    history::backfill(store.as_ref(), &plan, now).await.unwrap();
    let logged = store.event_count().await.unwrap();
    (logged, t.elapsed().as_secs_f64())
}

/// `callpulse rebuild` on `database`.
async fn run_rebuild(database: &str) {
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_callpulse"))
        .args(["rebuild", "--database", database])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "callpulse rebuild failed");
}

async fn rebuild(database: &str, name: &str, events: usize) {
    let (logged, write_secs) = write_history(database, events).await;
    let t = Instant::now();
    run_rebuild(database).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "rebuild    {name:<10} {logged} events ({:.0}/s to write them), rebuilt in {secs:.1} s: \
         {:.0} events/s, {} CDRs",
        logged as f64 / write_secs,
        logged as f64 / secs,
        count(database, "cdrs").await
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    let stage = |s: &str| args.stages.iter().any(|x| x == s);
    println!(
        "{} connections, {:.0} s per run, fixed rate {:.0}/s; this machine: {} cores",
        args.connections,
        args.seconds,
        args.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let hooks = webhooks(args.events);
    let ceiling = if stage("ceiling") {
        let server = Server::start("sqlite::memory:", &["--bench-noop"]).await;
        let mut runs = Vec::new();
        for _ in 0..2 {
            runs.push(
                server
                    .drive_timed(
                        sign(&hooks[..hooks.len().min(200_000)]),
                        Load {
                            connections: args.connections,
                            rate: None,
                            seconds: args.seconds / 2.0,
                            cycle: true,
                        },
                    )
                    .await,
            );
        }
        server.stop().await;
        for (run, cpu) in &runs {
            println!("ceiling    full speed  {}", run.summary());
            println!("ceiling    full speed  {cpu}");
        }
        let runs: Vec<Outcome> = runs.into_iter().map(|(run, _)| run).collect();
        Some(median(runs.iter().map(Outcome::rate).collect()))
    } else {
        None
    };
    let mut results = Vec::new();
    for (name, tag) in [("SQLite", "sqlite"), ("PostgreSQL", "postgres")] {
        if !stage(tag) {
            continue;
        }
        let dbs = Databases::create(tag).await;
        let database = if tag == "sqlite" {
            &dbs.sqlite
        } else {
            &dbs.postgres
        };
        let full = backend(name, database, &hooks, &args).await;
        results.push((name, full.rate()));
        dbs.drop().await;
    }
    if let Some(ceiling) = ceiling {
        for (name, rate) in &results {
            println!(
                "{name:<10} {rate:.0} webhooks/s = {:.2} of the ceiling ({ceiling:.0}/s)",
                rate / ceiling
            );
        }
    }
    if stage("memory") {
        memory(&args).await;
    }
    let mut ok = true;
    if stage("kill9") {
        let dbs = Databases::create("kill9").await;
        ok &= kill9(&dbs.sqlite, &hooks, &args).await;
        ok &= kill9(&dbs.postgres, &hooks, &args).await;
        dbs.drop().await;
    }
    if stage("rebuild") && args.rebuild_events > 0 {
        let dbs = Databases::create("rebuild").await;
        rebuild(&dbs.sqlite, "SQLite", args.rebuild_events).await;
        rebuild(&dbs.postgres, "PostgreSQL", args.rebuild_events).await;
        dbs.drop().await;
    }
    if !ok {
        eprintln!("acknowledged events were lost");
        std::process::exit(1);
    }
}
