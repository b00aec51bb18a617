//! Status notifications: CloudEvents to the consumer's sink, built at transition time and
//! delivered by the `deliver_notification` job.

pub mod address_policy;
pub mod limiter;
pub mod sink_client;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::api::v1::wire::timestamp;
use crate::domain::session::Transition;
use crate::domain::{ApiVersion, QosStatus, Session, StatusInfo};
use crate::store::NewNotification;

/// The CallbackSink port: where an event goes. `SinkClient` posts it over HTTP; a replay answers
/// as the history recorded.
#[async_trait]
pub trait CallbackSink: Send + Sync + 'static {
    /// One delivery attempt of `body` to `sink`, with the consumer's bearer token if any.
    async fn post(
        &self,
        sink: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
        now: DateTime<Utc>,
    ) -> sink_client::Outcome;
}

pub const V1_EVENT_TYPE: &str = "org.camaraproject.quality-on-demand.v1.qos-status-changed";
pub const V0_EVENT_TYPE: &str = "org.camaraproject.qod.v0.qos-status-changed";

/// A CloudEvents id that names the transition itself (session, revision, target, reason): the
/// same on every replay of a history, different for every event of the server.
fn event_id(session: &Session, t: &Transition) -> Uuid {
    let name = format!("{}/{}/{}/{}", session.id, session.revision, t.to, t.reason);
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

/// The namespace of `event_id` (fixed: changing it changes every id a replay produces).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0c_91d3_2f4e_4b8a_9c57_1e0d_3a6b_f214);

/// The event a transition owes the consumer, if any: AVAILABLE, and UNAVAILABLE except a
/// deletion of a session that never became AVAILABLE.
pub fn for_transition(
    session: &Session,
    t: &Transition,
    at: DateTime<Utc>,
) -> Option<NewNotification> {
    let sink = session.sink.clone()?;
    let status = match t.to {
        s if s == QosStatus::Available.as_str() && t.from != Some(QosStatus::Available) => {
            QosStatus::Available
        }
        s if s == QosStatus::Unavailable.as_str() => QosStatus::Unavailable,
        _ => return None,
    };
    if session.status_info == Some(StatusInfo::DeleteRequested)
        && t.from != Some(QosStatus::Available)
    {
        return None;
    }
    let id = event_id(session, t);
    let trace = crate::trace::current().span;
    let mut data = json!({ "sessionId": session.id.to_string(), "qosStatus": status.as_str() });
    if status == QosStatus::Unavailable
        && let Some(info) = session.status_info
    {
        data["statusInfo"] = json!(info.as_str());
    }
    let mut event = json!({
        "id": id.to_string(),
        "specversion": "1.0",
        "type": match session.api {
            ApiVersion::V0 => V0_EVENT_TYPE,
            ApiVersion::V1 => V1_EVENT_TYPE,
        },
        "time": timestamp(at),
        "datacontenttype": "application/json",
        "data": data,
    });
    // CloudEvents' distributed tracing extension: the span whose change caused the event.
    if let Some(span) = trace {
        event["traceparent"] = json!(span.to_string());
    }
    Some(NewNotification {
        id,
        session_id: session.id,
        sink,
        credential: session.sink_credential.clone(),
        event,
        created_at: at,
    })
}

/// The event as sent: the stored body plus its `source`, the session's URL in the API version
/// the event belongs to.
pub fn with_source(mut event: serde_json::Value, public_url: &str) -> Vec<u8> {
    let session = event["data"]["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let base = if event["type"] == V0_EVENT_TYPE {
        "qod/v0"
    } else {
        "quality-on-demand/v1"
    };
    event["source"] = json!(format!("{public_url}/{base}/sessions/{session}"));
    serde_json::to_vec(&event).expect("JSON values serialise")
}
