//! `/metrics` against Prometheus's own tools (Debian's `prometheus` package): `promtool check
//! metrics` on a scrape, `promtool check rules` and `promtool test rules` on the shipped rules, and
//! a real Prometheus scraping the server.

use crate::helpers::{TestApp, spawn_app, start_service};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const PROMTOOL: &str = "/usr/bin/promtool";
const PROMETHEUS: &str = "/usr/bin/prometheus";

fn require(binary: &str) {
    assert!(
        std::path::Path::new(binary).exists(),
        "{binary} is missing: install Debian's prometheus package (scripts/test.sh does)"
    );
}

async fn scrape(app: &TestApp) -> String {
    let addr = app
        .running
        .metrics_addr
        .expect("the metrics listener is on");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    r.text().await.unwrap()
}

/// Sums the samples of `name` whose labels contain every `filter` pair.
fn sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            filter
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn api_totals(app: &TestApp) -> Value {
    let from = (chrono::Utc::now() - chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let to = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    app.get_json(&format!("/api/v1/metrics?from={from}&to={to}"))
        .await
        .1["totals"]
        .clone()
}

#[tokio::test]
async fn a_scrape_passes_promtool_and_counts_what_the_api_counts() {
    require(PROMTOOL);
    let app = spawn_app().await;
    app.simulate(17).await;
    app.settle().await;
    let text = scrape(&app).await;

    let mut check = tokio::process::Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let totals = api_totals(&app).await;
    let total = totals["total_calls"].as_f64().unwrap();
    assert!(total > 20.0, "{totals}");
    assert_eq!(sum(&text, "callpulse_calls_total", &[]), total);
    for (outcome, field) in [
        ("answered", "answered_calls"),
        ("failed", "failed_calls"),
        ("abandoned", "abandoned_calls"),
        ("busy", "busy_calls"),
        ("no_answer", "no_answer_calls"),
    ] {
        assert_eq!(
            sum(&text, "callpulse_calls_total", &[("outcome", outcome)]),
            totals[field].as_f64().unwrap(),
            "{outcome}"
        );
    }
    assert_eq!(
        sum(&text, "callpulse_calls_total", &[("direction", "inbound")]),
        totals["inbound_calls"].as_f64().unwrap()
    );
    assert!(
        !text.contains("SCL_") && !text.contains("+1"),
        "no call ids or numbers in labels"
    );
    let handled = sum(&text, "callpulse_handle_time_seconds_count", &[]);
    assert!(handled > 0.0);
    assert_eq!(
        sum(
            &text,
            "callpulse_handle_time_seconds_bucket",
            &[("le", "+Inf")]
        ),
        handled
    );
    let stats = app.ingest_stats().await;
    assert_eq!(
        sum(&text, "callpulse_webhooks_received_total", &[]),
        stats["since_start"]["webhooks_stored"].as_f64().unwrap()
    );
    assert_eq!(
        sum(&text, "callpulse_cdr_pipeline_backlog_events", &[]),
        0.0
    );
    assert!(text.contains("# TYPE callpulse_cdr_pipeline_events_loaded_total counter\n"));
}

#[tokio::test]
async fn the_shipped_rules_pass_promtool_and_their_unit_tests() {
    require(PROMTOOL);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    for args in [
        vec!["check", "rules", "callpulse-rules.yml"],
        vec!["test", "rules", "callpulse-rules.test.yml"],
    ] {
        let out = tokio::process::Command::new(PROMTOOL)
            .args(&args)
            .current_dir(dir)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_call_counts() {
    require(PROMETHEUS);
    let app = spawn_app().await;
    app.simulate(23).await;
    app.settle().await;
    let expected = api_totals(&app).await["total_calls"].as_f64().unwrap();
    let target = app.running.metrics_addr.unwrap();

    let prometheus = start_service(
        PROMETHEUS,
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: callpulse\n    static_configs:\n      - targets: ['{target}']\n"
        ),
        |config, data, port| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        },
    )
    .await;
    let query = format!(
        "{}/api/v1/query?query=sum(callpulse_calls_total%7Bjob%3D%22callpulse%22%7D)",
        prometheus.url
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        if let Ok(r) = reqwest::get(&query).await
            && let Ok(body) = r.json::<Value>().await
            && let Some(value) = body["data"]["result"][0]["value"][1].as_str()
        {
            break value.parse::<f64>().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus never had callpulse_calls_total"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(got, expected, "Prometheus counts what the API counts");
}
