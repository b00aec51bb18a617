//! The fencing token of the job a task runs. Several nodes share one queue: a node that stalls
//! past its lease loses the job to another, which claims it with the next epoch. Every write
//! a job makes carries its claim (the task-local set by the job runner), and a store shared by
//! several processes commits it only while the job row still holds that epoch; the job's
//! settlement is checked the same way. Writes outside a job (API requests) carry none.

use std::future::Future;

/// A job as claimed: its row and the epoch of the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub job: i64,
    pub epoch: i64,
}

tokio::task_local! {
    static CURRENT: Option<Fence>;
}

/// Runs `work` with its writes fenced by `fence`.
pub async fn scope<F: Future>(fence: Fence, work: F) -> F::Output {
    CURRENT.scope(Some(fence), work).await
}

/// Runs `work` without a fence, inside a fenced job: only for a decision that is right
/// whoever holds the job now, such as recording what the network did for this claim.
pub async fn unfenced<F: Future>(work: F) -> F::Output {
    CURRENT.scope(None, work).await
}

/// The fence of the job this task runs, if it runs one.
pub fn current() -> Option<Fence> {
    CURRENT.try_with(|f| *f).ok().flatten()
}

/// A write refused because its job was claimed again by another node (or finished by it).
#[derive(Debug, thiserror::Error)]
#[error("job {} lost its claim (epoch {}): another node holds it now", .0.job, .0.epoch)]
pub struct Fenced(pub Fence);

impl Fenced {
    /// Whether `e` (or what caused it) is a refusal by fencing.
    pub fn caused(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<Self>())
    }
}

/// The store cannot be reached now (database down, restarting or out of connections): a
/// request gets 503, a job is tried again later.
#[derive(Debug, thiserror::Error)]
#[error("the database is unavailable: {0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    /// Whether `e` (or what caused it) is the store being unavailable.
    pub fn caused(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<Self>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_s_fence_holds_in_its_task_and_can_be_set_aside_for_one_decision() {
        let fence = Fence { job: 7, epoch: 3 };
        assert_eq!(current(), None, "outside a job");
        let seen = scope(fence, async {
            let inside = current();
            let set_aside = unfenced(async { current() }).await;
            (inside, set_aside, current())
        })
        .await;
        assert_eq!(seen, (Some(fence), None, Some(fence)));
    }
}
