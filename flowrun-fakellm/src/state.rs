//! State shared by the request handlers and the `FakeLlm` handle: config,
//! script, fault injector, recorded requests and reply counts.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::FakeConfig;
use crate::faults::FaultInjector;
use crate::record::{RecordedRequest, ReplyCounts};
use crate::reply::{Reply, ReplyKind};
use crate::script::Script;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: FakeConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) script: Script,
    pub(crate) faults: FaultInjector,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) counts: ReplyCounts,
    /// Error replies by HTTP status.
    pub(crate) statuses: BTreeMap<u16, u64>,
}

impl Shared {
    pub(crate) fn new(config: FakeConfig) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                script: Script::default(),
                faults: FaultInjector::new(&config),
                requests: Vec::new(),
                counts: ReplyCounts::default(),
                statuses: BTreeMap::new(),
            }),
            config,
        }
    }

    /// Locks the mutable state. A panic while locked cannot leave it
    /// inconsistent, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The injected fault or scripted reply for a request of `model`
    /// (`None`: use the default reply).
    pub(crate) fn next_reply(&self, model: &str) -> Option<Reply> {
        let mut inner = self.lock();
        match inner.faults.roll() {
            Some(fault) => Some(fault),
            None => inner.script.next_for(model),
        }
    }

    pub(crate) fn count(&self, kind: ReplyKind) {
        self.lock().counts.add(kind);
    }

    /// Counts an error reply with `status` (also counted by [`Shared::count`]).
    pub(crate) fn count_status(&self, status: u16) {
        *self.lock().statuses.entry(status).or_default() += 1;
    }
}
