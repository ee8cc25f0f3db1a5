//! `GET /metrics` in the Prometheus text format, served on its own listener (`--metrics-addr`).
//!
//! Call counts and the speed-of-answer and handle-time histograms come from the all-time rollups
//! (the day rows of the trunk slice, kept in memory), the gauges from the live board, and the
//! ingest counters from this process. Labels are bounded sets only: direction, outcome, agent
//! state, alert name and severity, and trunk, capped at `--metrics-max-trunks` (the busiest
//! trunks; the rest are summed as `trunk="other"`, calls without one as `trunk="none"`).

use crate::http::{AppState, IngestCounters};
use crate::store::rollup::{Level, Slice};
use crate::store::{Buckets, SliceFilter, StoreError};
use callpulse_core::Timestamp;
use callpulse_core::metrics::Tally;
use callpulse_core::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds (seconds) of the exported histogram buckets; each is a bin edge of the rollups'
/// histograms, so the counts are exact.
const BUCKETS_S: &[f64] = &[
    5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, hist: &Histogram, sum_s: f64, count: i64) {
        self.family(name, "histogram", help);
        for le in BUCKETS_S {
            let n = hist.count_below((*le * 1000.0) as i64);
            self.sample(
                &format!("{name}_bucket"),
                &[("le", &le.to_string())],
                n as f64,
            );
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[], sum_s);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }
}

/// The outcome counts of a tally, by outcome label.
fn outcomes(t: &Tally) -> [(&'static str, i64); 5] {
    [
        ("answered", t.answered_calls),
        ("abandoned", t.abandoned_calls),
        ("no_answer", t.no_answer_calls),
        ("busy", t.busy_calls),
        ("failed", t.failed_calls),
    ]
}

/// Renders the whole exposition.
pub async fn render(state: &AppState, max_trunks: usize) -> Result<String, StoreError> {
    let rows = state
        .store
        .slice_rows(
            Slice::Trunk,
            Level::Day,
            // Every day that can hold a call: from the epoch to a week ahead of any clock skew.
            &Buckets::Range(
                Timestamp(0),
                Timestamp(crate::pipeline::now().millis() + 7 * 86_400_000),
            ),
            SliceFilter {
                merge: true,
                ..SliceFilter::default()
            },
        )
        .await?;
    // The busiest trunks keep their name; the rest are summed as "other".
    let mut by_trunk: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        if let Some(trunk) = &row.trunk_id {
            *by_trunk.entry(trunk.clone()).or_default() += row.tally.total_calls;
        }
    }
    let mut ranked: Vec<(&String, &i64)> = by_trunk.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let kept: Vec<&String> = ranked.iter().take(max_trunks).map(|(t, _)| *t).collect();
    let mut calls: BTreeMap<(&'static str, String, &'static str), i64> = BTreeMap::new();
    let mut all = Tally::default();
    for row in &rows {
        all.add(&row.tally, 1);
        let trunk = match &row.trunk_id {
            None => "none".to_owned(),
            Some(t) if kept.contains(&t) => t.clone(),
            Some(_) => "other".to_owned(),
        };
        for (outcome, n) in outcomes(&row.tally) {
            *calls
                .entry((row.direction.as_str(), trunk.clone(), outcome))
                .or_default() += n;
        }
    }

    let mut w = Writer(String::new());
    w.family(
        "callpulse_calls_total",
        "counter",
        "Finished calls by direction, trunk and outcome (from the CDRs; a late event that changes a call's outcome moves it between outcomes).",
    );
    for ((direction, trunk, outcome), n) in &calls {
        w.sample(
            "callpulse_calls_total",
            &[
                ("direction", direction),
                ("trunk", trunk),
                ("outcome", outcome),
            ],
            *n as f64,
        );
    }
    w.family(
        "callpulse_short_abandoned_calls_total",
        "counter",
        "Abandoned calls shorter than the short-abandon threshold (counted in callpulse_calls_total as abandoned too).",
    );
    w.sample(
        "callpulse_short_abandoned_calls_total",
        &[],
        all.short_abandoned_calls as f64,
    );
    w.histogram(
        "callpulse_speed_of_answer_seconds",
        "Time from start to answer of answered inbound calls.",
        &all.speed_of_answer_hist,
        all.speed_of_answer_ms as f64 / 1000.0,
        all.speed_of_answer_calls,
    );
    w.histogram(
        "callpulse_handle_time_seconds",
        "Talk time plus reported after-call work of answered calls with a known answer time.",
        &all.handle_time_hist,
        all.handle_time_ms as f64 / 1000.0,
        all.handled_calls,
    );

    let now = crate::pipeline::now();
    let live = state.live.summary(now);
    for (name, help, value) in [
        (
            "callpulse_active_calls",
            "Calls in progress.",
            live.active_calls as f64,
        ),
        (
            "callpulse_ringing_calls",
            "Calls in progress, not answered and not in a reported queue.",
            live.ringing_calls as f64,
        ),
        (
            "callpulse_callers_in_queue",
            "Inbound calls in progress not yet answered.",
            live.callers_in_queue as f64,
        ),
        (
            "callpulse_longest_wait_seconds",
            "Longest current wait of an inbound caller not yet answered.",
            live.longest_wait_seconds,
        ),
    ] {
        w.family(name, "gauge", help);
        w.sample(name, &[], value);
    }
    w.family("callpulse_agents", "gauge", "Agents by state.");
    for (label, n) in [
        ("available", live.agents_available),
        ("busy", live.agents_busy),
        ("away", live.agents_away),
        ("offline", live.agents_offline),
    ] {
        w.sample("callpulse_agents", &[("state", label)], n as f64);
    }

    let c = &state.counters;
    for (name, help, counter) in [
        (
            "callpulse_webhooks_received_total",
            "Authentic LiveKit webhooks stored.",
            &c.webhooks_stored,
        ),
        (
            "callpulse_webhooks_duplicate_total",
            "Authentic LiveKit webhooks already stored (redeliveries).",
            &c.webhooks_duplicate,
        ),
        (
            "callpulse_webhooks_rejected_total",
            "Webhooks refused for a missing or bad signature.",
            &c.webhooks_rejected,
        ),
        (
            "callpulse_webhooks_quarantined_total",
            "Authentic webhooks that could not be decoded, kept in quarantine.",
            &c.webhooks_quarantined,
        ),
        (
            "callpulse_app_events_received_total",
            "Application events stored.",
            &c.app_events_stored,
        ),
        (
            "callpulse_calls_closed_by_timeout_total",
            "Calls closed because their events stopped arriving.",
            &c.calls_closed_by_timeout,
        ),
        (
            "callpulse_cdr_pipeline_events_loaded_total",
            "Call events the CDR pipeline read back from the store for calls whose events it did \
             not hold (a call's first sight, or one it had let go): far above the events \
             received, it holds too few calls.",
            &c.cdr_pipeline_events_loaded,
        ),
    ] {
        w.family(name, "counter", help);
        w.sample(name, &[], IngestCounters::get(counter) as f64);
    }

    w.family(
        "callpulse_ingest_transactions_total",
        "counter",
        "Transactions that stored webhooks (group commit: webhooks stored / this = events per fsync).",
    );
    w.sample(
        "callpulse_ingest_transactions_total",
        &[],
        state.appender.batches() as f64,
    );

    let (backlog, lag_s) = pipeline_lag(state, now).await?;
    w.family(
        "callpulse_cdr_pipeline_backlog_events",
        "gauge",
        "Call events logged but not yet applied to CDRs.",
    );
    w.sample("callpulse_cdr_pipeline_backlog_events", &[], backlog as f64);
    w.family(
        "callpulse_cdr_pipeline_lag_seconds",
        "gauge",
        "Age of the oldest call event not yet applied to CDRs (0 when caught up).",
    );
    w.sample("callpulse_cdr_pipeline_lag_seconds", &[], lag_s);

    let stranded = state.store.default_partition_rows().await?;
    if !stranded.is_empty() {
        w.family(
            "callpulse_default_partition_rows",
            "gauge",
            "Rows in each table's catch-all partition: above 0, a time partition was missing \
             (the maintenance task moves them where they belong).",
        );
        for d in &stranded {
            w.sample(
                "callpulse_default_partition_rows",
                &[("table", &d.table)],
                d.rows as f64,
            );
        }
    }

    w.family(
        "callpulse_alerts_firing",
        "gauge",
        "Alerts firing now, by rule, severity and trunk (1 each).",
    );
    for alert in state.store.firing_alerts().await? {
        let labels = &alert.notice["labels"];
        let text = |k: &str| labels[k].as_str().unwrap_or_default().to_owned();
        let trunk = text("trunk_id");
        let trunk = if trunk.is_empty() {
            "none".to_owned()
        } else if kept.iter().any(|t| **t == trunk) {
            trunk
        } else {
            "other".to_owned()
        };
        w.sample(
            "callpulse_alerts_firing",
            &[
                ("alertname", &alert.rule),
                ("severity", &text("severity")),
                ("trunk", &trunk),
            ],
            1.0,
        );
    }
    Ok(w.0)
}

/// How many call events wait for the pipeline, and how long the oldest has waited.
async fn pipeline_lag(state: &AppState, now: Timestamp) -> Result<(i64, f64), StoreError> {
    let cursor = state.store.cursor(crate::pipeline::CURSOR).await?;
    let (backlog, oldest) = state.store.call_events_backlog(cursor).await?;
    let lag = oldest.map_or(0.0, |t| (now.millis() - t.millis()).max(0) as f64 / 1000.0);
    Ok((backlog, lag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        let mut w = Writer(String::new());
        w.sample("m", &[("trunk", "ST_\"q\"")], 2.0);
        assert_eq!(w.0, "m{trunk=\"ST_\\\"q\\\"\"} 2\n");
    }
}
