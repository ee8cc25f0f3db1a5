//! Demo history: past days of simulated calls written straight into the event log (the same log
//! entries the HTTP handlers write, with the times the events would have arrived), so a new user's
//! first dashboard already has trends and a last week to compare with. The CDR pipeline then
//! builds them like any other events, and `callpulse rebuild` reproduces them.

use super::{Payload, random_call};
use crate::ingest::{app_entries, app_events, livekit, webhook_entry};
use crate::store::{NewEvent, Store, StoreError};
use callpulse_core::Timestamp;
use chrono::{Datelike, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What history to write.
#[derive(Debug, Clone)]
pub struct History {
    pub days: u32,
    /// Calls per hour at the busiest time (weekday business hours).
    pub peak_calls_per_hour: f64,
    /// Zone of the business hours.
    pub tz: Tz,
    pub seed: u64,
}

/// Relative call volume at a local time: full on weekday business hours, less at the edges of
/// the day and at weekends, little at night.
pub fn load(tz: Tz, t: Timestamp) -> f64 {
    let Some(local) = tz.timestamp_millis_opt(t.millis()).single() else {
        return 0.0;
    };
    let hour = local.hour();
    let by_hour = match hour {
        8..=17 => 1.0,
        6 | 7 | 18..=20 => 0.4,
        _ => 0.05,
    };
    let by_day = match local.weekday() {
        Weekday::Sat | Weekday::Sun => 0.35,
        _ => 1.0,
    };
    by_hour * by_day
}

const BATCH: usize = 5000;

/// Appends `history.days` of calls ending before `now` to the log; returns how many calls.
/// Calls whose events would reach past `now` are left out.
pub async fn backfill(
    store: &dyn Store,
    history: &History,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut rng = StdRng::seed_from_u64(history.seed);
    let per_ms = history.peak_calls_per_hour / 3_600_000.0;
    if per_ms <= 0.0 || history.days == 0 {
        return Ok(0);
    }
    let mut t = now.millis() - i64::from(history.days) * 86_400_000;
    let mut calls = 0;
    let mut batch: Vec<NewEvent> = Vec::with_capacity(BATCH);
    loop {
        // Thinning: candidates at the peak rate, each kept with the load's probability.
        t += (-rng.gen_range(f64::EPSILON..1.0f64).ln() / per_ms) as i64 + 1;
        if t >= now.millis() {
            break;
        }
        if !rng.gen_bool(load(history.tz, Timestamp(t)).clamp(0.0, 1.0)) {
            continue;
        }
        let script = random_call(&mut rng, t);
        let steps: Vec<_> = script.room.iter().chain(&script.egress).collect();
        if steps.iter().any(|s| s.at_ms > now.millis()) {
            continue;
        }
        calls += 1;
        for step in steps {
            let at = Timestamp(step.at_ms);
            match &step.payload {
                Payload::Webhook(body) => {
                    if let Ok(decoded) = livekit::decode(body, at) {
                        batch.push(webhook_entry(decoded, body.clone(), at));
                    }
                }
                Payload::App(event) => {
                    let one = serde_json::Value::Array(vec![event.clone()]);
                    if let Ok(parsed) = app_events::parse_batch(&one) {
                        batch.extend(app_entries(parsed, at));
                    }
                }
            }
        }
        if batch.len() >= BATCH {
            store.append(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append(&batch).await?;
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_hours_are_busier_than_nights_and_weekends() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let at = |d: u32, h: u32| {
            Timestamp(
                tz.with_ymd_and_hms(2026, 11, d, h, 30, 0)
                    .unwrap()
                    .timestamp_millis(),
            )
        };
        // 2026-11-23 is a Monday, 2026-11-22 a Sunday.
        assert_eq!(load(tz, at(23, 10)), 1.0);
        assert_eq!(load(tz, at(23, 19)), 0.4);
        assert_eq!(load(tz, at(23, 3)), 0.05);
        assert_eq!(load(tz, at(22, 10)), 0.35);
    }
}
