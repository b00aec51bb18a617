//! A network in-process, with configurable latency, transient failures and refusals, and a
//! grant ledger persisted in the database so tests can prove no grant leaks or doubles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::clock::SharedClock;
use crate::config::SimSettings;
use crate::random::SharedRandom;
use crate::store::{GrantLedger, Provisioned};

pub struct SimulatedNetwork {
    ledger: Arc<dyn GrantLedger>,
    clock: SharedClock,
    random: SharedRandom,
    settings: SimSettings,
    /// How renewals are answered (`Renewals as u8`); tests switch it.
    renewals: AtomicU8,
}

/// How the simulated network answers renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Renewals {
    Granted,
    /// Refused for good, as a network that stops extending grants.
    Refused,
    /// Failing with a retryable error.
    Failing,
}

impl SimulatedNetwork {
    pub fn new(
        ledger: Arc<dyn GrantLedger>,
        clock: SharedClock,
        random: SharedRandom,
        settings: SimSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            clock,
            random,
            settings,
            renewals: AtomicU8::new(Renewals::Granted as u8),
        })
    }

    pub fn set_renewals(&self, answer: Renewals) {
        self.renewals.store(answer as u8, Ordering::Relaxed);
    }

    /// Grants the network currently holds.
    pub async fn active_grants(&self) -> anyhow::Result<i64> {
        self.ledger.active().await
    }

    async fn call_delay(&self) -> Result<(), NetworkError> {
        if !self.settings.latency.is_zero() {
            self.clock.sleep(self.settings.latency).await;
        }
        if self.random.chance(self.settings.failure_rate) {
            return Err(NetworkError::Retryable(
                "simulated transient failure".into(),
            ));
        }
        Ok(())
    }

    fn db_error(e: anyhow::Error) -> NetworkError {
        NetworkError::Retryable(format!("simulated network storage: {e:#}"))
    }
}

#[async_trait]
impl Network for SimulatedNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        self.call_delay().await?;
        let refuse = self.random.chance(self.settings.refuse_rate);
        let fresh_id = format!("sim-{}", self.random.uuid());
        let (session, now, until) = (req.session, self.clock.now(), req.until);
        let outcome = self
            .ledger
            .provision(session, fresh_id, refuse, now, until)
            .await
            .map_err(Self::db_error)?;
        match outcome {
            Provisioned::Granted(id) => Ok(Grant {
                confirmed: true,
                id,
                lease_until: Some(req.until),
            }),
            Provisioned::AlreadyReleased => Err(NetworkError::Refused(
                "session's grant was already released".into(),
            )),
            Provisioned::Refused => Err(NetworkError::Refused("simulated refusal".into())),
        }
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        self.call_delay().await?;
        match self.renewals.load(Ordering::Relaxed) {
            r if r == Renewals::Refused as u8 => {
                return Err(NetworkError::Refused("renewals refused".into()));
            }
            r if r == Renewals::Failing as u8 => {
                return Err(NetworkError::Retryable("renewals failing".into()));
            }
            _ => {}
        }
        let extended = self
            .ledger
            .extend(grant.session, grant.grant_id.clone(), until)
            .await
            .map_err(Self::db_error)?;
        match extended {
            Some(id) => Ok(Grant {
                confirmed: true,
                id,
                lease_until: Some(until),
            }),
            None => Err(NetworkError::Refused("grant is not active".into())),
        }
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        self.call_delay().await?;
        self.ledger
            .release(grant.session, grant.grant_id.clone(), self.clock.now())
            .await
            .map_err(Self::db_error)
    }
}
