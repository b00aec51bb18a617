//! v0 QoS profiles: the list (filtered by `name` and `status`) and one by name. The catalogue's
//! profiles have exactly the 0.10.1 QosProfile fields.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::error::{V0Error, bad};
use crate::api::AppState;
use crate::api::v1::wire::check_profile_name;
use crate::auth::Caller;
use crate::domain::{ProfileStatus, QosProfile};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/qos-profiles",
            get(list).fallback(|| async { V0Error::method_not_allowed("GET") }),
        )
        .route(
            "/qos-profiles/{name}",
            get(read).fallback(|| async { V0Error::method_not_allowed("GET") }),
        )
}

#[derive(Debug, Deserialize)]
struct Filter {
    name: Option<String>,
    status: Option<String>,
}

/// The profiles on offer: all unrestricted ones, and with a three-legged token those offered to
/// its device as well (v0 has no device parameter).
async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<QosProfile>>, V0Error> {
    let Query(filter) =
        query.map_err(|e| V0Error::bad_request(bad::INVALID_QUERY_PARAMETER, e.body_text()))?;
    let status = filter
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<ProfileStatus>(serde_json::Value::from(s)).map_err(|_| {
                V0Error::bad_request(
                    bad::INVALID_QUERY_PARAMETER,
                    "status must be one of ACTIVE, INACTIVE, DEPRECATED",
                )
            })
        })
        .transpose()?;
    let profiles = state
        .service
        .profiles(caller.device.as_ref(), filter.name.as_deref(), status)
        .await?;
    if profiles.is_empty() {
        return Err(V0Error::not_found("No QoS profile matches the criteria."));
    }
    Ok(Json(profiles))
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<QosProfile>, V0Error> {
    check_profile_name(&name).map_err(|e| V0Error::bad_request(bad::URL_PARAMETER, e.message))?;
    state
        .service
        .profiles(caller.device.as_ref(), Some(&name), None)
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| V0Error::not_found(format!("QoS profile {name} does not exist.")))
}
