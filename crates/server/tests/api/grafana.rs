//! The Grafana provisioning in `deploy/grafana`: every dashboard has what Grafana needs, every
//! panel names a provisioned data source, every SQL query runs against the views of a PostgreSQL
//! database filled by the real server (simulated traffic and eight days of history) and returns
//! rows, and every metric a PromQL query names is on that server's `/metrics`.

use crate::helpers::{EVENTS_TOKEN, KEY, SECRET, start};
use crate::pg::TestDb;
use callpulse_server::pipeline;
use callpulse_server::simulate::{self, history};
use serde_json::Value;
use sqlx::{Column, Connection, Row};
use std::collections::BTreeSet;
use std::time::Duration;

const GRAFANA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana");

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("{GRAFANA}/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            out.push((name, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel (rows' nested panels too) but the rows themselves.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// Grafana's macros expanded as its PostgreSQL data source expands them, over `[from, to]`.
fn expand(sql: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let close = after.find(')').expect("$__timeFilter( is closed");
        let column = after[..close].trim();
        out.push_str(&format!("{column} BETWEEN '{from}' AND '{to}'"));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out.replace("$__timeFrom()", &format!("'{from}'"))
        .replace("$__timeTo()", &format!("'{to}'"))
}

#[test]
fn every_dashboard_has_what_grafana_needs() {
    let sources =
        std::fs::read_to_string(format!("{GRAFANA}/provisioning/datasources/callpulse.yml"))
            .unwrap();
    let provider =
        std::fs::read_to_string(format!("{GRAFANA}/provisioning/dashboards/callpulse.yml"))
            .unwrap();
    assert!(provider.contains("type: file") && provider.contains("path:"));
    let boards = dashboards();
    assert_eq!(boards.len(), 3, "overview, trunks, agents and queues");
    let mut uids = BTreeSet::new();
    for (name, d) in &boards {
        let uid = d["uid"].as_str().unwrap_or_else(|| panic!("{name}: uid"));
        assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid}");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}");
        assert!(
            d["schemaVersion"].as_i64().is_some(),
            "{name}: schemaVersion"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: panel ids unique"
            );
            for key in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][key].is_i64(), "{name}: gridPos.{key}");
            }
        }
        let panels = panels(d);
        assert!(panels.len() >= 5, "{name}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default();
            let ds = &p["datasource"];
            let ds_uid = ds["uid"].as_str().unwrap_or_default();
            assert!(
                sources.contains(&format!("uid: {ds_uid}")) && !ds_uid.is_empty(),
                "{name} / {title}: data source {ds} is not provisioned"
            );
            assert!(ds["type"].is_string(), "{name} / {title}: data source type");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name} / {title}: no targets");
            for t in targets {
                assert!(t["refId"].is_string(), "{name} / {title}: refId");
                assert_eq!(t["datasource"]["uid"], ds["uid"], "{name} / {title}");
                match ds["type"].as_str().unwrap() {
                    "postgres" => {
                        assert!(t["rawSql"].is_string(), "{name} / {title}: rawSql");
                        assert_eq!(t["rawQuery"], true, "{name} / {title}");
                        let format = t["format"].as_str().unwrap_or_default();
                        assert!(
                            ["time_series", "table"].contains(&format),
                            "{name} / {title}: format {format}"
                        );
                    }
                    "prometheus" => {
                        assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
                    }
                    other => panic!("{name} / {title}: unexpected data source type {other}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn every_query_runs_against_a_populated_database_and_scrape() {
    let db = TestDb::create().await;
    let running = start(&db.url).await;
    let store = running.state.store.clone();
    let now = pipeline::now();
    let past = history::History {
        days: 8,
        peak_calls_per_hour: 30.0,
        tz: chrono_tz::UTC,
        seed: 11,
    };
    history::backfill(store.as_ref(), &past, now).await.unwrap();
    callpulse_server::maintenance::pass(
        store.as_ref(),
        &callpulse_server::store::RetentionPolicy::KEEP_ALL,
    )
    .await;
    let config = simulate::SimConfig {
        base_url: format!("http://{}", running.addr),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        events_token: EVENTS_TOKEN.into(),
        rate: 40.0,
        duration: Some(Duration::from_secs(2)),
        speed: 300.0,
        seed: Some(3),
        ack_log: None,
        failure_share: 0.2,
    };
    simulate::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    // The server's own pipeline builds the CDRs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cursor = store.cursor(pipeline::CURSOR).await.unwrap();
        if store.call_events_backlog(cursor).await.unwrap().0 == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let scrape = reqwest::get(format!("http://{}/metrics", running.metrics_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(30);
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (mut sql_queries, mut promql) = (0, 0);
    for (name, d) in dashboards() {
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().unwrap() {
                if let Some(sql) = t["rawSql"].as_str() {
                    let sql = expand(sql, &fmt(from), &fmt(to));
                    let rows = sqlx::query(&sql)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("{name} / {title}: {e}\n{sql}"));
                    assert!(!rows.is_empty(), "{name} / {title}: no rows\n{sql}");
                    if t["format"] == "time_series" {
                        let columns: Vec<&str> =
                            rows[0].columns().iter().map(|c| c.name()).collect();
                        assert_eq!(columns[0], "time", "{name} / {title}: {columns:?}");
                    }
                    sql_queries += 1;
                }
                if let Some(expr) = t["expr"].as_str() {
                    let mut rest = expr;
                    while let Some(at) = rest.find("callpulse_") {
                        let metric: String = rest[at..]
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        assert!(
                            scrape.contains(&format!("# TYPE {metric} ")),
                            "{name} / {title}: {metric} is not on /metrics"
                        );
                        rest = &rest[at + metric.len()..];
                    }
                    promql += 1;
                }
            }
        }
    }
    assert!(sql_queries >= 20, "{sql_queries} SQL queries");
    assert!(promql >= 10, "{promql} PromQL queries");
    running.shutdown.cancel();
    running.join().await;
}
