//! Span names and attribute values that repeat from run to run (targets, versions, prompts,
//! step ids, models, providers), made once and shared.
//!
//! Why: spans are built on the runs' threads and dropped on the batch processor's, after
//! export. Every `String` in a span is therefore freed by another thread than the one that
//! allocated it, which is glibc malloc's slow path (arena locks, no thread cache) on both
//! sides; measured, it was most of the cost of tracing (BENCHMARKS.md). A shared value is an
//! `Arc<str>` (dropping a clone is a reference count decrement) and a shared name a
//! `&'static str`. Both tables are bounded: past [`CAPACITY`] entries, values are allocated
//! per span as before, so a long-lived server with ever new names does not grow without end.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use opentelemetry::Value;

/// Entries per table; beyond it, names and values are made per span.
const CAPACITY: usize = 4_096;

#[derive(Default)]
pub(crate) struct Interned {
    values: RwLock<HashMap<Box<str>, Value>>,
    names: RwLock<HashMap<Box<str>, &'static str>>,
}

impl Interned {
    /// `text` as an attribute value, shared with every other span that has it.
    pub(crate) fn value(&self, text: &str) -> Value {
        if let Some(v) = read(&self.values).get(text) {
            return v.clone();
        }
        let mut values = write(&self.values);
        if values.len() >= CAPACITY {
            return Value::from(text.to_string());
        }
        values
            .entry(text.into())
            .or_insert_with(|| Value::from(Arc::<str>::from(text)))
            .clone()
    }

    /// `name` as a span name: the first [`CAPACITY`] distinct names are kept for the life of
    /// the process (leaked), so that spans can borrow them.
    pub(crate) fn name(&self, name: String) -> Cow<'static, str> {
        if let Some(n) = read(&self.names).get(name.as_str()) {
            return Cow::Borrowed(n);
        }
        let mut names = write(&self.names);
        if let Some(n) = names.get(name.as_str()) {
            return Cow::Borrowed(n);
        }
        if names.len() >= CAPACITY {
            return Cow::Owned(name);
        }
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        names.insert(name.into_boxed_str(), leaked);
        Cow::Borrowed(leaked)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_are_shared_up_to_the_capacity() {
        let interned = Interned::default();
        let a = interned.value("gpt-4o-mini");
        let b = interned.value("gpt-4o-mini");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "gpt-4o-mini");
        let first = interned.name("step s1".to_string());
        let again = interned.name("step s1".to_string());
        assert!(matches!(first, Cow::Borrowed(_)));
        assert_eq!(first.as_ptr(), again.as_ptr(), "one copy of the name");
        for i in 0..CAPACITY {
            interned.value(&format!("v{i}"));
            interned.name(format!("n{i}"));
        }
        assert_eq!(interned.value("new").as_str(), "new");
        assert!(matches!(interned.name("new".into()), Cow::Owned(_)));
        assert_eq!(read(&interned.values).len(), CAPACITY);
    }
}
