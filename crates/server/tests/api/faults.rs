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

/// A PostgreSQL cluster of this test's own (so stopping it disturbs no other test), run by the
/// `postgres` user from Debian's binaries; stopped and removed on drop.
struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivateCluster {
    fn create() -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql is installed (scripts/test.sh installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run_as_postgres(
            "chown",
            &["-R", "postgres", &dir.path().display().to_string()],
            true,
        );
        let cluster = PrivateCluster { dir, bin, port };
        let initdb = cluster.bin.join("initdb").display().to_string();
        run_as_postgres(
            &initdb,
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            false,
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.data();
        let mut all = vec!["-D", data.as_str()];
        all.extend_from_slice(args);
        run_as_postgres(&pg_ctl, &all, false);
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.pg_ctl(&["-w", "-l", &log, "-o", &options, "start"]);
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.data();
        let _ = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "-D",
                &data,
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// Runs a command as the `postgres` user (or as root when `as_root`), which must succeed.
fn run_as_postgres(program: &str, args: &[&str], as_root: bool) {
    let output = if as_root {
        std::process::Command::new(program).args(args).output()
    } else {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", program])
            .args(args)
            .output()
    }
    .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_server_rides_out_a_postgresql_restart() {
    let cluster = PrivateCluster::create();
    let running = start_with_args(&cluster.url(), None, &[]).await;
    let base = format!("http://{}", running.addr);
    let app = TestApp::client_for(&base);
    for name in ["01", "02"] {
        assert_eq!(post_until_stored(&app, name).await, 0);
    }
    wait_for_outcome(&base, "SCL_9piNuUTbRzfj", "in_progress").await;

    cluster.stop();
    // While the database is down, a webhook is refused with 503 (LiveKit retries it).
    let body = crate::helpers::fixture("03");
    let down = app.post_webhook(&body).await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start();

    for name in ["03", "04", "05", "06", "07"] {
        post_until_stored(&app, name).await;
    }
    wait_for_outcome(&base, "SCL_9piNuUTbRzfj", "answered").await;
    running.shutdown.cancel();
    running.join().await;
}
