//! Wiring: `Application::build(Settings)` opens storage, binds the listener (port 0 works) and
//! prepares workers; `run_until` serves and works until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use apalis::prelude::Monitor;
use tokio::sync::watch;

use crate::api::auth::Guard;
use crate::api::{self, AppState};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::core::{Core, Timings};
use crate::jobs::{self, DeliverNotification, Delivery, JobContext, JobKind};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::network::Network;
use crate::network::nef::NefNetwork;
use crate::network::nef::callback::CallbackUrls;
use crate::network::simulated::SimulatedNetwork;
use crate::notify::CallbackSink;
use crate::notify::address_policy::SinkPolicy;
use crate::notify::limiter::SinkLimiter;
use crate::notify::sink_client::SinkClient;
use crate::queue::{self, JobQueue};
use crate::random::{Random, SharedRandom};
use crate::secrets::SecretBox;
use crate::service::{Offer, Service};
use crate::store::{self, SharedStore, SqliteStore};

/// The time and the chance a server runs on, and (for replays) the peers it talks to.
#[derive(Clone)]
pub struct Ports {
    pub clock: SharedClock,
    pub random: SharedRandom,
    /// The network instead of the configured one.
    pub network: Option<Arc<dyn Network>>,
    /// The consumers' sinks instead of HTTP.
    pub sinks: Option<Arc<dyn CallbackSink>>,
    /// When a replayed history's timers fired.
    pub firings: Arc<crate::jobs::TimerFirings>,
}

impl Ports {
    /// The wall clock and draws seeded by the operating system.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemClock), Random::from_entropy())
    }

    /// The configured network and HTTP sinks on this time and randomness.
    pub fn new(clock: SharedClock, random: SharedRandom) -> Self {
        Self {
            clock,
            random,
            network: None,
            sinks: None,
            firings: Arc::default(),
        }
    }
}

pub struct Application {
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    service: Service,
    jobs: Arc<JobContext>,
    callbacks: CallbackUrls,
    opened: store::Opened,
    network: Arc<SimulatedNetwork>,
    settings: Settings,
    instance: String,
    guard: Arc<Guard>,
    dev_token: Option<String>,
    /// Where `run_until` hands its router once built (`router_once_running`).
    router_to: Option<tokio::sync::oneshot::Sender<axum::Router>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Ports::system()).await
    }

    /// A server on the given time and randomness (tests and replays: a virtual clock, a seed).
    pub async fn build_with(settings: Settings, ports: Ports) -> anyhow::Result<Self> {
        let Ports {
            clock,
            random,
            network: network_override,
            sinks,
            firings,
        } = ports;
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        // Without a configured public URL, it is the address actually bound (port 0 resolved).
        let public_url = match &settings.notify.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let secret_key = store::secret_key_path(&settings)?;
        let opened = store::open_store(&settings).await?;
        let store: SharedStore = opened.shared();
        let secrets = SecretBox::load(&secret_key)?;
        // Under the process lock no other worker can hold a job: whatever a previous process
        // claimed and did not finish goes back to the queue now, not after orphan detection.
        // A shared store's claims are leases instead: other nodes may hold them, and a dead
        // node's lapse by themselves.
        let reclaimed = if store.shared() {
            0
        } else {
            store.release_claims(None).await?
        };
        let adopted = store.adopt_legacy_jobs().await?;
        if adopted > 0 {
            tracing::info!(
                adopted,
                "moved jobs from the previous version's queue table"
            );
        }
        if reclaimed > 0 {
            tracing::info!(reclaimed, "requeued jobs left in flight by a previous run");
        }
        let instance = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let network = SimulatedNetwork::new(
            opened.ledger(),
            clock.clone(),
            random.clone(),
            settings.sim.clone(),
        );
        let callbacks = CallbackUrls::new(&public_url, secrets.derive("qod network callbacks"));
        let network_port: Arc<dyn Network> = match (network_override, &settings.nef) {
            (Some(given), _) => given,
            (None, None) => network.clone(),
            (None, Some(nef)) => {
                tracing::info!(url = %nef.url, "provisioning through the NEF");
                NefNetwork::new(nef, callbacks.clone(), clock.clone())?
            }
        };
        let network_port = if settings.record_inputs {
            crate::recording::network::RecordedNetwork::wrap(network_port, clock.clone())
        } else {
            network_port
        };
        let profiles: Vec<String> = settings
            .catalogue
            .all()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let metrics = Metrics::new(&profiles);
        for &queue in jobs::QUEUES {
            let slots = i64::try_from(settings.pools.get(queue).concurrency).unwrap_or(i64::MAX);
            metrics
                .queue_workers
                .with_label_values(&[queue, "idle"])
                .set(slots);
        }
        let network_port =
            crate::network::metered::MeteredNetwork::wrap(network_port, metrics.clone());
        let core = Arc::new(Core {
            store,
            clock: clock.clone(),
            random: random.clone(),
            metrics: metrics.clone(),
            queue: JobQueue::new(
                &instance,
                jobs::QUEUES,
                &settings.pools,
                if settings.throwaway_store {
                    crate::queue::Acks::WithNextClaim
                } else {
                    crate::queue::Acks::Promptly
                },
            ),
        });
        let secrets = Arc::new(secrets);
        let timings = Timings::from_settings(&settings);
        let jobs = Arc::new(JobContext {
            core: core.clone(),
            network: network_port,
            timings,
            pools: settings.pools.clone(),
            delivery: Delivery {
                sinks: match sinks {
                    Some(given) => given,
                    None => SinkClient::new(&settings.notify)?,
                },
                limiter: SinkLimiter::new(
                    settings.notify.per_sink_concurrency,
                    // A sink may hold at most a quarter of the delivery workers waiting in line.
                    (settings.pools.get(DeliverNotification::QUEUE).concurrency / 4)
                        .min(settings.notify.per_sink_concurrency * 8),
                    clock.clone(),
                ),
                secrets: secrets.clone(),
                timeout: settings.notify.timeout,
                public_url,
            },
            record_inputs: settings.record_inputs,
            firings,
        });
        let service = Service::new(
            core.clone(),
            secrets,
            timings,
            Offer {
                catalogue: settings.catalogue.clone(),
                directory: Arc::new(settings.eligibility.clone()),
                max_active_sessions: settings.auth.max_active_sessions,
                sink_policy: SinkPolicy {
                    allow_insecure: settings.notify.allow_insecure_sinks,
                    allow_private: settings.notify.allow_private_sinks,
                },
            },
        );
        let (guard, dev_token) = Guard::from_settings(&settings, core.clock.clone()).await?;
        Ok(Self {
            listener,
            core,
            service,
            jobs,
            callbacks,
            opened,
            network,
            settings,
            instance,
            guard: Arc::new(guard),
            dev_token,
            router_to: None,
        })
    }

    /// This process's name in the job queue (its claims carry it).
    pub fn node(&self) -> &str {
        &self.instance
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The token minted at start in development mode (every scope, client `dev-client`).
    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
    }

    /// The SQLite store behind the server, for tests that look at the file (None on
    /// PostgreSQL).
    pub fn sqlite(&self) -> Option<&Arc<SqliteStore>> {
        match &self.opened {
            store::Opened::Sqlite(s, _) => Some(s),
            store::Opened::Postgres(_) => None,
        }
    }

    pub fn simulated_network(&self) -> Arc<SimulatedNetwork> {
        self.network.clone()
    }

    /// The shared core (a replay watches its queue and reads its store).
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }

    /// Records the settings this run's lifecycles follow, for replays.
    async fn record_start(&self) -> anyhow::Result<()> {
        let started = crate::recording::Recorded {
            at: self.core.clock.now(),
            session: None,
            input: crate::recording::Input::Started {
                settings: crate::recording::format::LifecycleSettings::of(&self.settings),
            },
        };
        let fx = crate::lifecycle::Effects {
            inputs: vec![started],
            ..Default::default()
        };
        self.core
            .store
            .commit(fx)
            .await
            .context("recording the start")?;
        Ok(())
    }

    /// The route on this server's router where the network posts the events of `session`.
    pub fn callback_path(&self, session: crate::domain::SessionId) -> String {
        self.callbacks.path(session)
    }

    /// The API's router as `run_until` serves it, once it runs. A replay sends its commands
    /// straight to it: every middleware and handler as over a socket, without the two HTTP
    /// codecs and the loopback between them (a fifth of a replay's time).
    pub fn router_once_running(&mut self) -> tokio::sync::oneshot::Receiver<axum::Router> {
        let (to, from) = tokio::sync::oneshot::channel();
        self.router_to = Some(to);
        from
    }

    /// Serves HTTP and runs the workers until `shutdown` resolves; then stops taking requests,
    /// lets running jobs finish (up to the shutdown timeout) and hands the rest back.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if self.settings.record_inputs {
            self.record_start().await?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let network = self.jobs.network.clone();
        if self.settings.nef.is_some() {
            let network = network.clone();
            tokio::spawn(async move {
                match network.check().await {
                    Ok(()) => tracing::info!("the NEF answers and accepts this server's token"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the NEF cannot be used now; sessions wait in REQUESTED and their \
                         provisioning is retried (see /health/network)"
                    ),
                }
            });
        }
        let shared = self.core.store.shared();
        let leadership = Leadership::new(!shared);
        if shared {
            leadership
                .contend(&self.core.store, &self.instance, self.settings.job_lease)
                .await;
        }
        let state = AppState {
            service: self.service,
            guard: self.guard.clone(),
            callbacks: self.callbacks,
            network,
            body_timeout: self.settings.http.body_timeout,
            record_inputs: self.settings.record_inputs,
            census: Arc::default(),
            leadership: leadership.clone(),
        };
        let router = api::router(state, self.settings.v0_prefix.as_deref());
        if let Some(to) = self.router_to.take() {
            let _ = to.send(router.clone());
        }
        let server = api::listener::serve(
            self.listener,
            router,
            self.settings.http,
            self.settings.shutdown_timeout,
            stopped(stop_rx.clone()),
        );

        let monitor = jobs::register_all(
            Monitor::new().should_restart(|ctx, err| {
                tracing::warn!(worker = ctx.name(), error = %err, "worker stopped; restarting");
                true
            }),
            &self.jobs,
            &self.instance,
        )
        .shutdown_timeout(self.settings.shutdown_timeout);
        let monitor_stop = stopped(stop_rx.clone());
        let workers = monitor.run_with_signal(async move {
            monitor_stop.await;
            Ok(())
        });
        // The dispatcher outlives the workers: it writes what they finished while stopping.
        let (workers_done_tx, workers_done_rx) = tokio::sync::oneshot::channel::<()>();
        let workers = async move {
            let result = workers.await;
            let _ = workers_done_tx.send(());
            result
        };
        let dispatcher = queue::run_dispatcher(
            self.core.queue.clone(),
            self.core.store.clone(),
            self.core.clock.clone(),
            async move {
                let _ = workers_done_rx.await;
            },
        );

        let mut helpers = Vec::new();
        if shared {
            let core = &self.core;
            helpers.push(tokio::spawn(queue::run_heartbeat(
                core.queue.clone(),
                core.store.clone(),
                self.settings.job_lease,
                stopped(stop_rx.clone()),
            )));
            helpers.push(tokio::spawn(leadership.clone().run(
                core.store.clone(),
                self.instance.clone(),
                self.settings.job_lease,
                stopped(stop_rx.clone()),
            )));
        }
        // Ends with the store; aborted when the server stops.
        let listener = tokio::spawn(queue::listen(
            self.core.queue.clone(),
            self.core.store.clone(),
        ));
        let purge = self.settings.purge_history.then(|| {
            crate::retention::run(
                self.core.clone(),
                self.settings.history_retention,
                leadership,
                stopped(stop_rx.clone()),
            )
        });
        let retention = tokio::spawn(async move {
            if let Some(purge) = purge {
                purge.await;
            }
        });
        // Each part is a task of its own on the multi-thread runtime: nothing of the server,
        // the queue or the jobs runs on the thread that called `run_until`.
        let server = tokio::spawn(server);
        let workers = tokio::spawn(workers);
        let dispatcher = tokio::spawn(dispatcher);
        let (served, worked, dispatched) = tokio::join!(server, workers, dispatcher);
        served.context("HTTP server task")?;
        match worked.context("worker monitor task")? {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "workers stopped with errors"),
        }
        dispatched.context("job dispatcher task")?;
        retention.await.context("history purge task")?;
        for helper in helpers {
            helper.await.context("lease and leadership tasks")?;
        }
        listener.abort();
        let handed_back = self.core.store.release_claims(Some(&self.instance)).await?;
        if handed_back > 0 {
            tracing::info!(handed_back, "returned unfinished jobs to the queue");
        }
        self.core.store.close().await;
        Ok(())
    }
}
