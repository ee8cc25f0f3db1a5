//! Rollup keys and the tally codec, shared by the backends.
//!
//! A CDR contributes to one row of the full combination (15-minute bucket × direction × trunk ×
//! agent × queue) and to one row of each *slice* (all calls, by trunk, by agent, by queue) at three
//! UTC levels (quarter-hour, hour, day). A query reads the slice and the coarsest levels that tile
//! its window, so a 30-day question reads 30 day rows, not 2,880 quarter-hours.

use super::{BUCKET_MS, RollupRow, StoreError, parse_direction};
use callpulse_core::Direction;
use callpulse_core::metrics::{Histogram, Tally};
use std::collections::HashMap;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Which dimension a slice keeps besides direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slice {
    All = 0,
    Trunk = 1,
    Agent = 2,
    Queue = 3,
}

impl Slice {
    pub const ALL: [Slice; 4] = [Slice::All, Slice::Trunk, Slice::Agent, Slice::Queue];

    pub fn from_code(code: i64) -> Option<Slice> {
        Slice::ALL.into_iter().find(|s| *s as i64 == code)
    }

    fn value_of(self, row: &RollupRow) -> Option<&str> {
        match self {
            Slice::All => None,
            Slice::Trunk => row.trunk_id.as_deref(),
            Slice::Agent => row.agent_id.as_deref(),
            Slice::Queue => row.queue.as_deref(),
        }
    }

    /// A row of this slice, its dimension set from `value`.
    pub fn row(
        self,
        bucket: i64,
        direction: Direction,
        value: Option<String>,
        tally: Tally,
    ) -> RollupRow {
        let mut row = RollupRow {
            bucket: callpulse_core::Timestamp(bucket),
            direction,
            trunk_id: None,
            agent_id: None,
            queue: None,
            tally,
        };
        match self {
            Slice::All => {}
            Slice::Trunk => row.trunk_id = value,
            Slice::Agent => row.agent_id = value,
            Slice::Queue => row.queue = value,
        }
        row
    }
}

/// Bucket width of a slice row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Quarter = 0,
    Hour = 1,
    Day = 2,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Quarter, Level::Hour, Level::Day];

    pub fn from_code(code: i64) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as i64 == code)
    }

    pub fn width_ms(self) -> i64 {
        match self {
            Level::Quarter => BUCKET_MS,
            Level::Hour => HOUR_MS,
            Level::Day => DAY_MS,
        }
    }
}

/// The key of a rollup row in either table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RollupKey {
    Combo {
        bucket: i64,
        direction: Direction,
        trunk_id: String,
        agent_id: String,
        queue: String,
    },
    Slice {
        slice: Slice,
        level: Level,
        bucket: i64,
        direction: Direction,
        value: String,
    },
}

/// Adds a contribution (`sign` = 1) or removes it (`sign` = -1) under every key it touches.
pub fn accumulate(deltas: &mut HashMap<RollupKey, Tally>, row: &RollupRow, sign: i64) {
    let dim = |v: &Option<String>| v.clone().unwrap_or_default();
    let combo = RollupKey::Combo {
        bucket: row.bucket.millis(),
        direction: row.direction,
        trunk_id: dim(&row.trunk_id),
        agent_id: dim(&row.agent_id),
        queue: dim(&row.queue),
    };
    deltas.entry(combo).or_default().add(&row.tally, sign);
    for slice in Slice::ALL {
        for level in Level::ALL {
            let key = RollupKey::Slice {
                slice,
                level,
                bucket: row.bucket.millis().div_euclid(level.width_ms()) * level.width_ms(),
                direction: row.direction,
                value: slice.value_of(row).unwrap_or_default().to_owned(),
            };
            deltas.entry(key).or_default().add(&row.tally, sign);
        }
    }
}

/// The stored rows after adding `deltas` to `current`: the keys whose rows became empty (to
/// delete) and the new tallies of the others (to upsert).
pub fn fold<'k>(
    mut current: HashMap<RollupKey, Tally>,
    deltas: &[&'k (RollupKey, Tally)],
) -> (Vec<&'k RollupKey>, Vec<(&'k RollupKey, Tally)>) {
    let mut emptied = Vec::new();
    let mut updated = Vec::new();
    for (key, delta) in deltas {
        let mut tally = current.remove(key).unwrap_or_default();
        tally.add(delta, 1);
        if tally.is_empty() {
            emptied.push(key);
        } else {
            updated.push((key, tally));
        }
    }
    (emptied, updated)
}

/// One column of a rollup key, for binding.
pub enum KeyPart<'a> {
    Int(i64),
    Text(&'a str),
}

pub fn key_parts(key: &RollupKey) -> [KeyPart<'_>; 5] {
    match key {
        RollupKey::Combo {
            bucket,
            direction,
            trunk_id,
            agent_id,
            queue,
        } => [
            KeyPart::Int(*bucket),
            KeyPart::Text(direction.as_str()),
            KeyPart::Text(trunk_id),
            KeyPart::Text(agent_id),
            KeyPart::Text(queue),
        ],
        RollupKey::Slice {
            slice,
            level,
            bucket,
            direction,
            value,
        } => [
            KeyPart::Int(*slice as i64),
            KeyPart::Int(*level as i64),
            KeyPart::Int(*bucket),
            KeyPart::Int(direction_code(*direction)),
            KeyPart::Text(value),
        ],
    }
}

pub fn key_of_row<'r, R>(combo: bool, r: &'r R) -> Result<RollupKey, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = || StoreError::Corrupt("unreadable rollup key".into());
    Ok(if combo {
        RollupKey::Combo {
            bucket: r.get(0),
            direction: parse_direction(r.get(1))?,
            trunk_id: r.get(2),
            agent_id: r.get(3),
            queue: r.get(4),
        }
    } else {
        RollupKey::Slice {
            slice: Slice::from_code(r.get(0)).ok_or_else(corrupt)?,
            level: Level::from_code(r.get(1)).ok_or_else(corrupt)?,
            bucket: r.get(2),
            direction: direction_from_code(r.get(3)).ok_or_else(corrupt)?,
            value: r.get(4),
        }
    })
}

pub fn direction_code(d: Direction) -> i64 {
    match d {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

pub fn direction_from_code(code: i64) -> Option<Direction> {
    match code {
        0 => Some(Direction::Inbound),
        1 => Some(Direction::Outbound),
        _ => None,
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// A tally as bytes: the counters, then each histogram as a length and (bin, count) pairs, all
/// zigzag varints. About 40 bytes for a typical row.
pub fn encode_tally(t: &Tally) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for c in t.counters() {
        put_varint(&mut out, c);
    }
    for h in [&t.speed_of_answer_hist, &t.handle_time_hist] {
        put_varint(&mut out, h.bins().count() as i64);
        for (bin, count) in h.bins() {
            put_varint(&mut out, i64::from(bin));
            put_varint(&mut out, count);
        }
    }
    out
}

pub fn decode_tally(mut input: &[u8]) -> Option<Tally> {
    let input = &mut input;
    let mut counters = [0i64; Tally::COUNTERS];
    for c in counters.iter_mut() {
        *c = get_varint(input)?;
    }
    let mut hist = || -> Option<Histogram> {
        let n = get_varint(input)?;
        let mut bins = Vec::with_capacity(n.clamp(0, 256) as usize);
        for _ in 0..n {
            let bin = u16::try_from(get_varint(input)?).ok()?;
            bins.push((bin, get_varint(input)?));
        }
        Some(Histogram::from_bins(bins))
    };
    let speed = hist()?;
    let handle = hist()?;
    Some(Tally::from_parts(counters, speed, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_round_trips_through_the_codec() {
        let mut t = Tally {
            total_calls: 5,
            handle_time_ms: -3,
            speed_of_answer_ms: i64::MAX / 3,
            ..Tally::default()
        };
        t.speed_of_answer_hist.record(1_500);
        t.speed_of_answer_hist.record(70_000);
        t.handle_time_hist.record(30_000_000);
        let bytes = encode_tally(&t);
        assert_eq!(decode_tally(&bytes), Some(t));
        assert_eq!(decode_tally(&bytes[..bytes.len() - 1]), None);
    }
}
