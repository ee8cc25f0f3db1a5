//! `GET /api/v1/cdrs` (filters, cursor pagination, JSON / CSV / NDJSON export) and
//! `GET /api/v1/cdrs/{call_id}` with the call's event timeline.

use super::dto::{CSV_HEADER, CdrDto, rfc3339};
use super::{ApiError, AppState, ErrorBody};
use crate::privacy::NumberDisplay;
use crate::store::{CdrQuery, Store};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use callpulse_core::{Cdr, Direction, Outcome, Timestamp};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Csv,
    Ndjson,
}

fn parse_time(field: &str, raw: &str) -> Result<Timestamp, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| Timestamp(t.timestamp_millis()))
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("{field}: not an RFC 3339 time: {e}"),
            )
        })
}

fn encode_cursor(cdr: &Cdr) -> String {
    let raw = format!("{}:{}", cdr.start_time.millis(), cdr.call_id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(raw: &str) -> Result<(Timestamp, String), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_parameter",
            "cursor: not a cursor returned by this API",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (ms, call_id) = text.split_once(':').ok_or_else(invalid)?;
    Ok((
        Timestamp(ms.parse().map_err(|_| invalid())?),
        call_id.to_owned(),
    ))
}

/// Parses the query string, naming the parameter that is wrong.
fn parse_query(
    params: &HashMap<String, String>,
) -> Result<(CdrQuery, Format, Option<u32>), ApiError> {
    const KNOWN: &[&str] = &[
        "from",
        "to",
        "direction",
        "outcome",
        "trunk_id",
        "agent_id",
        "queue",
        "limit",
        "cursor",
        "format",
        "order",
    ];
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("{unknown}: unknown parameter (known: {})", KNOWN.join(", ")),
        ));
    }
    let bad = |field: &str, detail: &str| {
        ApiError::bad_request("invalid_parameter", format!("{field}: {detail}"))
    };
    let text = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let limit = match params.get("limit") {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => return Err(bad("limit", "must be an integer from 1 to 1000")),
        },
    };
    let query = CdrQuery {
        from: params
            .get("from")
            .map(|v| parse_time("from", v))
            .transpose()?,
        to: params.get("to").map(|v| parse_time("to", v)).transpose()?,
        direction: match params.get("direction").map(String::as_str) {
            None => None,
            Some("inbound") => Some(Direction::Inbound),
            Some("outbound") => Some(Direction::Outbound),
            Some(_) => return Err(bad("direction", "must be inbound or outbound")),
        },
        outcome: match params.get("outcome") {
            None => None,
            Some(v) => Some(Outcome::parse(v).ok_or_else(|| {
                bad(
                    "outcome",
                    "must be answered, no_answer, busy, failed, abandoned or in_progress",
                )
            })?),
        },
        trunk_id: text("trunk_id"),
        agent_id: text("agent_id"),
        queue: text("queue"),
        after: params.get("cursor").map(|c| decode_cursor(c)).transpose()?,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        newest_first: match params.get("order").map(String::as_str) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(bad("order", "must be asc or desc")),
        },
    };
    let format = match params.get("format").map(String::as_str) {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(_) => return Err(bad("format", "must be json, csv or ndjson")),
    };
    Ok((query, format, limit))
}

#[utoipa::path(get, path = "/api/v1/cdrs", tag = "cdrs",
    params(
        ("from" = Option<String>, Query, description = "Calls that started at or after this RFC 3339 time"),
        ("to" = Option<String>, Query, description = "Calls that started before this RFC 3339 time"),
        ("direction" = Option<String>, Query, description = "inbound or outbound"),
        ("outcome" = Option<String>, Query, description = "answered, no_answer, busy, failed, abandoned or in_progress"),
        ("trunk_id" = Option<String>, Query), ("agent_id" = Option<String>, Query), ("queue" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000 (JSON: default 100; exports: all)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("format" = Option<String>, Query, description = "json (default), csv or ndjson"),
        ("order" = Option<String>, Query, description = "asc (default) or desc by start time"),
    ),
    responses((status = 200, description = "`{\"cdrs\": [CDR], \"next_cursor\"}`, or the CSV / NDJSON export", body = Object), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn list_cdrs(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (query, format, limit) = parse_query(&params)?;
    if format != Format::Json {
        return Ok(export(
            state.store.clone(),
            query,
            format,
            limit,
            state.numbers,
        ));
    }
    let cdrs = state.store.list_cdrs(&query).await?;
    let next_cursor = (cdrs.len() == query.limit as usize)
        .then(|| cdrs.last().map(encode_cursor))
        .flatten();
    let dtos: Vec<CdrDto> = cdrs
        .iter()
        .map(|c| CdrDto::from(state.numbers.cdr(c).as_ref()))
        .collect();
    Ok(Json(json!({"cdrs": dtos, "next_cursor": next_cursor})).into_response())
}

fn render(format: Format, cdrs: &[Cdr], with_header: bool, numbers: NumberDisplay) -> Bytes {
    match format {
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            if with_header {
                let _ = writer.write_record(CSV_HEADER);
            }
            for cdr in cdrs {
                let _ = writer.write_record(CdrDto::from(numbers.cdr(cdr).as_ref()).csv_record());
            }
            Bytes::from(writer.into_inner().unwrap_or_default())
        }
        _ => {
            let mut out = Vec::new();
            for cdr in cdrs {
                let _ = serde_json::to_writer(&mut out, &CdrDto::from(numbers.cdr(cdr).as_ref()));
                out.push(b'\n');
            }
            Bytes::from(out)
        }
    }
}

/// Streams every matching CDR (or `limit` of them) page by page, without holding them all.
fn export(
    store: Arc<dyn Store>,
    query: CdrQuery,
    format: Format,
    limit: Option<u32>,
    numbers: NumberDisplay,
) -> Response {
    let remaining = limit.map_or(u64::MAX, u64::from);
    let state = (store, query, remaining, true);
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let (store, mut query, remaining, first) = state?;
        query.limit = MAX_LIMIT.min(remaining.min(u64::from(MAX_LIMIT)) as u32);
        match store.list_cdrs(&query).await {
            Err(e) => {
                tracing::error!(error = %e, "cdr export failed");
                Some((Err(std::io::Error::other("export failed")), None))
            }
            Ok(page) if page.is_empty() && !first => None,
            Ok(page) => {
                let chunk = render(format, &page, first, numbers);
                let left = remaining - page.len() as u64;
                let next = (page.len() == query.limit as usize && left > 0).then(|| {
                    let last = page.last().expect("a full page has a last row");
                    query.after = Some((last.start_time, last.call_id.clone()));
                    (store, query, left, false)
                });
                Some((Ok::<_, std::io::Error>(chunk), next))
            }
        }
    });
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/x-ndjson",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/cdrs/{call_id}", tag = "cdrs",
    params(("call_id" = String, Path, description = "The SIP call id (`sip.callID`)")),
    responses((status = 200, description = "`{\"cdr\": CDR, \"events\": [...]}`: the CDR and its event timeline", body = Object),
        (status = 404, description = "No such call", body = ErrorBody), (status = 400, description = "A parameter is wrong; `detail` names it", body = ErrorBody), (status = 401, description = "An API token is needed", body = ErrorBody), (status = 503, description = "The store is unavailable; retry", body = ErrorBody)))]
pub async fn get_cdr(
    State(state): State<AppState>,
    Path(call_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cdr = state
        .store
        .get_cdr(&call_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("call_id: no call `{call_id}`")))?;
    let timeline = state.store.call_timeline(&call_id).await?;
    let events: Vec<Value> = timeline
        .iter()
        .map(|entry| {
            let mut detail = serde_json::to_value(&entry.event.body).unwrap_or(Value::Null);
            state.numbers.json(&mut detail);
            if let Some(map) = detail.as_object_mut() {
                map.remove("type");
            }
            json!({
                "id": entry.event.key,
                "source": match entry.event.source { callpulse_core::Source::Livekit => "livekit", callpulse_core::Source::App => "app" },
                "type": entry.event.body.type_name(),
                "at": rfc3339(entry.event.at),
                "received_at": rfc3339(entry.received_at),
                "unknown_enum_values": entry.event.unknown_enum_values,
                "detail": detail,
            })
        })
        .collect();
    Ok(Json(
        json!({"cdr": CdrDto::from(state.numbers.cdr(&cdr).as_ref()), "events": events}),
    ))
}
