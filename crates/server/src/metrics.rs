//! Metric queries: windows and groups assembled from rollups.
//!
//! The whole 15-minute buckets inside `[from, to)` come from the rollups; a window edge that cuts a
//! bucket is completed from that bucket's CDRs (at most two quarter-hours), so answers are exact
//! for any window while the bulk of the work reads rollups only. Hours and days are those of the
//! requested IANA time zone; every UTC offset in use is a multiple of 15 minutes.

use crate::store::rollup::{Level, Slice};
use crate::store::{
    BUCKET_MS, Buckets, MetricFilter, RollupRow, SliceFilter, Store, StoreError, bucket_of,
};
use callpulse_core::Timestamp;
use callpulse_core::metrics::Tally;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use std::collections::BTreeMap;

/// Most time groups one query may return.
pub const MAX_TIME_GROUPS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Hour,
    Day,
    Trunk,
    Agent,
    Queue,
    Direction,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "hour" => GroupBy::Hour,
            "day" => GroupBy::Day,
            "trunk" => GroupBy::Trunk,
            "agent" => GroupBy::Agent,
            "queue" => GroupBy::Queue,
            "direction" => GroupBy::Direction,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct MetricsQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub filter: MetricFilter,
    pub group_by: Option<GroupBy>,
    pub tz: Tz,
}

/// A group's key: the local start of an hour or day, or a dimension's value (`None` for calls
/// without one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    Time(DateTime<Tz>),
    Value(Option<String>),
}

#[derive(Debug, Clone, Default)]
pub struct MetricsAnswer {
    pub totals: Tally,
    pub groups: Vec<(GroupKey, Tally)>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the window holds more than {MAX_TIME_GROUPS} groups; narrow it or group by day")]
    TooManyGroups,
}

fn to_local(t: Timestamp, tz: Tz) -> DateTime<Tz> {
    tz.timestamp_millis_opt(t.millis())
        .single()
        .unwrap_or_else(|| tz.timestamp_millis_opt(0).single().expect("epoch exists"))
}

/// Local midnight of `date`, or the first instant of the day where midnight does not exist.
pub fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Tz> {
    (0..=4 * 24)
        .find_map(|q| {
            let time = NaiveTime::MIN + Duration::minutes(15 * q);
            tz.from_local_datetime(&date.and_time(time)).earliest()
        })
        .expect("every day has a first quarter-hour")
}

/// The start of the local hour or day holding `t`.
fn period_start(t: Timestamp, tz: Tz, unit: GroupBy) -> DateTime<Tz> {
    let local = to_local(t, tz);
    match unit {
        GroupBy::Day => start_of_day(local.date_naive(), tz),
        _ => {
            let into_hour = i64::from(local.minute()) * 60_000
                + i64::from(local.second()) * 1000
                + i64::from(local.nanosecond() / 1_000_000);
            to_local(Timestamp(t.millis() - into_hour), tz)
        }
    }
}

fn next_period(start: DateTime<Tz>, tz: Tz, unit: GroupBy) -> DateTime<Tz> {
    match unit {
        GroupBy::Day => start_of_day(start.date_naive() + Duration::days(1), tz),
        _ => to_local(Timestamp(start.timestamp_millis() + 3_600_000), tz),
    }
}

fn key_of(row: &RollupRow, group_by: GroupBy, tz: Tz) -> GroupKey {
    match group_by {
        GroupBy::Hour | GroupBy::Day => GroupKey::Time(period_start(row.bucket, tz, group_by)),
        GroupBy::Trunk => GroupKey::Value(row.trunk_id.clone()),
        GroupBy::Agent => GroupKey::Value(row.agent_id.clone()),
        GroupBy::Queue => GroupKey::Value(row.queue.clone()),
        GroupBy::Direction => GroupKey::Value(Some(row.direction.as_str().to_owned())),
    }
}

/// The slice that answers a query (the one dimension it filters or groups by) and the value it
/// filters on; `None` when the query involves two dimensions.
fn slice_for(q: &MetricsQuery) -> Option<(Slice, Option<&str>)> {
    let mut dims: Vec<(Slice, Option<&str>)> = [
        (Slice::Trunk, q.filter.trunk_id.as_deref()),
        (Slice::Agent, q.filter.agent_id.as_deref()),
        (Slice::Queue, q.filter.queue.as_deref()),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .collect();
    let grouped = match q.group_by {
        Some(GroupBy::Trunk) => Some(Slice::Trunk),
        Some(GroupBy::Agent) => Some(Slice::Agent),
        Some(GroupBy::Queue) => Some(Slice::Queue),
        _ => None,
    };
    if let Some(g) = grouped
        && !dims.iter().any(|(s, _)| *s == g)
    {
        dims.push((g, None));
    }
    match dims.as_slice() {
        [] => Some((Slice::All, None)),
        [one] => Some(*one),
        _ => None,
    }
}

/// A part of a window no bucket fits, read from the CDRs' stored contributions: added, or (the
/// rest of a quarter-hour taken whole) subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    from: i64,
    to: i64,
    sign: i64,
}

/// The buckets and edges that make up a query's windows, each added (`sign` 1) or subtracted
/// (-1).
#[derive(Debug, Default)]
struct Tiling {
    blocks: Vec<(Level, i64, i64)>,
    edges: Vec<Edge>,
}

impl Tiling {
    /// Covers `[from, to)` with the coarsest aligned buckets; what no bucket fits is left as edges
    /// (read from CDRs). Where a window cuts a bucket, the shorter side of the cut is read: the
    /// cut part itself, or the whole bucket less the rest. For quarter-hours that always applies;
    /// for hours and days only with `whole_buckets` (a query not grouped by time, where a bucket
    /// reaching past its window cannot land in another group). When no call starts at or after
    /// `to` (`open_end`), a bucket may reach past `to`: its part after `to` is empty.
    fn cover(&mut self, from: i64, to: i64, open_end: bool, sign: i64, whole_buckets: bool) {
        let quarter = Level::Quarter.width_ms();
        let cuttable = |level: Level| whole_buckets || level == Level::Quarter;
        let mut t = from;
        'tiles: while t < to {
            // `t` cuts a bucket: take it whole, less its part before `t`, when that is shorter.
            for level in [Level::Day, Level::Hour, Level::Quarter] {
                let w = level.width_ms();
                let start = t.div_euclid(w) * w;
                if start != t
                    && cuttable(level)
                    && (start + w <= to || open_end)
                    && t - start < start + w - t
                {
                    self.blocks.push((level, start, sign));
                    self.cover(start, t, false, -sign, whole_buckets);
                    t = start + w;
                    continue 'tiles;
                }
            }
            if t.rem_euclid(quarter) != 0 {
                let end = to.min(t.div_euclid(quarter) * quarter + quarter);
                self.edges.push(Edge {
                    from: t,
                    to: end,
                    sign,
                });
                t = end;
                continue;
            }
            for level in [Level::Day, Level::Hour, Level::Quarter] {
                let w = level.width_ms();
                if t.rem_euclid(w) != 0 {
                    continue;
                }
                if t + w <= to || open_end {
                    self.blocks.push((level, t, sign));
                    t += w;
                    continue 'tiles;
                }
                // `to` cuts this bucket: take it whole, less its part after `to`, when that is
                // shorter.
                if cuttable(level) && to - t > t + w - to {
                    self.blocks.push((level, t, sign));
                    self.cover(to, t + w, false, -sign, whole_buckets);
                    return;
                }
            }
            // `t` is quarter-aligned and `to` cuts the quarter-hour starting there.
            self.edges.push(Edge { from: t, to, sign });
            return;
        }
    }
}

/// The windows a query covers: one per time group, or the whole window.
fn windows(q: &MetricsQuery) -> Vec<(i64, i64)> {
    match q.group_by {
        Some(unit @ (GroupBy::Hour | GroupBy::Day)) => {
            let mut out = Vec::new();
            let mut start = period_start(q.from, q.tz, unit);
            while start.timestamp_millis() < q.to.millis() {
                let next = next_period(start, q.tz, unit);
                out.push((
                    start.timestamp_millis().max(q.from.millis()),
                    next.timestamp_millis().min(q.to.millis()),
                ));
                start = next;
            }
            out
        }
        _ => vec![(q.from.millis(), q.to.millis())],
    }
}

/// Rows for the query's window: slice rows tiling it, CDRs' contributions at the edges; or, when
/// the query involves two dimensions, the full-combination rollups by quarter-hour.
async fn rows(store: &dyn Store, q: &MetricsQuery) -> Result<Vec<RollupRow>, StoreError> {
    let Some((slice, value)) = slice_for(q) else {
        return combo_rows(store, q).await;
    };
    let latest = store.latest_start().await?;
    let open_end = latest.is_none_or(|l| l < q.to);
    let by_time = matches!(q.group_by, Some(GroupBy::Hour | GroupBy::Day));
    let mut tiling = Tiling::default();
    for (from, to) in windows(q) {
        let last = to == q.to.millis();
        tiling.cover(from, to, open_end && last, 1, !by_time);
    }
    let mut out = Vec::new();
    for (level, sign) in Level::ALL.into_iter().flat_map(|l| [(l, 1), (l, -1)]) {
        let mut starts: Vec<i64> = tiling
            .blocks
            .iter()
            .filter(|(l, _, s)| *l == level && *s == sign)
            .map(|(_, start, _)| *start)
            .collect();
        starts.sort_unstable();
        for chunk in starts.chunks(500) {
            let buckets = match (chunk.first(), chunk.last()) {
                (Some(first), Some(last))
                    if (last - first) / level.width_ms() + 1 == chunk.len() as i64 =>
                {
                    Buckets::Range(Timestamp(*first), Timestamp(last + level.width_ms()))
                }
                _ => Buckets::List(chunk.to_vec()),
            };
            let filter = SliceFilter {
                direction: q.filter.direction,
                value,
                merge: !by_time,
            };
            let rows = store.slice_rows(slice, level, &buckets, filter).await?;
            out.extend(signed(rows, sign));
        }
    }
    for edge in tiling.edges {
        let rows = store
            .contributions(Timestamp(edge.from), Timestamp(edge.to), &q.filter)
            .await?;
        out.extend(signed(rows, edge.sign));
    }
    Ok(out)
}

/// `rows` as they are (`sign` 1) or negated (-1).
fn signed(mut rows: Vec<RollupRow>, sign: i64) -> Vec<RollupRow> {
    if sign < 0 {
        for row in &mut rows {
            let mut negated = Tally::default();
            negated.add(&row.tally, -1);
            row.tally = negated;
        }
    }
    rows
}

/// Rows from the full-combination rollups (15-minute buckets), CDRs' contributions at the edges.
async fn combo_rows(store: &dyn Store, q: &MetricsQuery) -> Result<Vec<RollupRow>, StoreError> {
    let first_full = bucket_of(Timestamp(q.from.millis() + BUCKET_MS - 1));
    let last_full = bucket_of(q.to);
    let mut out = Vec::new();
    if first_full < last_full {
        out.extend(store.rollup_rows(first_full, last_full, &q.filter).await?);
        for (from, to) in [(q.from, first_full), (last_full, q.to)] {
            if from < to {
                out.extend(store.contributions(from, to, &q.filter).await?);
            }
        }
    } else if q.from < q.to {
        out.extend(store.contributions(q.from, q.to, &q.filter).await?);
    }
    Ok(out)
}

/// Totals and groups of a window.
pub async fn query(store: &dyn Store, q: &MetricsQuery) -> Result<MetricsAnswer, QueryError> {
    let mut groups: BTreeMap<GroupKey, Tally> = BTreeMap::new();
    if let Some(unit @ (GroupBy::Hour | GroupBy::Day)) = q.group_by {
        let mut start = period_start(q.from, q.tz, unit);
        while start.timestamp_millis() < q.to.millis() {
            if groups.len() >= MAX_TIME_GROUPS {
                return Err(QueryError::TooManyGroups);
            }
            groups.insert(GroupKey::Time(start), Tally::default());
            start = next_period(start, q.tz, unit);
        }
    }
    let mut totals = Tally::default();
    for row in rows(store, q).await? {
        totals.add(&row.tally, 1);
        if let Some(group_by) = q.group_by {
            groups
                .entry(key_of(&row, group_by, q.tz))
                .or_default()
                .add(&row.tally, 1);
        }
    }
    // A value whose calls were all subtracted again (a quarter-hour taken whole, less its part
    // outside the window) had none in the window.
    groups.retain(|key, tally| matches!(key, GroupKey::Time(_)) || !tally.is_empty());
    Ok(MetricsAnswer {
        totals,
        groups: groups.into_iter().collect(),
    })
}

/// The two windows of the summary: a day so far (or whole) and the same weekday a week earlier
/// up to the same local time of day.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryWindows {
    pub date: NaiveDate,
    pub today: (Timestamp, Timestamp),
    pub last_week: (Timestamp, Timestamp),
}

pub fn summary_windows(date: Option<NaiveDate>, tz: Tz, now: Timestamp) -> SummaryWindows {
    let local_now = to_local(now, tz);
    let today = local_now.date_naive();
    let date = date.unwrap_or(today);
    let start = start_of_day(date, tz);
    let week_ago = date - Duration::days(7);
    let week_ago_start = start_of_day(week_ago, tz);
    let ms = |d: DateTime<Tz>| Timestamp(d.timestamp_millis());
    if date == today {
        let time_of_day = local_now.time();
        let cut = tz
            .from_local_datetime(&week_ago.and_time(time_of_day))
            .earliest()
            .unwrap_or_else(|| week_ago_start + (local_now - start));
        SummaryWindows {
            date,
            today: (ms(start), now),
            last_week: (ms(week_ago_start), ms(cut)),
        }
    } else {
        SummaryWindows {
            date,
            today: (ms(start), ms(start_of_day(date + Duration::days(1), tz))),
            last_week: (
                ms(week_ago_start),
                ms(start_of_day(week_ago + Duration::days(1), tz)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_in_half_hour_zones_start_at_half_past_utc() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let t = Timestamp(1_795_442_530_687); // 14:02:10 UTC = 19:32:10 IST
        let start = period_start(t, tz, GroupBy::Hour);
        assert_eq!(start.to_rfc3339(), "2026-11-23T19:00:00+05:30");
        assert_eq!(start.timestamp_millis() % BUCKET_MS, 0);
        let day = period_start(t, tz, GroupBy::Day);
        assert_eq!(day.to_rfc3339(), "2026-11-23T00:00:00+05:30");
    }

    #[test]
    fn an_edge_is_read_from_the_shorter_side_of_its_cut() {
        let q = BUCKET_MS;
        let day = Level::Day.width_ms();
        let tiled = |from: i64, to: i64, open_end: bool| {
            let mut tiling = Tiling::default();
            tiling.cover(from, to, open_end, 1, false);
            (tiling.blocks, tiling.edges)
        };
        let edge = |from: i64, to: i64, sign: i64| Edge { from, to, sign };
        // A start one minute into a quarter: the whole quarter, less that minute.
        let (blocks, edges) = tiled(day + 60_000, 2 * day, false);
        assert_eq!(blocks.first(), Some(&(Level::Quarter, day, 1)));
        assert_eq!(edges, vec![edge(day, day + 60_000, -1)]);
        // A start one minute before a quarter ends: that minute itself.
        let (blocks, edges) = tiled(day + q - 60_000, 2 * day, false);
        assert_eq!(blocks.first(), Some(&(Level::Quarter, day + q, 1)));
        assert_eq!(edges, vec![edge(day + q - 60_000, day + q, 1)]);
        // An end one minute before a quarter ends, with calls after it: the quarter less a minute.
        let (blocks, edges) = tiled(day, day + q - 60_000, false);
        assert_eq!(blocks, vec![(Level::Quarter, day, 1)]);
        assert_eq!(edges, vec![edge(day + q - 60_000, day + q, -1)]);
        // An end one minute into a quarter: that minute.
        let (blocks, edges) = tiled(day, day + 60_000, false);
        assert!(blocks.is_empty());
        assert_eq!(edges, vec![edge(day, day + 60_000, 1)]);
        // The same end with no call after it: the coarsest bucket there, whose rest is empty.
        let (blocks, edges) = tiled(day, day + 60_000, true);
        assert_eq!(blocks, vec![(Level::Day, day, 1)]);
        assert!(edges.is_empty());
        // A window inside one quarter is read as it is.
        let (blocks, edges) = tiled(day + 60_000, day + 120_000, false);
        assert!(blocks.is_empty());
        assert_eq!(edges, vec![edge(day + 60_000, day + 120_000, 1)]);
    }

    #[test]
    fn without_time_groups_hours_and_days_are_taken_whole_less_the_shorter_rest() {
        let h = Level::Hour.width_ms();
        let day = Level::Day.width_ms();
        // From 02:00 to the next midnight: the day less two hours, not 22 hours.
        let mut tiling = Tiling::default();
        tiling.cover(day + 2 * h, 2 * day, false, 1, true);
        assert_eq!(
            tiling.blocks,
            vec![
                (Level::Day, day, 1),
                (Level::Hour, day, -1),
                (Level::Hour, day + h, -1)
            ]
        );
        assert!(tiling.edges.is_empty());
        // From midnight to 23:00, calls after: the day less its last hour.
        let mut tiling = Tiling::default();
        tiling.cover(day, 2 * day - h, false, 1, true);
        assert_eq!(
            tiling.blocks,
            vec![(Level::Day, day, 1), (Level::Hour, 2 * day - h, -1)]
        );
        // Grouped by time, the same window stays inside its own buckets.
        let mut tiling = Tiling::default();
        tiling.cover(day + 2 * h, 2 * day, false, 1, false);
        assert_eq!(tiling.blocks.len(), 22);
        assert!(
            tiling
                .blocks
                .iter()
                .all(|(l, _, s)| *l == Level::Hour && *s == 1)
        );
    }

    #[test]
    fn days_across_a_dst_change_are_23_and_25_hours() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let march = start_of_day(NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(), tz);
        let next = next_period(march, tz, GroupBy::Day);
        assert_eq!((next - march).num_hours(), 23);
        let october = start_of_day(NaiveDate::from_ymd_opt(2026, 10, 25).unwrap(), tz);
        assert_eq!(
            (next_period(october, tz, GroupBy::Day) - october).num_hours(),
            25
        );
    }

    #[test]
    fn summary_compares_with_the_same_time_of_day_a_week_earlier() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let now = Timestamp(1_795_442_530_687); // 2026-11-23 09:02:10.687 EST
        let w = summary_windows(None, tz, now);
        assert_eq!(w.date.to_string(), "2026-11-23");
        assert_eq!(
            to_local(w.today.0, tz).to_rfc3339(),
            "2026-11-23T00:00:00-05:00"
        );
        assert_eq!(w.today.1, now);
        assert_eq!(w.last_week.1.millis(), now.millis() - 7 * 86_400_000);
        let past = summary_windows(NaiveDate::from_ymd_opt(2026, 11, 10), tz, now);
        assert_eq!(past.today.1.millis() - past.today.0.millis(), 86_400_000);
        assert_eq!(
            to_local(past.last_week.0, tz).to_rfc3339(),
            "2026-11-03T00:00:00-05:00"
        );
    }
}
