//! What the benchmarks share: the simulator's CDR mix, the dashboard's query set, a new call's
//! webhook, and a server started in this process.
#![allow(dead_code)]

use callpulse_core::{BuildParams, Cdr, Timestamp};
use callpulse_server::metrics::{GroupBy, start_of_day, summary_windows};
use callpulse_server::simulate::wire::{self, Participant, Room};
use callpulse_server::simulate::{random_call, script_cdrs};
use livekit_protocol::participant_info::Kind;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use std::collections::HashMap;

pub const DAY_MS: i64 = 86_400_000;
pub const KEY: &str = "APIbench";
pub const SECRET: &str = "bench-secret-that-is-long-enough-0001";

/// The simulator's call mix, `n` CDRs, starting uniformly over the 60 days before `now`.
pub fn generate(n: usize, agents: usize, now: i64) -> Vec<Cdr> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut base = Vec::new();
    let build = BuildParams {
        now: Timestamp(now + 365 * DAY_MS),
        ..BuildParams::default()
    };
    while base.len() < 20_000.min(n.max(1)) {
        let script = random_call(&mut rng, now - 61 * DAY_MS);
        base.extend(script_cdrs(&script, &build));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = base[i % base.len()].clone();
        let start = now - 60 * DAY_MS + rng.gen_range(0..60 * DAY_MS);
        let shift = start - c.start_time.millis();
        let moved = |t: Timestamp| Timestamp(t.millis() + shift);
        c.start_time = moved(c.start_time);
        c.answer_time = c.answer_time.map(moved);
        c.end_time = c.end_time.map(moved);
        c.last_event_at = moved(c.last_event_at);
        c.call_id = format!("SCL_b{i:011}");
        if c.queue.is_some() || rng.gen_bool(0.5) {
            c.agent_id = Some(format!("agent-{:03}", rng.gen_range(0..agents)));
        }
        out.push(c);
    }
    out.sort_by_key(|c| c.start_time);
    out
}

/// A new inbound call's `participant_joined`, starting now.
pub fn joined(i: usize, rng: &mut rand::rngs::StdRng) -> (String, Vec<u8>) {
    let now = chrono::Utc::now().timestamp_millis();
    let call_id = format!("SCL_fan{i:08}");
    let room = Room {
        sid: format!("RM_fan{i:08}"),
        name: format!("call-fan-{i}"),
        created_ms: now,
    };
    let caller = Participant {
        sid: format!("PA_fan{i:08}"),
        identity: format!("sip_+1555{i:07}"),
        name: String::new(),
        kind: Kind::Sip,
        joined_ms: now,
        attributes: HashMap::from([
            ("sip.callID".to_string(), call_id.clone()),
            ("sip.callStatus".to_string(), "ringing".to_string()),
            ("sip.ruleID".to_string(), "SDR_bench".to_string()),
            ("sip.trunkID".to_string(), "ST_bench".to_string()),
        ]),
    };
    (call_id, wire::participant_joined(rng, &room, &caller))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub struct Case {
    pub name: &'static str,
    pub from: i64,
    pub to: i64,
    pub group_by: Option<GroupBy>,
    pub sql_group: &'static str,
}

impl Case {
    /// The case as the metric engine's query (UTC, no filter).
    pub fn query(&self) -> callpulse_server::metrics::MetricsQuery {
        callpulse_server::metrics::MetricsQuery {
            from: Timestamp(self.from),
            to: Timestamp(self.to),
            filter: callpulse_server::store::MetricFilter::default(),
            group_by: self.group_by,
            tz: chrono_tz::UTC,
        }
    }
}

/// The dashboard's query set at `now` (UTC days), with the windows the dashboard asks for: its
/// trend charts and breakdowns start at a local midnight (`charts.rs`, `summary_windows`) and run
/// to now; the summary compares today with the same weekday a week earlier up to the same time.
pub fn dashboard_cases(now: i64) -> Vec<Case> {
    let windows = summary_windows(None, chrono_tz::UTC, Timestamp(now));
    let midnight = |days_back: i64| {
        start_of_day(
            windows.date - chrono::Duration::days(days_back),
            chrono_tz::UTC,
        )
        .timestamp_millis()
    };
    vec![
        Case {
            name: "30-day totals",
            from: midnight(29),
            to: now,
            group_by: None,
            sql_group: "'all'",
        },
        Case {
            name: "7 days by hour",
            from: midnight(6),
            to: now,
            group_by: Some(GroupBy::Hour),
            sql_group: "start_ms / 3600000",
        },
        Case {
            name: "30 days by day",
            from: midnight(29),
            to: now,
            group_by: Some(GroupBy::Day),
            sql_group: "start_ms / 86400000",
        },
        Case {
            name: "today by trunk",
            from: windows.today.0.millis(),
            to: now,
            group_by: Some(GroupBy::Trunk),
            sql_group: "trunk_id",
        },
        Case {
            name: "7 days by agent",
            from: midnight(6),
            to: now,
            group_by: Some(GroupBy::Agent),
            sql_group: "agent_id",
        },
        Case {
            name: "today (summary)",
            from: windows.today.0.millis(),
            to: now,
            group_by: None,
            sql_group: "'all'",
        },
        Case {
            name: "last week (summary)",
            from: windows.last_week.0.millis(),
            to: windows.last_week.1.millis(),
            group_by: None,
            sql_group: "'all'",
        },
    ]
}

/// Windows whose edges fall anywhere, to the millisecond, as an API user or a Grafana panel
/// ("last 30 days") asks: every edge cuts a quarter-hour that must be completed from CDRs.
pub fn unaligned_cases(now: i64) -> Vec<Case> {
    // An end an hour and a bit before now, so the end edge is not open either.
    let end = now - 3_600_000 - 7 * 60_000 - 13_457;
    vec![
        Case {
            name: "now-30d to now",
            from: now - 30 * DAY_MS,
            to: now,
            group_by: None,
            sql_group: "'all'",
        },
        Case {
            name: "30 days by day, cut",
            from: now - 30 * DAY_MS,
            to: end,
            group_by: Some(GroupBy::Day),
            sql_group: "start_ms / 86400000",
        },
        Case {
            name: "7 days by hour, cut",
            from: now - 7 * DAY_MS,
            to: end,
            group_by: Some(GroupBy::Hour),
            sql_group: "start_ms / 3600000",
        },
        Case {
            name: "7 days by agent, cut",
            from: now - 7 * DAY_MS,
            to: end,
            group_by: Some(GroupBy::Agent),
            sql_group: "agent_id",
        },
    ]
}

/// Starts the real server in this process on `database`.
pub async fn start_server(database: &str) -> callpulse_server::app::Running {
    use callpulse_server::config::{Cli, Command};
    use clap::Parser;
    let keys = format!("{KEY}:{SECRET}");
    let cli = Cli::try_parse_from([
        "callpulse",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "off",
        "--database",
        database,
        "--livekit-keys",
        &keys,
        "--events-token",
        "t",
    ])
    .unwrap();
    let Command::Serve(serve) = cli.command else {
        unreachable!()
    };
    callpulse_server::app::start(serve).await.unwrap()
}

/// Posts a signed webhook to the server at `base`; it must answer 200.
pub async fn post_webhook(client: &reqwest::Client, base: &str, body: Vec<u8>) {
    let auth = wire::sign(&body, KEY, SECRET).unwrap();
    let r = client
        .post(format!("{base}/webhooks/livekit"))
        .header("Authorization", auth)
        .header("Content-Type", "application/webhook+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A database of each backend, and how to drop the PostgreSQL one.
pub struct Databases {
    pub sqlite: String,
    pub postgres: String,
    admin: String,
    pg_name: String,
    _dir: tempfile::TempDir,
}

impl Databases {
    pub async fn create(tag: &str) -> Databases {
        let admin = std::env::var("CALLPULSE_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let pg_name = format!("callpulse_bench_{tag}_{:08x}", rand::random::<u32>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL is reachable");
        sqlx::query(&format!("CREATE DATABASE {pg_name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let cut = admin.rfind('/').unwrap();
        let dir = tempfile::tempdir().unwrap();
        Databases {
            sqlite: format!("sqlite://{}", dir.path().join("bench.db").display()),
            postgres: format!("{}/{pg_name}", &admin[..cut]),
            admin,
            pg_name,
            _dir: dir,
        }
    }

    pub async fn drop(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.pg_name
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}
