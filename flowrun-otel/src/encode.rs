//! OTLP/protobuf encoding of spans with `prost::encoding`'s primitives, in two parts: each span
//! is framed on the thread that ends it ([`put_framed`], from a [`SpanFields`] view of flowrun's
//! own span or of the SDK's `SpanData`), and a batch of framed spans is wrapped into an
//! `ExportTraceServiceRequest` on the export thread ([`Encoder::wrap`]).
//!
//! Why not `opentelemetry-proto`'s structs: converting a span into them allocates a `String`
//! per attribute key and string value, a `Vec` per id and per attribute list (about 30
//! allocations per flowrun span), all freed right after encoding. Here each message's length
//! is computed first (protobuf prefixes every nested message with its length), then the bytes
//! are written once. The layout, field by field, is `opentelemetry-proto`'s conversion of
//! `SpanData` (`transform/trace.rs`); the tests decode the bytes with `opentelemetry-proto`.
//!
//! The request holds one `ResourceSpans` (the exporter's resource) with one `ScopeSpans`
//! (scope `flowrun`, the only one that makes spans here) with every span of the batch.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// The instrumentation scope's name.
const SCOPE: &str = "flowrun";

/// `SpanFlags`: the flags say whether the parent is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Wraps spans framed by [`put_framed`] into requests; keeps the resource (encoded once) and
/// the request buffer.
#[derive(Debug)]
pub(crate) struct Encoder {
    /// The `Resource` message's body.
    resource: Vec<u8>,
    /// `ResourceSpans.schema_url`.
    schema_url: Option<String>,
    /// The `InstrumentationScope` message's body.
    scope: Vec<u8>,
    buf: BytesMut,
}

impl Encoder {
    pub(crate) fn new(resource: &Resource) -> Encoder {
        let mut scope = Vec::new();
        put_str(1, SCOPE, &mut scope);
        let mut encoder = Encoder {
            resource: Vec::new(),
            schema_url: None,
            scope,
            buf: BytesMut::new(),
        };
        encoder.set_resource(resource);
        encoder
    }

    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        let mut body = Vec::new();
        for (key, value) in resource.iter() {
            let len = kv_len(key.as_str(), value);
            put_header(1, len, &mut body);
            put_kv(key.as_str(), value, &mut body);
        }
        self.resource = body;
        self.schema_url = resource.schema_url().map(str::to_string);
    }

    /// The protobuf bytes of a request holding `framed`: spans one after the other, each as
    /// [`put_framed`] wrote it. The buffer is taken back for the next request once the
    /// returned bytes are dropped.
    pub(crate) fn wrap(&mut self, framed: &[u8]) -> Bytes {
        let scope_spans = field_len(1, self.scope.len()) + framed.len();
        let schema_url = self.schema_url.as_deref().unwrap_or_default();
        let resource_spans =
            field_len(1, self.resource.len()) + field_len(2, scope_spans) + str_len(3, schema_url);
        let total = field_len(1, resource_spans);
        self.buf.reserve(total);
        let buf = &mut self.buf;
        put_header(1, resource_spans, buf);
        put_header(1, self.resource.len(), buf);
        buf.put_slice(&self.resource);
        put_header(2, scope_spans, buf);
        put_header(1, self.scope.len(), buf);
        buf.put_slice(&self.scope);
        buf.put_slice(framed);
        put_str(3, schema_url, buf);
        self.buf.split().freeze()
    }

    /// The request holding `spans` (the SDK's), framed here.
    #[cfg(test)]
    pub(crate) fn encode(&mut self, spans: &[SpanData]) -> Bytes {
        let mut framed = Vec::new();
        for span in spans {
            put_framed(&SpanFields::from(span), &mut framed);
        }
        self.wrap(&framed)
    }
}

/// What a span's encoding reads: the SDK's `SpanData` (`From`) and flowrun's own ended spans
/// (`span.rs`) alike.
#[derive(Debug)]
pub(crate) struct SpanFields<'a> {
    pub(crate) context: &'a SpanContext,
    /// `SpanId::INVALID` for a root.
    pub(crate) parent: SpanId,
    pub(crate) parent_is_remote: bool,
    pub(crate) name: &'a str,
    pub(crate) kind: &'a SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: SpanAttributes<'a>,
    pub(crate) dropped_attributes: u32,
    pub(crate) events: &'a [Event],
    pub(crate) dropped_events: u32,
    pub(crate) links: &'a [Link],
    pub(crate) dropped_links: u32,
    pub(crate) status: &'a Status,
}

impl<'a> From<&'a SpanData> for SpanFields<'a> {
    fn from(span: &'a SpanData) -> SpanFields<'a> {
        SpanFields {
            context: &span.span_context,
            parent: span.parent_span_id,
            parent_is_remote: span.parent_span_is_remote,
            name: &span.name,
            kind: &span.span_kind,
            start: span.start_time,
            end: span.end_time,
            attributes: SpanAttributes::List(&span.attributes),
            dropped_attributes: span.dropped_attributes_count,
            events: &span.events.events,
            dropped_events: span.events.dropped_count,
            links: &span.links.links,
            dropped_links: span.links.dropped_count,
            status: &span.status,
        }
    }
}

/// A span's attributes: the SDK's list, or already encoded (`attributes.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum SpanAttributes<'a> {
    List(&'a [KeyValue]),
    /// Framed `Span.attributes` elements.
    Encoded(&'a [u8]),
}

impl SpanAttributes<'_> {
    fn len(&self) -> usize {
        match self {
            SpanAttributes::List(list) => attributes_len(9, list),
            SpanAttributes::Encoded(bytes) => bytes.len(),
        }
    }

    fn put(&self, buf: &mut impl BufMut) {
        match self {
            SpanAttributes::List(list) => put_attributes(9, list, buf),
            SpanAttributes::Encoded(bytes) => buf.put_slice(bytes),
        }
    }
}

/// One attribute framed as field `tag` (a `KeyValue` of `key` and `value`).
pub(crate) fn put_attribute(tag: u32, key: &str, value: &Value, buf: &mut impl BufMut) {
    put_header(tag, kv_len(key, value), buf);
    put_kv(key, value, buf);
}

/// One string attribute framed as field `tag`, the same bytes as [`put_attribute`] with a
/// `Value::String`, without making one.
pub(crate) fn put_str_attribute(tag: u32, key: &str, value: &str, buf: &mut impl BufMut) {
    let any = field_len(1, value.len());
    put_header(tag, str_len(1, key) + field_len(2, any), buf);
    put_str(1, key, buf);
    put_header(2, any, buf);
    put_header(1, value.len(), buf);
    buf.put_slice(value.as_bytes());
}

/// Appends `span` as one element of `ScopeSpans.spans`: key, length, `Span` message. Spans
/// framed one after the other are what [`Encoder::wrap`] takes.
pub(crate) fn put_framed(span: &SpanFields<'_>, buf: &mut impl BufMut) {
    // Made once: the SDK builds it as a `String` (empty, without allocating, for flowrun's).
    let trace_state = span.context.trace_state().header();
    let len = span_len(span, &trace_state);
    put_header(2, len, buf);
    put_span(span, &trace_state, buf);
}

/// A length-delimited field's size: key, length, body.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A `string` or `bytes` field, absent when empty (proto3).
fn str_len(tag: u32, s: &str) -> usize {
    bytes_len(tag, s.as_bytes())
}

fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        field_len(tag, b.len())
    }
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    put_bytes(tag, s.as_bytes(), buf);
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        put_header(tag, b.len(), buf);
        buf.put_slice(b);
    }
}

/// A `uint32` / enum field, absent when zero.
fn u32_len(tag: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(u64::from(v))
    }
}

fn put_u32(tag: u32, v: u32, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(u64::from(v), buf);
    }
}

/// A `fixed64` field, absent when zero.
fn fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_fixed64(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.put_u64_le(v);
    }
}

fn fixed32_len(tag: u32, v: u32) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 4 }
}

fn put_fixed32(tag: u32, v: u32, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, buf);
        buf.put_u32_le(v);
    }
}

/// Nanoseconds since the epoch; 0 before it (as `opentelemetry-proto`).
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `AnyValue`'s body. A oneof field is written even when it holds its type's default.
fn value_len(value: &Value) -> usize {
    match value {
        Value::String(s) => field_len(1, s.as_str().len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::Array(array) => field_len(5, array_len(array)),
        // `Value` is non-exhaustive; a kind this version does not know is sent empty.
        _ => 0,
    }
}

fn put_value(value: &Value, buf: &mut impl BufMut) {
    match value {
        Value::String(s) => {
            put_header(1, s.as_str().len(), buf);
            buf.put_slice(s.as_str().as_bytes());
        }
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.put_f64_le(*f);
        }
        Value::Array(array) => {
            put_header(5, array_len(array), buf);
            put_array(array, buf);
        }
        _ => {}
    }
}

/// `ArrayValue`'s body: `values` (1), each an `AnyValue`.
fn array_len(array: &Array) -> usize {
    fn sum<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|v| field_len(1, len(v))).sum()
    }
    match array {
        Array::Bool(v) => sum(v, |_| key_len(2) + 1),
        Array::I64(v) => sum(v, |i| key_len(3) + encoded_len_varint(*i as u64)),
        Array::F64(v) => sum(v, |_| key_len(4) + 8),
        Array::String(v) => sum(v, |s| field_len(1, s.as_str().len())),
        _ => 0,
    }
}

fn put_array(array: &Array, buf: &mut impl BufMut) {
    let mut each = |value: Value| {
        put_header(1, value_len(&value), buf);
        put_value(&value, buf);
    };
    match array {
        Array::Bool(v) => v.iter().for_each(|b| each(Value::Bool(*b))),
        Array::I64(v) => v.iter().for_each(|i| each(Value::I64(*i))),
        Array::F64(v) => v.iter().for_each(|f| each(Value::F64(*f))),
        // Cloning a `StringValue` shares its text (or borrows a static one) for most kinds;
        // arrays are rare (flowrun makes none).
        Array::String(v) => v.iter().for_each(|s| each(Value::String(s.clone()))),
        _ => {}
    }
}

/// `KeyValue`'s body: `key` (1), `value` (2, always present).
fn kv_len(key: &str, value: &Value) -> usize {
    str_len(1, key) + field_len(2, value_len(value))
}

fn put_kv(key: &str, value: &Value, buf: &mut impl BufMut) {
    put_str(1, key, buf);
    put_header(2, value_len(value), buf);
    put_value(value, buf);
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| field_len(tag, kv_len(kv.key.as_str(), &kv.value)))
        .sum()
}

pub(crate) fn put_attributes(tag: u32, attributes: &[KeyValue], buf: &mut impl BufMut) {
    for kv in attributes {
        put_header(tag, kv_len(kv.key.as_str(), &kv.value), buf);
        put_kv(kv.key.as_str(), &kv.value, buf);
    }
}

fn flags(context: &SpanContext, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(context.trace_flags().to_u8()) | CONTEXT_HAS_IS_REMOTE;
    if parent_is_remote {
        flags |= CONTEXT_IS_REMOTE;
    }
    flags
}

fn kind(kind: &SpanKind) -> u32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status`'s body: `message` (2), `code` (3).
fn status_parts(status: &Status) -> (&str, u32) {
    match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    }
}

fn status_len(status: &Status) -> usize {
    let (message, code) = status_parts(status);
    str_len(2, message) + u32_len(3, code)
}

/// `Span.Event`'s body.
fn event_len(event: &Event) -> usize {
    fixed64_len(1, nanos(event.timestamp))
        + str_len(2, &event.name)
        + attributes_len(3, &event.attributes)
        + u32_len(4, event.dropped_attributes_count)
}

fn put_event(event: &Event, buf: &mut impl BufMut) {
    put_fixed64(1, nanos(event.timestamp), buf);
    put_str(2, &event.name, buf);
    put_attributes(3, &event.attributes, buf);
    put_u32(4, event.dropped_attributes_count, buf);
}

/// `Span.Link`'s body.
fn link_len(link: &Link) -> usize {
    let context = &link.span_context;
    bytes_len(1, &context.trace_id().to_bytes())
        + bytes_len(2, &context.span_id().to_bytes())
        + str_len(3, &context.trace_state().header())
        + attributes_len(4, &link.attributes)
        + u32_len(5, link.dropped_attributes_count)
        + fixed32_len(6, flags(context, context.is_remote()))
}

fn put_link(link: &Link, buf: &mut impl BufMut) {
    let context = &link.span_context;
    put_bytes(1, &context.trace_id().to_bytes(), buf);
    put_bytes(2, &context.span_id().to_bytes(), buf);
    put_str(3, &context.trace_state().header(), buf);
    put_attributes(4, &link.attributes, buf);
    put_u32(5, link.dropped_attributes_count, buf);
    put_fixed32(6, flags(context, context.is_remote()), buf);
}

fn parent_id(span: &SpanFields<'_>) -> Option<[u8; 8]> {
    (span.parent != SpanId::INVALID).then(|| span.parent.to_bytes())
}

/// `Span`'s body, field by field as [`put_span`] writes it.
fn span_len(span: &SpanFields<'_>, trace_state: &str) -> usize {
    let context = span.context;
    bytes_len(1, &context.trace_id().to_bytes())
        + bytes_len(2, &context.span_id().to_bytes())
        + str_len(3, trace_state)
        + parent_id(span).map_or(0, |id| bytes_len(4, &id))
        + fixed32_len(16, flags(context, span.parent_is_remote))
        + str_len(5, span.name)
        + u32_len(6, kind(span.kind))
        + fixed64_len(7, nanos(span.start))
        + fixed64_len(8, nanos(span.end))
        + span.attributes.len()
        + u32_len(10, span.dropped_attributes)
        + span
            .events
            .iter()
            .map(|e| field_len(11, event_len(e)))
            .sum::<usize>()
        + u32_len(12, span.dropped_events)
        + span
            .links
            .iter()
            .map(|l| field_len(13, link_len(l)))
            .sum::<usize>()
        + u32_len(14, span.dropped_links)
        + field_len(15, status_len(span.status))
}

fn put_span(span: &SpanFields<'_>, trace_state: &str, buf: &mut impl BufMut) {
    let context = span.context;
    put_bytes(1, &context.trace_id().to_bytes(), buf);
    put_bytes(2, &context.span_id().to_bytes(), buf);
    put_str(3, trace_state, buf);
    if let Some(id) = parent_id(span) {
        put_bytes(4, &id, buf);
    }
    put_fixed32(16, flags(context, span.parent_is_remote), buf);
    put_str(5, span.name, buf);
    put_u32(6, kind(span.kind), buf);
    put_fixed64(7, nanos(span.start), buf);
    put_fixed64(8, nanos(span.end), buf);
    span.attributes.put(buf);
    put_u32(10, span.dropped_attributes, buf);
    for event in span.events {
        put_header(11, event_len(event), buf);
        put_event(event, buf);
    }
    put_u32(12, span.dropped_events, buf);
    for link in span.links {
        put_header(13, link_len(link), buf);
        put_link(link, buf);
    }
    put_u32(14, span.dropped_links, buf);
    // Always present, as `opentelemetry-proto` sets it.
    put_header(15, status_len(span.status), buf);
    let (message, code) = status_parts(span.status);
    put_str(2, message, buf);
    put_u32(3, code, buf);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("billing")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .build()
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn context(trace: u128, span: u64) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        )
    }

    /// A span with every kind of attribute value, an error status, an event and a link.
    fn full_span() -> SpanData {
        let mut events = SpanEvents::default();
        events.events = vec![Event::new(
            "retry",
            at(1_005),
            vec![KeyValue::new("attempt", 1_i64)],
            1,
        )];
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links = vec![Link::new(
            context(7, 8),
            vec![KeyValue::new("why", "judge")],
            0,
        )];
        links.dropped_count = 4;
        SpanData {
            span_context: context(
                0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                0x1112_1314_1516_1718,
            ),
            parent_span_id: SpanId::from(0x2122_2324_2526_2728),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("chat gpt-4o-mini"),
            start_time: at(1_000),
            end_time: at(1_017),
            attributes: vec![
                KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
                KeyValue::new("gen_ai.response.id", String::from("chatcmpl-1")),
                KeyValue::new("shared", Value::from(std::sync::Arc::<str>::from("arc"))),
                KeyValue::new("empty", ""),
                KeyValue::new("flowrun.cached", false),
                KeyValue::new("flowrun.repair", true),
                KeyValue::new("flowrun.attempt", 3_i64),
                KeyValue::new("negative", -42_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("flowrun.cost_usd", 0.000_125),
                KeyValue::new("nan", f64::NAN),
                KeyValue::new("unicode", "é ✓ 日本"),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, i64::MAX]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, -2.0]))),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec![
                        StringValue::from("a"),
                        StringValue::from(String::new()),
                    ])),
                ),
            ],
            dropped_attributes_count: 2,
            events,
            links,
            status: Status::error("429 Too Many Requests"),
            instrumentation_scope: InstrumentationScope::builder(SCOPE).build(),
        }
    }

    /// A root span as flowrun makes them: no parent, `Ok`, internal.
    fn root_span(n: u64) -> SpanData {
        SpanData {
            span_context: context(u128::from(n) << 64 | 1, n + 1),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(format!("flow f{n}")),
            start_time: at(2_000 + n),
            end_time: at(2_500 + n),
            attributes: vec![
                KeyValue::new("flowrun.run_id", format!("run-{n}")),
                KeyValue::new("gen_ai.usage.input_tokens", i64::try_from(n).unwrap_or(0)),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if n.is_multiple_of(2) {
                Status::Ok
            } else {
                Status::Unset
            },
            instrumentation_scope: InstrumentationScope::builder(SCOPE).build(),
        }
    }

    /// What `opentelemetry-proto`'s own conversion (the one `opentelemetry-otlp` sends) makes
    /// of the same spans.
    fn reference(spans: &[SpanData], resource: &Resource) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn any(value: &Option<AnyValue>) -> Option<&Any> {
        value.as_ref().and_then(|v| v.value.as_ref())
    }

    #[test]
    fn every_field_decodes_as_sent() {
        let resource = resource();
        let mut encoder = Encoder::new(&resource);
        let span = full_span();
        let bytes = encoder.encode(std::slice::from_ref(&span));
        let request = ExportTraceServiceRequest::decode(bytes.clone()).unwrap();

        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        let resource_attrs = &rs.resource.as_ref().unwrap().attributes;
        let text = |key: &str| {
            resource_attrs
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| any(&kv.value))
                .cloned()
        };
        assert_eq!(
            text("service.name"),
            Some(Any::StringValue("billing".into()))
        );
        assert_eq!(
            text("service.version"),
            Some(Any::StringValue("0.1.0".into()))
        );
        assert_eq!(resource_attrs.len(), 2);
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("flowrun", "")
        );
        assert_eq!(ss.spans.len(), 1);

        let s = &ss.spans[0];
        assert_eq!(s.trace_id, span.span_context.trace_id().to_bytes());
        assert_eq!(s.span_id, span.span_context.span_id().to_bytes());
        assert_eq!(s.parent_span_id, span.parent_span_id.to_bytes());
        assert_eq!(s.trace_state, "");
        assert_eq!(s.flags, 0x101, "sampled, parent known not to be remote");
        assert_eq!(s.name, "chat gpt-4o-mini");
        assert_eq!(s.kind, 3, "client");
        assert_eq!(s.start_time_unix_nano, 1_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_017_000_000);
        assert_eq!(s.dropped_attributes_count, 2);
        let attr = |key: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| any(&kv.value))
                .cloned()
                .unwrap_or_else(|| panic!("no {key}"))
        };
        assert_eq!(
            attr("gen_ai.request.model"),
            Any::StringValue("gpt-4o-mini".into())
        );
        assert_eq!(
            attr("gen_ai.response.id"),
            Any::StringValue("chatcmpl-1".into())
        );
        assert_eq!(attr("shared"), Any::StringValue("arc".into()));
        assert_eq!(attr("empty"), Any::StringValue(String::new()));
        assert_eq!(attr("flowrun.cached"), Any::BoolValue(false));
        assert_eq!(attr("flowrun.repair"), Any::BoolValue(true));
        assert_eq!(attr("flowrun.attempt"), Any::IntValue(3));
        assert_eq!(attr("negative"), Any::IntValue(-42));
        assert_eq!(attr("zero"), Any::IntValue(0));
        assert_eq!(attr("flowrun.cost_usd"), Any::DoubleValue(0.000_125));
        assert!(matches!(attr("nan"), Any::DoubleValue(d) if d.is_nan()));
        assert_eq!(attr("unicode"), Any::StringValue("é ✓ 日本".into()));
        let array = |values: Vec<Any>| {
            Any::ArrayValue(ArrayValue {
                values: values
                    .into_iter()
                    .map(|v| AnyValue { value: Some(v) })
                    .collect(),
            })
        };
        assert_eq!(
            attr("bools"),
            array(vec![Any::BoolValue(true), Any::BoolValue(false)])
        );
        assert_eq!(
            attr("ints"),
            array(vec![
                Any::IntValue(1),
                Any::IntValue(-1),
                Any::IntValue(i64::MAX)
            ])
        );
        assert_eq!(
            attr("floats"),
            array(vec![Any::DoubleValue(0.5), Any::DoubleValue(-2.0)])
        );
        assert_eq!(
            attr("strings"),
            array(vec![
                Any::StringValue("a".into()),
                Any::StringValue(String::new())
            ])
        );
        assert_eq!(s.attributes.len(), span.attributes.len());
        let status = s.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "429 Too Many Requests")
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retry");
        assert_eq!(s.events[0].time_unix_nano, 1_005_000_000);
        assert_eq!(s.events[0].dropped_attributes_count, 1);
        assert_eq!(s.events[0].attributes.len(), 1);
        assert_eq!(s.dropped_events_count, 3);
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].span_id, SpanId::from(8).to_bytes());
        assert_eq!(s.links[0].trace_id, TraceId::from(7).to_bytes());
        assert_eq!(s.links[0].flags, 0x101);
        assert_eq!(s.dropped_links_count, 4);

        // And as a whole, what `opentelemetry-otlp` sent (NaN aside, which is never equal).
        let mut expected = reference(std::slice::from_ref(&span), &resource);
        let mut got = request;
        for r in [&mut expected, &mut got] {
            r.resource_spans[0].scope_spans[0].spans[0]
                .attributes
                .retain(|kv| kv.key != "nan");
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_large_batch_round_trips_and_the_buffer_is_reused() {
        let resource = resource();
        let mut encoder = Encoder::new(&resource);
        let mut spans: Vec<SpanData> = (0..5_000).map(root_span).collect();
        spans.push(full_span());
        for _ in 0..3 {
            let bytes = encoder.encode(&spans);
            let without_nan = |mut r: ExportTraceServiceRequest| {
                if let Some(last) = r.resource_spans[0].scope_spans[0].spans.last_mut() {
                    last.attributes.retain(|kv| kv.key != "nan");
                }
                r
            };
            let got = without_nan(ExportTraceServiceRequest::decode(bytes.clone()).unwrap());
            let expected = without_nan(reference(&spans, &resource));
            assert_eq!(got.resource_spans[0].scope_spans[0].spans.len(), 5_001);
            assert_eq!(got, expected);
            // The same bytes as prost's encoding of the reference request.
            let mut reference_bytes = reference(&spans, &resource);
            let mut ours = ExportTraceServiceRequest::decode(bytes).unwrap();
            for r in [&mut reference_bytes, &mut ours] {
                r.resource_spans[0].scope_spans[0].spans.pop();
            }
            assert_eq!(ours.encode_to_vec(), reference_bytes.encode_to_vec());
        }
        // Once the bytes of a request are dropped, the next one is written in the same memory.
        let first = encoder.encode(&spans);
        let at = first.as_ptr();
        drop(first);
        assert_eq!(encoder.encode(&spans).as_ptr(), at);
        let empty = encoder.encode(&[]);
        let request = ExportTraceServiceRequest::decode(empty).unwrap();
        assert!(request.resource_spans[0].scope_spans[0].spans.is_empty());
    }

    #[test]
    fn times_before_the_epoch_and_odd_values_do_not_panic() {
        let mut span = root_span(1);
        span.start_time = UNIX_EPOCH - Duration::from_secs(1);
        span.end_time = UNIX_EPOCH;
        span.name = Cow::Borrowed("");
        span.status = Status::error("");
        span.attributes.push(KeyValue::new("", i64::MIN));
        let mut encoder = Encoder::new(&Resource::builder_empty().build());
        let request = ExportTraceServiceRequest::decode(encoder.encode(&[span])).unwrap();
        let s = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (0, 0));
        assert_eq!(s.name, "");
        assert_eq!(s.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(any(&s.attributes[2].value), Some(&Any::IntValue(i64::MIN)));
    }
}
