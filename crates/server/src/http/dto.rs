//! JSON shapes of the API (METRICS.md §2, §8): core types are converted here, never serialised
//! directly, so the API stays stable while the core changes.

use callpulse_core::{Cdr, Timestamp};
use serde::Serialize;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.millis())
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A call detail record (METRICS.md §2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CdrDto {
    pub call_id: String,
    pub direction: &'static str,
    pub caller_number: Option<String>,
    pub callee_number: Option<String>,
    pub trunk_id: Option<String>,
    pub room_name: Option<String>,
    pub start_time: String,
    pub answer_time: Option<String>,
    pub end_time: Option<String>,
    pub duration_seconds: Option<f64>,
    pub ring_duration_seconds: Option<f64>,
    pub queue_wait_seconds: Option<f64>,
    pub outcome: &'static str,
    pub transfer_type: Option<&'static str>,
    pub transfer_target: Option<String>,
    pub recording_url: Option<String>,
    pub sip_error_code: Option<u16>,
    pub agent_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub queue: Option<String>,
    pub disconnect_reason: Option<String>,
    pub ended_by: Option<&'static str>,
    pub answer_source: &'static str,
    pub anomalies: Vec<&'static str>,
    pub short_abandon: bool,
    pub wrap_up_seconds: f64,
}

impl From<&Cdr> for CdrDto {
    fn from(c: &Cdr) -> Self {
        CdrDto {
            call_id: c.call_id.clone(),
            direction: c.direction.as_str(),
            caller_number: c.caller_number.clone(),
            callee_number: c.callee_number.clone(),
            trunk_id: c.trunk_id.clone(),
            room_name: c.room_name.clone(),
            start_time: rfc3339(c.start_time),
            answer_time: c.answer_time.map(rfc3339),
            end_time: c.end_time.map(rfc3339),
            duration_seconds: c.duration_seconds,
            ring_duration_seconds: c.ring_duration_seconds,
            queue_wait_seconds: c.queue_wait_seconds,
            outcome: c.outcome.as_str(),
            transfer_type: c.transfer_type.map(|t| t.as_str()),
            transfer_target: c.transfer_target.clone(),
            recording_url: c.recording_url.clone(),
            sip_error_code: c.sip_error_code,
            agent_id: c.agent_id.clone(),
            metadata: c.metadata.clone(),
            queue: c.queue.clone(),
            disconnect_reason: c.disconnect_reason.clone(),
            ended_by: c.ended_by.map(|e| e.as_str()),
            answer_source: c.answer_source.as_str(),
            anomalies: c.anomalies.iter().map(|a| a.as_str()).collect(),
            short_abandon: c.short_abandon,
            wrap_up_seconds: c.wrap_up_seconds,
        }
    }
}

/// CSV column order: the CDR fields, nested values as JSON text and lists joined by `;`.
pub const CSV_HEADER: &[&str] = &[
    "call_id",
    "direction",
    "caller_number",
    "callee_number",
    "trunk_id",
    "room_name",
    "start_time",
    "answer_time",
    "end_time",
    "duration_seconds",
    "ring_duration_seconds",
    "queue_wait_seconds",
    "outcome",
    "transfer_type",
    "transfer_target",
    "recording_url",
    "sip_error_code",
    "agent_id",
    "metadata",
    "queue",
    "disconnect_reason",
    "ended_by",
    "answer_source",
    "anomalies",
    "short_abandon",
    "wrap_up_seconds",
];

impl CdrDto {
    pub fn csv_record(&self) -> Vec<String> {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let n = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        vec![
            self.call_id.clone(),
            self.direction.into(),
            s(&self.caller_number),
            s(&self.callee_number),
            s(&self.trunk_id),
            s(&self.room_name),
            self.start_time.clone(),
            s(&self.answer_time),
            s(&self.end_time),
            n(self.duration_seconds),
            n(self.ring_duration_seconds),
            n(self.queue_wait_seconds),
            self.outcome.into(),
            self.transfer_type.unwrap_or_default().into(),
            s(&self.transfer_target),
            s(&self.recording_url),
            self.sip_error_code
                .map(|c| c.to_string())
                .unwrap_or_default(),
            s(&self.agent_id),
            self.metadata
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string())
                .unwrap_or_default(),
            s(&self.queue),
            s(&self.disconnect_reason),
            self.ended_by.unwrap_or_default().into(),
            self.answer_source.into(),
            self.anomalies.join(";"),
            self.short_abandon.to_string(),
            self.wrap_up_seconds.to_string(),
        ]
    }
}

/// METRICS of METRICS.md §8: counts as integers, ratios and seconds as numbers or null.
pub fn metrics_json(m: &callpulse_core::metrics::Metrics) -> serde_json::Value {
    serde_json::json!({
        "total_calls": m.total_calls,
        "inbound_calls": m.inbound_calls,
        "outbound_calls": m.outbound_calls,
        "answered_calls": m.answered_calls,
        "abandoned_calls": m.abandoned_calls,
        "short_abandoned_calls": m.short_abandoned_calls,
        "failed_calls": m.failed_calls,
        "busy_calls": m.busy_calls,
        "no_answer_calls": m.no_answer_calls,
        "transferred_calls": m.transferred_calls,
        "in_progress_calls": m.in_progress_calls,
        "answer_rate": m.answer_rate,
        "avg_handle_time_seconds": m.avg_handle_time_seconds,
        "abandonment_rate": m.abandonment_rate,
        "avg_speed_of_answer_seconds": m.avg_speed_of_answer_seconds,
        "service_level": m.service_level,
        "transfer_rate": m.transfer_rate,
        "error_rate": m.error_rate,
        "connect_rate": m.connect_rate,
        "p50_speed_of_answer_seconds": m.p50_speed_of_answer_seconds,
        "p90_speed_of_answer_seconds": m.p90_speed_of_answer_seconds,
        "p99_speed_of_answer_seconds": m.p99_speed_of_answer_seconds,
        "p50_handle_time_seconds": m.p50_handle_time_seconds,
        "p90_handle_time_seconds": m.p90_handle_time_seconds,
        "p99_handle_time_seconds": m.p99_handle_time_seconds,
    })
}

/// A time in the given zone, RFC 3339 with the zone's offset.
pub fn rfc3339_in(t: Timestamp, tz: chrono_tz::Tz) -> String {
    use chrono::TimeZone;
    tz.timestamp_millis_opt(t.millis())
        .single()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
        .unwrap_or_default()
}

/// A call in progress on the live panel.
fn live_call_json(c: &callpulse_core::live::LiveCall) -> serde_json::Value {
    serde_json::json!({
        "call_id": c.call_id,
        "direction": c.direction.as_str(),
        "phase": c.phase.as_str(),
        "caller_number": c.caller_number,
        "callee_number": c.callee_number,
        "trunk_id": c.trunk_id,
        "room_name": c.room_name,
        "queue": c.queue,
        "agent_id": c.agent_id,
        "start_time": rfc3339(c.start_time),
        "answer_time": c.answer_time.map(rfc3339),
    })
}

fn agent_json(
    agent_id: &str,
    state: callpulse_core::event::AgentState,
    reported_at: Option<Timestamp>,
) -> serde_json::Value {
    serde_json::json!({
        "agent_id": agent_id,
        "state": state.as_str(),
        "reported_at": reported_at.map(rfc3339),
    })
}

fn live_summary_json(
    board: &callpulse_core::live::LiveBoard,
    alerts: &[serde_json::Value],
    now: Timestamp,
) -> serde_json::Value {
    let s = board.summary(now);
    serde_json::json!({
        "active_calls": s.active_calls,
        "ringing_calls": s.ringing_calls,
        "callers_in_queue": s.callers_in_queue,
        "longest_wait_seconds": s.longest_wait_seconds,
        "agents": {
            "available": s.agents_available,
            "busy": s.agents_busy,
            "away": s.agents_away,
            "offline": s.agents_offline,
        },
        "active_alerts": alerts.len(),
    })
}

fn recent_json(board: &callpulse_core::live::LiveBoard) -> serde_json::Value {
    serde_json::json!(board.recent().iter().map(CdrDto::from).collect::<Vec<_>>())
}

/// The live snapshot (`GET /api/v1/live`, and the first WebSocket message).
pub fn live_snapshot_value(
    board: &callpulse_core::live::LiveBoard,
    alerts: &[serde_json::Value],
    seq: u64,
    now: Timestamp,
) -> serde_json::Value {
    serde_json::json!({
        "type": "snapshot",
        "seq": seq,
        "at": rfc3339(now),
        "summary": live_summary_json(board, alerts, now),
        "calls": board.calls().into_iter().map(live_call_json).collect::<Vec<_>>(),
        "agents": board
            .agents()
            .into_iter()
            .map(|(a, s, at)| agent_json(&a, s, at))
            .collect::<Vec<_>>(),
        "recent_calls": recent_json(board),
        "alerts": alerts,
    })
}

pub fn live_snapshot(
    board: &callpulse_core::live::LiveBoard,
    alerts: &[serde_json::Value],
    seq: u64,
    now: Timestamp,
) -> String {
    live_snapshot_value(board, alerts, seq, now).to_string()
}

/// A delta: the summary now, the calls changed or ended, the agents changed, and the recent
/// finished calls and the active alerts whole when they changed.
pub fn live_delta(
    board: &callpulse_core::live::LiveBoard,
    alerts: &[serde_json::Value],
    seq: u64,
    changes: &[callpulse_core::live::BoardChange],
    alerts_changed: bool,
    now: Timestamp,
) -> String {
    let mut calls = std::collections::BTreeMap::new();
    let mut ended = std::collections::BTreeSet::new();
    let mut agents = std::collections::BTreeSet::new();
    for change in changes {
        if let Some(call) = &change.call {
            ended.remove(&call.call_id);
            calls.insert(call.call_id.clone(), call);
        }
        if let Some(id) = &change.ended {
            calls.remove(id);
            ended.insert(id.clone());
        }
        agents.extend(change.agents.iter().cloned());
    }
    let mut delta = serde_json::json!({
        "type": "delta",
        "seq": seq,
        "at": rfc3339(now),
        "summary": live_summary_json(board, alerts, now),
        "calls": calls.values().map(|c| live_call_json(c)).collect::<Vec<_>>(),
        "ended": ended,
        "agents": board
            .agents()
            .into_iter()
            .filter(|(a, _, _)| agents.contains(a))
            .map(|(a, s, at)| agent_json(&a, s, at))
            .collect::<Vec<_>>(),
    });
    if changes.iter().any(|c| c.recent) {
        delta["recent_calls"] = recent_json(board);
    }
    if alerts_changed {
        delta["alerts"] = serde_json::json!(alerts);
    }
    delta.to_string()
}
