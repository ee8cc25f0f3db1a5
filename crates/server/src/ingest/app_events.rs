//! Application events (`POST /api/v1/events`): what no webhook shows, reported by the application
//! (METRICS.md §1, §9). Parsed field by field so a refusal names the event index and the field.

use callpulse_core::event::{
    AgentState, CallEvent, EventBody, QueueLeftReason, Scope, Source, Timestamp, TransferType,
};
use serde_json::{Map, Value};

/// A refused event: which one, which field, what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("events[{index}].{field}: {problem}")]
pub struct AppEventError {
    pub index: usize,
    pub field: &'static str,
    pub problem: String,
}

/// A valid application event.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    Call(Box<CallEvent>),
    AgentState {
        id: String,
        at: Timestamp,
        agent_id: String,
        state: AgentState,
    },
}

impl AppEvent {
    pub fn id(&self) -> &str {
        match self {
            AppEvent::Call(e) => &e.key,
            AppEvent::AgentState { id, .. } => id,
        }
    }
}

/// Most events a batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// Parses a batch: a JSON array of events (a single object is taken as a batch of one).
/// The whole batch is refused at the first invalid event.
pub fn parse_batch(value: &Value) -> Result<Vec<(AppEvent, Value)>, AppEventError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![value],
        _ => return Err(err(0, "", "the body must be a JSON array of events")),
    };
    if items.len() > MAX_BATCH {
        return Err(err(MAX_BATCH, "", "too many events in one batch"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, v)| parse_one(index, v).map(|e| (e, v.clone())))
        .collect()
}

fn err(index: usize, field: &'static str, problem: impl Into<String>) -> AppEventError {
    AppEventError {
        index,
        field,
        problem: problem.into(),
    }
}

struct Fields<'a> {
    index: usize,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn opt_str(&self, field: &'static str) -> Result<Option<&'a str>, AppEventError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(err(self.index, field, "must not be empty"))
            }
            Some(Value::String(s)) if s.len() > 1024 => {
                Err(err(self.index, field, "longer than 1024 characters"))
            }
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(err(self.index, field, "must be a string")),
        }
    }
    fn str(&self, field: &'static str) -> Result<&'a str, AppEventError> {
        self.opt_str(field)?
            .ok_or_else(|| err(self.index, field, "required"))
    }
    fn one_of<T: Copy>(
        &self,
        field: &'static str,
        options: &[(&str, T)],
    ) -> Result<T, AppEventError> {
        let value = self.str(field)?;
        options
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                err(
                    self.index,
                    field,
                    format!("`{value}` is not one of {}", names.join(", ")),
                )
            })
    }
    fn number(&self, field: &'static str) -> Result<f64, AppEventError> {
        match self.map.get(field) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| err(self.index, field, "must be a number")),
            None | Some(Value::Null) => Err(err(self.index, field, "required")),
            Some(_) => Err(err(self.index, field, "must be a number")),
        }
    }
    fn time(&self) -> Result<Timestamp, AppEventError> {
        let raw = self.str("at")?;
        chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|e| err(self.index, "at", format!("not an RFC 3339 time: {e}")))
    }
    fn scope(&self) -> Result<Scope, AppEventError> {
        match (self.opt_str("call_id")?, self.opt_str("room_name")?) {
            (Some(call_id), _) => Ok(Scope::Call {
                call_id: call_id.to_owned(),
            }),
            (None, Some(room)) => Ok(Scope::Room {
                sid: None,
                name: Some(room.to_owned()),
            }),
            (None, None) => Err(err(self.index, "call_id", "required (or room_name)")),
        }
    }
}

const QUEUE_LEFT_REASONS: &[(&str, QueueLeftReason)] = &[
    ("answered", QueueLeftReason::Answered),
    ("abandoned", QueueLeftReason::Abandoned),
    ("transferred", QueueLeftReason::Transferred),
    ("timeout", QueueLeftReason::Timeout),
];
const AGENT_STATES: &[(&str, AgentState)] = &[
    ("available", AgentState::Available),
    ("busy", AgentState::Busy),
    ("away", AgentState::Away),
    ("offline", AgentState::Offline),
];
const TRANSFER_TYPES: &[(&str, TransferType)] =
    &[("cold", TransferType::Cold), ("warm", TransferType::Warm)];

fn parse_one(index: usize, value: &Value) -> Result<AppEvent, AppEventError> {
    let map = value
        .as_object()
        .ok_or_else(|| err(index, "", "an event must be a JSON object"))?;
    let f = Fields { index, map };
    let id = f.str("id")?.to_owned();
    let kind = f.str("type")?;
    let at = f.time()?;
    if kind == "agent_state" {
        return Ok(AppEvent::AgentState {
            id,
            at,
            agent_id: f.str("agent_id")?.to_owned(),
            state: f.one_of("state", AGENT_STATES)?,
        });
    }
    let scope = f.scope()?;
    let body = match kind {
        "call_answered" => EventBody::CallAnswered,
        "queue_entered" => EventBody::QueueEntered {
            queue: f.str("queue")?.to_owned(),
        },
        "queue_left" => EventBody::QueueLeft {
            queue: f.str("queue")?.to_owned(),
            reason: f.one_of("reason", QUEUE_LEFT_REASONS)?,
        },
        "agent_assigned" => EventBody::AgentAssigned {
            agent_id: f.str("agent_id")?.to_owned(),
        },
        "transfer" => EventBody::Transfer {
            transfer_type: f.one_of("transfer_type", TRANSFER_TYPES)?,
            target: f.str("target")?.to_owned(),
        },
        "sip_error" => {
            let code = f.number("sip_status_code")?;
            if code.fract() != 0.0 || !(100.0..=699.0).contains(&code) {
                return Err(err(
                    index,
                    "sip_status_code",
                    "must be an integer from 100 to 699",
                ));
            }
            EventBody::SipError {
                sip_status_code: code as u16,
                reason: f.opt_str("reason")?.map(str::to_owned),
            }
        }
        "wrap_up" => {
            let seconds = f.number("seconds")?;
            if !(0.0..=86_400.0).contains(&seconds) {
                return Err(err(index, "seconds", "must be between 0 and 86400"));
            }
            EventBody::WrapUp {
                seconds,
                agent_id: f.opt_str("agent_id")?.map(str::to_owned),
            }
        }
        "call_metadata" => match map.get("metadata") {
            Some(Value::Object(m)) => EventBody::CallMetadata {
                metadata: m.clone(),
            },
            None | Some(Value::Null) => return Err(err(index, "metadata", "required")),
            Some(_) => return Err(err(index, "metadata", "must be a JSON object")),
        },
        other => {
            return Err(err(
                index,
                "type",
                format!(
                    "unknown event type `{other}` (call_answered, queue_entered, queue_left, \
                     agent_assigned, agent_state, transfer, sip_error, wrap_up, call_metadata)"
                ),
            ));
        }
    };
    Ok(AppEvent::Call(Box::new(CallEvent {
        key: id,
        source: Source::App,
        at,
        scope,
        body,
        unknown_enum_values: vec![],
    })))
}
