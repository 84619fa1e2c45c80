//! A span's attributes kept as the protobuf bytes they are sent as: each one is encoded when
//! it is added, framed as one element of `Span.attributes`, so that ending the span copies
//! them in one piece.
//!
//! Why: a list of `KeyValue`s costs an allocation per string value and one for the list, is
//! read twice when encoded (sizes, then bytes), and is freed when the span ends; the spans'
//! own cost, measured in the runner benchmark, was mostly that. [`Attributes::str`] and the
//! other typed adders copy borrowed text straight into the bytes. The SDK's limit holds: past
//! [`MAX_ATTRIBUTES`], attributes are counted as dropped. [`Attributes::to_key_values`] gives
//! the list back for the SDK's `SpanData` (the gRPC exporter, the tests).

use opentelemetry::{Array, KeyValue, StringValue, Value};
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::encode;

/// Attributes per span beyond which they are counted as dropped (the SDK's default limit).
pub(crate) const MAX_ATTRIBUTES: usize = 128;

/// `Span.attributes` is field 9.
const FIELD: u32 = 9;

#[derive(Debug, Default, Clone)]
pub(crate) struct Attributes {
    /// Framed `KeyValue`s, one after the other.
    bytes: Vec<u8>,
    count: usize,
    dropped: u32,
}

impl Attributes {
    /// Room for about `bytes` of attributes.
    pub(crate) fn with_capacity(bytes: usize) -> Attributes {
        Attributes {
            bytes: Vec::with_capacity(bytes),
            count: 0,
            dropped: 0,
        }
    }

    /// Whether one more fits under the limit; counts it as dropped otherwise.
    fn room(&mut self) -> bool {
        if self.count >= MAX_ATTRIBUTES {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.count += 1;
        true
    }

    /// A string attribute, copied from `value`.
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        if self.room() {
            encode::put_str_attribute(FIELD, key, value, &mut self.bytes);
        }
    }

    pub(crate) fn int(&mut self, key: &str, value: i64) {
        self.value(key, &Value::I64(value));
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) {
        self.value(key, &Value::Bool(value));
    }

    /// Any attribute value.
    pub(crate) fn value(&mut self, key: &str, value: &Value) {
        if self.room() {
            encode::put_attribute(FIELD, key, value, &mut self.bytes);
        }
    }

    /// The encoded attributes: framed `Span.attributes` elements.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The attributes as the SDK's list, in the order they were added.
    pub(crate) fn to_key_values(&self) -> Vec<KeyValue> {
        let mut list = Vec::with_capacity(self.count);
        let mut buf = self.bytes.as_slice();
        while !buf.is_empty() {
            match read_framed(&mut buf) {
                Some(kv) => list.push(kv),
                // Only bytes written by `encode` are here; stop rather than loop on a bug.
                None => break,
            }
        }
        list
    }
}

impl Extend<KeyValue> for Attributes {
    fn extend<I: IntoIterator<Item = KeyValue>>(&mut self, attributes: I) {
        for kv in attributes {
            self.value(kv.key.as_str(), &kv.value);
        }
    }
}

/// One length-delimited field: its tag and body.
fn read_field<'a>(buf: &mut &'a [u8]) -> Option<(u32, WireType, FieldBody<'a>)> {
    let (tag, wire) = decode_key(buf).ok()?;
    let body = match wire {
        WireType::Varint => FieldBody::Varint(decode_varint(buf).ok()?),
        WireType::SixtyFourBit => {
            let (bytes, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            FieldBody::Fixed64(u64::from_le_bytes(*bytes))
        }
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (body, rest) = buf.split_at(len);
            *buf = rest;
            FieldBody::Bytes(body)
        }
        _ => return None,
    };
    Some((tag, wire, body))
}

enum FieldBody<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

/// A framed `KeyValue`.
fn read_framed(buf: &mut &[u8]) -> Option<KeyValue> {
    let (_, _, FieldBody::Bytes(mut body)) = read_field(buf)? else {
        return None;
    };
    let mut key = String::new();
    let mut value = Value::from("");
    while !body.is_empty() {
        match read_field(&mut body)? {
            (1, _, FieldBody::Bytes(text)) => key = String::from_utf8_lossy(text).into_owned(),
            (2, _, FieldBody::Bytes(any)) => value = read_any(any)?,
            _ => {}
        }
    }
    Some(KeyValue::new(key, value))
}

/// An `AnyValue`'s body.
fn read_any(mut body: &[u8]) -> Option<Value> {
    let mut value = Value::from("");
    while !body.is_empty() {
        value = match read_field(&mut body)? {
            (1, _, FieldBody::Bytes(text)) => {
                Value::from(String::from_utf8_lossy(text).into_owned())
            }
            (2, _, FieldBody::Varint(b)) => Value::Bool(b != 0),
            (3, _, FieldBody::Varint(i)) => Value::I64(i as i64),
            (4, _, FieldBody::Fixed64(bits)) => Value::F64(f64::from_bits(bits)),
            (5, _, FieldBody::Bytes(array)) => Value::Array(read_array(array)?),
            _ => continue,
        };
    }
    Some(value)
}

/// An `ArrayValue`'s body, whose elements share one type (as `opentelemetry::Array`'s do).
fn read_array(mut body: &[u8]) -> Option<Array> {
    let mut items = Vec::new();
    while !body.is_empty() {
        if let (1, _, FieldBody::Bytes(any)) = read_field(&mut body)? {
            items.push(read_any(any)?);
        }
    }
    fn all<T>(items: &[Value], pick: impl Fn(&Value) -> Option<T>) -> Vec<T> {
        items.iter().filter_map(pick).collect()
    }
    Some(match items.first() {
        Some(Value::Bool(_)) => Array::Bool(all(&items, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })),
        Some(Value::I64(_)) => Array::I64(all(&items, |v| match v {
            Value::I64(i) => Some(*i),
            _ => None,
        })),
        Some(Value::F64(_)) => Array::F64(all(&items, |v| match v {
            Value::F64(f) => Some(*f),
            _ => None,
        })),
        _ => Array::String(all(&items, |v| {
            Some(StringValue::from(v.as_str().into_owned()))
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<KeyValue> {
        vec![
            KeyValue::new("text", "é ✓ 日本"),
            KeyValue::new("empty", ""),
            KeyValue::new("int", -42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("cost", 0.000_125),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, i64::MAX]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.5, -2.0]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec!["a".into(), String::new().into()])),
            ),
        ]
    }

    #[test]
    fn attributes_come_back_as_added() {
        let mut attributes = Attributes::with_capacity(64);
        attributes.extend(all_kinds());
        attributes.str("borrowed", "copied");
        attributes.int("n", 7);
        attributes.bool("b", true);
        let mut expected = all_kinds();
        expected.extend([
            KeyValue::new("borrowed", "copied"),
            KeyValue::new("n", 7_i64),
            KeyValue::new("b", true),
        ]);
        assert_eq!(attributes.to_key_values(), expected);
        assert_eq!(attributes.dropped(), 0);
    }

    #[test]
    fn the_bytes_are_what_the_list_encodes_to() {
        let mut attributes = Attributes::default();
        attributes.extend(all_kinds());
        let mut list = Vec::new();
        encode::put_attributes(FIELD, &all_kinds(), &mut list);
        assert_eq!(attributes.bytes(), list.as_slice());
        let mut by_str = Attributes::default();
        by_str.str("k", "v");
        let mut by_value = Attributes::default();
        by_value.extend([KeyValue::new("k", "v")]);
        assert_eq!(by_str.bytes(), by_value.bytes());
    }

    #[test]
    fn past_the_limit_attributes_are_counted_as_dropped() {
        let mut attributes = Attributes::default();
        for i in 0..(MAX_ATTRIBUTES as i64 + 3) {
            attributes.int("k", i);
        }
        attributes.str("late", "x");
        assert_eq!(attributes.to_key_values().len(), MAX_ATTRIBUTES);
        assert_eq!(attributes.dropped(), 4);
    }
}
