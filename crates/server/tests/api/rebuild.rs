//! `rebuild` recomputes the same CDRs the live pipeline produced, from the log alone.

use crate::helpers::*;
use callpulse_core::BuildParams;

#[tokio::test]
async fn rebuild_gives_the_same_cdrs_as_the_live_path() {
    let app = spawn_app().await;
    let report = app.simulate(7).await;
    assert!(report.calls > 20, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    app.settle().await;
    let store = app.running.state.store.clone();
    let query = callpulse_server::store::CdrQuery {
        limit: 10_000,
        ..Default::default()
    };
    let live = store.list_cdrs(&query).await.unwrap();
    assert!(live.len() as u64 >= report.calls);
    assert!(
        live.iter()
            .any(|c| c.outcome == callpulse_core::Outcome::Answered)
    );
    let params = BuildParams {
        now: callpulse_server::pipeline::now(),
        ..Default::default()
    };
    let rebuilt_report = callpulse_server::rebuild::rebuild(store.as_ref(), &params, |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(rebuilt_report.cdrs as usize, live.len());
    let rebuilt = store.list_cdrs(&query).await.unwrap();
    assert_eq!(rebuilt, live);
}
