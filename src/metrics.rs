//! Prometheus metrics, registered once. Labels are bounded: states, reasons, queue names.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub transitions: IntCounterVec,
    pub jobs: IntCounterVec,
    pub job_duration: HistogramVec,
    pub job_lateness: HistogramVec,
    pub http_requests: IntCounterVec,
    pub sessions: IntGaugeVec,
    pub network_grants: IntGaugeVec,
    pub queue_jobs: IntGaugeVec,
    pub notification_attempts: IntCounterVec,
    pub notification_latency: Histogram,
    pub notifications_dead: IntGauge,
    pub auth_refusals: IntCounterVec,
    pub client_limited: IntCounterVec,
    pub network_events: IntCounterVec,
    pub store_commits: IntCounter,
    pub store_writes: IntCounter,
    pub queue_fenced: IntCounter,
    pub queue_taken_over: IntCounter,
    pub history_purged: IntCounterVec,
}

/// Job outcomes counted per queue.
/// Notification attempt outcomes.
pub mod delivery {
    pub const DELIVERED: &str = "delivered";
    pub const RETRIED: &str = "retried";
    pub const DEAD: &str = "dead";
    pub const REFUSED: &str = "refused";
}

pub mod outcome {
    pub const ENQUEUED: &str = "enqueued";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const RETRIED: &str = "retried";
    pub const DEAD: &str = "dead";
    /// The job was claimed again by another node while this one ran it.
    pub const FENCED: &str = "fenced";
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let transitions = IntCounterVec::new(
            Opts::new(
                "qod_session_transitions_total",
                "Session state transitions, by from/to state and reason.",
            ),
            &["from", "to", "reason"],
        )
        .expect("valid metric");
        let jobs = IntCounterVec::new(
            Opts::new(
                "qod_jobs_total",
                "Jobs by queue and outcome (enqueued, succeeded, failed, retried, dead).",
            ),
            &["queue", "outcome"],
        )
        .expect("valid metric");
        let job_duration = HistogramVec::new(
            HistogramOpts::new("qod_job_duration_seconds", "Time a job's handler ran.").buckets(
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["queue"],
        )
        .expect("valid metric");
        let job_lateness = HistogramVec::new(
            HistogramOpts::new(
                "qod_job_lateness_seconds",
                "Delay between a job's due time and its start.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["queue"],
        )
        .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "qod_http_requests_total",
                "HTTP requests by API operation and status code.",
            ),
            &["operation", "status"],
        )
        .expect("valid metric");
        let sessions = IntGaugeVec::new(
            Opts::new("qod_sessions", "Stored sessions by QoS status."),
            &["status"],
        )
        .expect("valid metric");
        let queue_jobs = IntGaugeVec::new(
            Opts::new(
                "qod_queue_jobs",
                "Jobs in the queue by queue and state: due (waiting, due now), scheduled (due \
                 later), claimed (handed to a worker).",
            ),
            &["queue", "state"],
        )
        .expect("valid metric");
        let network_grants = IntGaugeVec::new(
            Opts::new(
                "qod_network_grants",
                "Network grants of stored sessions by state: provisioning (asked, maybe held), \
                 granted, releasing (to be given back). Releasing that stays up means the \
                 network refuses our releases.",
            ),
            &["state"],
        )
        .expect("valid metric");
        let notification_attempts = IntCounterVec::new(
            Opts::new(
                "qod_notification_attempts_total",
                "Notification delivery attempts by outcome (delivered, retried, dead, refused).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let notification_latency = Histogram::with_opts(
            HistogramOpts::new(
                "qod_notification_delivery_seconds",
                "Time from a transition to its notification's successful delivery.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
            ]),
        )
        .expect("valid metric");
        let notifications_dead = IntGauge::new(
            "qod_notifications_dead",
            "Dead-lettered notifications stored.",
        )
        .expect("valid metric");
        let auth_refusals = IntCounterVec::new(
            Opts::new(
                "qod_auth_refusals_total",
                "API requests refused as unauthenticated, by reason (missing, invalid, expired).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let client_limited = IntCounterVec::new(
            Opts::new(
                "qod_client_limited_total",
                "API requests refused by a per-client limit: rate (request rate) or quota \
                 (active sessions).",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let network_events = IntCounterVec::new(
            Opts::new(
                "qod_network_events_total",
                "Notifications received from the network, by event (OTHER for events this \
                 server does not know, TEST for test notifications, REFUSED for callbacks \
                 with a wrong secret).",
            ),
            &["event"],
        )
        .expect("valid metric");
        let store_commits = IntCounter::new(
            "qod_store_commits_total",
            "Write transactions this process committed to its store.",
        )
        .expect("valid metric");
        let store_writes = IntCounter::new(
            "qod_store_writes_total",
            "Writes (state changes, job settlements, enqueues) carried by those commits.",
        )
        .expect("valid metric");
        let queue_fenced = IntCounter::new(
            "qod_queue_fenced_total",
            "Writes and settlements of jobs refused because another node claimed the job again \
             after this node's lease lapsed (fencing).",
        )
        .expect("valid metric");
        let queue_taken_over = IntCounter::new(
            "qod_queue_taken_over_total",
            "Jobs this node claimed from another node's lapsed lease (a node died or stalled).",
        )
        .expect("valid metric");
        let history_purged = IntCounterVec::new(
            Opts::new(
                "qod_history_purged_rows_total",
                "Rows of history deleted past --history-retention, by table (notifications, \
                 session_events, sim_grants, history_inputs).",
            ),
            &["table"],
        )
        .expect("valid metric");
        for c in [
            &store_commits,
            &store_writes,
            &queue_fenced,
            &queue_taken_over,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(notification_attempts.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(notification_latency.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(notifications_dead.clone()))
            .expect("unique metric");
        for c in [
            &transitions,
            &jobs,
            &http_requests,
            &auth_refusals,
            &client_limited,
            &network_events,
            &history_purged,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for h in [&job_duration, &job_lateness] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        for g in [&sessions, &network_grants, &queue_jobs] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        Self {
            registry,
            transitions,
            jobs,
            job_duration,
            job_lateness,
            http_requests,
            sessions,
            network_grants,
            queue_jobs,
            notification_attempts,
            notification_latency,
            notifications_dead,
            auth_refusals,
            client_limited,
            network_events,
            store_commits,
            store_writes,
            queue_fenced,
            queue_taken_over,
            history_purged,
        }
    }

    pub fn job(&self, queue: &str, outcome: &str) {
        self.jobs.with_label_values(&[queue, outcome]).inc();
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
