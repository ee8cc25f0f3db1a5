//! Time partitions of the PostgreSQL tables: created ahead of need, rows stranded in a table's
//! DEFAULT partition moved into a partition made for them, and partitions past retention
//! dropped whole.
//!
//! Every change runs in its own transaction under one advisory lock, so instances maintaining
//! the same database take turns and find each other's work done. A partition is created as a
//! plain table, filled with the default partition's rows of its range, then attached: attaching
//! a range the default partition still holds rows of would fail.

use crate::store::{DefaultPartitionRows, ExpiredPartition, RetentionPolicy, StoreError};
use callpulse_core::Timestamp;
use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use sqlx::{PgPool, Row};

/// The advisory lock every partition change takes (transaction scope).
const MAINTENANCE_LOCK: i64 = 0x6361_6c6c_7075_6c01;
pub(super) const DAY_MS: i64 = 86_400_000;
/// Partitions exist at least this many days past today.
pub const DAYS_AHEAD: i64 = 8;
/// Stranded rows further ahead than this are left where they are (a broken clock, not traffic):
/// the default partition's row count shows them.
const ADOPT_AHEAD_DAYS: i64 = 366;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    Day,
    Month,
}

/// Which retention limit applies to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    Events,
    Quarantine,
    Cdrs,
    Rollups,
}

impl Kept {
    fn days(self, policy: &RetentionPolicy) -> i64 {
        i64::from(match self {
            Kept::Events => policy.events_days,
            Kept::Quarantine => policy.quarantine_days,
            Kept::Cdrs => policy.cdrs_days,
            Kept::Rollups => policy.rollups_days,
        })
    }
}

/// A partitioned table: its name, its partition key (milliseconds), partition width and which
/// retention limit applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partitioned {
    pub table: &'static str,
    pub column: &'static str,
    pub width: Width,
    pub kept: Kept,
}

pub(super) const TABLES: [Partitioned; 6] = [
    Partitioned {
        table: "event_log",
        column: "occurred_ms",
        width: Width::Day,
        kept: Kept::Events,
    },
    Partitioned {
        table: "call_events",
        column: "at_ms",
        width: Width::Day,
        kept: Kept::Events,
    },
    Partitioned {
        table: "quarantine",
        column: "received_at_ms",
        width: Width::Day,
        kept: Kept::Quarantine,
    },
    Partitioned {
        table: "cdrs",
        column: "start_ms",
        width: Width::Day,
        kept: Kept::Cdrs,
    },
    Partitioned {
        table: "rollups",
        column: "bucket_ms",
        width: Width::Month,
        kept: Kept::Rollups,
    },
    Partitioned {
        table: "rollup_slices",
        column: "bucket_ms",
        width: Width::Month,
        kept: Kept::Rollups,
    },
];

/// One partition's range `[from, to)` and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Period {
    pub from: i64,
    pub to: i64,
    pub name: String,
}

fn utc_date(ms: i64) -> NaiveDate {
    Utc.timestamp_millis_opt(ms.div_euclid(DAY_MS) * DAY_MS)
        .single()
        .map_or(NaiveDate::MIN, |t| t.date_naive())
}

fn date_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(i64::MIN, |t| t.and_utc().timestamp_millis())
}

impl Partitioned {
    /// The partition holding `ms`.
    pub(super) fn period_of(&self, ms: i64) -> Period {
        let date = utc_date(ms);
        match self.width {
            Width::Day => Period {
                from: date_ms(date),
                to: date_ms(date) + DAY_MS,
                name: format!("{}_p{}", self.table, date.format("%Y%m%d")),
            },
            Width::Month => {
                let first = date.with_day(1).unwrap_or(date);
                let next = first
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(NaiveDate::MAX);
                Period {
                    from: date_ms(first),
                    to: date_ms(next),
                    name: format!("{}_p{}", self.table, first.format("%Y%m")),
                }
            }
        }
    }

    /// The range of a partition this module named, from its name.
    pub(super) fn period_named(&self, name: &str) -> Option<Period> {
        let suffix = name.strip_prefix(self.table)?.strip_prefix("_p")?;
        let date = match (self.width, suffix.len()) {
            (Width::Day, 8) => NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?,
            (Width::Month, 6) => {
                NaiveDate::parse_from_str(&format!("{suffix}01"), "%Y%m%d").ok()?
            }
            _ => return None,
        };
        let period = self.period_of(date_ms(date));
        (period.name == name).then_some(period)
    }

    fn default_partition(&self) -> String {
        format!("{}_default", self.table)
    }

    /// The periods covering `[from, to)`.
    pub(super) fn periods(&self, from: i64, to: i64) -> Vec<Period> {
        let mut out = Vec::new();
        let mut at = from;
        while at < to {
            let p = self.period_of(at);
            at = p.to;
            out.push(p);
        }
        out
    }
}

/// The partitions of `t` this module created, by range.
pub(super) async fn existing(pool: &PgPool, t: &Partitioned) -> Result<Vec<Period>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(t.table)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<Period> = names.iter().filter_map(|n| t.period_named(n)).collect();
    out.sort_by_key(|p| p.from);
    Ok(out)
}

/// Creates `period`'s partition of `t` unless it exists, moving the default partition's rows of
/// its range into it. Returns whether it created it, and how many rows it moved.
pub(super) async fn create(
    pool: &PgPool,
    t: &Partitioned,
    period: &Period,
) -> Result<Option<i64>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(&mut *tx)
        .await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&period.name)
        .fetch_one(&mut *tx)
        .await?;
    if exists.is_some() {
        return Ok(None);
    }
    let (table, column, name) = (t.table, t.column, &period.name);
    let default = t.default_partition();
    sqlx::query(&format!(
        "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    ))
    .execute(&mut *tx)
    .await?;
    let moved = sqlx::query(&format!(
        "WITH moved AS (DELETE FROM {default} WHERE {column} >= $1 AND {column} < $2 RETURNING *)
         INSERT INTO {name} SELECT * FROM moved"
    ))
    .bind(period.from)
    .bind(period.to)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    sqlx::query(&format!(
        "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({}) TO ({})",
        period.from, period.to
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(moved))
}

/// The periods the default partition of `t` holds rows of, within `[from, to)`.
async fn stranded(
    pool: &PgPool,
    t: &Partitioned,
    from: i64,
    to: i64,
) -> Result<Vec<Period>, StoreError> {
    let days: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT DISTINCT {column} - (({column} % {DAY_MS}) + {DAY_MS}) % {DAY_MS} FROM {default}
         WHERE {column} >= $1 AND {column} < $2",
        column = t.column,
        default = t.default_partition(),
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut periods: Vec<Period> = days.into_iter().map(|d| t.period_of(d)).collect();
    periods.sort_by_key(|p| p.from);
    periods.dedup();
    Ok(periods)
}

/// Creates every partition from yesterday to `DAYS_AHEAD` days ahead, and one for every period
/// within retention whose rows sit in a default partition. Returns the partitions created and
/// the rows moved.
pub(super) async fn ensure(
    pool: &PgPool,
    now: Timestamp,
    retention: &RetentionPolicy,
) -> Result<(Vec<String>, i64), StoreError> {
    let today = now.millis().div_euclid(DAY_MS) * DAY_MS;
    let mut created = Vec::new();
    let mut moved = 0;
    for t in &TABLES {
        let mut wanted = t.periods(today - DAY_MS, today + (DAYS_AHEAD + 1) * DAY_MS);
        let oldest_kept = today - t.kept.days(retention) * DAY_MS;
        wanted.extend(stranded(pool, t, oldest_kept, today + ADOPT_AHEAD_DAYS * DAY_MS).await?);
        let have = existing(pool, t).await?;
        for period in wanted {
            if have.contains(&period) {
                continue;
            }
            if let Some(rows) = create(pool, t, &period).await? {
                created.push(period.name.clone());
                moved += rows;
            }
        }
    }
    Ok((created, moved))
}

/// The partitions (and rows of default partitions) past retention at `now`; dropped (deleted)
/// unless `dry_run`.
pub(super) async fn retire(
    pool: &PgPool,
    now: Timestamp,
    retention: &RetentionPolicy,
    dry_run: bool,
) -> Result<Vec<ExpiredPartition>, StoreError> {
    let mut out = Vec::new();
    for t in &TABLES {
        let cutoff = now.millis() - t.kept.days(retention) * DAY_MS;
        for period in existing(pool, t).await? {
            if period.to > cutoff {
                continue;
            }
            let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", period.name))
                .fetch_one(pool)
                .await?;
            if !dry_run {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MAINTENANCE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {}", period.name))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            out.push(ExpiredPartition {
                table: t.table.to_owned(),
                partition: period.name,
                until: Timestamp(period.to),
                rows,
            });
        }
        // Rows older than any partition kept, caught by the default partition: few by design.
        let default = t.default_partition();
        let old = format!("FROM {default} WHERE {} < $1", t.column);
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {old}"))
            .bind(cutoff)
            .fetch_one(pool)
            .await?;
        if rows > 0 {
            if !dry_run {
                sqlx::query(&format!("DELETE {old}"))
                    .bind(cutoff)
                    .execute(pool)
                    .await?;
            }
            out.push(ExpiredPartition {
                table: t.table.to_owned(),
                partition: default,
                until: Timestamp(cutoff),
                rows,
            });
        }
    }
    Ok(out)
}

/// Rows in each table's default partition.
pub(super) async fn default_rows(pool: &PgPool) -> Result<Vec<DefaultPartitionRows>, StoreError> {
    let mut out = Vec::with_capacity(TABLES.len());
    for t in &TABLES {
        let row = sqlx::query(&format!("SELECT COUNT(*) FROM {}", t.default_partition()))
            .fetch_one(pool)
            .await?;
        out.push(DefaultPartitionRows {
            table: t.table.to_owned(),
            rows: row.get(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(date: &str) -> i64 {
        date_ms(NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn periods_are_utc_days_and_months_named_by_their_start() {
        let day = TABLES[0];
        let month = TABLES[4];
        let p = day.period_of(ms("2026-12-31") + 5);
        assert_eq!(p.name, "event_log_p20261231");
        assert_eq!((p.from, p.to), (ms("2026-12-31"), ms("2027-01-01")));
        let m = month.period_of(ms("2026-12-31"));
        assert_eq!(m.name, "rollups_p202612");
        assert_eq!((m.from, m.to), (ms("2026-12-01"), ms("2027-01-01")));
        assert_eq!(day.period_named("event_log_p20261231"), Some(p));
        assert_eq!(month.period_named("rollups_p202612"), Some(m));
        assert_eq!(day.period_named("event_log_default"), None);
        assert_eq!(day.period_named("event_log_p20261332"), None);
        let across = day.periods(ms("2026-12-30"), ms("2027-01-02"));
        assert_eq!(across.len(), 3);
        assert_eq!(month.periods(ms("2026-12-30"), ms("2027-01-02")).len(), 2);
        // Before 1970 too: days are floored, not truncated.
        assert_eq!(day.period_of(-1).name, "event_log_p19691231");
    }
}
