//! Trace and span ids: random, never zero, from a generator per thread (wyrand, seeded once
//! per thread from the standard library's per-thread random hash keys), so that making an id
//! takes no lock and no system call.
//!
//! The ids only need to be unique and unpredictable enough for tracing backends; they are no
//! secret. A trace's sampling decision ([`crate::config::Sampler`]) uses its id's low bits,
//! which this generator makes uniform.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};

use opentelemetry::trace::{SpanId, TraceId};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A seed different for every thread and process: `RandomState` draws its keys from the
/// operating system once per thread, and the time and thread id are mixed in as well.
fn seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write(format!("{:?}", std::thread::current().id()).as_bytes());
    hasher.finish()
}

/// The next 64 random bits of this thread (wyrand).
fn next() -> u64 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s).wrapping_mul(u128::from(s ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A new span id (never [`SpanId::INVALID`]).
pub(crate) fn span_id() -> SpanId {
    loop {
        let id = next();
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// A new trace id (never [`TraceId::INVALID`]).
pub(crate) fn trace_id() -> TraceId {
    loop {
        let id = (u128::from(next()) << 64) | u128::from(next());
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_distinct_and_valid_across_threads() {
        let per_thread = |_| {
            (0..10_000)
                .map(|_| (trace_id(), span_id()))
                .collect::<Vec<_>>()
        };
        let all: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|i| s.spawn(move || per_thread(i))).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(all.len(), 40_000);
        let traces: HashSet<_> = all.iter().map(|(t, _)| *t).collect();
        let spans: HashSet<_> = all.iter().map(|(_, s)| *s).collect();
        assert_eq!(traces.len(), all.len());
        assert_eq!(spans.len(), all.len());
        assert!(!traces.contains(&TraceId::INVALID));
        assert!(!spans.contains(&SpanId::INVALID));
    }
}
