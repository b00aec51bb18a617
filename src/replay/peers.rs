//! The peers of a replay: a network and sinks that answer as the history recorded, in the
//! order each session asked, and not before the instant the recorded answer came (so that what
//! happened meanwhile, a deletion while the network was asked, happens meanwhile again). A
//! question the history has no answer for is noted (the replay went where the recording did
//! not) and answered so that the session ends rather than waits.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::history::{NetworkAnswers, SinkAnswers};
use crate::clock::SharedClock;
use crate::domain::SessionId;
use crate::locks::lock;
use crate::network::{Grant, GrantRef, Network, NetworkError, ProvisionRequest};
use crate::notify::CallbackSink;
use crate::notify::sink_client::Outcome;
use crate::queue::TimedWaits;
use crate::recording::NetworkAnswer;
use crate::store::from_millis;

/// Questions a peer had no recorded answer for: (session, what was asked, when).
#[derive(Debug, Default)]
pub struct Unanswered {
    pub asked: Mutex<Vec<(String, String, i64)>>,
}

impl Unanswered {
    fn note(&self, session: &str, what: &str, at_ms: i64) {
        lock(&self.asked).push((session.to_owned(), what.to_owned(), at_ms));
    }
}

/// What the peers share: the clock the answers wait on, and where questions without a
/// recorded answer are noted.
#[derive(Clone)]
pub struct Answering {
    pub clock: SharedClock,
    pub waits: Arc<TimedWaits>,
    pub unanswered: Arc<Unanswered>,
}

impl Answering {
    /// Waits until the recorded answer's instant.
    async fn until(&self, at_ms: i64) {
        self.waits
            .sleep_until(self.clock.as_ref(), from_millis(at_ms))
            .await;
    }

    /// Waits `ms` of virtual time (a synthetic peer's latency).
    pub(super) async fn after(&self, ms: i64) {
        self.until(self.clock.now().timestamp_millis().saturating_add(ms))
            .await;
    }
}

pub struct RecordedNetwork {
    answers: Mutex<NetworkAnswers>,
    answering: Answering,
}

impl RecordedNetwork {
    pub fn new(answers: NetworkAnswers, answering: Answering) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers),
            answering,
        })
    }

    async fn next(&self, session: SessionId, op: &'static str) -> Option<NetworkAnswer> {
        let answer = take(
            &mut lock(&self.answers),
            session,
            |all| {
                let first = all.iter().position(|(asked, ..)| *asked == op)?;
                Some(all.remove(first))
            },
            Vec::is_empty,
        );
        match answer {
            Some((_, at_ms, answer)) => {
                self.answering.until(at_ms).await;
                Some(answer)
            }
            None => {
                let now = self.answering.clock.now().timestamp_millis();
                self.answering
                    .unanswered
                    .note(&session.to_string(), &format!("network {op}"), now);
                None
            }
        }
    }
}

fn unrecorded(op: &str) -> NetworkError {
    NetworkError::Refused(format!("the history recorded no further answer to {op}"))
}

#[async_trait]
impl Network for RecordedNetwork {
    async fn provision(&self, req: &ProvisionRequest) -> Result<Grant, NetworkError> {
        match self.next(req.session, "provision").await {
            Some(answer) => answer.to_grant(),
            None => Err(unrecorded("provision")),
        }
    }

    async fn renew(&self, grant: &GrantRef, _until: DateTime<Utc>) -> Result<Grant, NetworkError> {
        match self.next(grant.session, "renew").await {
            Some(answer) => answer.to_grant(),
            None => Err(unrecorded("renew")),
        }
    }

    async fn release(&self, grant: &GrantRef) -> Result<(), NetworkError> {
        // Without a recorded answer a release counts as done: nothing is left to hold.
        match self.next(grant.session, "release").await {
            Some(answer) => answer.to_release(),
            None => Ok(()),
        }
    }
}

pub struct RecordedSinks {
    answers: Mutex<SinkAnswers>,
    answering: Answering,
}

impl RecordedSinks {
    pub fn new(answers: SinkAnswers, answering: Answering) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers),
            answering,
        })
    }
}

#[async_trait]
impl CallbackSink for RecordedSinks {
    async fn post(
        &self,
        _sink: &str,
        body: Vec<u8>,
        _bearer: Option<&str>,
        _now: DateTime<Utc>,
    ) -> Outcome {
        let session = session_of_event(&body);
        let answer = SessionId::parse_canonical(&session).and_then(|id| {
            take(
                &mut lock(&self.answers),
                id,
                VecDeque::pop_front,
                VecDeque::is_empty,
            )
        });
        match answer {
            Some((at_ms, answer)) => {
                self.answering.until(at_ms).await;
                answer.to_outcome()
            }
            None => {
                let now = self.answering.clock.now().timestamp_millis();
                self.answering
                    .unanswered
                    .note(&session, "sink delivery", now);
                Outcome::Delivered
            }
        }
    }
}

/// The session a CloudEvent body is about (empty if it names none).
pub fn session_of_event(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["data"]["sessionId"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The answer `pick` takes from `session`'s; a session's answers are let go once all are given.
fn take<L, A>(
    answers: &mut HashMap<SessionId, L>,
    session: SessionId,
    pick: impl FnOnce(&mut L) -> Option<A>,
    is_empty: impl FnOnce(&L) -> bool,
) -> Option<A> {
    let left = answers.get_mut(&session)?;
    let answer = pick(left);
    if is_empty(left) {
        answers.remove(&session);
    }
    answer
}
