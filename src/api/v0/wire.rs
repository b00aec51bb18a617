//! v0 wire types (QoD 0.10.1): the create body and SessionInfo. Identifiers and flows are
//! parsed by the v1 translation (same schemas); timestamps are Unix seconds here.

use serde::{Deserialize, Serialize};

use crate::api::v1::wire::{ApplicationServerWire, DeviceWire, FlowInfo, PortsSpecWire};
use crate::domain::{Device, Session};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionBody {
    pub device: Option<DeviceWire>,
    pub application_server: Option<ApplicationServerWire>,
    pub device_ports: Option<PortsSpecWire>,
    pub application_server_ports: Option<PortsSpecWire>,
    pub qos_profile: Option<String>,
    pub webhook: Option<WebhookWire>,
    pub duration: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWire {
    pub notification_url: Option<String>,
    pub notification_auth_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendBody {
    pub requested_additional_duration: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookInfo {
    notification_url: String,
}

/// SessionInfo of 0.10.1. `startedAt` and `expiresAt` are required there: before the network
/// confirmed, they are the creation time and the end the requested duration would give.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    session_id: String,
    device: Device,
    #[serde(flatten)]
    flow: FlowInfo,
    qos_profile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookInfo>,
    duration: i64,
    started_at: i64,
    expires_at: i64,
    qos_status: &'static str,
}

impl From<&Session> for SessionInfo {
    fn from(s: &Session) -> Self {
        let started = s.started_at.unwrap_or(s.created_at);
        let expires = s
            .expires_at
            .unwrap_or(started + chrono::Duration::seconds(s.duration_secs));
        Self {
            session_id: s.id.to_string(),
            device: s.device.clone(),
            flow: FlowInfo::from(&s.flow),
            qos_profile: s.qos_profile.clone(),
            webhook: s.sink.clone().map(|url| WebhookInfo {
                notification_url: url,
            }),
            duration: s.duration_secs,
            started_at: started.timestamp(),
            expires_at: expires.timestamp(),
            qos_status: s.status.as_str(),
        }
    }
}
