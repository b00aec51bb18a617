//! v0 sessions: create, read, delete, extend.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::error::{V0Error, bad};
use super::wire::{CreateSessionBody, ExtendBody, SessionInfo, WebhookWire};
use crate::api::AppState;
use crate::api::auth::require_v0;
use crate::api::json::read_json;
use crate::api::v1::sessions::parse_sink;
use crate::api::v1::wire::{check_profile_name, parse_flow};
use crate::auth::{Caller, scopes};
use crate::domain::{ApiVersion, Flow, PlainCredential, SessionId};
use crate::notify::address_policy::{SinkPolicy, is_header_safe_token};
use crate::service::{ExtensionRule, NewSession};

/// 0.10.1: a session lasts 24 h when no duration is given, and 24 h at most.
const MAX_DURATION_SECS: i64 = 86_400;
/// 0.10.1: the remaining time after an extension is capped at 24 h.
const MAX_REMAINING_SECS: i64 = 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/sessions",
            post(create).fallback(|| async { V0Error::method_not_allowed("POST") }),
        )
        .route(
            "/sessions/{sessionId}",
            get(read)
                .delete(delete)
                .fallback(|| async { V0Error::method_not_allowed("GET, DELETE") }),
        )
        .route(
            "/sessions/{sessionId}/extend",
            post(extend).fallback(|| async { V0Error::method_not_allowed("POST") }),
        )
}

/// A JSON body whose failures answer in the seed's model.
pub struct V0Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for V0Json<T> {
    type Rejection = V0Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, V0Error> {
        Ok(V0Json(read_json(req).await?))
    }
}

fn missing(field: &str) -> V0Error {
    V0Error::bad_request(
        bad::MISSING_BODY_FIELD,
        format!("Expected property is missing: {field}"),
    )
}

fn invalid(description: impl Into<String>) -> V0Error {
    V0Error::bad_request(bad::INVALID_BODY_FIELD, description)
}

fn parse_session_id(raw: &str) -> Result<SessionId, V0Error> {
    SessionId::parse_canonical(raw).ok_or_else(|| {
        V0Error::bad_request(
            bad::URL_PARAMETER,
            "sessionId must be a UUID (lowercase, with hyphens)",
        )
    })
}

/// `webhook`: the sink, and its bearer token (20 to 256 characters) if any.
fn parse_webhook(
    webhook: Option<WebhookWire>,
    policy: &SinkPolicy,
) -> Result<(Option<String>, Option<PlainCredential>), V0Error> {
    let Some(w) = webhook else {
        return Ok((None, None));
    };
    let url = w
        .notification_url
        .ok_or_else(|| missing("webhook.notificationUrl"))?;
    let sink = parse_sink(Some(url), policy)
        .map_err(|_| invalid("webhook.notificationUrl is not a valid URL for notifications"))?;
    let credential = match w.notification_auth_token {
        None => None,
        Some(t) if (20..=256).contains(&t.chars().count()) && is_header_safe_token(&t) => {
            Some(PlainCredential {
                access_token: t,
                // A v0 token has no expiry of its own.
                access_token_expires_utc: DateTime::<Utc>::from_timestamp(253_402_300_799, 0)
                    .unwrap_or_default(),
            })
        }
        Some(_) => {
            return Err(invalid(
                "webhook.notificationAuthToken must have 20 to 256 visible ASCII characters",
            ));
        }
    };
    Ok((sink, credential))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    V0Json(body): V0Json<CreateSessionBody>,
) -> Result<Response, V0Error> {
    require_v0(&caller, scopes::V0_WRITE)?;
    let device = body.device.ok_or_else(|| missing("device"))?;
    let server = body
        .application_server
        .ok_or_else(|| missing("applicationServer"))?;
    let qos_profile = body.qos_profile.ok_or_else(|| missing("qosProfile"))?;
    check_profile_name(&qos_profile)?;
    let duration_secs = body.duration.unwrap_or(MAX_DURATION_SECS);
    if !(1..=MAX_DURATION_SECS).contains(&duration_secs) {
        return Err(invalid(format!(
            "duration must be between 1 and {MAX_DURATION_SECS} seconds"
        )));
    }
    let flow = parse_flow(
        Some(server),
        body.device_ports,
        body.application_server_ports,
    )?;
    let (sink, sink_credential) = parse_webhook(body.webhook, state.service.sink_policy())?;
    let named = device.into_named_device()?;
    let flow = Flow {
        device_addresses: named.addresses,
        ..flow
    };
    let device = named.device;
    // v0 always names the device; a three-legged token may only name its own.
    if caller.device.as_ref().is_some_and(|bound| *bound != device) {
        return Err(V0Error::new(
            StatusCode::FORBIDDEN,
            52,
            "The access token was issued for another device.",
        ));
    }
    let session = state
        .service
        .create(NewSession {
            device,
            device_keys: named.keys,
            flow,
            qos_profile,
            duration_secs,
            sink,
            sink_credential,
            api: ApiVersion::V0,
            owner: caller.client.clone(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(SessionInfo::from(&session))).into_response())
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, V0Error> {
    require_v0(&caller, scopes::V0_READ)?;
    let session = state.service.get(parse_session_id(&id)?, &caller).await?;
    Ok(Json(SessionInfo::from(&session)))
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, V0Error> {
    require_v0(&caller, scopes::V0_DELETE)?;
    state
        .service
        .delete(parse_session_id(&id)?, &caller)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    V0Json(body): V0Json<ExtendBody>,
) -> Result<Json<SessionInfo>, V0Error> {
    require_v0(&caller, scopes::V0_WRITE)?;
    let id = parse_session_id(&id)?;
    let additional = body
        .requested_additional_duration
        .ok_or_else(|| missing("requestedAdditionalDuration"))?;
    if !(1..MAX_REMAINING_SECS).contains(&additional) {
        return Err(invalid(
            "requestedAdditionalDuration must be between 1 and 86399 seconds",
        ));
    }
    let session = state
        .service
        .extend(
            id,
            &caller,
            additional,
            ExtensionRule::RemainingAtMost(MAX_REMAINING_SECS),
        )
        .await?;
    Ok(Json(SessionInfo::from(&session)))
}
