//! The network port with every answer recorded (into the buffer of the job that asked).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::input::{Input, NetworkAnswer};
use crate::clock::SharedClock;
use crate::network::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};

pub struct RecordedNetwork {
    inner: Arc<dyn Network>,
    clock: SharedClock,
}

impl RecordedNetwork {
    pub fn wrap(inner: Arc<dyn Network>, clock: SharedClock) -> Arc<dyn Network> {
        Arc::new(Self { inner, clock })
    }

    fn note(&self, session: crate::domain::SessionId, op: &str, answer: NetworkAnswer) {
        super::push(
            self.clock.now(),
            Some(session),
            Input::Network {
                op: op.into(),
                answer,
            },
        );
    }
}

#[async_trait]
impl Network for RecordedNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        let answer = self.inner.provision(req).await;
        self.note(req.session, "provision", NetworkAnswer::of_grant(&answer));
        answer
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        let answer = self.inner.renew(grant, until).await;
        self.note(grant.session, "renew", NetworkAnswer::of_grant(&answer));
        answer
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        let answer = self.inner.release(grant).await;
        self.note(grant.session, "release", NetworkAnswer::of_release(&answer));
        answer
    }

    async fn check(&self) -> Result<(), NetworkError> {
        self.inner.check().await
    }
}
