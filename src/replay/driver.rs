//! Runs a history's inputs through the real server and workers on a fresh temporary store, in
//! virtual time: a discrete-event loop that applies the inputs of an instant (holding the
//! queue's claims meanwhile, so that they come before the jobs due then), waits until the queue
//! has nothing left to do at that instant, and only then moves the clock to the next instant
//! anything waits for (the next input or the earliest sleeper on the clock). Commands and
//! network callbacks go to the server's router in process: the same middleware and handlers
//! as over a socket, without a socket.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::http::{Method, Request, header};

use super::generate::{Mix, SyntheticNetwork, SyntheticSinks};
use super::history::{Names, NetworkAnswers, Seen, SinkAnswers, Step};
use super::peers::{Answering, RecordedNetwork, RecordedSinks, Unanswered};
use crate::app::{Application, Ports};
use crate::auth::mint::{TokenRequest, mint_hs256};
use crate::clock::{Clock, ManualClock};
use crate::config::Settings;
use crate::domain::SessionId;
use crate::locks::lock;
use crate::queue::TimedWaits;
use crate::random::Random;
use crate::recording::format::{Header, LifecycleSettings};
use crate::store::{self, HistoryEntry, HistoryFilter, from_millis};

/// How long the queue may stay busy at one instant before the replay gives up (a job waiting
/// on something that never comes).
const STALL: Duration = Duration::from_secs(30);

/// How long past the history's end the run goes on, so that what the recording finished just
/// before its end (a few milliseconds later here) is not cut off; what comes later still is
/// not compared (see `report`).
pub const HORIZON_GRACE_MS: i64 = 60_000;

/// The replay's poll interval: a year (nothing else writes to its store).
const NEVER_MS: u64 = 365 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkChoice {
    /// The network answers as recorded.
    Recorded,
    /// The simulated network answers (at zero latency).
    Simulated,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub network: NetworkChoice,
    /// At most this many times real time; None: as fast as it goes.
    pub speed: Option<f64>,
    pub progress: bool,
    pub seed: u64,
}

/// A command's answer in the replay beside the recorded one.
#[derive(Debug, Clone)]
pub struct Answered {
    pub at_ms: i64,
    pub session: Option<String>,
    pub op: Arc<str>,
    pub expected: u16,
    pub actual: u16,
}

/// Where the transitions a run produced go, one by one (each session's in time order), once
/// the run is over: they are not held.
pub trait Transitions: Send + 'static {
    fn push(&mut self, session: &str, seen: Seen);
}

/// What the replay produced (its transitions went to `Transitions`).
pub struct Produced {
    /// Commands applied.
    pub commands: usize,
    /// The commands answered otherwise than recorded.
    pub answers: Vec<Answered>,
    pub unanswered: Vec<(String, String, i64)>,
    pub steps: u64,
    pub wall: Duration,
}

/// Who answers the server's questions.
pub enum Peers {
    /// As recorded; the network's answers None: the simulated network answers.
    Recorded {
        network: Option<NetworkAnswers>,
        sinks: SinkAnswers,
    },
    /// Synthetic peers drawing their answers (a generated history).
    Synthetic { mix: Mix, seed: u64 },
}

/// What a run drives: its inputs, its span, its settings and peers, and (generating) where
/// to export the history it makes.
pub struct Scenario<'a> {
    /// The inputs in time order, each dropped once applied.
    pub steps: Vec<Step>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub settings: LifecycleSettings,
    pub peers: Peers,
    pub export: Option<(&'a std::path::Path, Header)>,
    /// When the history's timers fired (none for a generated one: they fire when due).
    pub firings: HashMap<(SessionId, &'static str, i64), i64>,
}

pub async fn run<T: Transitions>(
    scenario: Scenario<'_>,
    options: &Options,
    transitions: T,
) -> anyhow::Result<(Produced, T)> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("a folder for the replay's store")?;
    let mut settings = settings_in(dir.path(), &scenario.settings)?;
    settings.record_inputs = scenario.export.is_some();
    let clock = ManualClock::new(from_millis(scenario.start_ms));
    let random = Random::seeded(options.seed);
    let unanswered = Arc::new(Unanswered::default());
    let waits = Arc::new(TimedWaits::default());
    let answering = Answering {
        clock: clock.clone(),
        waits: waits.clone(),
        unanswered: unanswered.clone(),
    };
    let mut ports = Ports::new(clock.clone(), random.clone());
    ports.firings = Arc::new(crate::jobs::TimerFirings {
        starts: scenario.firings,
        waits: Some(waits.clone()),
    });
    match scenario.peers {
        Peers::Recorded { network, sinks } => {
            if let Some(network) = network {
                ports.network = Some(RecordedNetwork::new(network, answering.clone()));
            }
            ports.sinks = Some(RecordedSinks::new(sinks, answering));
        }
        Peers::Synthetic { mix, seed } => {
            ports.network = Some(SyntheticNetwork::new(mix.clone(), seed, answering.clone()));
            ports.sinks = Some(SyntheticSinks::new(mix, seed, answering));
        }
    }
    let mut app = Application::build_with(settings.clone(), ports)
        .await
        .context("starting the replay's server")?;
    // Its failure would void what the run produced (see `Writer::failure`).
    let writer = app.sqlite().map(|s| s.writer().clone());
    let api = app.router_once_running();
    let core = app.core();
    let inputs = scenario.steps.len();
    let callbacks: HashMap<String, String> = scenario
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Callback { session, .. } => {
                let id = SessionId::parse_canonical(session)?;
                Some((session.clone(), app.callback_path(id)))
            }
            Step::Command { .. } => None,
        })
        .collect();
    let mut steps_in = scenario.steps.into_iter().peekable();
    let secret = store::dev_signing_key_path(&settings)?.load("the replay's signing key")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let api = api
        .await
        .context("the replay's server stopped before it served")?;
    let mut tokens = Tokens {
        secret,
        rules: settings.auth.rules.clone(),
        minted: HashMap::new(),
    };
    let mut answers = Vec::new();
    let mut commands = 0;
    let mut created = HashMap::new();
    let mut progress = Progress::new(scenario.start_ms, scenario.end_ms, inputs, options.progress);
    let mut next_step = 0;
    let mut steps = 0u64;
    // Held before the clock moves to an instant: its jobs and answers wait for its inputs.
    core.queue.hold(true);
    waits.hold(true);
    loop {
        let now_ms = clock.now().timestamp_millis();
        while let Some(step) = steps_in.next_if(|s| s.at_ms() <= now_ms) {
            next_step += 1;
            let to = Target {
                api: &api,
                callbacks: &callbacks,
                random: &random,
                clock: &clock,
            };
            let at_ms = step.at_ms();
            let answered = apply(step, &to, &mut tokens, &mut created)
                .await
                .with_context(|| format!("replaying the input at {at_ms} ms"))?;
            if let Some(answered) = answered {
                commands += 1;
                if answered.expected != answered.actual {
                    answers.push(answered);
                }
            }
        }
        waits.hold(false);
        core.queue.hold(false);
        tokio::time::timeout(STALL, core.queue.wait_idle(now_ms, &waits))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the replay stalled at {} ms: the queue stayed busy for {STALL:?}",
                    now_ms
                )
            })?;
        steps += 1;
        progress.show(now_ms, next_step);
        let next_input = steps_in.peek().map(Step::at_ms);
        // The queue's next due job is read from the queue itself: the dispatcher's sleeper
        // for it may be gone for a moment (it wakes and sleeps again).
        let next_wake = clock.next_wake().map(|t| t.timestamp_millis());
        let next_job = core.queue.next_due_ms();
        let next = [next_input, next_wake, next_job]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|t| *t <= scenario.end_ms + HORIZON_GRACE_MS) else {
            break;
        };
        if next <= now_ms {
            // A sleeper due now that has not woken yet: let it run.
            tokio::task::yield_now().await;
            core.queue.hold(true);
            waits.hold(true);
            continue;
        }
        if let Some(speed) = options.speed {
            let virtual_elapsed = Duration::from_millis((next - scenario.start_ms).max(0) as u64);
            let due = virtual_elapsed.div_f64(speed.max(f64::MIN_POSITIVE));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        core.queue.hold(true);
        waits.hold(true);
        clock.set(from_millis(next));
    }
    waits.hold(false);
    core.queue.hold(false);
    progress.finish();
    let transitions = read_transitions(&core, transitions).await?;
    if let Some((out, header)) = &scenario.export {
        let all = HistoryFilter {
            since_ms: i64::MIN,
            until_ms: i64::MAX,
            session: None,
        };
        crate::recording::export::export(&core.store, all, header, out).await?;
    }
    let _ = stop.send(());
    server
        .await
        .context("the replay's server task")?
        .context("the replay's server")?;
    if let Some(e) = writer.as_ref().and_then(|w| w.failure()) {
        anyhow::bail!("the replay's store failed: {e}");
    }
    let unanswered = std::mem::take(&mut *lock(&unanswered.asked));
    let produced = Produced {
        commands,
        answers,
        unanswered,
        steps,
        wall: started.elapsed(),
    };
    Ok((produced, transitions))
}

/// The recording server's lifecycle settings on a fresh store in `dir`, with nothing that
/// polls or purges (the clock moves only to what waits for it).
fn settings_in(dir: &std::path::Path, lifecycle: &LifecycleSettings) -> anyhow::Result<Settings> {
    let url = format!("sqlite://{}", dir.join("replay.db").display());
    let mut settings = Settings::for_database(url)?;
    lifecycle.apply(&mut settings);
    settings.purge_history = false;
    // One instant's writes come one after another, each awaited before the next is made:
    // nothing to batch, and the store is not kept.
    settings.throwaway_store = true;
    settings.auth.rate_per_second = 0;
    settings.sim.latency = Duration::ZERO;
    settings.sim.failure_rate = 0.0;
    settings.sim.refuse_rate = 0.0;
    // A delivery waiting in its sink's line waits on another delivery, which may wait for
    // virtual time: the loop could not tell that from work. The line is not replayed.
    settings.notify.per_sink_concurrency = 1 << 20;
    let never: std::collections::BTreeMap<String, crate::pools::PoolOverride> = crate::jobs::QUEUES
        .iter()
        .map(|q| {
            let o = crate::pools::PoolOverride {
                poll_interval_ms: Some(NEVER_MS),
                ..Default::default()
            };
            ((*q).to_owned(), o)
        })
        .collect();
    settings.pools = settings.pools.clone().with_overrides(&never)?;
    Ok(settings)
}

struct Tokens {
    secret: Vec<u8>,
    rules: crate::auth::verifier::ClaimRules,
    minted: HashMap<(String, Option<String>), String>,
}

impl Tokens {
    /// A token of `client` (for the device a three-legged token spoke for), valid long.
    fn of(
        &mut self,
        client: &str,
        phone: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<String> {
        let client = if client.is_empty() {
            "anonymous"
        } else {
            client
        };
        let phone = phone.map(str::to_owned);
        let key = (client.to_owned(), phone.clone());
        if let Some(t) = self.minted.get(&key) {
            return Ok(t.clone());
        }
        let request = TokenRequest {
            client: client.to_owned(),
            scopes: crate::auth::caller::scopes::ALL
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            device_phone: phone,
            ttl: Duration::from_secs(50 * 365 * 86_400),
        };
        let token = mint_hs256(&self.secret, &self.rules, &request, now)?;
        self.minted.insert(key, token.clone());
        Ok(token)
    }
}

/// Where the inputs go.
struct Target<'a> {
    /// The server's router: requests go to it in process (`Application::router_once_running`).
    api: &'a axum::Router,
    callbacks: &'a HashMap<String, String>,
    random: &'a Random,
    clock: &'a ManualClock,
}

/// Applies one input. A session named `@n` (a generated create) takes the id the server gave
/// it, which later commands naming `@n` use.
async fn apply(
    step: Step,
    to: &Target<'_>,
    tokens: &mut Tokens,
    created: &mut HashMap<String, String>,
) -> anyhow::Result<Option<Answered>> {
    let Target {
        api: router,
        callbacks,
        random,
        clock,
    } = *to;
    match step {
        Step::Callback { session, body, .. } => {
            if let Some(path) = callbacks.get(&session) {
                let req = Request::post(path.as_str());
                send(router, with_json(req, body)?).await?;
            }
            Ok(None)
        }
        Step::Command {
            at_ms,
            api,
            op,
            client,
            phone,
            body,
            status,
            session,
        } => {
            let root = if &*api == "v0" {
                "/qod/v0/sessions"
            } else {
                "/quality-on-demand/v1/sessions"
            };
            let named = session.as_deref().filter(|s| s.starts_with('@'));
            let id = match named {
                Some(name) => created.get(name).map_or("-", String::as_str),
                None => session.as_deref().unwrap_or("-"),
            };
            let (method, path) = match &*op {
                "create" => (Method::POST, root.to_owned()),
                "extend" => (Method::POST, format!("{root}/{id}/extend")),
                "delete" => (Method::DELETE, format!("{root}/{id}")),
                other => anyhow::bail!("a recorded command of an unknown operation {other:?}"),
            };
            if &*op == "create" && status == 201 {
                random.name_next_session(session.as_deref().and_then(|s| s.parse().ok()));
            }
            let token = tokens.of(&client, phone.as_deref(), clock.now())?;
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            let req = match body {
                Some(body) => with_json(req, body)?,
                None => req.body(Body::empty())?,
            };
            let response = send(router, req).await?;
            let actual = response.status().as_u16();
            random.name_next_session(None);
            if let (Some(name), "create", 201) = (named, &*op, actual) {
                let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
                let body: serde_json::Value = serde_json::from_slice(&body)?;
                if let Some(id) = body["sessionId"].as_str() {
                    created.insert(name.to_owned(), id.to_owned());
                }
            }
            Ok(Some(Answered {
                at_ms,
                session,
                op,
                expected: status,
                actual,
            }))
        }
    }
}

/// A request carrying `body`, JSON text (handed over, not copied).
fn with_json(req: axum::http::request::Builder, body: Box<str>) -> anyhow::Result<Request<Body>> {
    Ok(req
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(String::from(body)))?)
}

/// The server's answer to `req`.
async fn send(api: &axum::Router, req: Request<Body>) -> anyhow::Result<axum::response::Response> {
    use tower::ServiceExt;
    Ok(api.clone().oneshot(req).await?)
}

/// Every transition the replay's store holds, to `into` (each session's together).
async fn read_transitions<T: Transitions>(core: &crate::core::Core, into: T) -> anyhow::Result<T> {
    let found = Arc::new(Mutex::new(Some(into)));
    let sink = found.clone();
    let mut names = Names::default();
    core.store
        .read_transitions(Box::new(move |row| {
            if let (
                HistoryEntry::Transition {
                    from, to, reason, ..
                },
                Some(into),
            ) = (row.entry, lock(&sink).as_mut())
            {
                let seen = names.seen(row.at_ms, from.as_deref(), &to, &reason);
                into.push(row.session.as_deref().unwrap_or_default(), seen);
            }
            Ok(())
        }))
        .await?;
    lock(&found)
        .take()
        .context("the transitions were read twice")
}

/// A progress line on stderr: redrawn in place on a terminal, every 5 s otherwise.
struct Progress {
    on: bool,
    terminal: bool,
    start_ms: i64,
    span_ms: i64,
    inputs: usize,
    began: Instant,
    last: Instant,
}

impl Progress {
    fn new(start_ms: i64, end_ms: i64, inputs: usize, on: bool) -> Self {
        let now = Instant::now();
        Self {
            on,
            terminal: std::io::stderr().is_terminal(),
            start_ms,
            span_ms: (end_ms - start_ms).max(1),
            inputs,
            began: now,
            last: now,
        }
    }

    fn show(&mut self, now_ms: i64, inputs_done: usize) {
        let every = if self.terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        if !self.on || self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let done_ms = (now_ms - self.start_ms).max(0);
        let share = done_ms as f64 / self.span_ms as f64;
        let speed = done_ms as f64 / 1000.0 / self.began.elapsed().as_secs_f64().max(1e-9);
        let width = 30;
        let filled = ((share * width as f64) as usize).min(width);
        let line = format!(
            "replay [{}{}] {:5.1}%  {}/{} inputs  {:.0}x real time",
            "#".repeat(filled),
            " ".repeat(width - filled),
            share * 100.0,
            inputs_done,
            self.inputs,
            speed
        );
        if self.terminal {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.on && self.terminal {
            eprintln!();
        }
    }
}
