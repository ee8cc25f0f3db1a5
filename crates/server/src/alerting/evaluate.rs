//! The evaluation ticker: one observation per rule and key, the lifecycle step, and the outbox
//! write for every transition.

use super::rules::{AlertConfig, Rule, Source, sample_of};
use crate::http::dto::{metrics_json, rfc3339};
use crate::leader::{Role, Turn};
use crate::live::LiveHub;
use crate::metrics::{self, GroupBy, GroupKey, MetricsQuery};
use crate::store::{AlertRecord, MetricFilter, Store, StoreError};
use callpulse_core::Outcome;
use callpulse_core::Timestamp;
use callpulse_core::alerts::{AlertState, Observation, Transition, observe, step};
use callpulse_core::live::LiveSummary;
use callpulse_core::metrics::Tally;
use chrono::TimeZone;
use chrono_tz::Tz;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What one rule saw for one key.
struct Reading {
    observation: Observation,
    value: Option<f64>,
    sample: i64,
    /// Per trunk: the failed calls in a row at the latest end, when the rule counts them.
    failed_in_row: Option<u32>,
}

/// The alerts' states, kept between ticks; firing ones are also in the store.
pub struct Evaluator {
    config: Arc<AlertConfig>,
    states: BTreeMap<(String, String), AlertState>,
    /// The notice of each firing alert, for its resolution and for the live panel.
    firing: BTreeMap<(String, String), Value>,
    tz: Tz,
}

fn key_of(trunk: Option<&str>) -> String {
    trunk.map_or_else(String::new, |t| format!("trunk_id={t}"))
}

fn trunk_of(key: &str) -> Option<&str> {
    key.strip_prefix("trunk_id=")
}

impl Evaluator {
    /// Starts from the alerts stored as firing, so a restart neither re-fires nor forgets them.
    pub async fn load(
        store: &dyn Store,
        config: Arc<AlertConfig>,
        tz: Tz,
    ) -> Result<Evaluator, StoreError> {
        let mut states = BTreeMap::new();
        let mut firing = BTreeMap::new();
        for alert in store.firing_alerts().await? {
            let key = (alert.rule, alert.key);
            states.insert(key.clone(), AlertState::Firing { since: alert.since });
            firing.insert(key, alert.notice);
        }
        Ok(Evaluator {
            config,
            states,
            firing,
            tz,
        })
    }

    /// The notices of the alerts firing now.
    pub fn firing(&self) -> Vec<Value> {
        self.firing.values().cloned().collect()
    }

    /// Evaluates every rule once at `now`; returns how many transitions it recorded.
    pub async fn tick(
        &mut self,
        store: &dyn Store,
        live: &LiveHub,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut recorded = 0;
        let summary = live.summary(now);
        let config = self.config.clone();
        for rule in &config.rules {
            let readings = self.read(rule, store, &summary, now).await?;
            for (key, reading) in readings {
                let id = (rule.name.clone(), key.clone());
                let state = self
                    .states
                    .get(&id)
                    .copied()
                    .unwrap_or(AlertState::Inactive);
                let (next, transition) = step(state, reading.observation, rule.for_ms, now);
                if next == AlertState::Inactive {
                    self.states.remove(&id);
                } else {
                    self.states.insert(id.clone(), next);
                }
                let Some(transition) = transition else {
                    continue;
                };
                let notice = self.notice(rule, &key, &reading, transition);
                let status = match transition {
                    Transition::Fired { .. } => "firing",
                    Transition::Resolved { .. } => "resolved",
                };
                store
                    .record_alert_transition(
                        &AlertRecord {
                            rule: rule.name.clone(),
                            key: key.clone(),
                            status,
                            at: now,
                            notice: notice.clone(),
                        },
                        &config.channels_for(rule),
                    )
                    .await?;
                tracing::warn!(alert = %rule.name, key = %key, status, value = ?reading.value, "alert");
                match transition {
                    Transition::Fired { .. } => self.firing.insert(id, notice),
                    Transition::Resolved { .. } => self.firing.remove(&id),
                };
                recorded += 1;
            }
        }
        live.set_alerts(self.firing());
        Ok(recorded)
    }

    /// The readings of one rule, per key; every key that is pending or firing gets one.
    async fn read(
        &self,
        rule: &Rule,
        store: &dyn Store,
        summary: &LiveSummary,
        now: Timestamp,
    ) -> Result<BTreeMap<String, Reading>, StoreError> {
        let mut out = BTreeMap::new();
        match rule.source {
            Source::Live(metric) => {
                out.insert(String::new(), self.read_live(rule, metric, summary, now));
            }
            Source::Window(metric) => {
                let q = MetricsQuery {
                    from: Timestamp(now.millis() - rule.window_ms),
                    to: now,
                    filter: MetricFilter::default(),
                    group_by: rule.per_trunk.then_some(GroupBy::Trunk),
                    tz: self.tz,
                };
                let answer = metrics::query(store, &q).await.map_err(|e| match e {
                    metrics::QueryError::Store(e) => e,
                    other => StoreError::Corrupt(other.to_string()),
                })?;
                if !rule.per_trunk {
                    out.insert(String::new(), window_reading(rule, metric, &answer.totals));
                } else {
                    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
                    for (key, tally) in answer.groups {
                        if let GroupKey::Value(Some(trunk)) = key {
                            tallies.insert(trunk, tally);
                        }
                    }
                    let streaks = trunk_streaks(rule, store, now).await?;
                    let mut trunks: BTreeSet<String> = tallies.keys().cloned().collect();
                    trunks.extend(streaks.keys().cloned());
                    trunks.extend(
                        self.states
                            .keys()
                            .filter(|(r, _)| *r == rule.name)
                            .filter_map(|(_, k)| trunk_of(k).map(str::to_owned)),
                    );
                    for trunk in trunks {
                        let tally = tallies.remove(&trunk).unwrap_or_default();
                        let reading = window_reading(rule, metric, &tally);
                        let streak = streaks.get(&trunk).copied().unwrap_or_default();
                        out.insert(key_of(Some(&trunk)), trunk_reading(rule, reading, streak));
                    }
                }
            }
        }
        Ok(out)
    }

    fn read_live(&self, rule: &Rule, metric: &str, s: &LiveSummary, now: Timestamp) -> Reading {
        let value = match metric {
            "agents_available" => s.agents_available as f64,
            "callers_in_queue" => s.callers_in_queue as f64,
            "longest_wait_seconds" => s.longest_wait_seconds,
            _ => s.active_calls as f64,
        };
        let in_hours = rule.hours.is_some_and(|(from, to)| {
            self.tz
                .timestamp_millis_opt(now.millis())
                .single()
                .is_some_and(|t| {
                    let t = t.time();
                    if from <= to {
                        t >= from && t < to
                    } else {
                        t >= from || t < to
                    }
                })
        });
        let guarded = rule.while_callers_waiting || rule.hours.is_some();
        let active = !guarded || (rule.while_callers_waiting && s.callers_in_queue > 0) || in_hours;
        let observation = if active {
            observe(
                Some(value),
                1,
                0,
                rule.comparison,
                rule.threshold,
                rule.clear,
            )
        } else {
            Observation::Judged {
                breached: false,
                cleared: true,
            }
        };
        Reading {
            observation,
            value: Some(value),
            sample: 1,
            failed_in_row: None,
        }
    }

    fn notice(&self, rule: &Rule, key: &str, r: &Reading, t: Transition) -> Value {
        let metric = match rule.source {
            Source::Window(m) | Source::Live(m) => m,
        };
        let mut labels: BTreeMap<String, String> = rule.labels.clone();
        labels.insert("alertname".into(), rule.name.clone());
        labels.insert("severity".into(), rule.severity.as_str().into());
        labels.insert("service".into(), "callpulse".into());
        if let Some(trunk) = trunk_of(key) {
            labels.insert("trunk_id".into(), trunk.into());
        }
        let (status, started, ended) = match t {
            Transition::Fired { at } => ("firing", at, None),
            Transition::Resolved { fired_at, at } => ("resolved", fired_at, Some(at)),
        };
        let shown = |v: f64| {
            if metric.ends_with("_rate") || metric == "service_level" {
                format!("{:.1}%", v * 100.0)
            } else if metric.ends_with("_seconds") {
                format!("{v:.0}s")
            } else {
                format!("{v}")
            }
        };
        let window = match rule.source {
            Source::Window(_) => format!(" over {}m ({} calls)", rule.window_ms / 60_000, r.sample),
            Source::Live(_) => String::new(),
        };
        let subject = trunk_of(key).map_or_else(String::new, |t| format!(" on {t}"));
        let in_row = match (r.failed_in_row, rule.consecutive_failures) {
            (Some(n), Some(limit)) if n >= limit => format!("; {n} failed calls in a row"),
            _ => String::new(),
        };
        let value = r.value.map_or_else(|| "n/a".into(), shown);
        let summary = match t {
            Transition::Fired { .. } => format!(
                "{}{subject}: {metric} {value} {} {}{window}{in_row}",
                rule.name,
                rule.comparison.as_str(),
                shown(rule.threshold),
            ),
            Transition::Resolved { .. } => format!(
                "{}{subject} resolved: {metric} {value}{window} (fires when {} {})",
                rule.name,
                rule.comparison.as_str(),
                shown(rule.threshold),
            ),
        };
        json!({
            "alert": rule.name,
            "key": key,
            "status": status,
            "severity": rule.severity.as_str(),
            "labels": labels,
            "metric": metric,
            "value": r.value,
            "comparison": rule.comparison.as_str(),
            "threshold": rule.threshold,
            "clear": rule.clear,
            "window_seconds": rule.window_ms / 1000,
            "sample": r.sample,
            "min_sample": rule.min_sample,
            "failed_in_row": r.failed_in_row,
            "started_at": rfc3339(started),
            "ended_at": ended.map(rfc3339),
            "summary": summary,
            "dashboard_url": self.config.dashboard_url,
        })
    }
}

fn window_reading(rule: &Rule, metric: &str, tally: &Tally) -> Reading {
    let value = metrics_json(&tally.metrics())[metric].as_f64();
    let sample = sample_of(metric, tally);
    Reading {
        observation: observe(
            value,
            sample,
            rule.min_sample,
            rule.comparison,
            rule.threshold,
            rule.clear,
        ),
        value,
        sample,
        failed_in_row: None,
    }
}

/// A trunk's latest calls: how many in a row failed, and how many in a row did not.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    failed: u32,
    fine: u32,
}

async fn trunk_streaks(
    rule: &Rule,
    store: &dyn Store,
    now: Timestamp,
) -> Result<BTreeMap<String, Streak>, StoreError> {
    let depth = rule
        .consecutive_failures
        .unwrap_or(0)
        .max(rule.clear_after_successes.unwrap_or(0));
    if depth == 0 {
        return Ok(BTreeMap::new());
    }
    // A day back is far enough to see a trunk's last few calls on any live system.
    let since = Timestamp(now.millis() - 86_400_000);
    let mut out = BTreeMap::new();
    for (trunk, outcomes) in store
        .last_outcomes_by_trunk(since, i64::from(depth))
        .await?
    {
        let failed = outcomes
            .iter()
            .take_while(|o| **o == Outcome::Failed)
            .count() as u32;
        let fine = outcomes
            .iter()
            .take_while(|o| **o != Outcome::Failed)
            .count() as u32;
        out.insert(trunk, Streak { failed, fine });
    }
    Ok(out)
}

/// A per-trunk reading: the rate, or a run of failures, fires; resolving also needs a run of
/// calls that did not fail (METRICS.md §7 `trunk_unhealthy`).
fn trunk_reading(rule: &Rule, rate: Reading, streak: Streak) -> Reading {
    if rule.consecutive_failures.is_none() && rule.clear_after_successes.is_none() {
        return rate;
    }
    let breached = matches!(rate.observation, Observation::Judged { breached: true, .. })
        || rule
            .consecutive_failures
            .is_some_and(|n| streak.failed >= n);
    let rate_clear = matches!(
        rate.observation,
        Observation::NoData | Observation::TooFew | Observation::Judged { cleared: true, .. }
    );
    let fine_run = rule.clear_after_successes.is_none_or(|n| streak.fine >= n);
    Reading {
        observation: Observation::Judged {
            breached,
            cleared: !breached && rate_clear && fine_run,
        },
        failed_in_row: rule.consecutive_failures.map(|_| streak.failed),
        ..rate
    }
}

/// Runs the evaluator every `interval_ms` until `shutdown`; wakes the deliverer after a
/// transition.
/// The role of evaluating rules and delivering notices: one instance plays it.
pub const ROLE: &str = "alerts";

pub async fn run_evaluator(
    mut evaluator: Evaluator,
    store: Arc<dyn Store>,
    live: Arc<LiveHub>,
    deliver_wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis(evaluator.config.interval_ms as u64);
    live.set_alerts(evaluator.firing());
    let mut role = Role::new(ROLE);
    loop {
        match role.turn(store.as_ref()).await {
            Turn::Leading => {}
            Turn::Took => {
                // Another instance may have recorded transitions while this one stood by.
                match Evaluator::load(store.as_ref(), evaluator.config.clone(), evaluator.tz).await
                {
                    Ok(loaded) => evaluator = loaded,
                    Err(e) => tracing::error!(error = %e, "reloading alert states failed"),
                }
            }
            Turn::Standby => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(crate::pipeline::STANDBY_POLL) => continue,
                }
            }
        }
        match evaluator
            .tick(store.as_ref(), &live, crate::pipeline::now())
            .await
        {
            Ok(0) => {}
            Ok(_) => deliver_wake.notify_one(),
            Err(e) => tracing::error!(error = %e, "alert evaluation failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
