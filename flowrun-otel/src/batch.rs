//! The OTLP/HTTP export queue: each span is encoded on the thread that ends it (nearly always
//! the span builder's, `span.rs`), straight into the batch being filled ([`Batcher::push`]),
//! and a thread of the batcher's own sends the buffers, a batch at a time, when one is full,
//! every `OTEL_BSP_SCHEDULE_DELAY`, on [`Batcher::flush`] and at [`Batcher::shutdown`].
//!
//! Why not the SDK's batch processor: it moves each span's `SpanData` (a few hundred bytes and
//! its attribute vector) through a channel to its thread, which encodes the batch there and
//! frees every span's memory away from the thread that allocated it. Encoding where the span
//! ends leaves nothing to move but bytes, and the span's memory is freed where it was made
//! (BENCHMARKS.md, "Tracing on versus off"). The queue keeps the processor's settings and
//! behaviour: at most `max_queue` spans wait (the rest are dropped and counted, with one
//! warning), at most `max_batch` go in one request.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lock;

/// The SDK's default delay between two exports.
const SCHEDULE_DELAY: Duration = Duration::from_millis(5_000);
/// Spans held before new ones are dropped (the SDK's default is 2,048): a run makes three or
/// more, and a busy `flowrun test` or server makes thousands a second.
const MAX_QUEUE_SIZE: usize = 16_384;
/// Spans per export request (the SDK's default is 512): fewer, larger requests wake the
/// export thread less often.
const MAX_EXPORT_BATCH_SIZE: usize = 4_096;

/// How the queue batches: the `OTEL_BSP_*` variables, with flowrun's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Spans waiting at most; more are dropped.
    pub(crate) max_queue: usize,
    /// Spans per request at most.
    pub(crate) max_batch: usize,
    /// Time between two exports of what waits.
    pub(crate) delay: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_queue: MAX_QUEUE_SIZE,
            max_batch: MAX_EXPORT_BATCH_SIZE,
            delay: SCHEDULE_DELAY,
        }
    }
}

impl Settings {
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` and
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) read with `get`; a value that is not a
    /// positive number is ignored, as the SDK does, and a batch is never larger than the
    /// queue.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Settings {
        let number = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let defaults = Settings::default();
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE").map_or(defaults.max_queue, as_usize);
        let max_batch =
            number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").map_or(defaults.max_batch, as_usize);
        Settings {
            max_queue,
            max_batch: max_batch.min(max_queue),
            delay: number("OTEL_BSP_SCHEDULE_DELAY").map_or(defaults.delay, Duration::from_millis),
        }
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Sends one batch: framed spans (see `encode.rs`) and how many there are.
pub(crate) type Send = Box<dyn FnMut(&[u8], usize) + std::marker::Send>;

/// The queue of encoded spans and its export thread.
pub(crate) struct Batcher {
    shared: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Queue {
    settings: Settings,
    state: Mutex<State>,
    /// The export thread waits on it for work.
    work: Condvar,
    /// Flushes wait on it for the export thread to catch up.
    caught_up: Condvar,
}

#[derive(Default)]
struct State {
    /// The batch being filled, and its spans.
    filling: Vec<u8>,
    filling_spans: usize,
    /// Full batches waiting to be sent, oldest first.
    full: VecDeque<(Vec<u8>, usize)>,
    /// Spans in `filling`, in `full` and being sent: what the queue's bound counts.
    queued: usize,
    /// Spans dropped because the queue was full.
    dropped: u64,
    /// Flushes asked for, and the last one the export thread finished.
    flushes_asked: u64,
    flushes_done: u64,
    /// Set by [`Batcher::shutdown`]: send what is left, then stop.
    stopping: bool,
    /// Sent batches' buffers, emptied, for the next ones: every buffer is kept, so once the
    /// first batches have grown them, a batch never grows nor allocates its buffer (a buffer
    /// of a megabyte grown on a runtime worker and freed elsewhere sent glibc through its
    /// slowest paths). There are at most `max_queue / max_batch + 1` of them.
    spare: Vec<Vec<u8>>,
    /// The bytes of the largest full batch so far: the room a new buffer is made with.
    batch_bytes: usize,
}

impl Batcher {
    /// Starts the export thread, which calls `send` for each batch.
    pub(crate) fn start(settings: Settings, send: Send) -> std::io::Result<Batcher> {
        let shared = Arc::new(Queue {
            settings,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            caught_up: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("flowrun-otel-batch".into())
                .spawn(move || export_loop(&shared, send))?
        };
        Ok(Batcher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues one span, which `write` appends to the batch's buffer (framed, see
    /// `encode::put_framed`); dropped, and counted, when `max_queue` spans wait already or
    /// the batcher is shut down. Encoded under the queue's lock: spans end on the span
    /// builder's thread, so nobody else wants it but the export thread, now and then.
    pub(crate) fn push(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let settings = &self.shared.settings;
        let mut state = lock(&self.shared.state);
        if state.stopping {
            return;
        }
        if state.queued >= settings.max_queue {
            state.dropped += 1;
            if state.dropped == 1 {
                tracing::warn!(
                    max_queue = settings.max_queue,
                    "OpenTelemetry spans are dropped: the export queue is full \
                     (raise OTEL_BSP_MAX_QUEUE_SIZE or check the collector)"
                );
            }
            return;
        }
        if state.filling.capacity() == 0 {
            state.filling = match state.spare.pop() {
                Some(spare) => spare,
                None => Vec::with_capacity(state.batch_bytes),
            };
        }
        write(&mut state.filling);
        state.filling_spans += 1;
        state.queued += 1;
        if state.filling_spans >= settings.max_batch {
            let batch = std::mem::take(&mut state.filling);
            let spans = std::mem::take(&mut state.filling_spans);
            // With some room to spare, as spans differ in size.
            state.batch_bytes = state.batch_bytes.max(batch.len() + batch.len() / 8);
            state.full.push_back((batch, spans));
            drop(state);
            self.shared.work.notify_one();
        }
    }

    /// Sends every span queued so far; returns once they are sent (or their export failed).
    #[cfg(test)]
    pub(crate) fn flush(&self) {
        let mut state = lock(&self.shared.state);
        state.flushes_asked += 1;
        let asked = state.flushes_asked;
        self.shared.work.notify_one();
        while state.flushes_done < asked && !self.thread_gone() {
            // Timed, so that a thread that died is noticed.
            state = self
                .shared
                .caught_up
                .wait_timeout(state, Duration::from_millis(100))
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
    }

    /// Sends what is queued and stops the export thread; later spans are dropped. Blocks
    /// until the last batch is sent.
    pub(crate) fn shutdown(&self) {
        lock(&self.shared.state).stopping = true;
        self.shared.work.notify_one();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::warn!("the OpenTelemetry export thread panicked; spans were lost");
        }
        let dropped = lock(&self.shared.state).dropped;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "OpenTelemetry spans were dropped (export queue full)"
            );
        }
    }

    /// Spans dropped so far because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        lock(&self.shared.state).dropped
    }

    #[cfg(test)]
    fn thread_gone(&self) -> bool {
        lock(&self.thread)
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The export thread: sends full batches as they come, and what is filling when the delay is
/// up, a flush is asked for, or the batcher stops.
fn export_loop(queue: &Queue, mut send: Send) {
    let mut next_tick = Instant::now() + queue.settings.delay;
    let mut state = lock(&queue.state);
    loop {
        let now = Instant::now();
        let due = now >= next_tick;
        let flushing = state.flushes_asked > state.flushes_done;
        let batch = match state.full.pop_front() {
            Some(batch) => Some(batch),
            None if state.filling_spans > 0 && (due || flushing || state.stopping) => {
                let spans = std::mem::take(&mut state.filling_spans);
                Some((std::mem::take(&mut state.filling), spans))
            }
            None => None,
        };
        if let Some((mut bytes, spans)) = batch {
            drop(state);
            send(&bytes, spans);
            bytes.clear();
            state = lock(&queue.state);
            state.queued -= spans;
            state.spare.push(bytes);
            continue;
        }
        // Nothing left to send.
        if due {
            next_tick = now + queue.settings.delay;
        }
        if flushing {
            state.flushes_done = state.flushes_asked;
            queue.caught_up.notify_all();
        }
        if state.stopping {
            return;
        }
        let timeout = next_tick.saturating_duration_since(Instant::now());
        state = queue
            .work
            .wait_timeout(state, timeout)
            .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Arc<Mutex<Vec<(Vec<u8>, usize)>>>;

    /// A batcher whose batches are kept; each span is its number, one byte.
    fn batcher(settings: Settings) -> (Batcher, Sent) {
        let sent = Sent::default();
        let keep = sent.clone();
        let send: Send = Box::new(move |bytes: &[u8], spans| {
            lock(&keep).push((bytes.to_vec(), spans));
        });
        (Batcher::start(settings, send).unwrap(), sent)
    }

    fn settings(max_queue: usize, max_batch: usize) -> Settings {
        Settings {
            max_queue,
            max_batch,
            delay: Duration::from_secs(3_600),
        }
    }

    fn push(batcher: &Batcher, n: u8) {
        batcher.push(|buf| buf.push(n));
    }

    #[test]
    fn full_batches_go_at_once_and_the_rest_on_flush_in_order() {
        let (batcher, sent) = batcher(settings(100, 3));
        for n in 0..7 {
            push(&batcher, n);
        }
        batcher.flush();
        let got = lock(&sent).clone();
        assert_eq!(
            got,
            vec![(vec![0, 1, 2], 3), (vec![3, 4, 5], 3), (vec![6], 1)]
        );
        // A flush with nothing queued sends nothing and still returns.
        batcher.flush();
        assert_eq!(lock(&sent).len(), 3);
    }

    #[test]
    fn spans_of_many_threads_all_go_in_batches_no_larger_than_the_limit() {
        let (batcher, sent) = batcher(settings(100_000, 100));
        let batcher = Arc::new(batcher);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let batcher = batcher.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_001 {
                        push(&batcher, t);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        batcher.flush();
        let got = lock(&sent).clone();
        assert!(
            got.iter()
                .all(|(bytes, spans)| bytes.len() == *spans && *spans <= 100)
        );
        let mut per_thread = [0; 4];
        for byte in got.iter().flat_map(|(bytes, _)| bytes) {
            per_thread[usize::from(*byte)] += 1;
        }
        assert_eq!(per_thread, [1_001; 4]);
        assert_eq!(batcher.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_new_spans() {
        // The export thread is held in `send` by a lock the test keeps, so nothing leaves
        // the queue.
        let gate = Arc::new(Mutex::new(()));
        let held = lock(&gate);
        let sent = Sent::default();
        let (keep, wait_gate) = (sent.clone(), gate.clone());
        let send: Send = Box::new(move |bytes: &[u8], spans| {
            drop(lock(&wait_gate));
            lock(&keep).push((bytes.to_vec(), spans));
        });
        let batcher = Batcher::start(settings(4, 2), send).unwrap();
        for n in 0..10 {
            push(&batcher, n);
        }
        assert_eq!(batcher.dropped(), 6);
        drop(held);
        batcher.flush();
        let got = lock(&sent).clone();
        assert_eq!(got, vec![(vec![0, 1], 2), (vec![2, 3], 2)]);
        // Room again once sent.
        push(&batcher, 10);
        batcher.flush();
        assert_eq!(lock(&sent).last(), Some(&(vec![10], 1)));
    }

    #[test]
    fn what_waits_goes_when_the_delay_is_up() {
        let (batcher, sent) = batcher(Settings {
            max_queue: 100,
            max_batch: 100,
            delay: Duration::from_millis(20),
        });
        push(&batcher, 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock(&sent).is_empty() {
            assert!(Instant::now() < deadline, "nothing sent after the delay");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lock(&sent).clone(), vec![(vec![1], 1)]);
    }

    #[test]
    fn shutdown_sends_the_rest_and_later_spans_are_dropped() {
        let (batcher, sent) = batcher(settings(100, 50));
        push(&batcher, 1);
        push(&batcher, 2);
        batcher.shutdown();
        assert_eq!(lock(&sent).clone(), vec![(vec![1, 2], 2)]);
        push(&batcher, 3);
        batcher.flush();
        batcher.shutdown();
        assert_eq!(lock(&sent).len(), 1);
    }

    #[test]
    fn settings_come_from_the_bsp_variables() {
        assert_eq!(Settings::from_lookup(|_| None), Settings::default());
        let set = |pairs: &'static [(&'static str, &'static str)]| {
            Settings::from_lookup(move |k| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        let s = set(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "40"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ]);
        assert_eq!(
            s,
            Settings {
                max_queue: 100,
                max_batch: 40,
                delay: Duration::from_millis(250)
            }
        );
        // A batch never exceeds the queue; nonsense is ignored.
        let s = set(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ]);
        assert_eq!(
            (s.max_queue, s.max_batch, s.delay),
            (10, 10, SCHEDULE_DELAY)
        );
        let s = set(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]);
        assert_eq!(s.max_queue, MAX_QUEUE_SIZE);
    }
}
