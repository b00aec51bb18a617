//! `/quality-on-demand/v1`: the CAMARA QoD 1.1 facade over the service.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::wire::{
    ApplicationServerWire, DeviceWire, NamedDevice, PortsSpecWire, SessionInfo, check_profile_name,
    parse_flow,
};
use crate::api::AppState;
use crate::api::auth::require_v1;
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::auth::{Caller, scopes};
use crate::domain::{ApiVersion, Device, Flow, PlainCredential, SessionId};
use crate::notify::address_policy::{SinkPolicy, is_header_safe_token};
use crate::service::{ExtensionRule, NewSession};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions", post(create))
        .route("/sessions/{sessionId}", get(read).delete(delete))
        .route("/sessions/{sessionId}/extend", post(extend))
        .route("/retrieve-sessions", post(retrieve))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSessionBody {
    device: Option<DeviceWire>,
    application_server: Option<ApplicationServerWire>,
    device_ports: Option<PortsSpecWire>,
    application_server_ports: Option<PortsSpecWire>,
    qos_profile: Option<String>,
    duration: Option<i64>,
    sink: Option<String>,
    sink_credential: Option<SinkCredentialWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SinkCredentialWire {
    credential_type: Option<String>,
    access_token: Option<String>,
    access_token_expires_utc: Option<String>,
    access_token_type: Option<String>,
}

/// `^https:\/\/.+$` per the spec, or `http://` when the operator allows insecure sinks.
pub(crate) fn parse_sink(
    sink: Option<String>,
    policy: &SinkPolicy,
) -> Result<Option<String>, ApiError> {
    let Some(sink) = sink else { return Ok(None) };
    let why = if sink.len() > 2048 {
        Err("the sink URL is longer than 2048 characters".to_owned())
    } else {
        policy.check(&sink).map(|_| ())
    };
    match why {
        Ok(()) => Ok(Some(sink)),
        Err(why) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_SINK",
            format!("sink not valid for the specified protocol: {why}"),
        )),
    }
}

fn parse_credential(c: Option<SinkCredentialWire>) -> Result<Option<PlainCredential>, ApiError> {
    let Some(c) = c else { return Ok(None) };
    match c.credential_type.as_deref() {
        Some("ACCESSTOKEN") => {}
        Some("PLAIN" | "REFRESHTOKEN") => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_CREDENTIAL",
                "Only Access token is supported",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "sinkCredential.credentialType is not a known type",
            ));
        }
        None => {
            return Err(ApiError::invalid_argument(
                "sinkCredential.credentialType is required",
            ));
        }
    }
    match c.access_token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        None => {
            return Err(ApiError::invalid_argument(
                "sinkCredential.accessTokenType is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TOKEN",
                "Only bearer token is supported",
            ));
        }
    }
    let token = c
        .access_token
        .filter(|t| t.len() <= 4096 && is_header_safe_token(t))
        .ok_or_else(|| {
            ApiError::invalid_argument(
                "sinkCredential.accessToken is required: at most 4096 visible ASCII characters",
            )
        })?;
    let expires = c
        .access_token_expires_utc
        .as_deref()
        .ok_or_else(|| ApiError::invalid_argument("sinkCredential.accessTokenExpiresUtc is required"))
        .and_then(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid_argument("sinkCredential.accessTokenExpiresUtc must be an RFC 3339 date-time with time zone"))
        })?;
    Ok(Some(PlainCredential {
        access_token: token,
        access_token_expires_utc: expires,
    }))
}

fn parse_duration(field: &str, value: Option<i64>) -> Result<i64, ApiError> {
    let v = value.ok_or_else(|| ApiError::invalid_argument(format!("{field} is required")))?;
    if !(1..=i64::from(i32::MAX)).contains(&v) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "OUT_OF_RANGE",
            format!("{field} must be between 1 and {}", i32::MAX),
        ));
    }
    Ok(v)
}

/// The device a request is about: a three-legged token's own (the body must not name one),
/// else the body's.
pub(crate) fn subject_device(
    caller: &Caller,
    device: Option<DeviceWire>,
) -> Result<Device, ApiError> {
    subject_named_device(caller, device).map(|named| named.device)
}

/// The device a request is about (from the token or the body), with what the body said of it.
fn subject_named_device(
    caller: &Caller,
    device: Option<DeviceWire>,
) -> Result<NamedDevice, ApiError> {
    match (&caller.device, device) {
        (Some(_), Some(_)) => Err(ApiError::unnecessary_identifier()),
        (Some(bound), None) => Ok(NamedDevice::only(bound.clone())),
        (None, Some(wire)) => wire.into_named_device(),
        (None, None) => Err(ApiError::missing_identifier()),
    }
}

fn parse_session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse_canonical(raw).ok_or_else(|| {
        ApiError::invalid_argument("sessionId must be a UUID (lowercase, with hyphens)")
    })
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateSessionBody>,
) -> Result<Response, ApiError> {
    require_v1(&caller, scopes::V1_CREATE)?;
    let request = parse_create(body, &caller, state.service.sink_policy())?;
    let session = state.service.create(request).await?;
    let info = SessionInfo::for_caller(&session, &caller);
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// A create request's body, in the order the spec lists the fields, into a valid request.
fn parse_create(
    body: CreateSessionBody,
    caller: &Caller,
    sink_policy: &SinkPolicy,
) -> Result<NewSession, ApiError> {
    let qos_profile = body
        .qos_profile
        .ok_or_else(|| ApiError::invalid_argument("qosProfile is required"))?;
    check_profile_name(&qos_profile)?;
    let flow = parse_flow(
        body.application_server,
        body.device_ports,
        body.application_server_ports,
    )?;
    let duration_secs = parse_duration("duration", body.duration)?;
    let sink = parse_sink(body.sink, sink_policy)?;
    let sink_credential = parse_credential(body.sink_credential)?;
    let named = subject_named_device(caller, body.device)?;
    let flow = Flow {
        device_addresses: named.addresses,
        ..flow
    };
    Ok(NewSession {
        device: named.device,
        device_keys: named.keys,
        flow,
        qos_profile,
        duration_secs,
        sink,
        sink_credential,
        api: ApiVersion::V1,
        owner: caller.client.clone(),
    })
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    require_v1(&caller, scopes::V1_READ)?;
    let session = state.service.get(parse_session_id(&id)?, &caller).await?;
    Ok(Json(SessionInfo::for_caller(&session, &caller)))
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_v1(&caller, scopes::V1_DELETE)?;
    state
        .service
        .delete(parse_session_id(&id)?, &caller)
        .await?;
    // CAMARA's test definitions for deleteSession expect the JSON media type even on the
    // empty 204; harmless to everyone else.
    Ok((
        StatusCode::NO_CONTENT,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtendBody {
    requested_additional_duration: Option<i64>,
}

async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> Result<Json<SessionInfo>, ApiError> {
    require_v1(&caller, scopes::V1_UPDATE)?;
    let id = parse_session_id(&id)?;
    let additional = parse_duration(
        "requestedAdditionalDuration",
        body.requested_additional_duration,
    )?;
    let session = state
        .service
        .extend(id, &caller, additional, ExtensionRule::ProfileMaximum)
        .await?;
    Ok(Json(SessionInfo::for_caller(&session, &caller)))
}

#[derive(Debug, Deserialize)]
struct RetrieveBody {
    device: Option<DeviceWire>,
}

async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RetrieveBody>,
) -> Result<Json<Vec<SessionInfo>>, ApiError> {
    require_v1(&caller, scopes::V1_RETRIEVE_BY_DEVICE)?;
    let device = subject_device(&caller, body.device)?;
    let sessions = state.service.retrieve(&device, &caller).await?;
    Ok(Json(
        sessions
            .iter()
            .map(|s| SessionInfo::for_caller(s, &caller))
            .collect(),
    ))
}

#[cfg(test)]
mod fuzz {
    //! Property tests of the create parser: any JSON, well-formed or not, either becomes a
    //! request whose every value is valid or a 4xx; it never panics.
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::api::fuzzing::{json_value, near_valid_create};

    fn check(body: Value, caller: &Caller) {
        let Ok(body) = serde_json::from_value::<CreateSessionBody>(body) else {
            return;
        };
        match parse_create(body, caller, &SinkPolicy::default()) {
            Ok(request) => {
                assert!((1..=i64::from(i32::MAX)).contains(&request.duration_secs));
                assert!(check_profile_name(&request.qos_profile).is_ok());
                assert!(
                    request
                        .sink
                        .as_deref()
                        .is_none_or(|s| s.starts_with("https://"))
                );
                if let Device::PhoneNumber(p) = &request.device {
                    assert!(crate::domain::PhoneNumber::parse(p.as_str()).is_ok());
                }
            }
            Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::api::fuzzing::cases()))]

        #[test]
        fn any_json_body_parses_or_is_refused_with_a_4xx(body in json_value()) {
            check(body, &Caller::anonymous());
        }

        #[test]
        fn near_valid_bodies_parse_or_are_refused_with_a_4xx(body in near_valid_create()) {
            check(body.clone(), &Caller::anonymous());
            let bound = Caller::new(
                crate::domain::ClientId("c".into()),
                Default::default(),
                Some(Device::PhoneNumber(crate::domain::PhoneNumber::parse("+33600000000").unwrap())),
            );
            check(body, &bound);
        }
    }

    #[test]
    fn the_generator_reaches_valid_requests() {
        let body = json!({"device": {"phoneNumber": "+33612345678"},
            "applicationServer": {"ipv4Address": "198.51.100.0/24"}, "qosProfile": "QOS_E",
            "duration": 60, "devicePorts": {"ranges": [{"from": 1, "to": 2}], "ports": [80]}});
        let body: CreateSessionBody = serde_json::from_value(body).unwrap();
        assert!(parse_create(body, &Caller::anonymous(), &SinkPolicy::default()).is_ok());
    }
}
