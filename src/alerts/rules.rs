//! The recording rules and alerts, each alert with the case that makes it fire and the one
//! that must leave it silent. The SLO alerts are the multi-window, multi-burn-rate kind: page
//! when 2 % of the 30-day budget burns in an hour (14.4x over 1 h and 5 m) or 5 % in six
//! hours (6x over 6 h and 30 m); ticket at 3x over 1 d and 2 h, or 1x over 3 d and 6 h. A
//! stalled queue starts no job and moves no histogram, so each SLO has a starvation guard on
//! the age of its queue's oldest due job, and an absence alert for each of its inputs.

use super::{Alert, Case, Recording, Severity};
use crate::metrics::catalogue::{WITHIN_1S, WITHIN_10S};

const WINDOWS: &[&str] = &["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// The expiry SLO: 99.9 % of expiries within 1 s of expiresAt.
const EXPIRY_OBJECTIVE: f64 = 0.999;
/// The notification SLO: 99 % of notifications delivered within 10 s of their transition.
const NOTIFICATION_OBJECTIVE: f64 = 0.99;

fn expiry_errors(window: &str) -> String {
    format!(
        "1 - (sum by (job) (rate(qod_session_expiry_lateness_seconds_bucket{{{WITHIN_1S}}}[{window}])) \
         / sum by (job) (rate(qod_session_expiry_lateness_seconds_count[{window}])))"
    )
}

fn notification_errors(window: &str) -> String {
    format!(
        "1 - (sum by (job) (rate(qod_notification_delivery_seconds_bucket{{{WITHIN_10S}}}[{window}])) \
         / (sum by (job) (rate(qod_notification_delivery_seconds_count[{window}])) \
         + sum by (job) (rate(qod_notification_attempts_total{{outcome=\"dead\"}}[{window}]))))"
    )
}

fn ratio(slo: &str, window: &str) -> String {
    format!("qod:{slo}_slo_errors:ratio_rate{window}")
}

pub fn recordings() -> Vec<Recording> {
    let mut all = Vec::new();
    for w in WINDOWS {
        all.push(Recording {
            record: ratio("expiry", w),
            expr: expiry_errors(w),
        });
    }
    for w in WINDOWS {
        all.push(Recording {
            record: ratio("notification", w),
            expr: notification_errors(w),
        });
    }
    all
}

/// Burn-rate condition over a long and a short window, both above `factor` times the budget.
fn burning(slo: &str, objective: f64, factor: f64, long: &str, short: &str) -> String {
    let threshold = factor * (1.0 - objective);
    let threshold = format!("{threshold:.6}");
    let threshold = threshold.trim_end_matches('0');
    format!(
        "({} > {threshold} and {} > {threshold})",
        ratio(slo, long),
        ratio(slo, short)
    )
}

/// At least `events` events over `window`, counted over `series` (an SLO's good and bad events
/// may be counted apart): a handful at low traffic is no burn rate.
fn enough(series: &[&str], window: &str, events: u32) -> String {
    let sums: Vec<String> = series
        .iter()
        .map(|s| format!("sum by (job) (increase({s}[{window}]))"))
        .collect();
    format!("{} >= {events}", sums.join(" + "))
}

fn fast(slo: &str, objective: f64, count: &[&str]) -> String {
    format!(
        "({} or {}) and on (job) {}",
        burning(slo, objective, 14.4, "1h", "5m"),
        burning(slo, objective, 6.0, "6h", "30m"),
        enough(count, "1h", 10)
    )
}

fn slow(slo: &str, objective: f64, count: &[&str]) -> String {
    format!(
        "({} or {}) and on (job) {}",
        burning(slo, objective, 3.0, "1d", "2h"),
        burning(slo, objective, 1.0, "3d", "6h"),
        enough(count, "6h", 10)
    )
}

const JOB: &[(&str, &str)] = &[("job", "qod")];

/// A case on one node of job `qod`.
fn node(metric: &str, labels: &str) -> String {
    if labels.is_empty() {
        format!(r#"{metric}{{job="qod",instance="qod-1:8080"}}"#)
    } else {
        format!(r#"{metric}{{job="qod",instance="qod-1:8080",{labels}}}"#)
    }
}

/// Expiries at `per_minute`, `late` of them past 1 s.
fn expiries(case: Case, per_minute: u32, late: f64, samples: u32) -> Case {
    let good = f64::from(per_minute) - late;
    case.series(
        node("qod_session_expiry_lateness_seconds_count", ""),
        format!("0+{per_minute}x{samples}"),
    )
    .series(
        node("qod_session_expiry_lateness_seconds_bucket", r#"le="1.0""#),
        format!("0+{good}x{samples}"),
    )
}

/// Notifications at `per_minute`, `late` of them after 10 s, none dead.
fn deliveries(case: Case, per_minute: u32, late: f64, samples: u32) -> Case {
    deliveries_and_dead(case, per_minute, late, 0, samples)
}

/// Notifications delivered at `per_minute` (`late` of them after 10 s) and `dead` a minute
/// given up on.
fn deliveries_and_dead(case: Case, per_minute: u32, late: f64, dead: u32, samples: u32) -> Case {
    let good = f64::from(per_minute) - late;
    case.series(
        node("qod_notification_delivery_seconds_count", ""),
        format!("0+{per_minute}x{samples}"),
    )
    .series(
        node("qod_notification_delivery_seconds_bucket", r#"le="10""#),
        format!("0+{good}x{samples}"),
    )
    .series(
        node("qod_notification_attempts_total", r#"outcome="dead""#),
        format!("0+{dead}x{samples}"),
    )
}

pub fn alerts() -> Vec<Alert> {
    let expiry_count = &["qod_session_expiry_lateness_seconds_count"];
    // A notification given up on is an event too: a sink that fails every delivery must page.
    let delivery_count = &[
        "qod_notification_delivery_seconds_count",
        "qod_notification_attempts_total{outcome=\"dead\"}",
    ];
    vec![
        Alert {
            name: "QodTargetDown",
            group: "qod-availability",
            expr: r#"up{job="qod"} == 0"#.into(),
            for_: "1m",
            severity: Severity::Critical,
            summary: "A qod node does not answer its scrapes.",
            description: "{{ $labels.instance }} of {{ $labels.job }} has not answered Prometheus for a minute.",
            fires_with: &[("job", "qod"), ("instance", "qod-1:8080")],
            firing: Case::new("1m", "5m").series(r#"up{job="qod",instance="qod-1:8080"}"#, "1 1 0 0 0 0"),
            silent: Case::new("1m", "5m").series(r#"up{job="qod",instance="qod-1:8080"}"#, "1x6"),
        },
        Alert {
            name: "QodApiErrorRatioHigh",
            group: "qod-availability",
            expr: "sum by (job) (rate(qod_http_requests_total{status=~\"5..\"}[5m])) \
                   / sum by (job) (rate(qod_http_requests_total[5m])) > 0.05"
                .into(),
            for_: "5m",
            severity: Severity::Critical,
            summary: "More than 5 % of API answers are server errors.",
            description: "Over 5 % of the API answers of {{ $labels.job }} have been 5xx for 5 minutes.",
            fires_with: JOB,
            firing: Case::new("1m", "12m")
                .series(node("qod_http_requests_total", r#"route="/quality-on-demand/v1/sessions",method="POST",status="503""#), "0+10x20")
                .series(node("qod_http_requests_total", r#"route="/quality-on-demand/v1/sessions",method="POST",status="201""#), "0+10x20"),
            silent: Case::new("1m", "12m")
                .series(node("qod_http_requests_total", r#"route="/quality-on-demand/v1/sessions",method="POST",status="503""#), "0x20")
                .series(node("qod_http_requests_total", r#"route="/quality-on-demand/v1/sessions",method="POST",status="201""#), "0+10x20"),
        },
        Alert {
            name: "QodNetworkErrorRatioHigh",
            group: "qod-availability",
            expr: "sum by (job) (rate(qod_network_requests_total{outcome!=\"ok\"}[5m])) \
                   / sum by (job) (rate(qod_network_requests_total[5m])) > 0.1"
                .into(),
            for_: "5m",
            severity: Severity::Warning,
            summary: "More than 10 % of network requests fail or are refused.",
            description: "Over 10 % of the network requests of {{ $labels.job }} have failed or been refused for 5 minutes.",
            fires_with: JOB,
            firing: Case::new("1m", "12m")
                .series(node("qod_network_requests_total", r#"operation="provision",outcome="failed""#), "0+30x20")
                .series(node("qod_network_requests_total", r#"operation="provision",outcome="ok""#), "0+10x20"),
            silent: Case::new("1m", "12m")
                .series(node("qod_network_requests_total", r#"operation="provision",outcome="failed""#), "0x20")
                .series(node("qod_network_requests_total", r#"operation="provision",outcome="ok""#), "0+10x20"),
        },
        Alert {
            name: "QodQueueOldestDueTooOld",
            group: "qod-queues",
            expr: "max by (job, queue) (qod_queue_oldest_due_age_seconds) > 60".into(),
            for_: "5m",
            severity: Severity::Warning,
            summary: "A job queue has had a due job waiting for over a minute.",
            description: "The oldest due job of queue {{ $labels.queue }} of {{ $labels.job }} has waited over 60 s for 5 minutes.",
            fires_with: &[("job", "qod"), ("queue", "release_grant")],
            firing: Case::new("1m", "9m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="release_grant""#), "0+60x10"),
            silent: Case::new("1m", "9m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="release_grant""#), "0+5x10"),
        },
        Alert {
            name: "QodQueueBacklogGrowing",
            group: "qod-queues",
            expr: "sum by (job, queue) (qod_queue_jobs{state=\"due\"}) > 100 \
                   and sum by (job, queue) (delta(qod_queue_jobs{state=\"due\"}[15m])) > 0"
                .into(),
            for_: "15m",
            severity: Severity::Warning,
            summary: "A job queue's backlog has been over 100 and growing for 15 minutes.",
            description: "Due jobs of queue {{ $labels.queue }} of {{ $labels.job }} are over 100 and have kept growing for 15 minutes.",
            fires_with: &[("job", "qod"), ("queue", "provision_session")],
            firing: Case::new("1m", "35m").series(node("qod_queue_jobs", r#"queue="provision_session",state="due""#), "0+10x40"),
            silent: Case::new("1m", "35m").series(node("qod_queue_jobs", r#"queue="provision_session",state="due""#), "500x40"),
        },
        Alert {
            name: "QodLeaseReclaims",
            group: "qod-queues",
            expr: "sum by (job) (increase(qod_queue_lease_reclaims_total[10m])) > 0".into(),
            for_: "1m",
            severity: Severity::Warning,
            summary: "Jobs were taken over from a node whose lease lapsed.",
            description: "Nodes of {{ $labels.job }} took over jobs of a node that died or stalled past its lease in the last 10 minutes.",
            fires_with: JOB,
            firing: Case::new("1m", "5m").series(node("qod_queue_lease_reclaims_total", r#"queue="expire_session""#), "0 0 3 3 3 3"),
            silent: Case::new("1m", "5m").series(node("qod_queue_lease_reclaims_total", r#"queue="expire_session""#), "0x6"),
        },
        Alert {
            name: "QodExpiryQueueStarved",
            group: "qod-slo-expiry",
            expr: "max by (job) (qod_queue_oldest_due_age_seconds{queue=\"expire_session\"}) > 1".into(),
            for_: "2m",
            severity: Severity::Critical,
            summary: "Session expiries are overdue: the expiry queue is not served.",
            description: "An expiry of {{ $labels.job }} has been due for over 1 s for 2 minutes; no expiry starts, so the expiry SLO's histogram cannot show it.",
            fires_with: JOB,
            firing: Case::new("1m", "5m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="expire_session""#), "0+5x10"),
            silent: Case::new("1m", "5m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="expire_session""#), "0x10"),
        },
        Alert {
            name: "QodExpirySLOBudgetBurnFast",
            group: "qod-slo-expiry",
            expr: fast("expiry", EXPIRY_OBJECTIVE, expiry_count),
            for_: "2m",
            severity: Severity::Critical,
            summary: "The expiry SLO's error budget burns fast.",
            description: "Expiries of {{ $labels.job }} later than 1 s burn the 30-day budget (0.1 %) at over 14.4x over 1 h, or 6x over 6 h.",
            fires_with: JOB,
            firing: expiries(Case::new("1m", "70m"), 10, 5.0, 90),
            silent: expiries(Case::new("1m", "70m"), 10, 0.0, 90),
        },
        Alert {
            name: "QodExpirySLOBudgetBurnSlow",
            group: "qod-slo-expiry",
            expr: slow("expiry", EXPIRY_OBJECTIVE, expiry_count),
            for_: "15m",
            severity: Severity::Warning,
            summary: "The expiry SLO's error budget burns faster than it lasts.",
            description: "Expiries of {{ $labels.job }} later than 1 s burn the 30-day budget (0.1 %) at over 3x over 1 d, or 1x over 3 d.",
            fires_with: JOB,
            firing: expiries(Case::new("10m", "26h"), 1000, 5.0, 200),
            silent: expiries(Case::new("10m", "26h"), 1000, 0.5, 200),
        },
        Alert {
            name: "QodExpirySLOInputAbsent",
            group: "qod-slo-expiry",
            expr: r#"absent(qod_session_expiry_lateness_seconds_count{job="qod"})"#.into(),
            for_: "10m",
            severity: Severity::Warning,
            summary: "The expiry SLO's input is not scraped.",
            description: "No qod_session_expiry_lateness_seconds_count of {{ $labels.job }} for 10 minutes: the expiry SLO cannot be measured.",
            fires_with: JOB,
            firing: Case::new("1m", "15m").series(r#"up{job="qod",instance="qod-1:8080"}"#, "1x20"),
            silent: Case::new("1m", "15m").series(node("qod_session_expiry_lateness_seconds_count", ""), "0x20"),
        },
        Alert {
            name: "QodDeliveryQueueStarved",
            group: "qod-slo-notification",
            expr: "max by (job) (qod_queue_oldest_due_age_seconds{queue=\"deliver_notification\"}) > 10"
                .into(),
            for_: "5m",
            severity: Severity::Warning,
            summary: "Notification deliveries are overdue: the delivery queue is not served.",
            description: "A delivery of {{ $labels.job }} has been due for over 10 s for 5 minutes; no delivery starts, so the notification SLO's histogram cannot show it.",
            fires_with: JOB,
            firing: Case::new("1m", "8m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="deliver_notification""#), "0+30x10"),
            silent: Case::new("1m", "8m").series(node("qod_queue_oldest_due_age_seconds", r#"queue="deliver_notification""#), "0+1x10"),
        },
        Alert {
            name: "QodNotificationSLOBudgetBurnFast",
            group: "qod-slo-notification",
            expr: fast("notification", NOTIFICATION_OBJECTIVE, delivery_count),
            for_: "2m",
            severity: Severity::Critical,
            summary: "The notification SLO's error budget burns fast.",
            description: "Notifications of {{ $labels.job }} later than 10 s or dead burn the 30-day budget (1 %) at over 14.4x over 1 h, or 6x over 6 h.",
            fires_with: JOB,
            firing: deliveries_and_dead(Case::new("1m", "70m"), 0, 0.0, 10, 90),
            silent: deliveries(Case::new("1m", "70m"), 10, 0.0, 90),
        },
        Alert {
            name: "QodNotificationSLOBudgetBurnSlow",
            group: "qod-slo-notification",
            expr: slow("notification", NOTIFICATION_OBJECTIVE, delivery_count),
            for_: "15m",
            severity: Severity::Warning,
            summary: "The notification SLO's error budget burns faster than it lasts.",
            description: "Notifications of {{ $labels.job }} later than 10 s or dead burn the 30-day budget (1 %) at over 3x over 1 d, or 1x over 3 d.",
            fires_with: JOB,
            firing: deliveries(Case::new("10m", "26h"), 1000, 50.0, 200),
            silent: deliveries(Case::new("10m", "26h"), 1000, 5.0, 200),
        },
        Alert {
            name: "QodDeadLettersAppearing",
            group: "qod-slo-notification",
            expr: "sum by (job) (increase(qod_notification_attempts_total{outcome=\"dead\"}[10m])) > 0"
                .into(),
            for_: "1m",
            severity: Severity::Warning,
            summary: "Notifications were given up on.",
            description: "Notifications of {{ $labels.job }} went to the dead letters in the last 10 minutes: consumers missed status changes.",
            fires_with: JOB,
            firing: Case::new("1m", "6m").series(node("qod_notification_attempts_total", r#"outcome="dead""#), "0 0 0 1 1 1 1"),
            silent: Case::new("1m", "6m").series(node("qod_notification_attempts_total", r#"outcome="dead""#), "0x7"),
        },
        Alert {
            name: "QodNotificationSLOInputAbsent",
            group: "qod-slo-notification",
            expr: r#"absent(qod_notification_delivery_seconds_count{job="qod"}) or absent(qod_notification_attempts_total{job="qod"})"#
                .into(),
            for_: "10m",
            severity: Severity::Warning,
            summary: "An input of the notification SLO is not scraped.",
            description: "qod_notification_delivery_seconds_count or qod_notification_attempts_total of {{ $labels.job }} has been missing for 10 minutes: the notification SLO cannot be measured.",
            fires_with: JOB,
            firing: Case::new("1m", "15m").series(node("qod_notification_attempts_total", r#"outcome="dead""#), "0x20"),
            silent: deliveries(Case::new("1m", "15m"), 1, 0.0, 20),
        },
    ]
}
