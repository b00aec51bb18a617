//! What each dashboard shows. Every query names metrics of the catalogue
//! (`metrics::catalogue`), through `sel` so that the job and instance variables apply.

use super::{Board, Panel, Row, sel};
use crate::metrics::catalogue::{WITHIN_1S, WITHIN_10S};

/// `rate` of a counter (or a histogram's series) over Grafana's rate interval.
fn rate(name: &str, extra: &str) -> String {
    format!("rate({}[$__rate_interval])", sel(name, extra))
}

/// The expiry SLI over `window`: expiries within 1 s / all expiries.
fn expiry_good_ratio(window: &str) -> String {
    format!(
        "sum(increase({}[{window}])) / sum(increase({}[{window}]))",
        sel("qod_session_expiry_lateness_seconds_bucket", WITHIN_1S),
        sel("qod_session_expiry_lateness_seconds_count", "")
    )
}

/// The notification SLI over `window`: delivered within 10 s of the transition / all that
/// were delivered or given up on.
fn notification_good_ratio(window: &str) -> String {
    format!(
        "sum(increase({}[{window}])) / (sum(increase({}[{window}])) + sum(increase({}[{window}])))",
        sel("qod_notification_delivery_seconds_bucket", WITHIN_10S),
        sel("qod_notification_delivery_seconds_count", ""),
        sel("qod_notification_attempts_total", r#"outcome="dead""#)
    )
}

/// The share of the error budget (1 - objective) left over 30 days.
fn budget_left(good_ratio: String, objective: &str) -> String {
    format!("1 - (1 - ({good_ratio})) / (1 - {objective})")
}

/// How fast the budget burns over `window` (1 = exactly the budget over 30 days).
fn burn_rate(good_ratio: String, objective: &str) -> String {
    format!("(1 - ({good_ratio})) / (1 - {objective})")
}

fn p99(name: &str, by: &str) -> String {
    let by = if by.is_empty() {
        "le".to_owned()
    } else {
        format!("{by}, le")
    };
    format!(
        "histogram_quantile(0.99, sum by ({by}) ({}))",
        rate(name, "")
    )
}

fn p50(name: &str, by: &str) -> String {
    p99(name, by).replacen("0.99", "0.5", 1)
}

pub fn boards() -> Vec<Board> {
    vec![overview(), queues(), sessions(), notifications(), network()]
}

fn overview() -> Board {
    Board {
        uid: "qod-overview",
        title: "QoD orchestrator: overview and SLOs",
        description: "The two objectives (expiries within 1 s, notifications within 10 s), their \
                      error budgets, and the signs of trouble to follow into the other \
                      dashboards.",
        rows: vec![
            Row {
                title: "Objectives",
                panels: vec![
                    Panel::stat(
                        "Expiries within 1 s (range)",
                        "Share of sessions that became UNAVAILABLE within 1 s of their \
                         expiresAt over the dashboard's range. The objective is 99.9 %; below \
                         it the expiry queue is starved (see Queues).",
                        "percentunit",
                    )
                    .query(expiry_good_ratio("$__range"), "within 1 s"),
                    Panel::stat(
                        "Expiry error budget left (30 d)",
                        "Share of the 30-day error budget of the expiry objective (0.1 % of \
                         expiries later than 1 s) not yet spent. Negative: the objective is \
                         missed for the month.",
                        "percentunit",
                    )
                    .query(budget_left(expiry_good_ratio("30d"), "0.999"), "left"),
                    Panel::stat(
                        "Notifications within 10 s (range)",
                        "Share of status notifications delivered (2xx) within 10 s of their \
                         transition, dead letters counted as missed. The objective is 99 %; \
                         below it sinks fail or the delivery queue is starved.",
                        "percentunit",
                    )
                    .query(notification_good_ratio("$__range"), "within 10 s"),
                    Panel::stat(
                        "Notification error budget left (30 d)",
                        "Share of the 30-day error budget of the notification objective (1 % \
                         late or dead) not yet spent. Negative: the objective is missed for \
                         the month.",
                        "percentunit",
                    )
                    .query(budget_left(notification_good_ratio("30d"), "0.99"), "left"),
                    Panel::series(
                        "Expiry budget burn rate",
                        "How many times faster than allowed the expiry budget burns, over 5 \
                         minutes and 1 hour. 14.4 over both pages (2 % of the month's budget in \
                         an hour); 1 spends exactly the budget in 30 days.",
                        "short",
                    )
                    .query(burn_rate(expiry_good_ratio("5m"), "0.999"), "5 m")
                    .query(burn_rate(expiry_good_ratio("1h"), "0.999"), "1 h"),
                    Panel::series(
                        "Notification budget burn rate",
                        "How many times faster than allowed the notification budget burns, \
                         over 5 minutes and 1 hour. 14.4 over both pages.",
                        "short",
                    )
                    .query(burn_rate(notification_good_ratio("5m"), "0.99"), "5 m")
                    .query(burn_rate(notification_good_ratio("1h"), "0.99"), "1 h"),
                ],
            },
            Row {
                title: "Now",
                panels: vec![
                    Panel::stat(
                        "Nodes up",
                        "Scrape targets of the job answering. Fewer than deployed: a node is \
                         down or unreachable (its jobs move to the others after the lease).",
                        "short",
                    )
                    .query(r#"sum(up{job=~"$job",instance=~"$instance"})"#, "up"),
                    Panel::stat(
                        "Sessions AVAILABLE",
                        "Sessions with QoS in place now. A sudden drop without deletes: the \
                         network terminated them (see Network).",
                        "short",
                    )
                    .query(
                        format!("sum({})", sel("qod_sessions", r#"status="AVAILABLE""#)),
                        "AVAILABLE",
                    ),
                    Panel::stat(
                        "Oldest due job",
                        "How long the most overdue job of any queue has waited. Over a second \
                         for expiries or seconds for deliveries: a queue is starved or \
                         stalled.",
                        "s",
                    )
                    .query(
                        format!("max({})", sel("qod_queue_oldest_due_age_seconds", "")),
                        "oldest",
                    ),
                    Panel::stat(
                        "Dead letters",
                        "Notifications given up on, stored for `qod notifications retry ID`. \
                         Anything above 0 is a consumer that missed a status change.",
                        "short",
                    )
                    .query(
                        format!("sum({})", sel("qod_notifications_dead", "")),
                        "dead",
                    ),
                    Panel::series(
                        "API 5xx ratio",
                        "Share of API answers that were server errors. Above 0 for long: the \
                         store is unavailable or a handler fails (see the logs).",
                        "percentunit",
                    )
                    .query(
                        // A status's series starts with its first answer: 0 until a 5xx.
                        format!(
                            "(sum({}) or vector(0)) / sum({})",
                            rate("qod_http_requests_total", r#"status=~"5..""#),
                            rate("qod_http_requests_total", "")
                        ),
                        "5xx",
                    ),
                    Panel::series(
                        "Network error ratio",
                        "Share of network requests that failed or were refused. High: \
                         sessions stay REQUESTED or end NETWORK_TERMINATED.",
                        "percentunit",
                    )
                    .query(
                        format!(
                            "sum({}) / sum({})",
                            rate("qod_network_requests_total", r#"outcome!="ok""#),
                            rate("qod_network_requests_total", "")
                        ),
                        "errors",
                    ),
                ],
            },
        ],
    }
}

fn queues() -> Board {
    Board {
        uid: "qod-queues",
        title: "QoD orchestrator: job queues",
        description: "The durable job queues: how much waits, how late jobs start, how long \
                      they run, what they end in, and the workers and leases behind them.",
        rows: vec![
            Row {
                title: "Backlog",
                panels: vec![
                    Panel::series(
                        "Due jobs waiting",
                        "Jobs due now that no node holds, by queue. Growing: the workers of \
                         that queue cannot keep up or are stalled.",
                        "short",
                    )
                    .query(
                        format!(
                            "sum by (queue) ({})",
                            sel("qod_queue_jobs", r#"state="due""#)
                        ),
                        "{{queue}}",
                    ),
                    Panel::series(
                        "Oldest due job's wait",
                        "How long the oldest due, unclaimed job of each queue has waited. It \
                         grows while a queue stalls, when no job starts at all.",
                        "s",
                    )
                    .query(
                        format!(
                            "max by (queue) ({})",
                            sel("qod_queue_oldest_due_age_seconds", "")
                        ),
                        "{{queue}}",
                    ),
                    Panel::series(
                        "Jobs held by nodes",
                        "Claimed jobs by queue (running, or handed to a worker). Stuck high \
                         with nothing finishing: a node holds them and does not work.",
                        "short",
                    )
                    .query(
                        format!(
                            "sum by (queue) ({})",
                            sel("qod_queue_jobs", r#"state="claimed""#)
                        ),
                        "{{queue}}",
                    ),
                    Panel::series(
                        "Scheduled for later",
                        "Jobs due in the future by queue (expiries, renewals, purges, \
                         retries). Follows the number of live sessions.",
                        "short",
                    )
                    .query(
                        format!(
                            "sum by (queue) ({})",
                            sel("qod_queue_jobs", r#"state="scheduled""#)
                        ),
                        "{{queue}}",
                    ),
                ],
            },
            Row {
                title: "Latency",
                panels: vec![
                    Panel::series(
                        "Schedule to start, p99",
                        "Time from a job's due time to its start, 99th percentile by queue. \
                         Rising: too few workers, or a slow store.",
                        "s",
                    )
                    .query(
                        p99("qod_job_schedule_to_start_seconds_bucket", "queue"),
                        "{{queue}}",
                    ),
                    Panel::series(
                        "Run time, p99",
                        "Time a job's handler ran (its network or sink call included), 99th \
                         percentile by queue. Rising: the network or the sinks slow down.",
                        "s",
                    )
                    .query(p99("qod_job_run_seconds_bucket", "queue"), "{{queue}}"),
                ],
            },
            Row {
                title: "Outcomes and workers",
                panels: vec![
                    Panel::series(
                        "Jobs by outcome",
                        "Jobs enqueued, succeeded, retried, failed, dead and fenced per \
                         second, by queue. Dead above 0: work was given up on.",
                        "ops",
                    )
                    .query(
                        format!("sum by (queue, outcome) ({})", rate("qod_jobs_total", "")),
                        "{{queue}} {{outcome}}",
                    ),
                    Panel::series(
                        "Busy workers",
                        "Worker slots running a job, by queue. At the pool's size for long: \
                         the pool is the bottleneck.",
                        "short",
                    )
                    .query(
                        format!(
                            "sum by (queue) ({})",
                            sel("qod_queue_workers", r#"state="busy""#)
                        ),
                        "{{queue}}",
                    ),
                    Panel::series(
                        "Lease reclaims and fenced writes",
                        "Jobs taken over from a node whose lease lapsed, and writes refused \
                         because the job was taken over meanwhile. Above 0: a node died or \
                         stalled longer than its lease.",
                        "ops",
                    )
                    .query(
                        format!(
                            "sum by (queue) ({})",
                            rate("qod_queue_lease_reclaims_total", "")
                        ),
                        "reclaimed {{queue}}",
                    )
                    .query(
                        format!("sum({})", rate("qod_queue_fenced_total", "")),
                        "fenced",
                    ),
                    Panel::series(
                        "Store commits",
                        "Write transactions per second and the writes they carried. Writes \
                         per commit show how well commits are shared.",
                        "ops",
                    )
                    .query(
                        format!("sum({})", rate("qod_store_commits_total", "")),
                        "commits",
                    )
                    .query(
                        format!("sum({})", rate("qod_store_writes_total", "")),
                        "writes",
                    ),
                ],
            },
        ],
    }
}

fn sessions() -> Board {
    Board {
        uid: "qod-sessions",
        title: "QoD orchestrator: sessions and API",
        description: "Sessions by state and profile, their transitions, expiry lateness, and \
                      the API that creates them.",
        rows: vec![
            Row {
                title: "Sessions",
                panels: vec![
                    Panel::series(
                        "Sessions by status",
                        "Stored sessions by QoS status. REQUESTED that stays up: the network \
                         does not confirm.",
                        "short",
                    )
                    .query(
                        format!("sum by (status) ({})", sel("qod_sessions", "")),
                        "{{status}}",
                    ),
                    Panel::series(
                        "AVAILABLE by profile",
                        "Sessions with QoS in place, by QoS profile.",
                        "short",
                    )
                    .query(
                        format!(
                            "sum by (profile) ({})",
                            sel("qod_sessions", r#"status="AVAILABLE""#)
                        ),
                        "{{profile}}",
                    ),
                    Panel::series(
                        "Transitions",
                        "State transitions per second by target state and reason. \
                         NETWORK_TERMINATED rising: the network ends sessions or never \
                         confirms them.",
                        "ops",
                    )
                    .query(
                        format!(
                            "sum by (to, reason) ({})",
                            rate("qod_session_transitions_total", "")
                        ),
                        "{{to}} {{reason}}",
                    ),
                    Panel::series(
                        "Expiry lateness",
                        "Time from expiresAt to the commit of UNAVAILABLE, median and 99th \
                         percentile. The objective: 99.9 % within 1 s.",
                        "s",
                    )
                    .query(p50("qod_session_expiry_lateness_seconds_bucket", ""), "p50")
                    .query(p99("qod_session_expiry_lateness_seconds_bucket", ""), "p99"),
                ],
            },
            Row {
                title: "API",
                panels: vec![
                    Panel::series(
                        "Requests by route and status",
                        "API answers per second by route template, method and status. 5xx: \
                         the store is unavailable or a handler failed.",
                        "reqps",
                    )
                    .query(
                        format!(
                            "sum by (route, method, status) ({})",
                            rate("qod_http_requests_total", "")
                        ),
                        "{{method}} {{route}} {{status}}",
                    ),
                    Panel::series(
                        "Answer time, p99",
                        "99th percentile of the time to answer, by route template and method.",
                        "s",
                    )
                    .query(
                        p99("qod_http_request_duration_seconds_bucket", "route, method"),
                        "{{method}} {{route}}",
                    ),
                    Panel::series(
                        "Refused requests",
                        "Requests refused as unauthenticated (by reason) or by a per-client \
                         limit (rate, quota). A burst of invalid: a client with a wrong key, \
                         or a probe.",
                        "reqps",
                    )
                    .query(
                        format!("sum by (reason) ({})", rate("qod_auth_refusals_total", "")),
                        "unauthenticated {{reason}}",
                    )
                    .query(
                        format!("sum by (limit) ({})", rate("qod_client_limited_total", "")),
                        "limited {{limit}}",
                    ),
                    Panel::series(
                        "History purged",
                        "Rows of history deleted past the retention, per second by table.",
                        "ops",
                    )
                    .query(
                        format!(
                            "sum by (table) ({})",
                            rate("qod_history_purged_rows_total", "")
                        ),
                        "{{table}}",
                    ),
                ],
            },
        ],
    }
}

fn notifications() -> Board {
    Board {
        uid: "qod-notifications",
        title: "QoD orchestrator: notifications",
        description: "Status notifications to the consumers' sinks: attempts, how long a \
                      transition takes to reach its sink, and what was given up on.",
        rows: vec![Row {
            title: "Delivery",
            panels: vec![
                Panel::series(
                    "Attempts by outcome",
                    "Delivery attempts per second: delivered, retried, dead, refused (a sink \
                     not allowed). Retried rising: sinks fail or answer slowly.",
                    "ops",
                )
                .query(
                    format!(
                        "sum by (outcome) ({})",
                        rate("qod_notification_attempts_total", "")
                    ),
                    "{{outcome}}",
                ),
                Panel::series(
                    "Transition to delivery",
                    "Time from a transition to the 2xx of its notification, retries \
                     included: median and 99th percentile. The objective: 99 % within 10 s.",
                    "s",
                )
                .query(p50("qod_notification_delivery_seconds_bucket", ""), "p50")
                .query(p99("qod_notification_delivery_seconds_bucket", ""), "p99"),
                Panel::series(
                    "Dead letters",
                    "Notifications given up on, stored; and how old the oldest is. Revive \
                     them with `qod notifications retry ID` once the sink is back.",
                    "short",
                )
                .query(
                    format!("sum({})", sel("qod_notifications_dead", "")),
                    "dead",
                ),
                Panel::series(
                    "Oldest dead letter",
                    "Age of the oldest dead-lettered notification's transition. Growing: \
                     nobody revived or cleared them.",
                    "s",
                )
                .query(
                    format!(
                        "max({})",
                        sel("qod_notifications_dead_oldest_age_seconds", "")
                    ),
                    "oldest",
                ),
                Panel::series(
                    "Deliveries waiting",
                    "Delivery jobs due now and not held by a node. Growing: the delivery \
                     pool cannot keep up with the sinks.",
                    "short",
                )
                .query(
                    format!(
                        "sum({})",
                        sel(
                            "qod_queue_jobs",
                            r#"queue="deliver_notification",state="due""#
                        )
                    ),
                    "due",
                ),
            ],
        }],
    }
}

fn network() -> Board {
    Board {
        uid: "qod-network",
        title: "QoD orchestrator: network",
        description: "What the server asks of the network (the NEF or the simulated one), how \
                      it answers, the callbacks it sends, and the grants it holds for us.",
        rows: vec![Row {
            title: "Network",
            panels: vec![
                Panel::series(
                    "Requests by operation and outcome",
                    "Provision, renew, release and check requests per second by outcome. \
                     failed or busy rising: the NEF is down or overloaded (jobs retry).",
                    "reqps",
                )
                .query(
                    format!(
                        "sum by (operation, outcome) ({})",
                        rate("qod_network_requests_total", "")
                    ),
                    "{{operation}} {{outcome}}",
                ),
                Panel::series(
                    "Answer time, p99",
                    "99th percentile of the network's answer time by operation.",
                    "s",
                )
                .query(
                    p99("qod_network_request_duration_seconds_bucket", "operation"),
                    "{{operation}}",
                ),
                Panel::series(
                    "Callbacks by event",
                    "Notifications received from the network per second, by event. REFUSED: \
                     callbacks with a wrong secret (a misrouted or forged request).",
                    "ops",
                )
                .query(
                    format!("sum by (event) ({})", rate("qod_network_events_total", "")),
                    "{{event}}",
                ),
                Panel::series(
                    "Grants held",
                    "Network grants by state. releasing that stays up: the network refuses \
                     our releases and holds resources for ended sessions.",
                    "short",
                )
                .query(
                    format!("sum by (state) ({})", sel("qod_network_grants", "")),
                    "{{state}}",
                ),
            ],
        }],
    }
}
