//! OTLP's JSON encoding of finished spans (OTLP/HTTP with `application/json`): ids in lowercase
//! hex, 64-bit integers and times as decimal strings, enums as numbers, attributes named after
//! OpenTelemetry's semantic conventions where one fits.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use tracing::Level;

use super::layer::{Fields, Finished, Value};

/// `Span.SpanKind`: a request is served, a job is a message consumed from the queue.
const KIND_SERVER: u8 = 2;
const KIND_CONSUMER: u8 = 5;
/// `Status.StatusCode`.
const STATUS_UNSET: u8 = 0;
const STATUS_ERROR: u8 = 2;

/// Span fields and the attribute each becomes; the ids and the link are the span's own.
const ATTRIBUTES: [(&str, &str); 9] = [
    ("method", "http.request.method"),
    ("route", "http.route"),
    ("path", "url.path"),
    ("status", "http.response.status_code"),
    ("queue", "messaging.destination.name"),
    ("attempt", "qod.job.attempt"),
    ("outcome", "qod.job.outcome"),
    ("session_id", "qod.session.id"),
    ("x_correlator", "qod.x_correlator"),
];

/// Job outcomes that are errors (see `jobs::runner`).
const FAILED_OUTCOMES: [&str; 3] = ["retried", "dead", "fenced"];

/// One export request: the process as the resource, the spans under one scope.
pub fn request(resource: &[(&str, String)], spans: &[Finished]) -> Json {
    let attributes: Vec<Json> = resource
        .iter()
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect();
    let spans: Vec<Json> = spans.iter().filter_map(span).collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": attributes},
            "scopeSpans": [{
                "scope": {"name": "qod", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

/// The span, or None when it lacks valid ids (nothing could place it in a trace).
pub fn span(f: &Finished) -> Option<Json> {
    let trace_id = hex_id(f.fields.str("trace_id")?, 32)?;
    let span_id = hex_id(f.fields.str("span_id")?, 16)?;
    let kind = if f.name == "job" {
        KIND_CONSUMER
    } else {
        KIND_SERVER
    };
    let mut out = json!({
        "traceId": trace_id,
        "spanId": span_id,
        "name": name(f),
        "kind": kind,
        "startTimeUnixNano": nanos(f.start),
        "endTimeUnixNano": nanos(f.end.max(f.start)),
        "attributes": attributes(&f.fields),
        "status": status(f),
    });
    if let Some(parent) = f.fields.str("parent_span_id").and_then(|p| hex_id(p, 16)) {
        out["parentSpanId"] = parent.into();
    }
    // A job's link: the `traceparent` of the span that enqueued it.
    if let Some(link) = f
        .fields
        .str("link")
        .and_then(crate::trace::TraceParent::parse)
    {
        out["links"] = json!([{"traceId": link.trace_hex(), "spanId": link.span_hex()}]);
    }
    if !f.events.is_empty() {
        let events: Vec<Json> = f
            .events
            .iter()
            .map(|e| {
                let message = e.fields.str("message").unwrap_or("event").to_owned();
                let mut attributes = vec![json!({
                    "key": "log.severity",
                    "value": {"stringValue": severity(e.level)},
                })];
                attributes.extend(
                    e.fields
                        .0
                        .iter()
                        .filter(|(k, _)| *k != "message")
                        .map(|(k, v)| attribute(k, v)),
                );
                json!({"timeUnixNano": nanos(e.at), "name": message, "attributes": attributes})
            })
            .collect();
        out["events"] = events.into();
    }
    if f.dropped_events > 0 {
        out["droppedEventsCount"] = f.dropped_events.into();
    }
    Some(out)
}

/// `{method} {route}` for a request (low-cardinality, as the conventions ask), `process
/// {queue}` for a job.
fn name(f: &Finished) -> String {
    let field = |k| f.fields.str(k).unwrap_or_default();
    if f.name == "job" {
        return format!("process {}", field("queue"));
    }
    match (field("method"), field("route")) {
        ("", _) => f.name.to_owned(),
        (method, "") => method.to_owned(),
        (method, route) => format!("{method} {route}"),
    }
}

fn status(f: &Finished) -> Json {
    let failed = match f.fields.get("status") {
        Some(Value::Int(code)) => *code >= 500,
        _ => f
            .fields
            .str("outcome")
            .is_some_and(|o| FAILED_OUTCOMES.contains(&o)),
    };
    if failed {
        json!({"code": STATUS_ERROR})
    } else {
        json!({"code": STATUS_UNSET})
    }
}

fn attributes(fields: &Fields) -> Vec<Json> {
    ATTRIBUTES
        .iter()
        .filter_map(|(field, key)| fields.get(field).map(|v| attribute(key, v)))
        .collect()
}

fn attribute(key: &str, value: &Value) -> Json {
    let value = match value {
        Value::Str(s) => json!({"stringValue": s}),
        Value::Int(i) => json!({"intValue": i.to_string()}),
        Value::Float(x) if x.is_finite() => json!({"doubleValue": x}),
        Value::Float(x) => json!({"stringValue": x.to_string()}),
        Value::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// A lowercase hex id of `len` digits, not all zero.
fn hex_id(raw: &str, len: usize) -> Option<String> {
    crate::trace::hex(raw, len)
        .filter(|id| id.bytes().any(|b| b != b'0'))
        .map(str::to_owned)
}

fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(fields: &[(&'static str, Value)]) -> Finished {
        Finished {
            name: "job",
            start: UNIX_EPOCH + std::time::Duration::from_millis(1_500),
            end: UNIX_EPOCH + std::time::Duration::from_millis(1_750),
            fields: Fields(fields.to_vec()),
            events: Vec::new(),
            dropped_events: 0,
        }
    }

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    #[test]
    fn a_job_span_links_to_its_enqueuer_and_a_retry_is_an_error() {
        let f = job(&[
            ("queue", s("provision_session")),
            ("attempt", Value::Int(1)),
            ("trace_id", s("0af7651916cd43dd8448eb211c80319c")),
            ("span_id", s("b7ad6b7169203331")),
            (
                "link",
                s("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ),
            ("outcome", s("retried")),
        ]);
        let span = span(&f).unwrap();
        assert_eq!(span["name"], "process provision_session");
        assert_eq!(span["kind"], KIND_CONSUMER);
        assert_eq!(span["startTimeUnixNano"], "1500000000");
        assert_eq!(span["links"][0]["spanId"], "00f067aa0ba902b7");
        assert_eq!(span["status"]["code"], STATUS_ERROR);
        assert_eq!(span["attributes"][1]["value"]["intValue"], "1");
        assert!(span.get("parentSpanId").is_none());
    }

    #[test]
    fn a_span_without_valid_ids_is_left_out() {
        assert!(
            span(&job(&[
                ("trace_id", s("00000000000000000000000000000000")),
                ("span_id", s("b7ad6b7169203331"))
            ]))
            .is_none()
        );
        assert!(span(&job(&[("trace_id", s("0af7651916cd43dd8448eb211c80319c"))])).is_none());
    }
}
