//! The device directory port: which devices this deployment serves. The configured rules
//! (`[devices]` in the config file) are the first implementation; an operator's subscriber
//! lookup (HTTP, cached, with a timeout) implements the same trait without touching the
//! service, and answers `Unavailable` when it cannot tell (503 to the caller).

use async_trait::async_trait;

use crate::domain::{Device, Eligibility, Verdict};

#[derive(Debug, thiserror::Error)]
#[error("the device directory cannot answer: {0}")]
pub struct Unavailable(pub String);

#[async_trait]
pub trait DeviceDirectory: Send + Sync + 'static {
    async fn judge(&self, device: &Device) -> Result<Verdict, Unavailable>;
}

#[async_trait]
impl DeviceDirectory for Eligibility {
    async fn judge(&self, device: &Device) -> Result<Verdict, Unavailable> {
        Ok(Eligibility::judge(self, device))
    }
}
