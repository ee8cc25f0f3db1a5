//! `GET /api/v1/cdrs` and `GET /api/v1/cdrs/{call_id}`.

use crate::helpers::*;
use serde_json::Value;

fn call_ids(body: &Value) -> Vec<String> {
    body["cdrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_in_start_order_with_cursor_pagination() {
    let app = app_with_samples().await;
    let (status, all) = app.get_json("/api/v1/cdrs").await;
    assert_eq!(status, 200);
    let all_ids = call_ids(&all);
    assert_eq!(all_ids.len(), 6);
    assert_eq!(all["next_cursor"], Value::Null);
    let mut paged = Vec::new();
    let mut path = "/api/v1/cdrs?limit=4".to_string();
    loop {
        let (_, page) = app.get_json(&path).await;
        paged.extend(call_ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/cdrs?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all_ids);
    let starts: Vec<&str> = all["cdrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["start_time"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
}

#[tokio::test]
async fn filters_narrow_the_list() {
    let app = app_with_samples().await;
    let (_, outbound) = app.get_json("/api/v1/cdrs?direction=outbound").await;
    assert_eq!(call_ids(&outbound).len(), 3);
    let (_, busy) = app.get_json("/api/v1/cdrs?outcome=busy").await;
    assert_eq!(call_ids(&busy), vec!["SCL_8piqEvbFWiyq"]);
    let (_, trunk) = app.get_json("/api/v1/cdrs?trunk_id=ST_9zhErcwtRhiC").await;
    assert_eq!(call_ids(&trunk), vec!["SCL_N8wSHegi6wgk"]);
    let (_, agent) = app
        .get_json("/api/v1/cdrs?agent_id=inbound-receptionist")
        .await;
    assert_eq!(call_ids(&agent), vec!["SCL_9piNuUTbRzfj"]);
    let (_, window) = app
        .get_json("/api/v1/cdrs?from=2026-11-23T14:20:00Z&to=2026-11-23T15:06:00Z")
        .await;
    assert_eq!(
        call_ids(&window),
        vec!["SCL_sUdeADeKCykW", "SCL_8piqEvbFWiyq", "SCL_cPcexQZkLqZi"]
    );
}

#[tokio::test]
async fn bad_parameters_get_400_naming_the_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("from=yesterday", "from:"),
        ("direction=sideways", "direction:"),
        ("outcome=maybe", "outcome:"),
        ("limit=0", "limit:"),
        ("limit=5000", "limit:"),
        ("cursor=%%%", "cursor:"),
        ("format=xml", "format:"),
        ("color=red", "color:"),
    ] {
        let r = app
            .client
            .get(format!("{}/api/v1/cdrs?{query}", app.base))
            .send()
            .await
            .unwrap();
        let (status, json) = error_body(r).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            json["detail"].as_str().unwrap().starts_with(field),
            "{query}: {json}"
        );
    }
}

#[tokio::test]
async fn csv_and_ndjson_exports_hold_every_row() {
    let app = app_with_samples().await;
    let csv = app
        .client
        .get(format!("{}/api/v1/cdrs?format=csv", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap().get(0), Some("call_id"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 6);
    let nd = app
        .client
        .get(format!(
            "{}/api/v1/cdrs?format=ndjson&direction=outbound",
            app.base
        ))
        .send()
        .await
        .unwrap();
    let lines: Vec<Value> = nd
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|c| c["direction"] == "outbound"));
}

#[tokio::test]
async fn unknown_call_gets_404_json() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/api/v1/cdrs/SCL_nope", app.base))
        .send()
        .await
        .unwrap();
    let (status, json) = error_body(r).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"], "not_found");
}

#[tokio::test]
async fn timeline_lists_the_calls_events_in_time_order() {
    let app = app_with_samples().await;
    let (_, body) = app.get_json("/api/v1/cdrs/SCL_9piNuUTbRzfj").await;
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "room_started",
            "participant_joined",
            "participant_joined",
            "track_published",
            "participant_left",
            "room_finished",
            "egress_ended"
        ]
    );
}

#[tokio::test]
async fn newest_first_pages_are_the_ascending_listing_reversed() {
    let app = app_with_samples().await;
    let ids = call_ids;
    let (_, ascending) = app.get_json("/api/v1/cdrs").await;
    let mut expected = ids(&ascending);
    expected.reverse();
    assert!(expected.len() >= 4, "{ascending}");
    let mut seen = Vec::new();
    let mut path = "/api/v1/cdrs?order=desc&limit=3".to_string();
    loop {
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/cdrs?order=desc&limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let (status, body) = app.get_json("/api/v1/cdrs?order=sideways").await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().starts_with("order:"));
}
