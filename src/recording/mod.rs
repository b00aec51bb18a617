//! Recording the inputs that drive the server, for replays: API commands, the network's and the
//! sinks' answers, callbacks received, timer firings. Each part that meets an input pushes it to
//! a buffer of the task it runs on (an API request, a job); the store takes the buffer with the
//! task's next write and commits the inputs in that write's transaction, beside the transitions
//! they caused. What no write took (a refused request, a job that changed nothing) is written
//! on its own by whoever opened the buffer.

pub mod export;
pub mod format;
pub mod input;
pub mod network;

use std::cell::RefCell;

use chrono::{DateTime, Utc};

use crate::domain::SessionId;
pub use input::{Input, NetworkAnswer, SinkAnswer};

/// One input as it is stored: when, for which session (when one is known), what.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    pub session: Option<SessionId>,
    pub input: Input,
}

tokio::task_local! {
    static BUFFER: RefCell<Vec<Recorded>>;
    /// The body of the API command being handled, as the facade read it.
    static BODY: RefCell<Option<serde_json::Value>>;
}

/// Runs an API command's handler; returns its output and the body it read (secrets redacted).
pub async fn command<F: Future>(work: F) -> (F::Output, Option<serde_json::Value>) {
    BODY.scope(RefCell::new(None), async move {
        let out = work.await;
        (out, BODY.with(|b| b.borrow_mut().take()))
    })
    .await
}

/// Called by the facades' body reader with the JSON it accepted; kept only inside `command`.
pub fn note_body(bytes: &[u8]) {
    let _ = BODY.try_with(|b| {
        if let Ok(value) = serde_json::from_slice(bytes) {
            *b.borrow_mut() = Some(input::redacted(value));
        }
    });
}

/// Runs `work` with a buffer of its own; returns its output and what no write took.
pub async fn scope<F: Future>(work: F) -> (F::Output, Vec<Recorded>) {
    BUFFER
        .scope(RefCell::new(Vec::new()), async move {
            let out = work.await;
            (out, take())
        })
        .await
}

/// Buffers `input` for the task's next write; does nothing outside a `scope` (recording off,
/// or a part that drives nothing, such as a command-line tool).
pub fn push(at: DateTime<Utc>, session: Option<SessionId>, input: Input) {
    let _ = BUFFER.try_with(|b| {
        b.borrow_mut().push(Recorded { at, session, input });
    });
}

/// What the task buffered so far (the store calls it on the task that writes).
pub fn take() -> Vec<Recorded> {
    BUFFER
        .try_with(|b| std::mem::take(&mut *b.borrow_mut()))
        .unwrap_or_default()
}
