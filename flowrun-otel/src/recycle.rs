//! Attribute vectors handed back by the OTLP/HTTP exporter once their batch is encoded, for
//! the sinks to fill again.
//!
//! A span's attributes are collected on a runtime worker and dropped on the export thread. A
//! vector freed by a thread other than the one that allocated it goes back to the allocating
//! thread's arena through its slow path (glibc takes the arena's lock, and the next larger
//! allocation there consolidates what piled up), which cost the runs more than building the
//! spans did. Recycled, each vector is allocated once and reused; only what it held is freed
//! on the export thread.

use std::sync::Mutex;

use opentelemetry::KeyValue;

use crate::lock;

/// Vectors kept for reuse at most: about four export batches' worth of spans.
const KEEP: usize = 16_384;
/// Vectors that grew past this (content capture, errors) are not kept.
const MAX_CAPACITY: usize = 32;

/// Empty attribute vectors waiting to be reused. Without an exporter that gives any back
/// (gRPC), [`AttributeVecs::take`] just allocates.
#[derive(Debug, Default)]
pub(crate) struct AttributeVecs {
    free: Mutex<Vec<Vec<KeyValue>>>,
}

impl AttributeVecs {
    /// An empty vector with room for at least `capacity` attributes.
    pub(crate) fn take(&self, capacity: usize) -> Vec<KeyValue> {
        match lock(&self.free).pop() {
            Some(mut v) => {
                v.reserve(capacity);
                v
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Empties the given vectors (dropping their attributes here) and keeps them for reuse.
    pub(crate) fn give_back(&self, vecs: impl IntoIterator<Item = Vec<KeyValue>>) {
        let mut kept: Vec<Vec<KeyValue>> = vecs
            .into_iter()
            .filter(|v| v.capacity() > 0 && v.capacity() <= MAX_CAPACITY)
            .map(|mut v| {
                v.clear();
                v
            })
            .collect();
        let mut free = lock(&self.free);
        kept.truncate(KEEP.saturating_sub(free.len()));
        free.append(&mut kept);
    }

    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        lock(&self.free).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_empty_and_are_reused() {
        let vecs = AttributeVecs::default();
        let mut v = vecs.take(4);
        assert!(v.capacity() >= 4);
        v.push(KeyValue::new("k", "v"));
        let at = v.as_ptr();
        vecs.give_back([v, Vec::new(), Vec::with_capacity(MAX_CAPACITY + 1)]);
        assert_eq!(vecs.kept(), 1, "empty and oversized vectors are not kept");
        let again = vecs.take(2);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same allocation");
        let bigger = {
            vecs.give_back([again]);
            vecs.take(20)
        };
        assert!(bigger.capacity() >= 20);
        assert_eq!(vecs.kept(), 0);
    }

    #[test]
    fn at_most_keep_vectors_are_kept() {
        let vecs = AttributeVecs::default();
        vecs.give_back((0..KEEP + 10).map(|_| Vec::with_capacity(1)));
        assert_eq!(vecs.kept(), KEEP);
        vecs.give_back([Vec::with_capacity(1)]);
        assert_eq!(vecs.kept(), KEEP);
    }
}
