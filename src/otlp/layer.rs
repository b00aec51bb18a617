//! The tracing layer: keeps the fields of each open request or job span, the warnings and
//! errors logged inside it, and hands the span to the exporter when it closes.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The spans exported: one per request, one per job run (see `api::correlator`, `jobs::runner`).
const EXPORTED: [&str; 2] = ["request", "job"];

/// Events kept per span: enough for a job's retries, bounded for one that loops.
const MAX_EVENTS: usize = 32;

/// A recorded field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Fields by name, in the order they were recorded (a later record replaces an earlier one).
#[derive(Debug, Default, Clone)]
pub struct Fields(pub Vec<(&'static str, Value)>);

impl Fields {
    fn set(&mut self, name: &'static str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), Value::Str(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::Str(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(
            field.name(),
            Value::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), Value::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::Bool(value));
    }
}

/// A warning or error logged inside an exported span.
#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub at: SystemTime,
    pub level: Level,
    pub fields: Fields,
}

/// A closed span, ready to encode.
#[derive(Debug, Clone)]
pub struct Finished {
    pub name: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
    pub fields: Fields,
    pub events: Vec<SpanEvent>,
    pub dropped_events: u32,
}

struct Open {
    start: SystemTime,
    fields: Fields,
    events: Vec<SpanEvent>,
    dropped_events: u32,
}

pub struct OtlpLayer {
    sender: super::export::SpanSender,
}

impl OtlpLayer {
    pub(super) fn new(sender: super::export::SpanSender) -> Self {
        Self { sender }
    }
}

fn exported(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("qod") && EXPORTED.contains(&meta.name())
}

/// What the layer needs to see: its spans, and the warnings and errors logged in them. Give it
/// as the layer's own filter (`Layer::with_filter`), so the logs' filter does not decide what is
/// exported, nor the other way round.
pub fn interest() -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    FilterFn::new(|meta| exported(meta) || (meta.is_event() && *meta.level() <= Level::WARN))
}

impl<S> tracing_subscriber::Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !exported(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(Open {
            start: SystemTime::now(),
            fields,
            events: Vec::new(),
            dropped_events: 0,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(open) = span.extensions_mut().get_mut::<Open>() {
            values.record(&mut open.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::WARN {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let mut ext = span.extensions_mut();
            let Some(open) = ext.get_mut::<Open>() else {
                continue;
            };
            if open.events.len() >= MAX_EVENTS {
                open.dropped_events += 1;
                return;
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            open.events.push(SpanEvent {
                at: SystemTime::now(),
                level: *event.metadata().level(),
                fields,
            });
            return;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let finished = Finished {
            name: span.name(),
            start: open.start,
            end: SystemTime::now(),
            fields: open.fields,
            events: open.events,
            dropped_events: open.dropped_events,
        };
        if self.sender.spans.try_send(finished).is_err() {
            self.sender.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
