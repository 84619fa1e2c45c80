//! The FIFO queues of scripted replies: one global queue and one per model.

use std::collections::{HashMap, VecDeque};

use crate::reply::Reply;

/// Scripted replies waiting to be served.
///
/// A request for model `m` takes the front of `m`'s queue if it is not
/// empty, else the front of the global queue, else nothing (the caller then
/// falls back to the default echo reply).
#[derive(Debug, Default)]
pub(crate) struct Script {
    global: VecDeque<Reply>,
    per_model: HashMap<String, VecDeque<Reply>>,
}

impl Script {
    pub(crate) fn push(&mut self, reply: Reply) {
        self.global.push_back(reply);
    }

    pub(crate) fn push_for_model(&mut self, model: &str, reply: Reply) {
        self.per_model
            .entry(model.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// The next reply for a request of `model`, if any is scripted.
    pub(crate) fn next_for(&mut self, model: &str) -> Option<Reply> {
        self.per_model
            .get_mut(model)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.global.pop_front())
    }

    /// Number of replies still queued (global plus all models).
    pub(crate) fn len(&self) -> usize {
        self.global.len() + self.per_model.values().map(VecDeque::len).sum::<usize>()
    }

    pub(crate) fn clear(&mut self) {
        self.global.clear();
        self.per_model.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_queue_comes_before_global_queue() {
        let mut s = Script::default();
        s.push(Reply::text("global-1"));
        s.push_for_model("a", Reply::text("a-1"));
        s.push(Reply::text("global-2"));
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_for("b"), Some(Reply::text("global-1")));
        assert_eq!(s.next_for("a"), Some(Reply::text("a-1")));
        assert_eq!(s.next_for("a"), Some(Reply::text("global-2")));
        assert_eq!(s.next_for("a"), None);
        assert_eq!(s.len(), 0);
    }
}
