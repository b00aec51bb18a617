//! The test server's database, read the same way on either backend: rows as JSON objects
//! (column name → value), `?` placeholders (numbered for PostgreSQL), binds as text.
#![allow(dead_code)]

use serde_json::{Map, Value};
use sqlx::{Column, Row, TypeInfo, ValueRef};

#[derive(Clone)]
pub enum TestDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Which backend the black-box tests run on (`QOD_TEST_BACKEND=postgres`; SQLite otherwise).
pub fn postgres_backend() -> bool {
    std::env::var("QOD_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// `?` → `$1`, `$2`, ... (the tests' SQL has no `?` inside literals).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl TestDb {
    /// Every row of `sql` as an object of its columns.
    pub async fn rows(&self, sql: &str, binds: &[&str]) -> Vec<Value> {
        match self {
            Self::Sqlite(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                let rows = q
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter().map(sqlite_row).collect()
            }
            Self::Postgres(pool) => {
                let wrapped = format!(
                    "SELECT COALESCE(json_agg(q), '[]')::text FROM ({}) AS q",
                    numbered(sql)
                );
                let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(wrapped));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                let text = q
                    .fetch_one(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                match serde_json::from_str(&text).expect("json_agg gives JSON") {
                    Value::Array(rows) => rows,
                    other => panic!("{sql}: {other}"),
                }
            }
        }
    }

    /// The first column of the first row, if there is a row.
    pub async fn value(&self, sql: &str, binds: &[&str]) -> Option<Value> {
        let rows = self.rows(sql, binds).await;
        let first = rows.into_iter().next()?;
        match first {
            Value::Object(m) => m.into_iter().next().map(|(_, v)| v),
            other => panic!("{sql}: row {other}"),
        }
    }

    /// An integer (a count, a time in milliseconds) the query must give.
    pub async fn int(&self, sql: &str, binds: &[&str]) -> i64 {
        let v = self.value(sql, binds).await;
        v.as_ref()
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("{sql}: no integer but {v:?}"))
    }

    /// Text of the first column of the first row, None without a row or for NULL.
    pub async fn text(&self, sql: &str, binds: &[&str]) -> Option<String> {
        self.value(sql, binds)
            .await
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    /// The first column of every row as text (NULL as "").
    pub async fn texts(&self, sql: &str, binds: &[&str]) -> Vec<String> {
        self.rows(sql, binds)
            .await
            .into_iter()
            .map(|row| match row {
                Value::Object(m) => m
                    .into_iter()
                    .next()
                    .and_then(|(_, v)| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                other => panic!("{sql}: row {other}"),
            })
            .collect()
    }

    /// Runs a statement (a write by hand).
    pub async fn execute(&self, sql: &str, binds: &[&str]) {
        match self {
            Self::Sqlite(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                q.execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Self::Postgres(pool) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(numbered(sql)));
                for b in binds {
                    q = q.bind(b.to_string());
                }
                q.execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// The SQLite pool, for tests of what only the SQLite store has (its writer, its pragmas).
    pub fn sqlite(&self) -> &sqlx::SqlitePool {
        match self {
            Self::Sqlite(pool) => pool,
            Self::Postgres(_) => panic!("a SQLite-only test ran on PostgreSQL"),
        }
    }
}

/// A SQLite row as an object, each value by its stored type.
fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Value {
    let mut m = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).expect("column");
        let v = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => Value::from(row.get::<i64, _>(i)),
                "REAL" => Value::from(row.get::<f64, _>(i)),
                _ => Value::from(row.get::<String, _>(i)),
            }
        };
        m.insert(col.name().to_owned(), v);
    }
    Value::Object(m)
}
