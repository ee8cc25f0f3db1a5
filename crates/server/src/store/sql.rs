//! SQL both backends speak alike, built once: the CDR listing, the rollup reads, and lists of
//! rollup keys. Each backend runs what these build; only placeholders and a few functions
//! differ between them, and `QueryBuilder` writes the placeholders.

use super::rollup::{
    KeyPart, Level, RollupKey, Slice, accumulate, direction_code, encode_tally, key_parts,
};
use super::rows::encode_json;
use super::{Buckets, CdrQuery, MetricFilter, RollupRow, SliceFilter, StoreError};
use callpulse_core::metrics::{MetricParams, Tally};
use callpulse_core::{Cdr, Timestamp};
use sqlx::{Database, Encode, QueryBuilder, Type};
use std::collections::HashMap;

/// `select` (ending in `FROM cdrs`) with the listing's filters, order and limit. `collate` follows
/// `call_id` in the order (PostgreSQL sorts text as SQLite does with `COLLATE "C"`).
pub(crate) fn cdr_listing<'q, DB>(select: &str, collate: &str, q: &CdrQuery) -> QueryBuilder<'q, DB>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(format!("{select} WHERE 1 = 1"));
    if let Some(from) = q.from {
        sql.push(" AND start_ms >= ").push_bind(from.millis());
    }
    if let Some(to) = q.to {
        sql.push(" AND start_ms < ").push_bind(to.millis());
    }
    if let Some(d) = q.direction {
        sql.push(" AND direction = ")
            .push_bind(d.as_str().to_owned());
    }
    if let Some(o) = q.outcome {
        sql.push(" AND outcome = ").push_bind(o.as_str().to_owned());
    }
    push_dimension_filters(&mut sql, &q.trunk_id, &q.agent_id, &q.queue);
    let (beyond, order) = if q.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((start, call_id)) = &q.after {
        sql.push(format_args!(" AND (start_ms, call_id) {beyond} ("))
            .push_bind(start.millis())
            .push(", ")
            .push_bind(call_id.clone())
            .push(")");
    }
    sql.push(format_args!(
        " ORDER BY start_ms {order}, call_id{collate} {order} LIMIT "
    ))
    .push_bind(i64::from(q.limit));
    sql
}

fn push_dimension_filters<'q, DB>(
    sql: &mut QueryBuilder<'q, DB>,
    trunk_id: &Option<String>,
    agent_id: &Option<String>,
    queue: &Option<String>,
) where
    DB: Database,
    String: Encode<'q, DB> + Type<DB>,
{
    for (column, value) in [
        ("trunk_id", trunk_id),
        ("agent_id", agent_id),
        ("queue", queue),
    ] {
        if let Some(v) = value {
            sql.push(format_args!(" AND {column} = "))
                .push_bind(v.clone());
        }
    }
}

/// The full-combination rollup rows of `[from, to)` matching `filter`.
pub(crate) fn rollup_rows<'q, DB>(from: i64, to: i64, filter: &MetricFilter) -> QueryBuilder<'q, DB>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(
        "SELECT bucket_ms, direction, trunk_id, agent_id, queue, tally FROM rollups WHERE bucket_ms >= ",
    );
    sql.push_bind(from).push(" AND bucket_ms < ").push_bind(to);
    push_metric_filter(&mut sql, filter);
    sql
}

fn push_metric_filter<'q, DB>(sql: &mut QueryBuilder<'q, DB>, filter: &MetricFilter)
where
    DB: Database,
    String: Encode<'q, DB> + Type<DB>,
{
    if let Some(d) = filter.direction {
        sql.push(" AND direction = ")
            .push_bind(d.as_str().to_owned());
    }
    push_dimension_filters(sql, &filter.trunk_id, &filter.agent_id, &filter.queue);
}

/// Which rows a contribution read takes, by how their contribution is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoredAs {
    /// The binary tally (SQLite's `cdrs_by_start` covers this read).
    Binary,
    /// The JSON of rows written before the binary column.
    Json,
    /// Both, in one read.
    Either,
}

/// What each CDR starting in `[from, to)` and matching `filter` added to the rollups, for the
/// rows `stored` names (read by `rows::contribution`).
pub(crate) fn contributions<'q, DB>(
    from: i64,
    to: i64,
    filter: &MetricFilter,
    stored: StoredAs,
) -> QueryBuilder<'q, DB>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    let (columns, which) = match stored {
        StoredAs::Binary => (CONTRIBUTION_TALLY_COLUMNS, "contribution_tally IS NOT NULL"),
        StoredAs::Json => (
            CONTRIBUTION_COLUMNS,
            "contribution_tally IS NULL AND contribution IS NOT NULL",
        ),
        StoredAs::Either => (
            CONTRIBUTION_COLUMNS,
            "(contribution_tally IS NOT NULL OR contribution IS NOT NULL)",
        ),
    };
    let mut sql = QueryBuilder::new(format!(
        "SELECT {columns} FROM cdrs WHERE {which} AND start_ms >= "
    ));
    sql.push_bind(from).push(" AND start_ms < ").push_bind(to);
    push_metric_filter(&mut sql, filter);
    sql
}

/// The columns `rows::contribution` reads.
pub(crate) const CONTRIBUTION_COLUMNS: &str =
    "start_ms, direction, trunk_id, agent_id, queue, contribution_tally, contribution";
/// The same without the JSON, for rows known to have the binary tally.
const CONTRIBUTION_TALLY_COLUMNS: &str =
    "start_ms, direction, trunk_id, agent_id, queue, contribution_tally, NULL AS contribution";

/// The rows of one slice and level in `buckets` matching `filter`; `None` when no bucket is asked.
pub(crate) fn slice_rows<'q, DB>(
    slice: Slice,
    level: Level,
    buckets: &Buckets,
    filter: SliceFilter<'_>,
) -> Option<QueryBuilder<'q, DB>>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(
        "SELECT bucket_ms, direction, value, tally FROM rollup_slices WHERE slice = ",
    );
    sql.push_bind(slice as i64)
        .push(" AND level = ")
        .push_bind(level as i64);
    match buckets {
        Buckets::Range(from, to) => {
            sql.push(" AND bucket_ms >= ")
                .push_bind(from.millis())
                .push(" AND bucket_ms < ")
                .push_bind(to.millis());
        }
        Buckets::List(starts) if starts.is_empty() => return None,
        Buckets::List(starts) => {
            sql.push(" AND bucket_ms IN (");
            let mut list = sql.separated(", ");
            for start in starts {
                list.push_bind(*start);
            }
            sql.push(")");
        }
    }
    if let Some(d) = filter.direction {
        sql.push(" AND direction = ").push_bind(direction_code(d));
    }
    if let Some(v) = filter.value {
        sql.push(" AND value = ").push_bind(v.to_owned());
    }
    Some(sql)
}

/// Appends `(VALUES (k1...), (k2...))`: a list of rollup keys to match `(columns) IN`.
pub(crate) fn push_key_list<'q, DB>(sql: &mut QueryBuilder<'q, DB>, keys: &[&'q RollupKey])
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
{
    sql.push("(VALUES ");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(");
        push_key(&mut sql.separated(", "), key);
        sql.push(")");
    }
    sql.push(")");
}

/// Binds a rollup key's columns.
pub(crate) fn push_key<'q, 'b, DB>(
    tuple: &mut sqlx::query_builder::Separated<'b, 'q, DB, &'static str>,
    key: &'q RollupKey,
) where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
{
    for part in key_parts(key) {
        match part {
            KeyPart::Int(v) => tuple.push_bind(v),
            KeyPart::Text(v) => tuple.push_bind(v),
        };
    }
}

/// A CDR as it is written: the CDR, its JSON body, and its contribution's binary tally.
pub type CdrRow<'a> = (&'a Cdr, String, Vec<u8>);

/// The rows to write for `cdrs`, their contributions added to `deltas`.
pub(crate) fn cdr_rows<'a>(
    cdrs: &[&'a Cdr],
    params: &MetricParams,
    deltas: &mut HashMap<RollupKey, Tally>,
) -> Result<Vec<CdrRow<'a>>, StoreError> {
    let mut rows = Vec::with_capacity(cdrs.len());
    for cdr in cdrs {
        let contribution = RollupRow::of(cdr, params);
        accumulate(deltas, &contribution, 1);
        rows.push((*cdr, encode_json(*cdr)?, encode_tally(&contribution.tally)));
    }
    Ok(rows)
}

/// The stored columns of a CDR, in the order `cdr_upsert` binds them.
const CDR_COLUMNS: [&str; 18] = [
    "call_id",
    "start_ms",
    "end_ms",
    "last_event_ms",
    "direction",
    "outcome",
    "trunk_id",
    "agent_id",
    "queue",
    "room_sid",
    "room_name",
    "body",
    "updated_at_ms",
    "contribution_tally",
    "answer_ms",
    "wrap_up_ms",
    "short_abandon",
    "transfer_type",
];

/// Appends to `sql` the statement that writes `rows` (at `now`), replacing the rows with the same
/// `key` (its columns, comma-separated).
/// `body_cast` follows the body's placeholder (`::jsonb` on PostgreSQL). A row written here keeps
/// no JSON `contribution`.
pub fn cdr_upsert<'q, DB>(
    sql: &mut QueryBuilder<'q, DB>,
    rows: &'q [CdrRow<'q>],
    now: Timestamp,
    body_cast: &str,
    key: &str,
) where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    sql.push(format!("INSERT INTO cdrs ({}) ", CDR_COLUMNS.join(", ")));
    sql.push_values(rows, |mut b, (cdr, body, tally)| {
        b.push_bind(cdr.call_id.as_str())
            .push_bind(cdr.start_time.millis())
            .push_bind(cdr.end_time.map(Timestamp::millis))
            .push_bind(cdr.last_event_at.millis())
            .push_bind(cdr.direction.as_str())
            .push_bind(cdr.outcome.as_str())
            .push_bind(cdr.trunk_id.as_deref())
            .push_bind(cdr.agent_id.as_deref())
            .push_bind(cdr.queue.as_deref())
            .push_bind(cdr.room_sid.as_deref())
            .push_bind(cdr.room_name.as_deref())
            .push_bind(body.as_str())
            .push_unseparated(body_cast)
            .push_bind(now.millis())
            .push_bind(tally.as_slice())
            .push_bind(cdr.answer_time.map(Timestamp::millis))
            .push_bind((cdr.wrap_up_seconds * 1000.0).round() as i64)
            .push_bind(cdr.short_abandon)
            .push_bind(cdr.transfer_type.map(|t| t.as_str()));
    });
    let keyed: Vec<&str> = key.split(',').map(str::trim).collect();
    let updates: Vec<String> = CDR_COLUMNS
        .iter()
        .filter(|c| !keyed.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push(format_args!(
        " ON CONFLICT ({key}) DO UPDATE SET {}, contribution = NULL",
        updates.join(", ")
    ));
}
