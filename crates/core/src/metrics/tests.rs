//! One test per formula of METRICS.md §4, and the property that tallies kept incrementally (with
//! rewrites subtracting their old contribution) equal the tally computed from the final CDRs.

use super::*;
use crate::cdr::{AnswerSource, Cdr, Direction, Outcome};
use crate::event::{Timestamp, TransferType};
use proptest::prelude::*;

fn cdr(direction: Direction, outcome: Outcome) -> Cdr {
    crate::cdr::sample("SCL_x", direction, outcome)
}

fn answered(direction: Direction, answer_after_s: i64, talk_s: i64) -> Cdr {
    let mut c = cdr(direction, Outcome::Answered);
    c.answer_time = Some(Timestamp(answer_after_s * 1000));
    c.end_time = Some(Timestamp((answer_after_s + talk_s) * 1000));
    c.answer_source = AnswerSource::Inferred;
    c
}

fn metrics(cdrs: &[Cdr]) -> Metrics {
    tally_cdrs(cdrs, &MetricParams::default()).metrics()
}

#[test]
fn empty_window_has_null_ratios() {
    let m = metrics(&[]);
    assert_eq!(m.total_calls, 0);
    assert_eq!(m.answer_rate, None);
    assert_eq!(m.error_rate, None);
    assert_eq!(m.avg_handle_time_seconds, None);
    assert_eq!(m.p50_speed_of_answer_seconds, None);
}

#[test]
fn answer_rate_is_over_inbound_calls_only() {
    let m = metrics(&[
        answered(Direction::Inbound, 5, 60),
        cdr(Direction::Inbound, Outcome::NoAnswer),
        cdr(Direction::Outbound, Outcome::Busy),
        cdr(Direction::Outbound, Outcome::Busy),
    ]);
    assert_eq!(m.answer_rate, Some(0.5));
    assert_eq!(m.total_calls, 4);
}

#[test]
fn in_progress_calls_are_counted_but_not_rated() {
    let m = metrics(&[
        answered(Direction::Inbound, 5, 60),
        cdr(Direction::Inbound, Outcome::InProgress),
    ]);
    assert_eq!(m.in_progress_calls, 1);
    assert_eq!(m.total_calls, 1);
    assert_eq!(m.answer_rate, Some(1.0));
}

#[test]
fn abandonment_excludes_short_abandons_and_failed_calls() {
    let mut short = cdr(Direction::Inbound, Outcome::Abandoned);
    short.short_abandon = true;
    let m = metrics(&[
        cdr(Direction::Inbound, Outcome::Abandoned),
        short,
        answered(Direction::Inbound, 5, 60),
        answered(Direction::Inbound, 5, 60),
        cdr(Direction::Inbound, Outcome::Failed),
    ]);
    // queued = 5 inbound − 1 failed = 4; minus 1 short abandon = 3; 1 abandon that is not short.
    assert_eq!(m.abandonment_rate, Some(1.0 / 3.0));
    assert_eq!(m.abandoned_calls, 2);
    assert_eq!(m.short_abandoned_calls, 1);
}

#[test]
fn speed_of_answer_counts_ring_and_queue_once() {
    let mut queued = answered(Direction::Inbound, 40, 60);
    queued.queue_wait_seconds = Some(30.0);
    queued.ring_duration_seconds = Some(10.0);
    let m = metrics(&[
        queued,
        answered(Direction::Inbound, 10, 60),
        answered(Direction::Outbound, 90, 60),
    ]);
    assert_eq!(m.avg_speed_of_answer_seconds, Some(25.0));
    assert_eq!(m.p50_speed_of_answer_seconds, Some(11.0));
    assert_eq!(m.p99_speed_of_answer_seconds, Some(41.0));
}

#[test]
fn handle_time_adds_wrap_up_and_skips_unknown_answer_times() {
    let mut with_wrap = answered(Direction::Inbound, 5, 100);
    with_wrap.wrap_up_seconds = 20.0;
    let mut unknown = cdr(Direction::Outbound, Outcome::Answered);
    unknown.answer_source = AnswerSource::None;
    let m = metrics(&[with_wrap, answered(Direction::Outbound, 5, 60), unknown]);
    assert_eq!(m.avg_handle_time_seconds, Some(90.0));
    assert_eq!(m.answered_calls, 3);
}

#[test]
fn service_level_counts_answers_within_the_threshold() {
    let mut short = cdr(Direction::Inbound, Outcome::Abandoned);
    short.short_abandon = true;
    let m = metrics(&[
        answered(Direction::Inbound, 10, 60),
        answered(Direction::Inbound, 20, 60),
        answered(Direction::Inbound, 21, 60),
        cdr(Direction::Inbound, Outcome::NoAnswer),
        cdr(Direction::Inbound, Outcome::Abandoned),
        short,
    ]);
    // 2 within 20 s ÷ (3 answered + 1 no answer + 1 abandon that is not short)
    assert_eq!(m.service_level, Some(0.4));
}

#[test]
fn transfer_error_and_connect_rates() {
    let mut transferred = answered(Direction::Inbound, 5, 60);
    transferred.transfer_type = Some(TransferType::Cold);
    let m = metrics(&[
        transferred,
        answered(Direction::Inbound, 5, 60),
        answered(Direction::Outbound, 5, 60),
        cdr(Direction::Outbound, Outcome::Failed),
        cdr(Direction::Outbound, Outcome::NoAnswer),
    ]);
    assert_eq!(m.transfer_rate, Some(1.0 / 3.0));
    assert_eq!(m.error_rate, Some(0.2));
    assert_eq!(m.connect_rate, Some(1.0 / 3.0));
}

fn arb_cdr() -> impl Strategy<Value = Cdr> {
    (
        any::<bool>(),
        0..6usize,
        0i64..400,
        0i64..4000,
        any::<bool>(),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(|(inbound, o, ring, talk, short, transfer, wrap)| {
            let outcome = Outcome::ALL[o];
            // The builder makes abandoned calls inbound only (METRICS.md §3 rule 4).
            let direction = if inbound || outcome == Outcome::Abandoned {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let mut c = if outcome == Outcome::Answered {
                answered(direction, ring, talk)
            } else {
                cdr(direction, outcome)
            };
            c.short_abandon = short && outcome == Outcome::Abandoned;
            c.transfer_type =
                (transfer && outcome == Outcome::Answered).then_some(TransferType::Warm);
            c.wrap_up_seconds = f64::from(wrap) * 7.5;
            c
        })
}

proptest! {
    #[test]
    fn incremental_tallies_equal_the_tally_of_the_final_cdrs(
        versions in proptest::collection::vec((0..20usize, arb_cdr()), 1..120),
    ) {
        let params = MetricParams::default();
        let mut current: std::collections::BTreeMap<usize, Cdr> = Default::default();
        let mut rollup = Tally::default();
        for (call, version) in versions {
            if let Some(old) = current.insert(call, version.clone()) {
                rollup.add(&Tally::of(&old, &params), -1);
            }
            rollup.add(&Tally::of(&version, &params), 1);
        }
        let direct = tally_cdrs(current.values(), &params);
        prop_assert_eq!(&rollup, &direct);
        prop_assert_eq!(rollup.metrics(), direct.metrics());
        let m = direct.metrics();
        for r in [m.answer_rate, m.abandonment_rate, m.service_level, m.transfer_rate, m.error_rate, m.connect_rate].into_iter().flatten() {
            prop_assert!((0.0..=1.0).contains(&r), "ratio {} out of range", r);
        }
    }
}
