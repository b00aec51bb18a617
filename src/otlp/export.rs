//! The exporter task: batches closed spans and posts them to the collector, retrying what the
//! OTLP/HTTP spec calls retryable (no answer, 429, 502, 503, 504) a few times with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{mpsc, oneshot};

use super::encode;
use super::layer::Finished;

/// Spans waiting for the exporter; beyond this they are dropped (counted).
const BUFFER: usize = 8192;
/// Spans per export request.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Each try's limit (the collector is expected near: a sidecar or the node's agent).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per batch after the first.
const RETRIES: usize = 3;
/// At most one warning per this long about spans lost.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The layer's end of the buffer.
pub struct SpanSender {
    pub(super) spans: mpsc::Sender<Finished>,
    pub(super) dropped: Arc<AtomicU64>,
}

pub struct Exporter {
    spans: mpsc::Receiver<Finished>,
    dropped: Arc<AtomicU64>,
    url: reqwest::Url,
    http: reqwest::Client,
    resource: Vec<(&'static str, String)>,
}

/// Stops the exporter after it sent what it holds.
pub struct Shutdown {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Shutdown {
    /// Sends the spans still buffered, for at most `limit`.
    pub async fn flush(self, limit: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(limit, self.done).await.is_err() {
            tracing::warn!(
                "the trace exporter did not finish in {limit:?}; its last spans are lost"
            );
        }
    }
}

impl Exporter {
    pub(super) fn new(url: reqwest::Url) -> anyhow::Result<(SpanSender, Self)> {
        let (sender, spans) = mpsc::channel(BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("qod/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the trace exporter's HTTP client")?;
        let resource = vec![
            ("service.name", "qod".to_owned()),
            ("service.version", env!("CARGO_PKG_VERSION").to_owned()),
            // Random per process, as the conventions suggest: two nodes never share one.
            ("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ];
        let sender = SpanSender {
            spans: sender,
            dropped: dropped.clone(),
        };
        Ok((
            sender,
            Self {
                spans,
                dropped,
                url,
                http,
                resource,
            },
        ))
    }

    /// Runs the exporter on the current runtime until `Shutdown::flush`.
    pub fn spawn(self) -> Shutdown {
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(self.run(stopped));
        Shutdown { stop, done }
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut lost = Lost::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let stopping = tokio::select! {
                _ = &mut stopped => true,
                n = self.spans.recv_many(&mut batch, MAX_BATCH) => n == 0,
            };
            if !stopping {
                let until = tokio::time::Instant::now() + BATCH_DELAY;
                while batch.len() < MAX_BATCH {
                    let room = MAX_BATCH - batch.len();
                    tokio::select! {
                        n = self.spans.recv_many(&mut batch, room) => if n == 0 { break },
                        () = tokio::time::sleep_until(until) => break,
                    }
                }
            } else {
                while let Ok(span) = self.spans.try_recv() {
                    batch.push(span);
                }
            }
            for chunk in batch.chunks(MAX_BATCH) {
                if let Err(e) = self.send(chunk, !stopping).await {
                    lost.spans(chunk.len() as u64, &e);
                }
            }
            batch.clear();
            lost.dropped(self.dropped.swap(0, Ordering::Relaxed));
            if stopping {
                return;
            }
        }
    }

    /// Posts one batch; retried when the collector may take it later (not while stopping).
    async fn send(&self, spans: &[Finished], retry: bool) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&encode::request(&self.resource, spans))?;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(if retry { RETRIES } else { 0 })
            .with_jitter()
            .build();
        loop {
            let answer = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let error = match answer {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if retryable(r.status()) => {
                    anyhow::anyhow!("the collector answered {}", r.status())
                }
                Ok(r) => anyhow::bail!("the collector refused the spans: {}", r.status()),
                Err(e) => anyhow::Error::new(e).context("the collector did not answer"),
            };
            match delays.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(error),
            }
        }
    }
}

fn retryable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// Spans that never reached the collector, told in the log at most once a minute.
#[derive(Default)]
struct Lost {
    count: u64,
    last_warned: Option<Instant>,
}

impl Lost {
    fn spans(&mut self, n: u64, why: &anyhow::Error) {
        self.count += n;
        if self.last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(spans = self.count, error = %format!("{why:#}"), "trace spans were not exported");
            self.count = 0;
            self.last_warned = Some(Instant::now());
        }
    }

    fn dropped(&mut self, n: u64) {
        if n > 0 {
            self.spans(n, &anyhow::anyhow!("the exporter's buffer was full"));
        }
    }
}
