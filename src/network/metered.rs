//! The network port with every request counted and timed, by operation and outcome.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::metrics::Metrics;

pub struct MeteredNetwork {
    inner: Arc<dyn Network>,
    metrics: Metrics,
}

impl MeteredNetwork {
    pub fn wrap(inner: Arc<dyn Network>, metrics: Metrics) -> Arc<dyn Network> {
        Arc::new(Self { inner, metrics })
    }

    fn count<T>(&self, operation: &str, started: Instant, answer: &Result<T, NetworkError>) {
        let outcome = match answer {
            Ok(_) => "ok",
            Err(NetworkError::Refused(_)) => "refused",
            Err(NetworkError::Retryable(_)) => "failed",
            Err(NetworkError::Busy { .. }) => "busy",
        };
        self.metrics
            .network_requests
            .with_label_values(&[operation, outcome])
            .inc();
        self.metrics
            .network_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Network for MeteredNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        let started = Instant::now();
        let answer = self.inner.provision(req).await;
        self.count("provision", started, &answer);
        answer
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        let started = Instant::now();
        let answer = self.inner.renew(grant, until).await;
        self.count("renew", started, &answer);
        answer
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        let started = Instant::now();
        let answer = self.inner.release(grant).await;
        self.count("release", started, &answer);
        answer
    }

    async fn check(&self) -> Result<(), NetworkError> {
        let started = Instant::now();
        let answer = self.inner.check().await;
        self.count("check", started, &answer);
        answer
    }
}
