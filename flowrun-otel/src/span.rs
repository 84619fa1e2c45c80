//! Spans kept by flowrun itself rather than by the SDK's tracer: an [`OpenSpan`] is the state
//! of a span that has started (ids, parent, name, kind, start time, attributes so far,
//! status). Ending it encodes it, on the thread that ends it, into the OTLP/HTTP export queue
//! (`batch.rs`); or, for gRPC, builds the SDK's `SpanData` directly and hands it to the SDK's
//! span processor, as the SDK's own `Span::end` would.
//!
//! Why: the sink knows every span's parent, times and attributes from the events, so the
//! SDK's tracer (span builder, sampler call, `Context`, a mutex per span, attribute vectors
//! copied on the way) was pure overhead on the runs' threads (BENCHMARKS.md). Sampling is
//! decided once per trace at its root ([`Pipeline::root`]); an unsampled trace is never
//! built.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks, SpanProcessor};

use crate::attributes::Attributes;
use crate::batch::Batcher;
use crate::config::Sampler;
use crate::encode::{self, SpanAttributes, SpanFields};
use crate::ids;
use crate::lock;
use crate::sink::SinkCore;

/// How often the builder thread builds the spans of what the sinks logged.
const BUILD_EVERY: Duration = Duration::from_millis(50);

/// Where ended spans go: the export queue or a span processor, with the sampler that decides
/// which traces are recorded. Shared by every sink and session of an [`crate::Exporter`].
pub(crate) struct Pipeline {
    output: Output,
    sampler: Sampler,
    scope: InstrumentationScope,
    shut_down: AtomicBool,
    /// Every sink's log, and, for the OTLP/HTTP queue, the thread that builds their spans.
    builder: Arc<Builder>,
    builder_thread: Mutex<Option<JoinHandle<()>>>,
    /// Whether the builder thread runs (read at every event, so not under a lock).
    builds_later: AtomicBool,
}

/// The sinks whose logs the builder thread builds (weakly: a sink dropped builds the rest
/// of its own log), and how it is woken and stopped.
#[derive(Default)]
struct Builder {
    sinks: Mutex<Vec<Weak<SinkCore>>>,
    /// Set (under its lock) to wake the thread early, or to stop it.
    signal: Mutex<Signal>,
    wake: Condvar,
    /// The builder thread's id: a pipeline dropped on it must not wait for itself.
    thread: Mutex<Option<ThreadId>>,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    stopping: bool,
}

impl Builder {
    /// Builds the spans of every live sink's log.
    fn build_all(&self) {
        let sinks: Vec<Arc<SinkCore>> = {
            let mut list = lock(&self.sinks);
            list.retain(|sink| sink.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for sink in sinks {
            sink.build();
        }
    }

    /// The builder thread: a round every [`BUILD_EVERY`], or sooner when a log grows long.
    fn run(&self) {
        let mut signal = lock(&self.signal);
        while !signal.stopping {
            signal = self
                .wake
                .wait_timeout_while(signal, BUILD_EVERY, |s| !s.woken && !s.stopping)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            signal.woken = false;
            drop(signal);
            self.build_all();
            signal = lock(&self.signal);
        }
    }
}

/// What a [`Pipeline`] hands ended spans to.
pub(crate) enum Output {
    /// Encoded where they end, into the OTLP/HTTP queue.
    Encoded(Batcher),
    /// As the SDK's `SpanData`, to a processor (the batch processor of the gRPC exporter;
    /// the tests' collector).
    Processor(Box<dyn SpanProcessor>),
}

impl Pipeline {
    /// A pipeline to `output`, with a builder thread (see [`Pipeline::builds_later`]).
    pub(crate) fn new(output: Output, sampler: Sampler) -> Pipeline {
        Pipeline::with(output, sampler, true)
    }

    /// A pipeline whose sinks build each event's spans at once (the handlers' tests).
    #[cfg(test)]
    pub(crate) fn in_place(output: Output, sampler: Sampler) -> Pipeline {
        Pipeline::with(output, sampler, false)
    }

    fn with(output: Output, sampler: Sampler, later: bool) -> Pipeline {
        let builder = Arc::new(Builder::default());
        let builder_thread = later
            .then(|| {
                let builder = builder.clone();
                std::thread::Builder::new()
                    .name("flowrun-otel-spans".into())
                    .spawn(move || {
                        *lock(&builder.thread) = Some(std::thread::current().id());
                        builder.run();
                    })
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the span builder"))
                    .ok()
            })
            .flatten();
        Pipeline {
            output,
            sampler,
            scope: InstrumentationScope::builder("flowrun").build(),
            shut_down: AtomicBool::new(false),
            builds_later: AtomicBool::new(builder_thread.is_some()),
            builder,
            builder_thread: Mutex::new(builder_thread),
        }
    }

    /// Whether sinks leave their spans to the builder thread, which builds them in batches
    /// away from the runs (BENCHMARKS.md, "Session 6"), rather than build each event's spans
    /// at once (the handlers' tests, or a thread that could not start).
    pub(crate) fn builds_later(&self) -> bool {
        self.builds_later.load(Ordering::Acquire)
    }

    /// Makes the builder thread build sinks' logs now rather than at its next round.
    pub(crate) fn wake_builder(&self) {
        lock(&self.builder.signal).woken = true;
        self.builder.wake.notify_one();
    }

    /// Registers a new sink's log with the builder.
    pub(crate) fn register(&self, sink: &Arc<SinkCore>) {
        lock(&self.builder.sinks).push(Arc::downgrade(sink));
    }

    /// Builds every sink's logged events now (a session's end waits for its runs' spans).
    pub(crate) fn build_all(&self) {
        self.builder.build_all();
    }

    /// The ids of a new span under `parent`, or of a new trace's root when there is none;
    /// `None` when the sampler drops that new trace.
    pub(crate) fn start(&self, parent: Option<Ids>) -> Option<(Ids, SpanId)> {
        match parent {
            Some(parent) => Some((
                Ids {
                    trace: parent.trace,
                    span: ids::span_id(),
                },
                parent.span,
            )),
            None => {
                let trace = ids::trace_id();
                self.sampler.samples(trace).then(|| {
                    (
                        Ids {
                            trace,
                            span: ids::span_id(),
                        },
                        SpanId::INVALID,
                    )
                })
            }
        }
    }

    /// Ends `span` at `end` and hands it on (nothing once shut down).
    pub(crate) fn end(&self, span: OpenSpan, end: SystemTime) {
        if self.shut_down.load(Ordering::Acquire) {
            return;
        }
        match &self.output {
            Output::Encoded(queue) => {
                let context = span.context();
                let fields = span.fields(&context, end);
                queue.push(|buf| encode::put_framed(&fields, buf));
            }
            Output::Processor(processor) => processor.on_end(span.into_data(end, &self.scope)),
        }
    }

    /// Builds what the sinks logged, exports what is queued and stops the export; later
    /// calls do nothing.
    pub(crate) fn shutdown(&self) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Ok(());
        }
        // From now on, sinks build in place (and, once shut down, drop what they build).
        self.builds_later.store(false, Ordering::Release);
        lock(&self.builder.signal).stopping = true;
        self.builder.wake.notify_one();
        let thread = lock(&self.builder_thread).take();
        let on_builder = *lock(&self.builder.thread) == Some(std::thread::current().id());
        if let Some(thread) = thread
            && !on_builder
            && thread.join().is_err()
        {
            tracing::warn!("the OpenTelemetry span builder panicked; spans were lost");
        }
        self.builder.build_all();
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match &self.output {
            Output::Encoded(queue) => {
                queue.shutdown();
                Ok(())
            }
            Output::Processor(processor) => processor.shutdown(),
        }
    }

    #[cfg(test)]
    pub(crate) fn force_flush(&self) -> OTelSdkResult {
        match &self.output {
            Output::Encoded(queue) => {
                queue.flush();
                Ok(())
            }
            Output::Processor(processor) => processor.force_flush(),
        }
    }
}

impl Drop for Pipeline {
    /// As the SDK's tracer provider did: the last handle gone, what is queued is sent.
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "cannot flush OpenTelemetry spans");
        }
    }
}

/// A recorded span's identity, which its children need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) trace: TraceId,
    pub(crate) span: SpanId,
}

/// A span that started and has not ended.
#[derive(Debug)]
pub(crate) struct OpenSpan {
    ids: Ids,
    parent: SpanId,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Attributes,
    status: Status,
}

impl OpenSpan {
    /// A span with these ids (from [`Pipeline::start`]) and its first attributes.
    pub(crate) fn new(
        ids: (Ids, SpanId),
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> OpenSpan {
        let mut encoded = Attributes::default();
        encoded.extend(attributes);
        OpenSpan::encoded(ids, name, kind, start, encoded)
    }

    /// A span with these ids and its first attributes, encoded already (give them room for
    /// those added later).
    pub(crate) fn encoded(
        (ids, parent): (Ids, SpanId),
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
        attributes: Attributes,
    ) -> OpenSpan {
        OpenSpan {
            ids,
            parent,
            name: name.into(),
            kind,
            start,
            attributes,
            status: Status::Unset,
        }
    }

    pub(crate) fn ids(&self) -> Ids {
        self.ids
    }

    /// Adds attributes, the SDK's way: appended, the ones past the limit counted as dropped.
    pub(crate) fn add(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.attributes.extend(attributes);
    }

    /// Adds the attributes `add` writes, straight into the span's.
    pub(crate) fn add_with(&mut self, add: impl FnOnce(&mut Attributes)) {
        add(&mut self.attributes);
    }

    /// Sets the status unless a stronger one is set (`Ok` > `Error` > `Unset`, as the SDK).
    pub(crate) fn set_status(&mut self, status: Status) {
        if status > self.status {
            self.status = status;
        }
    }

    /// Its context: every span recorded is sampled, and none is remote.
    fn context(&self) -> SpanContext {
        SpanContext::new(
            self.ids.trace,
            self.ids.span,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
    }

    /// What encoding it ended at `end` reads.
    fn fields<'a>(&'a self, context: &'a SpanContext, end: SystemTime) -> SpanFields<'a> {
        SpanFields {
            context,
            parent: self.parent,
            parent_is_remote: false,
            name: &self.name,
            kind: &self.kind,
            start: self.start,
            end,
            attributes: SpanAttributes::Encoded(self.attributes.bytes()),
            dropped_attributes: self.attributes.dropped(),
            events: &[],
            dropped_events: 0,
            links: &[],
            dropped_links: 0,
            status: &self.status,
        }
    }

    fn into_data(self, end: SystemTime, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: self.context(),
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: end,
            attributes: self.attributes.to_key_values(),
            dropped_attributes_count: self.attributes.dropped(),
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A processor that keeps every ended span, for the sink's and the session's tests.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Collect(pub(crate) Arc<Mutex<Vec<SpanData>>>);

    impl Collect {
        pub(crate) fn spans(&self) -> Vec<SpanData> {
            crate::lock(&self.0).clone()
        }
    }

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            crate::lock(&self.0).push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    /// A pipeline that always samples, and what it collects.
    pub(crate) fn pipeline() -> (Arc<Pipeline>, Collect) {
        let collect = Collect::default();
        let pipeline = Pipeline::in_place(
            Output::Processor(Box::new(collect.clone())),
            Sampler::AlwaysOn,
        );
        (Arc::new(pipeline), collect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::MAX_ATTRIBUTES;

    #[test]
    fn roots_follow_the_sampler_and_children_their_root() {
        let (pipeline, collect) = testing::pipeline();
        let (root, parent) = pipeline.start(None).unwrap();
        assert_eq!(parent, SpanId::INVALID);
        let (child, parent) = pipeline.start(Some(root)).unwrap();
        assert_eq!((child.trace, parent), (root.trace, root.span));
        assert_ne!(child.span, root.span);
        let off = Pipeline::in_place(
            Output::Processor(Box::new(collect.clone())),
            Sampler::AlwaysOff,
        );
        assert!(off.start(None).is_none());
        let some = Pipeline::in_place(Output::Processor(Box::new(collect)), Sampler::Ratio(0.5));
        let kept = (0..4_000).filter(|_| some.start(None).is_some()).count();
        assert!((1_600..2_400).contains(&kept), "{kept} of 4,000");
    }

    #[test]
    fn ending_builds_the_sdk_span_data() {
        let (pipeline, collect) = testing::pipeline();
        let ids = pipeline.start(None).unwrap();
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5);
        let many = (0..130).map(|i| KeyValue::new("k", i64::from(i))).collect();
        let mut span = OpenSpan::new(ids, "run", SpanKind::Internal, start, many);
        span.add([KeyValue::new("late", true)]);
        span.set_status(Status::Ok);
        span.set_status(Status::error("ignored: Ok is final"));
        pipeline.end(span, start + std::time::Duration::from_millis(3));
        pipeline.shutdown().unwrap();
        let ended = OpenSpan::new(ids, "late", SpanKind::Client, start, vec![]);
        pipeline.end(ended, start);
        let spans = collect.spans();
        assert_eq!(spans.len(), 1, "nothing is exported after shutdown");
        let s = &spans[0];
        assert_eq!(s.span_context.trace_id(), ids.0.trace);
        assert_eq!(s.span_context.span_id(), ids.0.span);
        assert!(s.span_context.is_sampled());
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert_eq!(s.attributes.len(), MAX_ATTRIBUTES);
        assert_eq!(s.dropped_attributes_count, 3);
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.end_time, start + std::time::Duration::from_millis(3));
        assert_eq!(s.instrumentation_scope.name(), "flowrun");
    }
}
