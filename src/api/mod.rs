//! HTTP: the API facades, operational endpoints and the layers around them.

pub mod auth;
pub mod correlator;
pub mod error;
#[cfg(test)]
pub(crate) mod fuzzing;
pub mod json;
pub mod listener;
pub mod network_callbacks;
pub mod openapi;
pub mod ops;
pub mod recording;
pub mod v0;
pub mod v1;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Router, extract::State};

use crate::service::Service;
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub guard: Arc<auth::Guard>,
    /// This server's callback URLs for network notifications, and their check.
    pub callbacks: crate::network::nef::callback::CallbackUrls,
    /// The network sessions are provisioned in, for `/health/network`.
    pub network: Arc<dyn crate::network::Network>,
    /// How long a request's body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Whether API commands are recorded for replays.
    pub record_inputs: bool,
    /// The stored-state counts `/metrics` shows, reused for a second.
    pub census: Arc<ops::CensusCache>,
    /// Whether this node holds the maintenance role (and counts the database for `/metrics`).
    pub leadership: Arc<crate::leader::Leadership>,
}

pub fn router(state: AppState, v0_prefix: Option<&str>) -> Router {
    // Commands are recorded inside authentication (the caller is known) and outside the
    // facades (their answer is final).
    let v0 = || {
        v0::routes()
            .layer(middleware::from_fn_with_state(state.clone(), recording::v0))
            .layer(middleware::from_fn_with_state(state.clone(), auth::v0))
    };
    // A wrong method is answered after authentication, as in v0: callers without a token
    // learn nothing about which routes and methods exist.
    let v1 = |routes: Router<AppState>| {
        routes
            .method_not_allowed_fallback(method_not_allowed)
            .layer(middleware::from_fn_with_state(state.clone(), recording::v1))
            .layer(middleware::from_fn_with_state(state.clone(), auth::v1))
    };
    let mut router = Router::new().nest("/qod/v0", v0());
    if let Some(prefix) = v0_prefix {
        router = router.nest(&format!("{prefix}/qod/v0"), v0());
    }
    router
        .nest("/quality-on-demand/v1", v1(v1::sessions::routes()))
        .nest("/qos-profiles/v1", v1(v1::profiles::routes()))
        .merge(ops::routes())
        .merge(network_callbacks::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn(correlator::layer))
        .layer(middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(middleware::from_fn(limit_uri))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// Stamps the moment by which the request's body must have arrived (`json::read_json`).
async fn body_deadline(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let at = tokio::time::Instant::now() + state.body_timeout;
    req.extensions_mut().insert(json::BodyDeadline(at));
    next.run(req).await
}

/// Longest request target (path and query) served; QoD URIs are well under 200 bytes.
pub const MAX_URI_BYTES: usize = 2048;

/// Whether a request is for the v0 facade, whose errors use the seed's model.
pub(crate) fn is_v0(path: &str) -> bool {
    path.contains("/qod/v0/") || path.ends_with("/qod/v0")
}

async fn limit_uri(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target <= MAX_URI_BYTES {
        return next.run(req).await;
    }
    if is_v0(req.uri().path()) {
        v0::error::V0Error::standard(StatusCode::URI_TOO_LONG, 67).into_response()
    } else {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("The request URI exceeds {MAX_URI_BYTES} bytes."),
        )
        .into_response()
    }
}

/// A handler that panics answers 500 in the v1 format (the panic is logged, never returned).
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(panic = %crate::panics::message(&*panic), "request handler panicked");
    ApiError::internal().into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if is_v0(uri.path()) {
        v0::error::V0Error::not_found("The requested URI or the requested resource does not exist.")
            .into_response()
    } else {
        ApiError::not_found().into_response()
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "The requested method is not allowed for this resource.",
    )
}

/// Counts and times requests by route template (never the raw path: ids would explode the
/// label set) and method.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // The request's span (`correlator::layer`, outside this one) is named after its route.
    tracing::Span::current().record("route", route.as_str());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await.into_response();
    let metrics = &state.service.core().metrics;
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> StatusCode {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_format() {
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "INTERNAL");
        assert!(!body.to_string().contains("handler bug"), "{body}");
    }
}
