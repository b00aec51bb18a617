//! apalis's `Backend` over one lane: the worker receives the jobs the dispatcher claimed for
//! its queue. Acknowledgement is not a middleware here: the handler reports a `Settlement`,
//! which the dispatcher writes in its next round together with everyone else's.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use apalis::prelude::{Backend, Task, WorkerContext};
use apalis_core::backend::BackendConfig;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::task::task_id::RandomId;
use tokio::sync::mpsc;
use tower::layer::util::Identity;

use super::{JobQueue, Settlement, lock};
use crate::jobs::{Claimed, JobKind};
use crate::store::ClaimedRow;

pub struct LaneBackend<J> {
    queue: Arc<JobQueue>,
    receiver: Arc<Mutex<mpsc::Receiver<ClaimedRow>>>,
    _kind: PhantomData<fn() -> J>,
}

impl<J: JobKind> LaneBackend<J> {
    pub fn new(queue: Arc<JobQueue>) -> Self {
        let receiver = queue.receiver(J::QUEUE);
        Self {
            queue,
            receiver,
            _kind: PhantomData,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("job queue closed")]
pub struct LaneClosed;

impl<J: JobKind> Backend for LaneBackend<J> {
    type Task = Task<Claimed<J>>;
    type Error = LaneClosed;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), LaneClosed>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, LaneClosed>>> {
        let mut receiver = lock(&self.receiver);
        loop {
            let Some(row) = std::task::ready!(receiver.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            self.queue.room_freed();
            match serde_json::from_str::<J>(&row.payload) {
                Ok(job) => {
                    return Poll::Ready(Some(Ok(Task::new(Claimed {
                        fence: row.fence(),
                        job,
                        attempt: row.attempt,
                        due_at_ms: row.due_at_ms,
                        payload: row.payload,
                        trace: row.trace,
                    }))));
                }
                Err(e) => {
                    // A payload no version of this job can read would fail forever: drop it
                    // loudly instead of blocking the queue.
                    tracing::error!(queue = J::QUEUE, job = row.id, error = %e, payload = %row.payload, "undecodable job dropped");
                    self.queue.settle(Settlement::Done(row.fence()));
                }
            }
        }
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), LaneClosed>> {
        Poll::Ready(Ok(()))
    }
}

impl<J: JobKind> BackendConfig for LaneBackend<J> {
    type Args = Claimed<J>;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}
