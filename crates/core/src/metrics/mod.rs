//! Metrics over a window (METRICS.md §4).
//!
//! A `Tally` is the additive contribution of CDRs: counts, sums and fixed histograms. Tallies add
//! and subtract exactly, so rollups can be corrected when a CDR is rewritten and merged across any
//! buckets; `Tally::metrics` turns one into the ratios of the contract. A ratio whose denominator
//! is 0 is `None`, never 0.

pub mod histogram;
pub mod judge;
#[cfg(test)]
mod tests;

use crate::cdr::{AnswerSource, Cdr, Direction, Outcome};
use serde::{Deserialize, Serialize};

pub use histogram::Histogram;

/// Longer durations are nonsense from broken clocks; they are capped so sums cannot overflow.
const MAX_DURATION_MS: i64 = 31 * 24 * 3600 * 1000;

/// Settings that decide a CDR's contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricParams {
    /// Service-level threshold: inbound calls answered within this many seconds (default 20).
    pub service_level_seconds: f64,
}

impl Default for MetricParams {
    fn default() -> Self {
        MetricParams {
            service_level_seconds: 20.0,
        }
    }
}

/// `counters` (the scalar fields by value, in a fixed order, for storage codecs) and
/// `counters_mut`, from one list of fields.
macro_rules! counter_accessors {
    ($($field:ident),*) => {
        /// The scalar counters in a fixed order, for storage codecs.
        pub fn counters(&self) -> [i64; Self::COUNTERS] {
            [$(self.$field),*]
        }

        fn counters_mut(&mut self) -> [&mut i64; Self::COUNTERS] {
            [$(&mut self.$field),*]
        }
    };
}

/// Additive counts and sums over a set of CDRs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub total_calls: i64,
    pub inbound_calls: i64,
    pub outbound_calls: i64,
    pub answered_calls: i64,
    pub inbound_answered: i64,
    pub outbound_answered: i64,
    pub abandoned_calls: i64,
    pub short_abandoned_calls: i64,
    pub failed_calls: i64,
    pub busy_calls: i64,
    pub no_answer_calls: i64,
    pub inbound_no_answer: i64,
    pub inbound_failed: i64,
    pub transferred_calls: i64,
    pub in_progress_calls: i64,
    /// Inbound answered within the service-level threshold.
    pub answered_within_threshold: i64,
    /// Answered calls whose answer time is known: their talk time plus after-call work.
    pub handled_calls: i64,
    pub handle_time_ms: i64,
    /// Inbound answered calls with a known answer time: Σ (answer − start).
    pub speed_of_answer_calls: i64,
    pub speed_of_answer_ms: i64,
    pub speed_of_answer_hist: Histogram,
    pub handle_time_hist: Histogram,
}

impl Tally {
    /// The contribution of one CDR.
    pub fn of(cdr: &Cdr, params: &MetricParams) -> Tally {
        let mut t = Tally::default();
        if cdr.outcome == Outcome::InProgress {
            t.in_progress_calls = 1;
            return t;
        }
        let inbound = cdr.direction == Direction::Inbound;
        let answered = cdr.outcome == Outcome::Answered;
        t.total_calls = 1;
        t.inbound_calls = i64::from(inbound);
        t.outbound_calls = i64::from(!inbound);
        t.answered_calls = i64::from(answered);
        t.inbound_answered = i64::from(answered && inbound);
        t.outbound_answered = i64::from(answered && !inbound);
        t.abandoned_calls = i64::from(cdr.outcome == Outcome::Abandoned);
        t.short_abandoned_calls = i64::from(cdr.outcome == Outcome::Abandoned && cdr.short_abandon);
        t.failed_calls = i64::from(cdr.outcome == Outcome::Failed);
        t.inbound_failed = i64::from(cdr.outcome == Outcome::Failed && inbound);
        t.busy_calls = i64::from(cdr.outcome == Outcome::Busy);
        t.no_answer_calls = i64::from(cdr.outcome == Outcome::NoAnswer);
        t.inbound_no_answer = i64::from(cdr.outcome == Outcome::NoAnswer && inbound);
        t.transferred_calls = i64::from(answered && cdr.transfer_type.is_some());
        if !answered {
            return t;
        }
        if let (Some(answer), AnswerSource::Reported | AnswerSource::Inferred) =
            (cdr.answer_time, cdr.answer_source)
        {
            let talk_ms = cdr
                .end_time
                .map_or(0, |end| end.millis().saturating_sub(answer.millis()))
                .clamp(0, MAX_DURATION_MS);
            let wrap_ms = (cdr.wrap_up_seconds * 1000.0)
                .round()
                .clamp(0.0, MAX_DURATION_MS as f64) as i64;
            let handle_ms = talk_ms + wrap_ms;
            t.handled_calls = 1;
            t.handle_time_ms = handle_ms;
            t.handle_time_hist.record(handle_ms);
            if inbound {
                let speed_ms = answer
                    .millis()
                    .saturating_sub(cdr.start_time.millis())
                    .clamp(0, MAX_DURATION_MS);
                t.speed_of_answer_calls = 1;
                t.speed_of_answer_ms = speed_ms;
                t.speed_of_answer_hist.record(speed_ms);
                let threshold_ms = (params.service_level_seconds * 1000.0).round() as i64;
                t.answered_within_threshold = i64::from(speed_ms <= threshold_ms);
            }
        }
        t
    }

    /// Adds (`sign` = 1) or removes (`sign` = -1) another tally.
    pub fn add(&mut self, other: &Tally, sign: i64) {
        for (mine, theirs) in self.counters_mut().into_iter().zip(other.counters()) {
            *mine += sign * theirs;
        }
        self.speed_of_answer_hist
            .add(&other.speed_of_answer_hist, sign);
        self.handle_time_hist.add(&other.handle_time_hist, sign);
    }

    /// The number of scalar counters (`counters` lists them in a fixed order).
    pub const COUNTERS: usize = 20;

    counter_accessors!(
        total_calls,
        inbound_calls,
        outbound_calls,
        answered_calls,
        inbound_answered,
        outbound_answered,
        abandoned_calls,
        short_abandoned_calls,
        failed_calls,
        busy_calls,
        no_answer_calls,
        inbound_no_answer,
        inbound_failed,
        transferred_calls,
        in_progress_calls,
        answered_within_threshold,
        handled_calls,
        handle_time_ms,
        speed_of_answer_calls,
        speed_of_answer_ms
    );

    /// A tally from `counters` and the two histograms.
    pub fn from_parts(
        counters: [i64; Self::COUNTERS],
        speed_of_answer_hist: Histogram,
        handle_time_hist: Histogram,
    ) -> Tally {
        let mut t = Tally {
            speed_of_answer_hist,
            handle_time_hist,
            ..Tally::default()
        };
        for (mine, value) in t.counters_mut().into_iter().zip(counters) {
            *mine = value;
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// The metrics of METRICS.md §4.
    pub fn metrics(&self) -> Metrics {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        let mean_seconds = |ms: i64, n: i64| (n > 0).then(|| ms as f64 / n as f64 / 1000.0);
        let queued = self.inbound_calls - self.inbound_failed;
        let not_short = self.abandoned_calls - self.short_abandoned_calls;
        Metrics {
            total_calls: self.total_calls,
            inbound_calls: self.inbound_calls,
            outbound_calls: self.outbound_calls,
            answered_calls: self.answered_calls,
            abandoned_calls: self.abandoned_calls,
            short_abandoned_calls: self.short_abandoned_calls,
            failed_calls: self.failed_calls,
            busy_calls: self.busy_calls,
            no_answer_calls: self.no_answer_calls,
            transferred_calls: self.transferred_calls,
            in_progress_calls: self.in_progress_calls,
            answer_rate: ratio(self.inbound_answered, self.inbound_calls),
            avg_handle_time_seconds: mean_seconds(self.handle_time_ms, self.handled_calls),
            abandonment_rate: ratio(not_short, queued - self.short_abandoned_calls),
            avg_speed_of_answer_seconds: mean_seconds(
                self.speed_of_answer_ms,
                self.speed_of_answer_calls,
            ),
            service_level: ratio(
                self.answered_within_threshold,
                self.inbound_answered + self.inbound_no_answer + not_short,
            ),
            transfer_rate: ratio(self.transferred_calls, self.answered_calls),
            error_rate: ratio(self.failed_calls, self.total_calls),
            connect_rate: ratio(self.outbound_answered, self.outbound_calls),
            p50_speed_of_answer_seconds: self.speed_of_answer_hist.quantile_seconds(0.50),
            p90_speed_of_answer_seconds: self.speed_of_answer_hist.quantile_seconds(0.90),
            p99_speed_of_answer_seconds: self.speed_of_answer_hist.quantile_seconds(0.99),
            p50_handle_time_seconds: self.handle_time_hist.quantile_seconds(0.50),
            p90_handle_time_seconds: self.handle_time_hist.quantile_seconds(0.90),
            p99_handle_time_seconds: self.handle_time_hist.quantile_seconds(0.99),
        }
    }
}

/// The metrics of one window or group, as METRICS.md §4 and §8 name them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    pub total_calls: i64,
    pub inbound_calls: i64,
    pub outbound_calls: i64,
    pub answered_calls: i64,
    pub abandoned_calls: i64,
    pub short_abandoned_calls: i64,
    pub failed_calls: i64,
    pub busy_calls: i64,
    pub no_answer_calls: i64,
    pub transferred_calls: i64,
    pub in_progress_calls: i64,
    pub answer_rate: Option<f64>,
    pub avg_handle_time_seconds: Option<f64>,
    pub abandonment_rate: Option<f64>,
    pub avg_speed_of_answer_seconds: Option<f64>,
    pub service_level: Option<f64>,
    pub transfer_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub connect_rate: Option<f64>,
    pub p50_speed_of_answer_seconds: Option<f64>,
    pub p90_speed_of_answer_seconds: Option<f64>,
    pub p99_speed_of_answer_seconds: Option<f64>,
    pub p50_handle_time_seconds: Option<f64>,
    pub p90_handle_time_seconds: Option<f64>,
    pub p99_handle_time_seconds: Option<f64>,
}

/// Computes a window's tally straight from its CDRs (the reference the rollups must equal).
pub fn tally_cdrs<'a>(cdrs: impl IntoIterator<Item = &'a Cdr>, params: &MetricParams) -> Tally {
    let mut total = Tally::default();
    for cdr in cdrs {
        total.add(&Tally::of(cdr, params), 1);
    }
    total
}
