//! Reading stored rows into the store's types, once for both backends: each backend's row type
//! answers `StoreRow`, and the decoders here are written against it.

use super::rollup::{self, Slice};
use super::{
    AgentReport, Delivery, IndexedEvent, RawEvent, RollupRow, StoreError, StoredAlert, bucket_of,
    parse_direction, parse_source,
};
use callpulse_core::event::AgentState;
use callpulse_core::live::ReportedState;
use callpulse_core::{CallEvent, Outcome, Timestamp};
use sqlx::Row;

/// A row of either backend, read by column name.
pub(crate) trait StoreRow {
    fn int(&self, column: &str) -> i64;
    fn text(&self, column: &str) -> &str;
    fn opt_text(&self, column: &str) -> Option<String>;
    fn bytes(&self, column: &str) -> &[u8];
    fn opt_bytes(&self, column: &str) -> Option<&[u8]>;
}

/// Both backends' rows read the same way.
macro_rules! store_row {
    ($row:ty) => {
        impl StoreRow for $row {
            fn int(&self, column: &str) -> i64 {
                self.get(column)
            }
            fn text(&self, column: &str) -> &str {
                self.get(column)
            }
            fn opt_text(&self, column: &str) -> Option<String> {
                self.get(column)
            }
            fn bytes(&self, column: &str) -> &[u8] {
                self.get(column)
            }
            fn opt_bytes(&self, column: &str) -> Option<&[u8]> {
                self.get(column)
            }
        }
    };
}
store_row!(sqlx::sqlite::SqliteRow);
store_row!(sqlx::postgres::PgRow);

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn encode_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn tally(r: &impl StoreRow) -> Result<callpulse_core::metrics::Tally, StoreError> {
    rollup::decode_tally(r.bytes("tally"))
        .ok_or_else(|| StoreError::Corrupt("undecodable rollup tally".into()))
}

/// `call_id`, `room_sid`, `room_name`, `body`.
pub(crate) fn indexed_event(r: &impl StoreRow) -> Result<IndexedEvent, StoreError> {
    Ok(IndexedEvent {
        call_id: r.opt_text("call_id"),
        room_sid: r.opt_text("room_sid"),
        room_name: r.opt_text("room_name"),
        event: decode_json(r.text("body"))?,
    })
}

/// `seq`, `body`: a call event at its log position.
pub(crate) fn sequenced_event(r: &impl StoreRow) -> Result<(i64, CallEvent), StoreError> {
    Ok((r.int("seq"), decode_json(r.text("body"))?))
}

/// `agent_id`, `state`, `at_ms`.
pub(crate) fn agent_report(r: &impl StoreRow) -> Result<AgentReport, StoreError> {
    let state = r.text("state");
    Ok(AgentReport {
        agent_id: r.text("agent_id").to_owned(),
        reported: ReportedState {
            state: AgentState::parse(state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown agent state `{state}`")))?,
            at: Timestamp(r.int("at_ms")),
        },
    })
}

/// `rule`, `key`, `since_ms`, `notice`.
pub(crate) fn stored_alert(r: &impl StoreRow) -> Result<StoredAlert, StoreError> {
    Ok(StoredAlert {
        rule: r.text("rule").to_owned(),
        key: r.text("key").to_owned(),
        since: Timestamp(r.int("since_ms")),
        notice: decode_json(r.text("notice"))?,
    })
}

/// `id`, `notice_id`, `channel`, `attempts`, `body`.
pub(crate) fn delivery(r: &impl StoreRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.int("id"),
        notice_id: r.int("notice_id"),
        channel: r.text("channel").to_owned(),
        attempts: r.int("attempts"),
        notice: decode_json(r.text("body"))?,
    })
}

/// `body`, `pending`.
pub(crate) fn notice(r: &impl StoreRow) -> Result<(serde_json::Value, i64), StoreError> {
    Ok((decode_json(r.text("body"))?, r.int("pending")))
}

/// `seq`, `source`, `event_id`, `received_at_ms`, `body`.
pub(crate) fn raw_event(r: &impl StoreRow) -> Result<RawEvent, StoreError> {
    Ok(RawEvent {
        seq: r.int("seq"),
        source: parse_source(r.text("source"))?,
        event_id: r.text("event_id").to_owned(),
        received_at: Timestamp(r.int("received_at_ms")),
        body: r.bytes("body").to_vec(),
    })
}

/// A slice row: `bucket_ms`, `direction` (code), `value`, `tally`.
pub(crate) fn slice_row(slice: Slice, r: &impl StoreRow) -> Result<RollupRow, StoreError> {
    let direction = rollup::direction_from_code(r.int("direction"))
        .ok_or_else(|| StoreError::Corrupt("unknown direction code".into()))?;
    let value = r.text("value");
    Ok(slice.row(
        r.int("bucket_ms"),
        direction,
        (!value.is_empty()).then(|| value.to_owned()),
        tally(r)?,
    ))
}

/// A full-combination row: `bucket_ms`, `direction`, `trunk_id`, `agent_id`, `queue`, `tally`.
pub(crate) fn rollup_row(r: &impl StoreRow) -> Result<RollupRow, StoreError> {
    let dim = |c: &str| {
        let v = r.text(c);
        (!v.is_empty()).then(|| v.to_owned())
    };
    Ok(RollupRow {
        bucket: Timestamp(r.int("bucket_ms")),
        direction: parse_direction(r.text("direction"))?,
        trunk_id: dim("trunk_id"),
        agent_id: dim("agent_id"),
        queue: dim("queue"),
        tally: tally(r)?,
    })
}

/// What a stored CDR added to the rollups: its `start_ms`, `direction`, `trunk_id`, `agent_id` and
/// `queue` with the tally in `contribution_tally`; or, in a row written before that column, the
/// JSON `contribution`. `None` for a row with neither.
pub(crate) fn contribution(r: &impl StoreRow) -> Result<Option<RollupRow>, StoreError> {
    if let Some(bytes) = r.opt_bytes("contribution_tally") {
        let tally = rollup::decode_tally(bytes)
            .ok_or_else(|| StoreError::Corrupt("undecodable contribution tally".into()))?;
        return Ok(Some(RollupRow {
            bucket: bucket_of(Timestamp(r.int("start_ms"))),
            direction: parse_direction(r.text("direction"))?,
            trunk_id: r.opt_text("trunk_id"),
            agent_id: r.opt_text("agent_id"),
            queue: r.opt_text("queue"),
            tally,
        }));
    }
    r.opt_text("contribution")
        .map(|json| decode_json(&json))
        .transpose()
}

/// Rows of `trunk_id`, `outcome`, ordered by trunk: each trunk with its outcomes in row order.
pub(crate) fn outcomes_by_trunk<R: StoreRow>(
    rows: &[R],
) -> Result<Vec<(String, Vec<Outcome>)>, StoreError> {
    let mut out: Vec<(String, Vec<Outcome>)> = Vec::new();
    for r in rows {
        let trunk = r.text("trunk_id");
        let outcome = r.text("outcome");
        let outcome = Outcome::parse(outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown outcome `{outcome}`")))?;
        match out.last_mut() {
            Some((t, list)) if t == trunk => list.push(outcome),
            _ => out.push((trunk.to_owned(), vec![outcome])),
        }
    }
    Ok(out)
}
