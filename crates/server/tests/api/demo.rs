//! The demo's history: past calls written into the log become CDRs like any other events.

use callpulse_core::{BuildParams, Outcome, Timestamp};
use callpulse_server::simulate::history::{History, backfill};
use callpulse_server::store::CdrQuery;

#[tokio::test]
async fn demo_history_becomes_finished_calls_spread_over_the_past_days() {
    let app = crate::helpers::spawn_app().await;
    let store = app.running.state.store.clone();
    let now = callpulse_server::pipeline::now();
    let history = History {
        days: 3,
        peak_calls_per_hour: 40.0,
        tz: chrono_tz::UTC,
        seed: 5,
    };
    let calls = backfill(store.as_ref(), &history, now).await.unwrap();
    assert!(calls > 100, "three days at up to 40 calls an hour: {calls}");
    callpulse_server::pipeline::catch_up(
        store.as_ref(),
        &BuildParams {
            now,
            ..BuildParams::default()
        },
        None,
    )
    .await
    .unwrap();
    let cdrs = store
        .list_cdrs(&CdrQuery {
            limit: 100_000,
            ..CdrQuery::default()
        })
        .await
        .unwrap();
    assert!(cdrs.len() as u64 >= calls, "{} CDRs", cdrs.len());
    let start = Timestamp(now.millis() - 3 * 86_400_000);
    assert!(
        cdrs.iter()
            .all(|c| c.start_time >= start && c.start_time < now)
    );
    assert!(cdrs.iter().all(|c| c.outcome != Outcome::InProgress));
    let days: std::collections::BTreeSet<i64> = cdrs
        .iter()
        .map(|c| c.start_time.millis() / 86_400_000)
        .collect();
    assert!(days.len() >= 3, "calls on every day: {days:?}");
    let outcomes: std::collections::BTreeSet<Outcome> = cdrs.iter().map(|c| c.outcome).collect();
    assert!(outcomes.len() >= 4, "a realistic mix: {outcomes:?}");
}
