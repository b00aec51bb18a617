//! The metric contract: every metric this server exports, with its type, unit, labels and the
//! values each label may take. The registry is built from this table, the committed catalogue
//! (`dashboards/metrics.md`, `qod metrics catalogue`) is rendered from it, and a test compares
//! a live `/metrics` with it both ways: a metric renamed here and not in the dashboards, or
//! exported without being here, fails the build.

/// The buckets of every latency an SLO is stated on: the thresholds (1 s, 10 s) are exact
/// bucket bounds, so `WITHIN_1S` counts exactly the events within the objective.
pub const SLO_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The `le` matchers of the SLO thresholds. A bound reads `1` in the classic text format and
/// `1.0` in OpenMetrics, which Prometheus 2 scrapes by default and stores as written: a query
/// must match both.
pub const WITHIN_1S: &str = r#"le=~"1(\\.0)?""#;
pub const WITHIN_10S: &str = r#"le=~"10(\\.0)?""#;
/// Buckets of the API's and the network's request times.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of a notification's way from its transition to the consumer: the SLO's 10 s, then
/// the retries' minutes.
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Which process reports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every node, for what it did itself: sum over instances.
    Node,
    /// Counted from the database, by the node that holds the maintenance role only (one node
    /// at a time, so a sum over instances counts once; a node that lost the role drops them).
    Database,
}

/// The values a label may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    Listed(&'static [&'static str]),
    /// The job queues (`jobs::QUEUES`).
    Queues,
    /// The names of the configured QoS profiles.
    Profiles,
    /// A three-digit HTTP status code.
    HttpStatus,
    /// A route template of the router (`/quality-on-demand/v1/sessions/{sessionId}`), never a
    /// path as requested; `unmatched` for requests that matched no route.
    Routes,
    /// This build's version (`CARGO_PKG_VERSION`).
    Version,
    /// The network events this server knows, and `OTHER`, `TEST`, `REFUSED`.
    NetworkEvents,
}

#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    pub values: Values,
}

#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// `seconds`, `rows`, `sessions`, ... (`1` for a ratio or a flag).
    pub unit: &'static str,
    pub scope: Scope,
    pub help: &'static str,
    pub labels: &'static [Label],
    /// The label combinations that exist (each starts at 0); empty: every combination of the
    /// labels' values, when they can be listed.
    pub combinations: &'static [&'static [&'static str]],
    pub buckets: &'static [f64],
}

const fn label(name: &'static str, values: Values) -> Label {
    Label { name, values }
}

const QUEUE: Label = label("queue", Values::Queues);
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];
/// What the network port answered.
pub const NETWORK_OUTCOMES: &[&str] = &["ok", "refused", "failed", "busy"];
pub const NETWORK_OPERATIONS: &[&str] = &["provision", "renew", "release", "check"];

/// Every transition the state machine makes (`domain::session`), as (from, to, reason);
/// a create comes from nothing ("").
const TRANSITIONS: &[&[&str]] = &[
    &["", "REQUESTED", "CREATED"],
    &["REQUESTED", "AVAILABLE", "NETWORK_GRANTED"],
    &["AVAILABLE", "AVAILABLE", "EXTENDED"],
    &["AVAILABLE", "AVAILABLE", "GRANT_RENEWED"],
    &["AVAILABLE", "AVAILABLE", "QOS_GUARANTEED"],
    &["AVAILABLE", "AVAILABLE", "QOS_NOT_GUARANTEED"],
    &["REQUESTED", "UNAVAILABLE", "DURATION_EXPIRED"],
    &["REQUESTED", "UNAVAILABLE", "NETWORK_TERMINATED"],
    &["REQUESTED", "UNAVAILABLE", "DELETE_REQUESTED"],
    &["AVAILABLE", "UNAVAILABLE", "DURATION_EXPIRED"],
    &["AVAILABLE", "UNAVAILABLE", "NETWORK_TERMINATED"],
    &["AVAILABLE", "UNAVAILABLE", "DELETE_REQUESTED"],
    &["UNAVAILABLE", "PURGED", "RETENTION_ELAPSED"],
];

const NONE: &[&[&str]] = &[];

pub const FAMILIES: &[Family] = &[
    Family {
        name: "qod_build_info",
        kind: Kind::Gauge,
        unit: "1",
        scope: Scope::Node,
        help: "Always 1; the version of the build this node runs.",
        labels: &[label("version", Values::Version)],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_http_requests_total",
        kind: Kind::Counter,
        unit: "requests",
        scope: Scope::Node,
        help: "HTTP requests answered, by route template, method and status code.",
        labels: &[
            label("route", Values::Routes),
            label("method", Values::Listed(METHODS)),
            label("status", Values::HttpStatus),
        ],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_http_request_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time from a request's arrival to its answer, by route template and method.",
        labels: &[
            label("route", Values::Routes),
            label("method", Values::Listed(METHODS)),
        ],
        combinations: NONE,
        buckets: REQUEST_BUCKETS,
    },
    Family {
        name: "qod_auth_refusals_total",
        kind: Kind::Counter,
        unit: "requests",
        scope: Scope::Node,
        help: "API requests refused as unauthenticated, by reason.",
        labels: &[label(
            "reason",
            Values::Listed(&["missing", "invalid", "expired"]),
        )],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_client_limited_total",
        kind: Kind::Counter,
        unit: "requests",
        scope: Scope::Node,
        help: "API requests refused by a per-client limit: rate (request rate, 429) or quota \
               (active sessions, 429).",
        labels: &[label("limit", Values::Listed(&["rate", "quota"]))],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_session_transitions_total",
        kind: Kind::Counter,
        unit: "transitions",
        scope: Scope::Node,
        help: "Session state transitions this node committed, by from/to state and reason.",
        labels: &[
            label(
                "from",
                Values::Listed(&["", "REQUESTED", "AVAILABLE", "UNAVAILABLE"]),
            ),
            label(
                "to",
                Values::Listed(&["REQUESTED", "AVAILABLE", "UNAVAILABLE", "PURGED"]),
            ),
            label(
                "reason",
                Values::Listed(&[
                    "CREATED",
                    "NETWORK_GRANTED",
                    "EXTENDED",
                    "GRANT_RENEWED",
                    "QOS_GUARANTEED",
                    "QOS_NOT_GUARANTEED",
                    "DURATION_EXPIRED",
                    "NETWORK_TERMINATED",
                    "DELETE_REQUESTED",
                    "RETENTION_ELAPSED",
                ]),
            ),
        ],
        combinations: TRANSITIONS,
        buckets: &[],
    },
    Family {
        name: "qod_session_expiry_lateness_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time from a session's expiresAt to the commit that made it UNAVAILABLE \
               (DURATION_EXPIRED). The expiry SLO: 99.9 % within 1 s.",
        labels: &[],
        combinations: NONE,
        buckets: SLO_BUCKETS,
    },
    Family {
        name: "qod_jobs_total",
        kind: Kind::Counter,
        unit: "jobs",
        scope: Scope::Node,
        help: "Jobs by queue and outcome: enqueued (committed by this node), succeeded, \
               retried, failed (an attempt that failed; retried or dead), dead (out of \
               attempts), fenced (another node took the job over meanwhile).",
        labels: &[
            QUEUE,
            label(
                "outcome",
                Values::Listed(&[
                    "enqueued",
                    "succeeded",
                    "retried",
                    "failed",
                    "dead",
                    "fenced",
                ]),
            ),
        ],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_queue_lease_reclaims_total",
        kind: Kind::Counter,
        unit: "jobs",
        scope: Scope::Node,
        help: "Jobs this node claimed from another node's lapsed lease (that node died or \
               stalled), by queue.",
        labels: &[QUEUE],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_queue_fenced_total",
        kind: Kind::Counter,
        unit: "writes",
        scope: Scope::Node,
        help: "Writes and settlements of jobs refused because another node claimed the job \
               again after this node's lease lapsed (fencing).",
        labels: &[],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_job_schedule_to_start_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time from a job's due time to its start on this node, by queue: rising values \
               mean too few workers or a slow store.",
        labels: &[QUEUE],
        combinations: NONE,
        buckets: SLO_BUCKETS,
    },
    Family {
        name: "qod_job_run_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time a job's handler ran (its network or sink call included), by queue.",
        labels: &[QUEUE],
        combinations: NONE,
        buckets: SLO_BUCKETS,
    },
    Family {
        name: "qod_queue_workers",
        kind: Kind::Gauge,
        unit: "workers",
        scope: Scope::Node,
        help: "This node's worker slots by queue and state: busy (running a job) or idle.",
        labels: &[QUEUE, label("state", Values::Listed(&["busy", "idle"]))],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_notification_attempts_total",
        kind: Kind::Counter,
        unit: "attempts",
        scope: Scope::Node,
        help: "Notification delivery attempts by outcome: delivered (2xx), retried, dead (out \
               of attempts or refused for good), refused (the sink is not allowed).",
        labels: &[label(
            "outcome",
            Values::Listed(&["delivered", "retried", "dead", "refused"]),
        )],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_notification_delivery_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time from a transition to the 2xx of its notification, retries included. The \
               notification SLO: 99 % within 10 s.",
        labels: &[],
        combinations: NONE,
        buckets: DELIVERY_BUCKETS,
    },
    Family {
        name: "qod_network_requests_total",
        kind: Kind::Counter,
        unit: "requests",
        scope: Scope::Node,
        help: "Requests to the network (the NEF or the simulated network) by operation and \
               outcome: ok, refused (for good), failed (retryable), busy (asked to come back).",
        labels: &[
            label("operation", Values::Listed(NETWORK_OPERATIONS)),
            label("outcome", Values::Listed(NETWORK_OUTCOMES)),
        ],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_network_request_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        scope: Scope::Node,
        help: "Time the network took to answer, by operation.",
        labels: &[label("operation", Values::Listed(NETWORK_OPERATIONS))],
        combinations: NONE,
        buckets: REQUEST_BUCKETS,
    },
    Family {
        name: "qod_network_events_total",
        kind: Kind::Counter,
        unit: "callbacks",
        scope: Scope::Node,
        help: "Callbacks received from the network, by event (OTHER for events this server \
               does not know, TEST for test notifications, REFUSED for a wrong secret).",
        labels: &[label("event", Values::NetworkEvents)],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_store_commits_total",
        kind: Kind::Counter,
        unit: "transactions",
        scope: Scope::Node,
        help: "Write transactions this node committed to its store.",
        labels: &[],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_store_writes_total",
        kind: Kind::Counter,
        unit: "writes",
        scope: Scope::Node,
        help: "Writes (state changes, job settlements, enqueues) carried by those commits.",
        labels: &[],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_history_purged_rows_total",
        kind: Kind::Counter,
        unit: "rows",
        scope: Scope::Node,
        help: "Rows of history deleted past the history retention, by table.",
        labels: &[label(
            "table",
            Values::Listed(&[
                "notifications",
                "session_events",
                "sim_grants",
                "history_inputs",
            ]),
        )],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_sessions",
        kind: Kind::Gauge,
        unit: "sessions",
        scope: Scope::Database,
        help: "Stored sessions by QoS status and profile.",
        labels: &[
            label(
                "status",
                Values::Listed(&["REQUESTED", "AVAILABLE", "UNAVAILABLE"]),
            ),
            label("profile", Values::Profiles),
        ],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_network_grants",
        kind: Kind::Gauge,
        unit: "grants",
        scope: Scope::Database,
        help: "Network grants of stored sessions by state: provisioning (asked, maybe held), \
               granted, releasing (to be given back; staying up means the network refuses \
               our releases).",
        labels: &[label(
            "state",
            Values::Listed(&["provisioning", "granted", "releasing"]),
        )],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_queue_jobs",
        kind: Kind::Gauge,
        unit: "jobs",
        scope: Scope::Database,
        help: "Jobs in the queue by queue and state: due (due now, not claimed), scheduled \
               (due later), claimed (held by a node).",
        labels: &[
            QUEUE,
            label("state", Values::Listed(&["due", "scheduled", "claimed"])),
        ],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_queue_oldest_due_age_seconds",
        kind: Kind::Gauge,
        unit: "seconds",
        scope: Scope::Database,
        help: "How long the oldest due, unclaimed job of a queue has waited past its due \
               time (0 when none waits): the queue's latency, which grows while a queue \
               stalls even though no job starts.",
        labels: &[QUEUE],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_notifications_dead",
        kind: Kind::Gauge,
        unit: "notifications",
        scope: Scope::Database,
        help: "Dead-lettered notifications stored (revive them with `qod notifications`).",
        labels: &[],
        combinations: NONE,
        buckets: &[],
    },
    Family {
        name: "qod_notifications_dead_oldest_age_seconds",
        kind: Kind::Gauge,
        unit: "seconds",
        scope: Scope::Database,
        help: "Age of the oldest dead-lettered notification's event (0 when there is none).",
        labels: &[],
        combinations: NONE,
        buckets: &[],
    },
];

/// The family named `name` (a name missing here is a bug of ours, caught by any test).
pub fn family(name: &str) -> &'static Family {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the metric catalogue"))
}

/// What the labels of enumerable kinds take here (the queues, the configured profiles).
pub struct Known<'a> {
    pub queues: &'a [&'a str],
    pub profiles: &'a [String],
}

impl Values {
    /// The values, when they can be listed in advance.
    pub fn listed(self, known: &Known<'_>) -> Option<Vec<String>> {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        match self {
            Values::Listed(v) => Some(owned(v)),
            Values::Queues => Some(owned(known.queues)),
            Values::Profiles => Some(known.profiles.to_vec()),
            Values::Version => Some(vec![env!("CARGO_PKG_VERSION").to_owned()]),
            Values::NetworkEvents => Some(
                crate::jobs::apply_network_event::KNOWN_EVENTS
                    .iter()
                    .chain(&["OTHER", "TEST", "REFUSED"])
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            Values::HttpStatus | Values::Routes => None,
        }
    }

    /// Whether `value` is one this label may take.
    pub fn allows(self, value: &str, known: &Known<'_>) -> bool {
        match self {
            Values::HttpStatus => {
                value.len() == 3
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && ('1'..='5').contains(&value.chars().next().unwrap_or('0'))
            }
            Values::Routes => {
                value == "unmatched"
                    || (value.starts_with('/')
                        && value.split('/').skip(1).all(|segment| {
                            !segment.is_empty()
                                && segment
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_.{}".contains(&b))
                        }))
            }
            other => other
                .listed(known)
                .is_some_and(|v| v.iter().any(|x| x == value)),
        }
    }

    fn describe(self) -> String {
        match self {
            Values::Listed(v) => v
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        "`\"\"`".to_owned()
                    } else {
                        format!("`{s}`")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            Values::Queues => "the job queues".into(),
            Values::Profiles => "the configured QoS profile names".into(),
            Values::HttpStatus => "an HTTP status code".into(),
            Values::Routes => "a route template, or `unmatched`".into(),
            Values::Version => "the build's version".into(),
            Values::NetworkEvents => {
                Values::Listed(crate::jobs::apply_network_event::KNOWN_EVENTS).describe()
                    + ", `OTHER` (an event this server does not know), `TEST` (a test notification), \
                   `REFUSED` (a callback with a wrong secret)"
            }
        }
    }
}

impl Family {
    /// The label combinations every series of this family starts with (at 0).
    pub fn initial(&self, known: &Known<'_>) -> Vec<Vec<String>> {
        if !self.combinations.is_empty() {
            return self
                .combinations
                .iter()
                .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
                .collect();
        }
        let mut all: Vec<Vec<String>> = vec![Vec::new()];
        for l in self.labels {
            let Some(values) = l.values.listed(known) else {
                return if self.labels.is_empty() {
                    vec![Vec::new()]
                } else {
                    Vec::new()
                };
            };
            all = all
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut c = prefix.clone();
                        c.push(v.clone());
                        c
                    })
                })
                .collect();
        }
        all
    }

    /// Whether a series with these label values may exist.
    pub fn allows(&self, values: &[(&str, &str)], known: &Known<'_>) -> bool {
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        let declared: Vec<&str> = self.labels.iter().map(|l| l.name).collect();
        if names != declared {
            return false;
        }
        if !self.combinations.is_empty() {
            return self
                .combinations
                .iter()
                .any(|c| c.iter().zip(values).all(|(a, (_, b))| a == b));
        }
        self.labels
            .iter()
            .zip(values)
            .all(|(l, (_, v))| l.values.allows(v, known))
    }
}

/// The catalogue as committed (`dashboards/metrics.md`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Metrics of qod-orchestrator\n\n\
         Generated by `qod metrics catalogue` from the server's metric table \
         (`src/metrics/catalogue.rs`); a test fails when this file, the table or a live \
         `/metrics` disagree. **Scope** `node`: every node reports what it did itself (sum \
         over instances). `database`: counted from the database by the node that holds the \
         maintenance role, one node at a time (the others do not export it).\n\n\
         | Metric | Type | Unit | Scope | Labels | Meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for f in FAMILIES {
        let labels = if f.labels.is_empty() {
            "—".to_owned()
        } else {
            f.labels
                .iter()
                .map(|l| format!("`{}`: {}", l.name, l.values.describe()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut meaning = f.help.to_owned();
        if !f.buckets.is_empty() {
            let b: Vec<String> = f.buckets.iter().map(|b| format!("{b}")).collect();
            meaning.push_str(&format!(" Buckets: {}.", b.join(", ")));
        }
        if !f.combinations.is_empty() {
            let c: Vec<String> = f
                .combinations
                .iter()
                .map(|c| format!("({})", c.join(", ")))
                .collect();
            meaning.push_str(&format!(" Combinations: {}.", c.join("; ")));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            f.name,
            f.kind.as_str(),
            f.unit,
            match f.scope {
                Scope::Node => "node",
                Scope::Database => "database",
            },
            labels,
            meaning.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known<'static> {
        Known {
            queues: &["expire_session"],
            profiles: &[],
        }
    }

    #[test]
    fn names_follow_the_conventions_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("qod_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
            if f.unit == "seconds" {
                assert!(f.name.ends_with("_seconds"), "{}", f.name);
            }
            assert_eq!(
                f.kind == Kind::Histogram,
                !f.buckets.is_empty(),
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn the_slo_thresholds_are_bucket_bounds() {
        assert!(SLO_BUCKETS.contains(&1.0) && SLO_BUCKETS.contains(&10.0));
        assert!(DELIVERY_BUCKETS.contains(&10.0));
        assert_eq!(
            family("qod_session_expiry_lateness_seconds").buckets,
            SLO_BUCKETS
        );
    }

    #[test]
    fn listed_combinations_are_allowed_and_others_are_not() {
        let t = family("qod_session_transitions_total");
        assert_eq!(t.initial(&known()).len(), TRANSITIONS.len());
        let ok = [
            ("from", "REQUESTED"),
            ("to", "AVAILABLE"),
            ("reason", "NETWORK_GRANTED"),
        ];
        assert!(t.allows(&ok, &known()));
        let impossible = [
            ("from", "UNAVAILABLE"),
            ("to", "AVAILABLE"),
            ("reason", "NETWORK_GRANTED"),
        ];
        assert!(!t.allows(&impossible, &known()));
        let jobs = family("qod_jobs_total");
        assert_eq!(jobs.initial(&known()).len(), 6);
        assert!(!jobs.allows(&[("queue", "other"), ("outcome", "dead")], &known()));
        assert!(!jobs.allows(&[("outcome", "dead")], &known()));
    }

    #[test]
    fn routes_are_templates_and_statuses_are_codes() {
        let k = known();
        assert!(Values::Routes.allows("/quality-on-demand/v1/sessions/{sessionId}", &k));
        assert!(Values::Routes.allows("unmatched", &k));
        assert!(!Values::Routes.allows("/sessions/1f0c 2", &k));
        assert!(!Values::Routes.allows("/sessions//x", &k));
        assert!(Values::HttpStatus.allows("201", &k));
        assert!(!Values::HttpStatus.allows("2011", &k));
        assert!(!Values::HttpStatus.allows("abc", &k));
    }

    #[test]
    fn http_families_start_empty_since_their_routes_cannot_be_listed() {
        assert!(
            family("qod_http_requests_total")
                .initial(&known())
                .is_empty()
        );
        assert_eq!(
            family("qod_queue_fenced_total").initial(&known()),
            vec![Vec::<String>::new()]
        );
    }
}
