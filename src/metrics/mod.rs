//! Prometheus metrics, built from the catalogue (`catalogue`): every family, its labels and
//! the label values it may take are declared there, and every series whose labels can be
//! listed starts at 0. Families counted from the database are rendered only by the node that
//! holds the maintenance role.

pub mod catalogue;
pub mod openmetrics;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use catalogue::{Family, Kind, Known, Scope, family};

#[derive(Clone)]
pub struct Metrics {
    node: Registry,
    database: Registry,
    pub build_info: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub auth_refusals: IntCounterVec,
    pub client_limited: IntCounterVec,
    pub transitions: IntCounterVec,
    pub expiry_lateness: Histogram,
    pub jobs: IntCounterVec,
    pub lease_reclaims: IntCounterVec,
    pub queue_fenced: IntCounter,
    pub schedule_to_start: HistogramVec,
    pub job_run: HistogramVec,
    pub queue_workers: IntGaugeVec,
    pub notification_attempts: IntCounterVec,
    pub notification_latency: Histogram,
    pub network_requests: IntCounterVec,
    pub network_duration: HistogramVec,
    pub network_events: IntCounterVec,
    pub store_commits: IntCounter,
    pub store_writes: IntCounter,
    pub history_purged: IntCounterVec,
    pub sessions: IntGaugeVec,
    pub network_grants: IntGaugeVec,
    pub queue_jobs: IntGaugeVec,
    pub queue_oldest_due: GaugeVec,
    pub notifications_dead: IntGauge,
    pub notifications_dead_oldest: Gauge,
    /// The configured QoS profiles (the values of `profile` labels).
    pub profiles: Vec<String>,
}

/// Notification attempt outcomes.
pub mod delivery {
    pub const DELIVERED: &str = "delivered";
    pub const RETRIED: &str = "retried";
    pub const DEAD: &str = "dead";
    pub const REFUSED: &str = "refused";
}

/// Job outcomes counted per queue.
pub mod outcome {
    pub const ENQUEUED: &str = "enqueued";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const RETRIED: &str = "retried";
    pub const DEAD: &str = "dead";
    /// The job was claimed again by another node while this one ran it.
    pub const FENCED: &str = "fenced";
}

/// Registers families as the catalogue declares them.
struct Builder<'a> {
    node: Registry,
    database: Registry,
    known: Known<'a>,
}

impl Builder<'_> {
    fn register<C: Collector + Clone + 'static>(&self, f: &Family, c: C) -> C {
        let registry = match f.scope {
            Scope::Node => &self.node,
            Scope::Database => &self.database,
        };
        registry
            .register(Box::new(c.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        c
    }

    fn family(name: &str, kind: Kind) -> &'static Family {
        let f = family(name);
        assert_eq!(f.kind, kind, "{name}");
        f
    }

    fn labels(f: &Family) -> Vec<&'static str> {
        f.labels.iter().map(|l| l.name).collect()
    }

    /// Touches every series that can be listed, so that it exists at 0.
    fn start<T>(&self, f: &Family, make: impl Fn(&[&str]) -> T) {
        for combination in f.initial(&self.known) {
            let values: Vec<&str> = combination.iter().map(String::as_str).collect();
            make(&values);
        }
    }

    fn counters(&self, name: &str) -> IntCounterVec {
        let f = Self::family(name, Kind::Counter);
        let v = IntCounterVec::new(Opts::new(f.name, f.help), &Self::labels(f))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.start(f, |c| v.with_label_values(c));
        self.register(f, v)
    }

    fn counter(&self, name: &str) -> IntCounter {
        let f = Self::family(name, Kind::Counter);
        self.register(f, IntCounter::new(f.name, f.help).expect("valid metric"))
    }

    fn gauges(&self, name: &str) -> IntGaugeVec {
        let f = Self::family(name, Kind::Gauge);
        let v = IntGaugeVec::new(Opts::new(f.name, f.help), &Self::labels(f))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.start(f, |c| v.with_label_values(c));
        self.register(f, v)
    }

    fn gauge(&self, name: &str) -> IntGauge {
        let f = Self::family(name, Kind::Gauge);
        self.register(f, IntGauge::new(f.name, f.help).expect("valid metric"))
    }

    fn float_gauges(&self, name: &str) -> GaugeVec {
        let f = Self::family(name, Kind::Gauge);
        let v = GaugeVec::new(Opts::new(f.name, f.help), &Self::labels(f))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.start(f, |c| v.with_label_values(c));
        self.register(f, v)
    }

    fn float_gauge(&self, name: &str) -> Gauge {
        let f = Self::family(name, Kind::Gauge);
        self.register(f, Gauge::new(f.name, f.help).expect("valid metric"))
    }

    fn histograms(&self, name: &str) -> HistogramVec {
        let f = Self::family(name, Kind::Histogram);
        let opts = HistogramOpts::new(f.name, f.help).buckets(f.buckets.to_vec());
        let v = HistogramVec::new(opts, &Self::labels(f)).unwrap_or_else(|e| panic!("{name}: {e}"));
        self.start(f, |c| v.with_label_values(c));
        self.register(f, v)
    }

    fn histogram(&self, name: &str) -> Histogram {
        let f = Self::family(name, Kind::Histogram);
        let opts = HistogramOpts::new(f.name, f.help).buckets(f.buckets.to_vec());
        self.register(f, Histogram::with_opts(opts).expect("valid metric"))
    }
}

impl Metrics {
    /// The metrics of a server with these QoS profiles.
    pub fn new(profiles: &[String]) -> Self {
        let b = Builder {
            node: Registry::new(),
            database: Registry::new(),
            known: Known {
                queues: crate::jobs::QUEUES,
                profiles,
            },
        };
        let metrics = Self {
            build_info: b.gauges("qod_build_info"),
            http_requests: b.counters("qod_http_requests_total"),
            http_duration: b.histograms("qod_http_request_duration_seconds"),
            auth_refusals: b.counters("qod_auth_refusals_total"),
            client_limited: b.counters("qod_client_limited_total"),
            transitions: b.counters("qod_session_transitions_total"),
            expiry_lateness: b.histogram("qod_session_expiry_lateness_seconds"),
            jobs: b.counters("qod_jobs_total"),
            lease_reclaims: b.counters("qod_queue_lease_reclaims_total"),
            queue_fenced: b.counter("qod_queue_fenced_total"),
            schedule_to_start: b.histograms("qod_job_schedule_to_start_seconds"),
            job_run: b.histograms("qod_job_run_seconds"),
            queue_workers: b.gauges("qod_queue_workers"),
            notification_attempts: b.counters("qod_notification_attempts_total"),
            notification_latency: b.histogram("qod_notification_delivery_seconds"),
            network_requests: b.counters("qod_network_requests_total"),
            network_duration: b.histograms("qod_network_request_duration_seconds"),
            network_events: b.counters("qod_network_events_total"),
            store_commits: b.counter("qod_store_commits_total"),
            store_writes: b.counter("qod_store_writes_total"),
            history_purged: b.counters("qod_history_purged_rows_total"),
            sessions: b.gauges("qod_sessions"),
            network_grants: b.gauges("qod_network_grants"),
            queue_jobs: b.gauges("qod_queue_jobs"),
            queue_oldest_due: b.float_gauges("qod_queue_oldest_due_age_seconds"),
            notifications_dead: b.gauge("qod_notifications_dead"),
            notifications_dead_oldest: b.float_gauge("qod_notifications_dead_oldest_age_seconds"),
            profiles: profiles.to_vec(),
            node: b.node,
            database: b.database,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    pub fn job(&self, queue: &str, outcome: &str) {
        self.jobs.with_label_values(&[queue, outcome]).inc();
    }

    /// The exposition, in OpenMetrics or the classic text format; the database's families
    /// only where this node counts them.
    pub fn render(&self, with_database: bool, open_metrics: bool) -> String {
        let mut families = self.node.gather();
        if with_database {
            families.extend(self.database.gather());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        if open_metrics {
            return openmetrics::encode(&families, |name| {
                catalogue::FAMILIES
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.unit)
            });
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_of_the_catalogue_is_registered_once() {
        let m = Metrics::new(&["QOS_E".into()]);
        m.http_requests
            .with_label_values(&["/x", "GET", "200"])
            .inc();
        m.http_duration
            .with_label_values(&["/x", "GET"])
            .observe(0.1);
        let names: std::collections::BTreeSet<String> = m
            .node
            .gather()
            .iter()
            .chain(m.database.gather().iter())
            .map(|f| f.name().to_owned())
            .collect();
        let declared: std::collections::BTreeSet<String> = catalogue::FAMILIES
            .iter()
            .map(|f| f.name.to_owned())
            .collect();
        assert_eq!(names, declared);
    }

    #[test]
    fn the_database_families_are_left_out_where_this_node_does_not_count_them() {
        let m = Metrics::new(&[]);
        assert!(m.render(true, false).contains("qod_queue_jobs{"));
        let without = m.render(false, false);
        assert!(!without.contains("qod_queue_jobs"));
        assert!(without.contains("qod_jobs_total{"));
    }
}
