//! Faults of the machine around the server: PostgreSQL dropping every connection (what a
//! database restart looks like from here) and a full disk. The server must answer 503 while it
//! cannot store (so LiveKit retries), lose nothing it acknowledged, and resume by itself.

use crate::helpers::{SAMPLE_EPOCH_S, TestApp, fixture_shifted, start_with_args};
use std::time::Duration;

/// Posts a sample (moved to a minute ago) until it is acknowledged, as LiveKit retries; returns
/// how many 503s it got.
async fn post_until_stored(app: &crate::helpers::RemoteApp, name: &str) -> u32 {
    static SHIFT: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let shift = *SHIFT.get_or_init(|| chrono::Utc::now().timestamp() - 60 - SAMPLE_EPOCH_S);
    let body = fixture_shifted(name, shift);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let status = app.post_webhook(&body).await.status();
        if status == 200 {
            return refused;
        }
        assert_eq!(status, 503, "{name}: only 503 while storage is down");
        refused += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_outcome(base: &str, call: &str, outcome: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::get(format!("{base}/api/v1/cdrs/{call}"))
            .await
            .unwrap();
        if r.status() == 200 {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["cdr"]["outcome"] == outcome {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{call} never became {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_server_reconnects_after_postgresql_drops_every_connection() {
    use sqlx::Connection;
    let db = crate::pg::TestDb::create().await;
    let running = start_with_args(&db.url, None, &[]).await;
    let base = format!("http://{}", running.addr);
    let app = TestApp::client_for(&base);
    for name in ["01", "02"] {
        assert_eq!(post_until_stored(&app, name).await, 0);
    }
    wait_for_outcome(&base, "SCL_9piNuUTbRzfj", "in_progress").await;

    // Every connection of the server (pool, listener, leases) is cut, as by a restart.
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let admin = db.url.replace(&format!("/{name}"), "/postgres");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        cut.len() >= 3,
        "the pool, the listener and the leases: {cut:?}"
    );

    let mut refused = 0;
    for name in ["03", "04", "05", "06", "07"] {
        refused += post_until_stored(&app, name).await;
    }
    eprintln!("503s after the cut: {refused}");
    // The pipeline took its lease again and built the call to its end.
    wait_for_outcome(&base, "SCL_9piNuUTbRzfj", "answered").await;
    let live: serde_json::Value = reqwest::get(format!("{base}/api/v1/live"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        live["recent_calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["call_id"] == "SCL_9piNuUTbRzfj"),
        "the live board follows again: {live}"
    );
    running.shutdown.cancel();
    running.join().await;
}

/// A tmpfs of its own (the tests run as root, as `scripts/test.sh` does), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a small tmpfs needs root (as scripts/test.sh runs)"
        );
        SmallDisk { dir }
    }

    /// Writes zeros until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Sample 02 as a new event: its own id, so it must be written.
fn new_event(n: usize) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&crate::helpers::fixture("02")).unwrap();
    v["id"] = format!("EV_disk{n:06}").into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn a_full_disk_answers_503_and_writes_resume_when_space_returns() {
    let disk = SmallDisk::mount("4m");
    let db = format!(
        "sqlite://{}",
        disk.dir.path().join("callpulse.db").display()
    );
    let running = start_with_args(&db, None, &[]).await;
    let app = TestApp::client_for(&format!("http://{}", running.addr));
    assert_eq!(app.post_webhook(&new_event(0)).await.status(), 200);

    let filler = disk.fill();
    let mut acked = 1;
    let mut refused = Vec::new();
    for n in 1..2000 {
        let r = app.post_webhook(&new_event(n)).await;
        match r.status().as_u16() {
            200 => acked += 1,
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "unavailable", "{body}");
                refused.push(n);
                if refused.len() == 5 {
                    break;
                }
            }
            other => panic!("a full disk must answer 503, not {other}"),
        }
    }
    assert!(!refused.is_empty(), "the disk never filled");

    std::fs::remove_file(filler).unwrap();
    for &n in &refused {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while app.post_webhook(&new_event(n)).await.status() != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes never resumed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked += 1;
    }
    let stats: serde_json::Value = reqwest::get(format!("{}/api/v1/ingest", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["events_in_log"], acked,
        "every acknowledged event, and only those, is in the log"
    );
    running.shutdown.cancel();
    running.join().await;
}
