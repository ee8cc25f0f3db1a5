//! End to end with LiveKit's own Python SDK (`livekit-api`): it signs the sample webhooks the way
//! LiveKit does (FACTS.md §9), posts them, and the CDRs that come out are checked here.

use crate::helpers::*;

fn python() -> String {
    std::env::var("CALLPULSE_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    })
}

#[tokio::test]
async fn webhooks_signed_by_livekits_python_sdk_build_cdrs() {
    let app = spawn_app().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/post_samples_with_livekit_sdk.py"
    );
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/livekit");
    let output = tokio::process::Command::new(python())
        .args([script, &app.base, KEY, SECRET, fixtures])
        .output()
        .await
        .expect("python runs (install livekit-api: see scripts/test.sh)");
    assert!(
        output.status.success(),
        "python script failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("posted 12 webhooks"), "{stdout}");
    app.settle().await;
    for (call, outcome) in [
        ("SCL_9piNuUTbRzfj", "answered"),
        ("SCL_sUdeADeKCykW", "abandoned"),
        ("SCL_8piqEvbFWiyq", "busy"),
        ("SCL_cPcexQZkLqZi", "no_answer"),
        ("SCL_N8wSHegi6wgk", "failed"),
        ("SCL_b8eC8QRc3uCd", "abandoned"),
    ] {
        let body = app
            .wait_for_cdr(call, |c| c["outcome"] != "in_progress")
            .await;
        assert_eq!(body["cdr"]["outcome"], outcome, "{call}");
    }
}
