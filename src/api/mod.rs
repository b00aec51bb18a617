//! HTTP: the API facades, operational endpoints and the layers around them.

pub mod correlator;
pub mod error;
pub mod json;
pub mod ops;
pub mod v0;
pub mod v1;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Router, extract::State};

use crate::service::Service;
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
}

pub fn router(state: AppState, v0_prefix: Option<&str>) -> Router {
    let mut router = Router::new().nest("/qod/v0", v0::routes());
    if let Some(prefix) = v0_prefix {
        router = router.nest(&format!("{prefix}/qod/v0"), v0::routes());
    }
    router
        .nest("/quality-on-demand/v1", v1::sessions::routes())
        .nest("/qos-profiles/v1", v1::profiles::routes())
        .merge(ops::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn(correlator::layer))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "The requested method is not allowed for this resource.",
    )
}

/// Counts requests by route template (never the raw path: ids would explode the label set).
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", req.method(), p.as_str()))
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await.into_response();
    state
        .service
        .core()
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}
