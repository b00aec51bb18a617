//! Fresh PostgreSQL databases for the tests, on the cluster that `scripts/test-all` starts
//! (`QOD_TEST_POSTGRES_URL`, an administrator's URL). Without it, PostgreSQL tests are skipped
//! with a line on stderr, unless `QOD_REQUIRE_POSTGRES` is set (the test command sets it, so
//! that CI cannot pass by skipping).
#![allow(dead_code)]

use sqlx::{Connection, Executor, PgConnection};

pub const URL_VAR: &str = "QOD_TEST_POSTGRES_URL";

/// The administrator's URL, or None (after saying so) when PostgreSQL tests are skipped.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("QOD_REQUIRE_POSTGRES").is_some() => {
            panic!(
                "{URL_VAR} is not set but QOD_REQUIRE_POSTGRES is: start a cluster with scripts/pg-cluster"
            )
        }
        Err(_) => {
            eprintln!("{test}: skipped, {URL_VAR} is not set (scripts/test-all sets it)");
            None
        }
    }
}

/// A new, empty database on the cluster of `admin`; its URL.
pub async fn create_database(admin: &str) -> String {
    let name = format!("qod_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .expect("the test cluster answers");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("database created");
    conn.close().await.ok();
    let mut url = reqwest::Url::parse(admin).expect("a URL");
    url.set_path(&name);
    url.to_string()
}

/// A fresh database for `test`, or None when PostgreSQL tests are skipped.
pub async fn fresh_database(test: &str) -> Option<String> {
    Some(create_database(&admin_url(test)?).await)
}
