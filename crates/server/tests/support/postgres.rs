//! A PostgreSQL database of its own for one test, dropped when the test ends.
//!
//! The server is `CALLPULSE_TEST_POSTGRES` (an admin URL; default the local cluster as user
//! `postgres`). `scripts/test.sh` makes sure it runs; a test that cannot reach it fails.

pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("CALLPULSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let cut = base.rfind('/').map_or(base.len(), |i| i);
    format!("{}/{db}", &base[..cut])
}

impl TestDb {
    pub async fn create() -> TestDb {
        use sqlx::Connection;
        let admin = admin_url();
        let name = format!("callpulse_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed by this test: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("creating the test database");
        conn.close().await.ok();
        TestDb {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
