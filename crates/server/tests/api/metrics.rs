//! `GET /api/v1/metrics` and `GET /api/v1/summary`: formulas through the API, rollups equal to a
//! direct computation from the CDRs after live rewrites, time-zone buckets.

use crate::helpers::*;
use callpulse_core::metrics::{MetricParams, tally_cdrs};
use callpulse_core::{BuildParams, Timestamp};
use callpulse_server::metrics::{GroupBy, MetricsQuery, query};
use callpulse_server::store::{CdrQuery, MetricFilter};

#[tokio::test]
async fn sample_day_metrics_follow_the_formulas() {
    let app = app_with_samples().await;
    let (status, body) = app
        .get_json("/api/v1/metrics?from=2026-11-23&to=2026-11-24&tz=UTC&group_by=hour")
        .await;
    assert_eq!(status, 200, "{body}");
    let t = &body["totals"];
    assert_eq!(t["total_calls"], 6);
    assert_eq!(t["inbound_calls"], 3);
    assert_eq!(t["outbound_calls"], 3);
    assert_eq!(t["answered_calls"], 1);
    assert_eq!(t["abandoned_calls"], 2);
    assert_eq!(t["busy_calls"], 1);
    assert_eq!(t["no_answer_calls"], 1);
    assert_eq!(t["failed_calls"], 1);
    assert_eq!(t["answer_rate"], 1.0 / 3.0);
    assert_eq!(t["abandonment_rate"], 2.0 / 3.0);
    assert_eq!(t["error_rate"], 1.0 / 6.0);
    assert_eq!(t["connect_rate"], 0.0);
    assert_eq!(t["avg_speed_of_answer_seconds"], 1.313);
    assert_eq!(t["avg_handle_time_seconds"], 186.0);
    assert_eq!(t["transfer_rate"], 0.0);
    assert_eq!(t["service_level"], 1.0 / 3.0);
    assert_eq!(t["p50_speed_of_answer_seconds"], 2.0);
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 24, "every hour of the day, empty ones too");
    assert_eq!(groups[14]["key"], "2026-11-23T14:00:00+00:00");
    assert_eq!(groups[14]["metrics"]["total_calls"], 2);
    assert_eq!(groups[15]["metrics"]["total_calls"], 4);
    assert_eq!(groups[0]["metrics"]["answer_rate"], serde_json::Value::Null);
}

#[tokio::test]
async fn groups_by_dimension_and_zone() {
    let app = app_with_samples().await;
    let (_, by_trunk) = app
        .get_json("/api/v1/metrics?from=2026-11-23&to=2026-11-24&group_by=trunk")
        .await;
    let keys: Vec<&serde_json::Value> = by_trunk["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["key"])
        .collect();
    assert_eq!(
        keys,
        ["ST_9zhErcwtRhiC", "ST_yRC9oi2w3ZZb", "ST_zUTp5cawibJM"]
    );
    let (_, by_dir) = app
        .get_json(
            "/api/v1/metrics?from=2026-11-23&to=2026-11-24&group_by=direction&direction=outbound",
        )
        .await;
    assert_eq!(by_dir["groups"].as_array().unwrap().len(), 1);
    assert_eq!(by_dir["groups"][0]["key"], "outbound");
    let (_, kolkata) = app
        .get_json("/api/v1/metrics?from=2026-11-23&to=2026-11-24&group_by=day&tz=Asia/Kolkata")
        .await;
    assert_eq!(kolkata["tz"], "Asia/Kolkata");
    assert_eq!(kolkata["groups"][0]["key"], "2026-11-23T00:00:00+05:30");
    assert_eq!(kolkata["totals"]["total_calls"], 6);
}

#[tokio::test]
async fn bad_metric_parameters_get_400_naming_the_field() {
    let app = spawn_app().await;
    for (q, field) in [
        ("tz=Mars/Olympus", "tz:"),
        ("group_by=week", "group_by:"),
        ("from=soon", "from:"),
        ("from=2026-11-23&to=2026-11-22", "to:"),
        ("x=1", "x:"),
    ] {
        let r = app
            .client
            .get(format!("{}/api/v1/metrics?{q}", app.base))
            .send()
            .await
            .unwrap();
        let (status, json) = error_body(r).await;
        assert_eq!(status, 400, "{q}");
        assert!(
            json["detail"].as_str().unwrap().starts_with(field),
            "{q}: {json}"
        );
    }
    let r = app
        .client
        .get(format!("{}/api/v1/summary?date=tomorrow", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(r).await.0, 400);
}

#[tokio::test]
async fn summary_of_the_sample_day_compares_with_a_week_earlier() {
    let app = app_with_samples().await;
    let (status, s) = app.get_json("/api/v1/summary?date=2026-11-23&tz=UTC").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["date"], "2026-11-23");
    let today = chrono::Utc::now().date_naive().to_string();
    if today != "2026-11-23" {
        assert_eq!(
            s["until"], "2026-11-24T00:00:00+00:00",
            "a past day is compared whole"
        );
    }
    assert_eq!(s["today"]["total_calls"], 6);
    assert_eq!(s["last_week"]["total_calls"], 0);
    assert_eq!(
        s["status"]["answer_rate"], "insufficient",
        "3 inbound calls are too few to judge"
    );
    assert_eq!(s["targets"]["answer_rate"]["min"], 0.95);
    assert_eq!(s["targets"]["error_rate"]["max"], 0.01);
}

/// Under live traffic CDRs are rewritten many times (a late event changes an outcome); the rollups
/// must still equal the tally of the final CDRs, for windows that cut buckets anywhere.
#[tokio::test]
async fn rollups_equal_a_direct_computation_after_live_rewrites() {
    let app = spawn_app().await;
    app.simulate(11).await;
    app.settle().await;
    let store = app.running.state.store.clone();
    let all = store
        .list_cdrs(&CdrQuery {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.len() > 40);
    let params = MetricParams::default();
    let first = all.first().unwrap().start_time.millis();
    let last = all.last().unwrap().start_time.millis();
    let tz: chrono_tz::Tz = "Asia/Kathmandu".parse().unwrap();
    for (i, (from, to)) in [
        (first - 1, last + 1),
        (first + 7_777, last - 3_333),
        (first + 60_001, first + 900_000),
    ]
    .into_iter()
    .enumerate()
    {
        let q = MetricsQuery {
            from: Timestamp(from),
            to: Timestamp(to),
            filter: MetricFilter::default(),
            group_by: Some(GroupBy::Hour),
            tz,
        };
        let answer = query(store.as_ref(), &q).await.unwrap();
        let direct = tally_cdrs(
            all.iter()
                .filter(|c| (from..to).contains(&c.start_time.millis())),
            &params,
        );
        assert_eq!(answer.totals, direct, "window {i}");
        let mut summed = callpulse_core::metrics::Tally::default();
        for (_, g) in &answer.groups {
            summed.add(g, 1);
        }
        assert_eq!(summed, direct, "groups of window {i} add up to the totals");
    }
    // Every slice, the full-combination path, and windows that reach past the latest call.
    let trunk = all.iter().find_map(|c| c.trunk_id.clone()).unwrap();
    let agent = all.iter().find_map(|c| c.agent_id.clone()).unwrap();
    let variants: Vec<(MetricFilter, Option<GroupBy>)> = vec![
        (MetricFilter::default(), Some(GroupBy::Agent)),
        (MetricFilter::default(), Some(GroupBy::Day)),
        (
            MetricFilter {
                trunk_id: Some(trunk.clone()),
                ..Default::default()
            },
            Some(GroupBy::Hour),
        ),
        (
            MetricFilter {
                trunk_id: Some(trunk.clone()),
                ..Default::default()
            },
            Some(GroupBy::Agent),
        ),
        (
            MetricFilter {
                agent_id: Some(agent.clone()),
                direction: Some(callpulse_core::Direction::Inbound),
                ..Default::default()
            },
            Some(GroupBy::Queue),
        ),
        (
            MetricFilter {
                direction: Some(callpulse_core::Direction::Outbound),
                ..Default::default()
            },
            Some(GroupBy::Trunk),
        ),
    ];
    let matches = |f: &MetricFilter, c: &callpulse_core::Cdr| {
        f.direction.is_none_or(|d| d == c.direction)
            && f.trunk_id
                .as_ref()
                .is_none_or(|t| c.trunk_id.as_ref() == Some(t))
            && f.agent_id
                .as_ref()
                .is_none_or(|a| c.agent_id.as_ref() == Some(a))
            && f.queue.as_ref().is_none_or(|q| c.queue.as_ref() == Some(q))
    };
    for (from, to) in [
        (first - 3_600_000, last + 86_400_000),
        (first + 1_234, last - 5_678),
    ] {
        for (filter, group_by) in &variants {
            let q = MetricsQuery {
                from: Timestamp(from),
                to: Timestamp(to),
                filter: filter.clone(),
                group_by: *group_by,
                tz,
            };
            let answer = query(store.as_ref(), &q).await.unwrap();
            let direct = tally_cdrs(
                all.iter()
                    .filter(|c| (from..to).contains(&c.start_time.millis()) && matches(filter, c)),
                &params,
            );
            assert_eq!(
                answer.totals, direct,
                "{filter:?} {group_by:?} [{from}, {to})"
            );
            let mut summed = callpulse_core::metrics::Tally::default();
            for (_, g) in &answer.groups {
                summed.add(g, 1);
            }
            assert_eq!(summed, direct, "groups add up: {filter:?} {group_by:?}");
        }
    }
    // And after a rebuild, the same.
    let rebuild_params = BuildParams {
        now: callpulse_server::pipeline::now(),
        ..Default::default()
    };
    callpulse_server::rebuild::rebuild(store.as_ref(), &rebuild_params, |_, _, _| {})
        .await
        .unwrap();
    let q = MetricsQuery {
        from: Timestamp(first),
        to: Timestamp(last + 1),
        filter: MetricFilter::default(),
        group_by: None,
        tz,
    };
    let after = query(store.as_ref(), &q).await.unwrap();
    assert_eq!(after.totals, tally_cdrs(all.iter(), &params));
}

#[tokio::test]
async fn trend_charts_are_svg_and_bad_names_are_refused() {
    let app = crate::helpers::spawn_app().await;
    app.simulate(41).await;
    app.settle().await;
    for (metric, range) in [("total_calls", "7d"), ("answer_rate", "30d")] {
        let r = app
            .client
            .get(format!(
                "{}/api/v1/charts/{metric}.svg?range={range}",
                app.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let svg = r.text().await.unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.200}");
        assert!(
            svg.contains("#4FA3FF"),
            "today's simulated calls draw a line on {metric}"
        );
    }
    let (status, body) = app.get_json("/api/v1/charts/happiness.svg").await;
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("happiness"));
    let (status, body) = app.get_json("/api/v1/charts/error_rate.svg?range=1y").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().starts_with("range:"));
}
