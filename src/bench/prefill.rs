//! `--prefill N`: long-lived sessions created before the measured load, so that create latency
//! and expiry lateness can be compared at 1,000 and at 100,000 active sessions. They have no
//! sink (no notifications) and outlive the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// Long enough to outlive any run; the profile's maximum.
const PREFILL_DURATION_SECS: u32 = 86_400;

/// Creates `count` sessions with `concurrency` requests in flight, printing progress each
/// second on stderr. Returns how many were created.
pub async fn run(
    client: &reqwest::Client,
    target: &str,
    token: Option<&str>,
    count: u64,
    concurrency: usize,
    run_id: u32,
) -> anyhow::Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = {
        let (created, failed) = (created.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "prefill t={:>4.0}s created {:>8} of {count}  failed {}",
                    started.elapsed().as_secs_f64(),
                    created.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, created, failed) = (
            client.clone(),
            next.clone(),
            created.clone(),
            failed.clone(),
        );
        let url = format!("{target}/quality-on-demand/v1/sessions");
        let token = token.map(str::to_owned);
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let body = json!({
                    "device": {"phoneNumber": format!("+3{run_id}{n:010}")},
                    "applicationServer": {"ipv4Address": "198.51.100.20"},
                    "qosProfile": "QOS_E",
                    "duration": PREFILL_DURATION_SECS,
                });
                let mut req = client.post(&url).json(&body);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                match req.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        created.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    progress.abort();
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} prefill creates failed");
    Ok(created.load(Ordering::Relaxed))
}
