//! W3C trace context and the `x-correlator` through the queue. A request runs in a span of the
//! caller's trace (or of a new one); the jobs it causes store that span's `traceparent` and the
//! correlator, and each job runs in a trace of its own that links back to it (a job may run
//! long after the request, as River and the OpenTelemetry queue integrations do). What a piece
//! of work carries is a task-local: the NEF client, the CloudEvents and every job enqueued read
//! it where they are, without being handed it.

use std::fmt;
use std::future::Future;

/// A `traceparent`: trace id, this span's id, the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header as W3C Trace Context level 1 says: lowercase hex, version
    /// `ff` refused, version `00` exactly 55 characters, later versions read by their first
    /// four fields; all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex(value.get(0..2)?, 2)?;
        if version == "ff" || (version == "00" && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(&value[3..35], 32)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex(&value[36..52], 16)?, 16).ok()?;
        let flags = u8::from_str_radix(hex(&value[53..55], 2)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The first span of a new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(rand::random()),
            span_id: nonzero(rand::random()),
            flags: 1,
        }
    }

    /// A span of this trace below this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(rand::random()),
            ..*self
        }
    }

    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// `s` when it is `len` lowercase hex digits.
/// `s` if it is exactly `len` lowercase hex digits (as Trace Context writes ids).
pub(crate) fn hex(s: &str, len: usize) -> Option<&str> {
    (s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(s)
}

fn nonzero<T: PartialEq + From<u8>>(v: T) -> T {
    if v == T::from(0) { T::from(1) } else { v }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// What the work running now carries: its span's context and the caller's correlator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub span: Option<TraceParent>,
    pub correlator: Option<String>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// The context of the work running in this task (none outside a request or a job).
pub fn current() -> Current {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `work` with `current` as its context.
pub fn scope<F: Future>(current: Current, work: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(current, work)
}

/// Runs `f` with `current` as its context, on any thread: a store decides a change on its
/// writer thread or in its batcher task, where the caller's context is not.
pub fn sync_scope<R>(current: Current, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(current, f)
}

/// What a job keeps of the work that enqueued it: that span's `traceparent` and the correlator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    pub traceparent: Option<String>,
    pub correlator: Option<String>,
}

impl Carried {
    /// What the running work hands on to a job it enqueues.
    pub fn here() -> Self {
        let c = current();
        Self {
            traceparent: c.span.map(|s| s.to_string()),
            correlator: c.correlator,
        }
    }

    /// The context a job runs in: a new trace, linked to the enqueuing span (returned apart),
    /// with the same correlator.
    pub fn continued(&self) -> (Current, Option<TraceParent>) {
        let link = self.traceparent.as_deref().and_then(TraceParent::parse);
        let current = Current {
            span: Some(TraceParent::root()),
            correlator: self.correlator.clone(),
        };
        (current, link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_back_as_written() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_hex(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.to_string(), VALID);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceParent::parse(later).is_some());
    }

    #[tokio::test]
    async fn a_job_continues_in_a_trace_of_its_own_linked_to_its_cause() {
        let request = TraceParent::parse(VALID).unwrap();
        let carried = scope(
            Current {
                span: Some(request),
                correlator: Some("c-1".into()),
            },
            async { Carried::here() },
        )
        .await;
        assert_eq!(carried.traceparent.as_deref(), Some(VALID));
        let (job, link) = carried.continued();
        assert_eq!(link, Some(request));
        assert_ne!(job.span.unwrap().trace_id, request.trace_id);
        assert_eq!(job.correlator.as_deref(), Some("c-1"));
        assert_eq!(current(), Current::default());
    }
}
