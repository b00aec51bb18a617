//! A per-layer filter that never lets a callsite cache its answer. tracing-subscriber hands a
//! per-layer filter's decision to the layer through a thread-local set by `enabled()`; a
//! callsite whose interest is cached as `always` skips `enabled()`, and the layer then reads
//! what the previous check left there. sqlx's query logger checks dynamic metadata after every
//! statement (through `log`), so on PostgreSQL the next request or job span was dropped from
//! the filtered layers, at random (tokio-rs/tracing#2519). Capped at `sometimes`, every span
//! and event asks the filters afresh; `never` is still cached.

use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::layer::{Context, Filter};

pub struct Fresh<F>(pub F);

impl<S, F: Filter<S>> Filter<S> for Fresh<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_never() {
            interest
        } else {
            Interest::sometimes()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, cx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: Context<'_, S>,
    ) {
        self.0.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::filter::FilterFn;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, Registry};

    use super::Fresh;

    /// Counts the spans it is shown.
    struct Spans(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Spans {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_log_check_between_spans_hides_none_of_them_from_a_filtered_layer() {
        // What sqlx does after every statement: a `log` check of a level nobody wants.
        let _ = tracing_log::LogTracer::init();
        let seen = Arc::new(AtomicUsize::new(0));
        let only_spans = FilterFn::new(|meta| meta.is_span());
        let subscriber =
            Registry::default().with(Spans(seen.clone()).with_filter(Fresh(only_spans)));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _first = tracing::info_span!("request").entered();
                let _ = log::log_enabled!(log::Level::Trace);
            }
        });
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }
}
