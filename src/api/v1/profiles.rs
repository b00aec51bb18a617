//! `/qos-profiles/v1`: the CAMARA QoS Profiles 1.1 facade over the catalogue.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::wire::{DeviceWire, check_profile_name};
use crate::api::AppState;
use crate::api::auth::require_v1;
use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::auth::{Caller, scopes};
use crate::domain::{ProfileStatus, QosProfile};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/retrieve-qos-profiles", post(retrieve))
        .route("/qos-profiles/{name}", get(read))
}

#[derive(Debug, Deserialize)]
struct RetrieveBody {
    device: Option<DeviceWire>,
    name: Option<String>,
    status: Option<ProfileStatus>,
}

/// The profiles on offer to the device (the body's, or a three-legged token's): without one,
/// only the unrestricted profiles; an unknown device is 404, one not served 422.
async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RetrieveBody>,
) -> Result<Json<Vec<QosProfile>>, ApiError> {
    require_v1(&caller, scopes::PROFILES_READ)?;
    if caller.device.is_some() && body.device.is_some() {
        return Err(ApiError::unnecessary_identifier());
    }
    let device = match body.device {
        Some(device) => Some(device.into_device()?),
        None => caller.device.clone(),
    };
    if let Some(name) = &body.name {
        check_profile_name(name)?;
    }
    let profiles = state
        .service
        .profiles(device.as_ref(), body.name.as_deref(), body.status)
        .await?;
    Ok(Json(profiles))
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<QosProfile>, ApiError> {
    require_v1(&caller, scopes::PROFILES_READ)?;
    check_profile_name(&name)?;
    state
        .service
        .profiles(caller.device.as_ref(), Some(&name), None)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(ApiError::not_found)
}
