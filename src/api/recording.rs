//! Records the API commands that may change state (create, extend, delete of either facade)
//! with their answer, before the answer leaves: a caller that saw it can find it in the history.
//! A 5xx answer is no decision and is not recorded.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::auth::Caller;
use crate::domain::SessionId;
use crate::lifecycle::Effects;
use crate::recording::{self, Input, Recorded};

/// A create's answer is read for the new session's id; real ones are a few hundred bytes.
const MAX_CREATED_BYTES: usize = 64 * 1024;

/// Which command a request is: (op, the session its path names).
fn command_of(method: &Method, path: &str) -> Option<(&'static str, Option<SessionId>)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = segments.iter().rposition(|s| *s == "sessions")?;
    let rest = &segments[at + 1..];
    let session = rest.first().and_then(|s| SessionId::parse_canonical(s));
    match (method, rest) {
        (&Method::POST, []) => Some(("create", None)),
        (&Method::POST, [_, "extend"]) => Some(("extend", session)),
        (&Method::DELETE, [_]) => Some(("delete", session)),
        _ => None,
    }
}

pub async fn v0(state: State<AppState>, req: Request, next: Next) -> Response {
    record(state, "v0", req, next).await
}

pub async fn v1(state: State<AppState>, req: Request, next: Next) -> Response {
    record(state, "v1", req, next).await
}

async fn record(
    State(state): State<AppState>,
    api: &'static str,
    req: Request,
    next: Next,
) -> Response {
    // The path within the facade (its prefix is stripped by the nesting).
    let command = command_of(req.method(), req.uri().path());
    let Some((op, mut session)) = command.filter(|_| state.record_inputs) else {
        return next.run(req).await;
    };
    let caller = req.extensions().get::<Caller>().cloned();
    let core = state.service.core();
    let at = core.clock.now();
    let (mut response, body) = recording::command(next.run(req)).await;
    let status = response.status();
    if status.is_server_error() {
        // Not a decision but a failure (the database away, mostly): nothing to replay, and a
        // write now would only hold the answer up.
        return response;
    }
    if op == "create" && status == StatusCode::CREATED {
        let (parts, raw) = response.into_parts();
        let bytes = axum::body::to_bytes(raw, MAX_CREATED_BYTES)
            .await
            .unwrap_or_default();
        session = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["sessionId"].as_str().and_then(SessionId::parse_canonical));
        response = Response::from_parts(parts, Body::from(bytes));
    }
    let input = Input::Command {
        api: api.into(),
        op: op.into(),
        client: caller
            .as_ref()
            .map(|c| c.client.as_str().to_owned())
            .unwrap_or_default(),
        device: caller
            .and_then(|c| c.device)
            .and_then(|d| serde_json::to_value(d).ok()),
        body,
        status: Some(status.as_u16()),
    };
    let fx = Effects {
        inputs: vec![Recorded { at, session, input }],
        ..Effects::default()
    };
    if let Err(e) = core.store.commit(fx).await {
        // The command itself stands; only its trace for replays is missing.
        tracing::warn!(error = %format!("{e:#}"), op, "recording an API command failed");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_told_by_method_and_path() {
        let id = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
        let sid = SessionId::parse_canonical(id);
        let cases = [
            (Method::POST, "/sessions".to_owned(), Some(("create", None))),
            (
                Method::POST,
                format!("/sessions/{id}/extend"),
                Some(("extend", sid)),
            ),
            (
                Method::DELETE,
                format!("/sessions/{id}"),
                Some(("delete", sid)),
            ),
            (Method::GET, format!("/sessions/{id}"), None),
            (Method::POST, "/retrieve-sessions".to_owned(), None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(command_of(&method, &path), expected, "{method} {path}");
        }
    }
}
