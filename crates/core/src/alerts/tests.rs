//! The lifecycle against a fake clock: one observation every 10 s.

use super::*;

const TICK: i64 = 10_000;

/// Error rate above 5 %, clear at or under 4 %, at least 20 calls, for 2 minutes.
fn error_rate(rate: f64, calls: i64) -> Observation {
    observe(Some(rate), calls, 20, Comparison::Above, 0.05, 0.04)
}

/// Feeds observations one tick apart from t = 0; returns the transitions with their tick index.
fn run(observations: &[Observation], for_ms: i64) -> (AlertState, Vec<(usize, Transition)>) {
    let mut state = AlertState::Inactive;
    let mut out = vec![];
    for (i, o) in observations.iter().enumerate() {
        let (next, t) = step(state, *o, for_ms, Timestamp(i as i64 * TICK));
        state = next;
        out.extend(t.map(|t| (i, t)));
    }
    (state, out)
}

#[test]
fn fires_only_after_the_condition_held_for_its_duration() {
    let bad = error_rate(0.10, 50);
    let (state, transitions) = run(&[bad; 12], 120_000);
    assert_eq!(transitions, vec![], "11 ticks (110 s) is not yet 2 minutes");
    assert!(matches!(state, AlertState::Pending { since } if since == Timestamp(0)));
    let (state, transitions) = run(&[bad; 13], 120_000);
    assert_eq!(
        transitions,
        vec![(
            12,
            Transition::Fired {
                at: Timestamp(120_000)
            }
        )]
    );
    assert_eq!(
        state,
        AlertState::Firing {
            since: Timestamp(120_000)
        }
    );
}

#[test]
fn a_pending_alert_that_recovers_never_fires() {
    let bad = error_rate(0.10, 50);
    let good = error_rate(0.01, 50);
    let mut seq = vec![bad; 8];
    seq.push(good);
    seq.extend([bad; 8]);
    let (state, transitions) = run(&seq, 120_000);
    assert_eq!(
        transitions,
        vec![],
        "the clock restarts after a good reading"
    );
    assert!(matches!(state, AlertState::Pending { since } if since == Timestamp(9 * TICK)));
}

#[test]
fn a_value_hovering_at_the_threshold_does_not_flap() {
    // Fires at once (for = 0), then hovers between 4.5 % and 5.5 %: never under the 4 % clear.
    let seq: Vec<Observation> = (0..30)
        .map(|i| error_rate(if i % 2 == 0 { 0.055 } else { 0.045 }, 100))
        .collect();
    let (state, transitions) = run(&seq, 0);
    assert_eq!(
        transitions,
        vec![(0, Transition::Fired { at: Timestamp(0) })]
    );
    assert!(matches!(state, AlertState::Firing { .. }));
}

#[test]
fn resolves_once_when_the_value_clears() {
    let mut seq = vec![error_rate(0.10, 50); 3];
    seq.extend([
        error_rate(0.045, 50),
        error_rate(0.04, 50),
        error_rate(0.01, 50),
    ]);
    let (state, transitions) = run(&seq, 0);
    assert_eq!(
        transitions,
        vec![
            (0, Transition::Fired { at: Timestamp(0) }),
            (
                4,
                Transition::Resolved {
                    fired_at: Timestamp(0),
                    at: Timestamp(4 * TICK)
                }
            ),
        ]
    );
    assert_eq!(state, AlertState::Inactive);
}

#[test]
fn too_few_calls_neither_fire_nor_resolve_but_no_data_resolves() {
    // 3 failures out of 4 calls is 75 %, but 4 calls are under the minimum of 20.
    let (state, transitions) = run(&[error_rate(0.75, 4); 30], 0);
    assert_eq!((state, transitions), (AlertState::Inactive, vec![]));

    let seq = [error_rate(0.10, 50), error_rate(0.0, 3), error_rate(0.0, 3)];
    let (state, transitions) = run(&seq, 0);
    assert_eq!(transitions.len(), 1, "a thin sample does not resolve");
    assert!(matches!(state, AlertState::Firing { .. }));

    let seq = [
        error_rate(0.10, 50),
        observe(None, 0, 20, Comparison::Above, 0.05, 0.04),
    ];
    let (_, transitions) = run(&seq, 0);
    assert!(matches!(
        transitions.last(),
        Some((1, Transition::Resolved { .. }))
    ));
}

#[test]
fn below_rules_clear_upwards() {
    // Agents available below 1, cleared at 1 or more.
    let obs = |v: f64| observe(Some(v), 1, 0, Comparison::Below, 1.0, 1.0);
    let (_, transitions) = run(&[obs(0.0), obs(0.0), obs(2.0)], 0);
    assert_eq!(transitions.len(), 2);
    assert!(Comparison::parse(">=").unwrap().holds(5.0, 5.0));
    assert!(!Comparison::parse(">").unwrap().holds(5.0, 5.0));
    assert_eq!(Comparison::parse("=="), None);
}
