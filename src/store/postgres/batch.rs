//! Creates, session changes, plain commits and delivery settlements, many in one transaction: on
//! PostgreSQL a statement costs the server far more than the row it writes, so the writes of a
//! batch go as one statement per table (arrays unnested), not one per change. Decisions run in
//! memory, in the order they arrived, over the sessions as locked by the batch: a second change
//! of a session in the same batch sees the first one's result, as the SQLite writer gives.
//!
//! Locks, in one order for every batch (no two batches wait for each other in a cycle): the
//! job rows of the batch's fences, then the creates' advisory locks in key order (see
//! `creates`), then the sessions by id (those changed and those whose events are settled).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::super::fence::{Fence, Fenced};
use super::super::port::{Created, Decide, Settled, Write};
use super::announcer::Announcer;
use super::creates::{self, Create};
use super::{Counters, classify, jobs, sessions};
use crate::domain::{Session, SessionId};
use crate::lifecycle::{Effects, ScheduledJob};
use crate::recording::Recorded;

/// Most operations one transaction carries.
const MAX_BATCH: usize = 128;
/// Transactions in flight at once. One: two would lock the same sessions and wait for each
/// other, and one batch carries whatever arrived while the previous one ran.
const EXECUTORS: usize = 1;

type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

/// The delivery job of the event waiting behind a settled one.
pub(super) type NextDelivery = fn(Uuid, DateTime<Utc>) -> ScheduledJob;

pub(super) enum Op {
    Create {
        create: Box<Create>,
        fx: Effects,
        reply: Reply<(Created, Effects)>,
    },
    Change {
        id: SessionId,
        decide: Decide,
        reply: Reply<(Box<dyn Any + Send>, Effects)>,
    },
    Commit {
        fx: Effects,
        reply: Reply<Effects>,
    },
    Settle {
        settled: Settled,
        next: NextDelivery,
        reply: Reply<Effects>,
        inputs: Vec<Recorded>,
    },
}

impl Op {
    /// The operation with `inputs` written beside it.
    pub(super) fn recording(self, mut inputs: Vec<Recorded>) -> Self {
        if inputs.is_empty() {
            return self;
        }
        match self {
            Op::Create {
                create,
                mut fx,
                reply,
            } => {
                fx.inputs.append(&mut inputs);
                Op::Create { create, fx, reply }
            }
            Op::Change { id, decide, reply } => Op::Change {
                id,
                decide: Box::new(move |session, fx| {
                    fx.inputs.append(&mut inputs);
                    decide(session, fx)
                }),
                reply,
            },
            Op::Commit { mut fx, reply } => {
                fx.inputs.append(&mut inputs);
                Op::Commit { fx, reply }
            }
            Op::Settle {
                settled,
                next,
                reply,
                inputs: mut already,
            } => {
                already.append(&mut inputs);
                Op::Settle {
                    settled,
                    next,
                    reply,
                    inputs: already,
                }
            }
        }
    }
}

pub(super) struct Request {
    pub op: Op,
    /// The claim of the job that asks (see `fence`).
    pub fence: Option<Fence>,
}

#[derive(Clone)]
pub(super) struct Batcher {
    sender: mpsc::Sender<Request>,
}

impl Batcher {
    pub fn start(pool: PgPool, counters: Arc<Counters>, announcer: Arc<Announcer>) -> Self {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..EXECUTORS {
            tokio::spawn(execute_batches(
                pool.clone(),
                receiver.clone(),
                counters.clone(),
                announcer.clone(),
            ));
        }
        Self { sender }
    }

    pub async fn send(&self, request: Request) -> anyhow::Result<()> {
        self.sender
            .send(request)
            .await
            .map_err(|_| anyhow::anyhow!("the store is closed"))
    }
}

async fn execute_batches(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Request>>>,
    counters: Arc<Counters>,
    announcer: Arc<Announcer>,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            batch
        };
        run(&pool, batch, &counters, &announcer).await;
    }
}

/// Where an operation's answer goes.
enum Answer {
    /// A create, with what it answers once the batch commits.
    Create(Reply<(Created, Effects)>, Created),
    Change(Reply<(Box<dyn Any + Send>, Effects)>),
    Effects(Reply<Effects>),
}

impl Answer {
    fn fail(self, e: anyhow::Error) {
        match self {
            Self::Create(reply, _) => drop(reply.send(Err(e))),
            Self::Change(reply) => drop(reply.send(Err(e))),
            Self::Effects(reply) => drop(reply.send(Err(e))),
        }
    }
}

impl Op {
    fn fail(self, e: anyhow::Error) {
        answer_of(self).fail(e);
    }
}

/// An operation whose fence held and whose decision stands: what it will answer.
struct Pending {
    answer: Answer,
    fx: Effects,
    value: Option<Box<dyn Any + Send>>,
    settle: Option<(Settled, NextDelivery)>,
    /// A session it creates.
    new: Option<Box<Create>>,
}

impl Pending {
    fn succeed(self) {
        match self.answer {
            Answer::Create(reply, verdict) => drop(reply.send(Ok((verdict, self.fx)))),
            Answer::Change(reply) => {
                let value = self.value.expect("a change that stands has a value");
                drop(reply.send(Ok((value, self.fx))));
            }
            Answer::Effects(reply) => drop(reply.send(Ok(self.fx))),
        }
    }
}

/// What a failed batch tells each of its operations (the store being away stays recognisable).
fn share(e: &anyhow::Error) -> impl Fn() -> anyhow::Error + '_ {
    let unavailable = super::super::fence::Unavailable::caused(e);
    let text = format!("{e:#}");
    move || {
        if unavailable {
            anyhow::Error::new(super::super::fence::Unavailable(text.clone()))
        } else {
            anyhow::anyhow!("{text}")
        }
    }
}

async fn run(pool: &PgPool, batch: Vec<Request>, counters: &Counters, announcer: &Announcer) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let e = classify(e.into());
            let make = share(&e);
            for r in batch {
                r.op.fail(make());
            }
            return;
        }
    };
    let outcome = match decide_and_write(&mut tx, batch, counters).await {
        Ok(done) => match tx.commit().await {
            Ok(()) => Ok(done),
            Err(e) => Err((e.into(), done.into_iter().map(|p| p.answer).collect())),
        },
        Err(failed) => Err(failed),
    };
    match outcome {
        Ok(done) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(done.len() as u64, Ordering::Relaxed);
            announcer.note(done.iter().flat_map(|p| p.fx.jobs.iter()));
            for p in done {
                p.succeed();
            }
        }
        Err((e, answers)) => {
            let e = classify(e);
            let make = share(&e);
            for a in answers {
                a.fail(make());
            }
        }
    }
}

/// Everything but the commit. On a database error, the operations still waiting for their
/// answer come back with it (those refused on their own were answered already).
async fn decide_and_write(
    c: &mut PgConnection,
    batch: Vec<Request>,
    counters: &Counters,
) -> Result<Vec<Pending>, (anyhow::Error, Vec<Answer>)> {
    // 1. Fences: an operation of a job another node claimed since is refused.
    let fences: Vec<Fence> = batch.iter().filter_map(|r| r.fence).collect();
    let held = match jobs::holding(c, &fences).await {
        Ok(h) => h,
        Err(e) => return Err((e, batch.into_iter().map(|r| answer_of(r.op)).collect())),
    };
    let mut ops = Vec::with_capacity(batch.len());
    for r in batch {
        match r.fence {
            Some(f) if !held.contains(&(f.job, f.epoch)) => {
                counters.fenced.fetch_add(1, Ordering::Relaxed);
                r.op.fail(Fenced(f).into());
            }
            _ => ops.push(r.op),
        }
    }
    // 2. The creates, decided together under their advisory locks.
    let to_create: Vec<&Create> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create { create, .. } => Some(&**create),
            _ => None,
        })
        .collect();
    let mut created = match creates::decide(c, &to_create).await {
        Ok(d) => d.into_iter(),
        Err(e) => return Err((e, ops.into_iter().map(answer_of).collect())),
    };
    // 3. The sessions the changes decide over, and those of the events settled, locked in id
    // order: a new event and the settlement of the one before it in another node's batch
    // cannot cross.
    let settled: Vec<Uuid> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Settle { settled, .. } => Some(settled.id),
            _ => None,
        })
        .collect();
    let settled_sessions = match super::notifications::sessions_of(c, &settled).await {
        Ok(s) => s,
        Err(e) => return Err((e, ops.into_iter().map(answer_of).collect())),
    };
    let ids: Vec<SessionId> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Change { id, .. } => Some(*id),
            _ => None,
        })
        .chain(settled_sessions)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let locked = match sessions::lock_many(c, &ids).await {
        Ok(s) => s,
        Err(e) => return Err((e, ops.into_iter().map(answer_of).collect())),
    };
    let stored: HashMap<SessionId, i64> = locked.iter().map(|s| (s.id, s.revision)).collect();
    let mut current: HashMap<SessionId, Session> = locked.into_iter().map(|s| (s.id, s)).collect();
    // 4. Decisions, in arrival order; a refused one is answered now and writes nothing.
    let mut written: BTreeMap<SessionId, Option<Session>> = BTreeMap::new();
    let mut pending = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Create { create, fx, reply } => {
                let Some(verdict) = created.next() else {
                    drop(reply.send(Err(anyhow::anyhow!("a create left undecided"))));
                    continue;
                };
                // A refused create writes only the inputs recorded beside it.
                let (fx, new) = match verdict {
                    Created::Stored => (fx, Some(create)),
                    _ => {
                        let inputs = fx.inputs;
                        let fx = Effects {
                            inputs,
                            ..Effects::default()
                        };
                        (fx, None)
                    }
                };
                pending.push(Pending {
                    answer: Answer::Create(reply, verdict),
                    fx,
                    value: None,
                    settle: None,
                    new,
                });
            }
            Op::Change { id, decide, reply } => {
                let mut fx = Effects::default();
                let before = current.get(&id).cloned();
                let read = before.as_ref().map(|s| s.revision);
                // A decision that panics is its own failure, not the batch's (nor the end of
                // the executor, which every later write waits for).
                let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decide(before, &mut fx)
                }))
                .unwrap_or_else(|panic| {
                    Err(anyhow::anyhow!(
                        "the decision panicked: {}",
                        crate::panics::message(&*panic)
                    ))
                });
                let outcome = decided.and_then(|(write, value)| {
                    write.check(id, read)?;
                    Ok((write, value))
                });
                let (write, value) = match outcome {
                    Ok(decided) => decided,
                    Err(e) => {
                        drop(reply.send(Err(e)));
                        continue;
                    }
                };
                match write {
                    Write::Nothing => {}
                    Write::Update(s) => {
                        written.insert(id, Some((*s).clone()));
                        current.insert(id, *s);
                    }
                    Write::Delete => {
                        written.insert(id, None);
                        current.remove(&id);
                    }
                }
                pending.push(Pending {
                    answer: Answer::Change(reply),
                    fx,
                    value: Some(value),
                    settle: None,
                    new: None,
                });
            }
            Op::Commit { fx, reply } => pending.push(Pending {
                answer: Answer::Effects(reply),
                fx,
                value: None,
                settle: None,
                new: None,
            }),
            Op::Settle {
                settled,
                next,
                reply,
                inputs,
            } => pending.push(Pending {
                answer: Answer::Effects(reply),
                fx: Effects {
                    inputs,
                    ..Effects::default()
                },
                value: None,
                settle: Some((settled, next)),
                new: None,
            }),
        }
    }
    match write(c, &stored, written, &mut pending).await {
        Ok(()) => Ok(pending),
        Err(e) => Err((e, pending.into_iter().map(|p| p.answer).collect())),
    }
}

fn answer_of(op: Op) -> Answer {
    match op {
        Op::Create { reply, .. } => Answer::Create(reply, Created::Stored),
        Op::Change { reply, .. } => Answer::Change(reply),
        Op::Commit { reply, .. } | Op::Settle { reply, .. } => Answer::Effects(reply),
    }
}

/// The batch's writes: new sessions, changed ones, events, settlements, the outbox and the jobs.
async fn write(
    c: &mut PgConnection,
    stored: &HashMap<SessionId, i64>,
    written: BTreeMap<SessionId, Option<Session>>,
    pending: &mut [Pending],
) -> anyhow::Result<()> {
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    for (id, s) in written {
        let revision = *stored
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("session {id} written but never read"))?;
        match s {
            Some(s) => updates.push((s, revision)),
            None => deletes.push((id, revision)),
        }
    }
    let new: Vec<&Create> = pending.iter().filter_map(|p| p.new.as_deref()).collect();
    let aliases: Vec<(String, String)> = new
        .iter()
        .flat_map(|n| {
            let (id, kept) = (n.session.id.to_string(), n.session.device.key());
            n.keys
                .iter()
                .filter(move |k| **k != kept)
                .map(move |k| (k.clone(), id.clone()))
        })
        .collect();
    let new: Vec<&Session> = new.iter().map(|n| &n.session).collect();
    sessions::insert_many(c, &new).await?;
    sessions::insert_aliases_many(c, &aliases).await?;
    sessions::update_many(c, &updates).await?;
    sessions::delete_many(c, &deletes).await?;
    let transitions: Vec<_> = pending
        .iter()
        .flat_map(|p| p.fx.transitions.iter())
        .collect();
    sessions::append_events(c, &transitions).await?;
    outbox(c, pending).await?;
    let inputs: Vec<&Recorded> = pending.iter().flat_map(|p| p.fx.inputs.iter()).collect();
    super::inputs::insert_many(c, &inputs).await?;
    let all_jobs: Vec<&ScheduledJob> = pending.iter().flat_map(|p| p.fx.jobs.iter()).collect();
    jobs::push_refs(c, &all_jobs).await
}

/// Settlements first, then the new events (their sessions are locked): an event gets its
/// delivery job when none of its session waits before it, and a settled event hands the job on
/// to the next one waiting.
async fn outbox(c: &mut PgConnection, pending: &mut [Pending]) -> anyhow::Result<()> {
    use super::notifications as n;
    let settles: Vec<&Settled> = pending
        .iter()
        .filter_map(|p| p.settle.as_ref().map(|(s, _)| s))
        .collect();
    let finished = n::finish_many(c, &settles).await?;
    // The next event waiting behind each finished one.
    let finished_ids: Vec<Uuid> = finished.keys().copied().collect();
    let next = n::next_pending_after_many(c, &finished_ids).await?;
    for p in pending.iter_mut() {
        if let Some((settled, job)) = &p.settle
            && let Some(waiting) = next.get(&settled.id)
        {
            let scheduled = job(*waiting, settled.at);
            p.fx.schedule(scheduled);
        }
    }
    // New events: numbered after their session's last, with a job only when nothing waits.
    let with_new: Vec<SessionId> = pending
        .iter()
        .flat_map(|p| p.fx.notifications.iter().map(|(n, _)| n.session_id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut outboxes = n::outbox_states(c, &with_new).await?;
    let mut rows = Vec::new();
    for p in pending.iter_mut() {
        for (new, delivery) in std::mem::take(&mut p.fx.notifications) {
            let state = outboxes.entry(new.session_id).or_default();
            state.last_seq += 1;
            if !state.pending {
                p.fx.jobs.push(delivery);
            }
            state.pending = true;
            rows.push((new, state.last_seq));
        }
    }
    n::insert_many(c, &rows).await
}

/// An outbox's state as read under its lock.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Outbox {
    pub last_seq: i64,
    pub pending: bool,
}
