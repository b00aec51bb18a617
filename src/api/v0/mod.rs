//! `/qod/v0`: the Orange QoD 0.10.1 facade (CAMARA QoD 0.10.1), a thin translation over the same
//! service as v1, answering errors in the seed's numeric model.

pub mod error;
mod profiles;
mod sessions;
mod wire;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;
use error::V0Error;

pub fn routes() -> Router<AppState> {
    sessions::routes()
        .merge(profiles::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(acceptable))
}

async fn not_found() -> V0Error {
    V0Error::not_found("The requested URI or the requested resource does not exist.")
}

/// 406 when the client accepts no JSON at all.
async fn acceptable(req: Request, next: Next) -> Response {
    let accepts_json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|r| {
            r.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    let ok = accepts_json.is_empty()
        || accepts_json
            .iter()
            .any(|r| matches!(r.as_str(), "*/*" | "application/*" | "application/json"));
    if ok {
        next.run(req).await
    } else {
        V0Error::standard(StatusCode::NOT_ACCEPTABLE, 62).into_response()
    }
}
