//! A network in-process, with configurable latency, transient failures and refusals, and a
//! grant ledger persisted in the database so tests can prove no grant leaks or doubles.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::SqlitePool;

use super::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::clock::SharedClock;
use crate::config::SimSettings;
use crate::store::ledger;
use crate::store::writer::Writer;

pub struct SimulatedNetwork {
    pool: SqlitePool,
    writer: Writer,
    clock: SharedClock,
    settings: SimSettings,
}

impl SimulatedNetwork {
    pub fn new(
        writer: Writer,
        pool: SqlitePool,
        clock: SharedClock,
        settings: SimSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            writer,
            clock,
            settings,
        })
    }

    /// Grants the network currently holds.
    pub async fn active_grants(&self) -> anyhow::Result<i64> {
        let mut conn = self.pool.acquire().await?;
        ledger::active_count(&mut conn).await
    }

    async fn call_delay(&self) -> Result<(), NetworkError> {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
        if self.settings.failure_rate > 0.0 && rand::rng().random_bool(self.settings.failure_rate) {
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
        let mut tx = self.writer.begin().await.map_err(Self::db_error)?;
        let existing = ledger::find_by_session(&mut tx, req.session)
            .await
            .map_err(Self::db_error)?;
        let grant = match existing {
            Some(g) if !g.released => Grant {
                id: g.grant_id,
                lease_until: Some(req.until),
            },
            Some(_) => {
                return Err(NetworkError::Refused(
                    "session's grant was already released".into(),
                ));
            }
            None => {
                if self.settings.refuse_rate > 0.0
                    && rand::rng().random_bool(self.settings.refuse_rate)
                {
                    return Err(NetworkError::Refused("simulated refusal".into()));
                }
                let id = format!("sim-{}", uuid::Uuid::new_v4());
                ledger::insert(&mut tx, &id, req.session, self.clock.now(), req.until)
                    .await
                    .map_err(Self::db_error)?;
                Grant {
                    id,
                    lease_until: Some(req.until),
                }
            }
        };
        tx.commit().await.map_err(Self::db_error)?;
        Ok(grant)
    }

    async fn renew(&self, grant: &GrantRef, until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        self.call_delay().await?;
        let mut tx = self.writer.begin().await.map_err(Self::db_error)?;
        let id = match &grant.grant_id {
            Some(id) => id.clone(),
            None => ledger::find_by_session(&mut tx, grant.session)
                .await
                .map_err(Self::db_error)?
                .map(|g| g.grant_id)
                .ok_or_else(|| NetworkError::Refused("no grant for session".into()))?,
        };
        let extended = ledger::extend_lease(&mut tx, &id, until)
            .await
            .map_err(Self::db_error)?;
        tx.commit().await.map_err(Self::db_error)?;
        if extended {
            Ok(Grant {
                id,
                lease_until: Some(until),
            })
        } else {
            Err(NetworkError::Refused("grant is not active".into()))
        }
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        self.call_delay().await?;
        let mut tx = self.writer.begin().await.map_err(Self::db_error)?;
        let id = match &grant.grant_id {
            Some(id) => Some(id.clone()),
            None => ledger::find_by_session(&mut tx, grant.session)
                .await
                .map_err(Self::db_error)?
                .map(|g| g.grant_id),
        };
        if let Some(id) = id {
            ledger::release(&mut tx, &id, self.clock.now())
                .await
                .map_err(Self::db_error)?;
        }
        tx.commit().await.map_err(Self::db_error)?;
        Ok(())
    }
}
